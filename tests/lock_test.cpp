// One writer per directory, in this process and across processes; readers alongside.
#define BOOST_TEST_MODULE lock
#include <boost/test/unit_test.hpp>

#include "faulty_io.hpp"
#include "test_util.hpp"

#include <condition_variable>
#include <csignal>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <sys/wait.h>
#include <unistd.h>

using namespace cask_test;

namespace {
/// Runs f in a child process; returns its exit status (or 128 + signal).
template <class F>
int in_child(F f) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 99;
    try {
      rc = f();
    } catch (...) {
      rc = 98;
    }
    ::_exit(rc);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
int try_write_open(const std::filesystem::path& dir) {
  std::error_code ec;
  auto db = string_store::open(dir, {}, ec);
  if (db) return 0;
  return ec == cask::errc::store_locked ? 10 : 11;
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_second_writer_in_the_same_process_is_refused) {
  temp_dir d("lock1");
  auto a = string_store::open(d.path());
  std::error_code ec;
  auto b = string_store::open(d.path(), {}, ec);
  BOOST_TEST(!b.has_value());
  BOOST_TEST((ec == cask::errc::store_locked));
  try {
    string_store::open(d.path());
    BOOST_FAIL("expected store_locked");
  } catch (const cask::error& e) {
    BOOST_TEST(std::string(e.what()).find("locked") != std::string::npos);
    BOOST_TEST(e.path() == d.path());
  }
  a.close();
  auto c = string_store::open(d.path(), {}, ec);
  BOOST_TEST(c.has_value());
}

BOOST_AUTO_TEST_CASE(a_writer_in_another_process_is_refused_while_the_lock_is_held) {
  temp_dir d("lock2");
  {
    auto a = string_store::open(d.path());
    BOOST_TEST(in_child([&] { return try_write_open(d.path()); }) == 10);
    // The same process opening and closing the lock file through other paths
    // (a refused second writer, a read-only store) must not drop the lock.
    std::error_code ec;
    (void)string_store::open(d.path(), {}, ec);
    cask::options ro;
    ro.read_only = true;
    { auto r = string_store::open(d.path(), ro); }
    BOOST_TEST(in_child([&] { return try_write_open(d.path()); }) == 10);
  }
  BOOST_TEST(in_child([&] { return try_write_open(d.path()); }) == 0);
}

BOOST_AUTO_TEST_CASE(the_lock_dies_with_a_killed_writer) {
  temp_dir d("lock3");
  int fds[2];
  BOOST_REQUIRE(::pipe(fds) == 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto db = string_store::open(d.path());
    db.put("k", "v");
    char c = 'r';
    (void)!::write(fds[1], &c, 1);
    for (;;) ::pause();
  }
  char c;
  BOOST_REQUIRE(::read(fds[0], &c, 1) == 1);
  std::error_code ec;
  BOOST_TEST(!string_store::open(d.path(), {}, ec).has_value());
  BOOST_TEST((ec == cask::errc::store_locked));
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  auto db = string_store::open(d.path());
  BOOST_TEST(*db.get("k") == "v");  // written before the kill: in the page cache, not lost
}

BOOST_AUTO_TEST_CASE(read_only_stores_open_while_a_writer_runs_and_see_a_snapshot) {
  temp_dir d("lock4");
  cask::options o;
  o.max_segment_bytes = 4096;
  auto w = string_store::open(d.path(), o);
  for (int i = 0; i < 100; ++i) w.put(key_of(i), value_of(i));
  cask::options ro = o;
  ro.read_only = true;
  auto r = string_store::open(d.path(), ro);
  BOOST_TEST(r.size() == 100u);
  for (int i = 0; i < 100; ++i) BOOST_REQUIRE(r.get(key_of(i)) == value_of(i));
  w.put("later", "x");
  BOOST_TEST(!r.get("later").has_value());  // a snapshot as of its open
  // In another process too.
  BOOST_TEST(in_child([&] {
               auto c = string_store::open(d.path(), ro);
               return c.get("later") == std::optional<std::string>("x") && c.size() == 101 ? 0 : 1;
             }) == 0);
}

// ---- read-only opens while a segment is sealed in the background ----

namespace {

struct fio_traits : cask::default_traits {
  using io = faulty_io;
};
/// A store on faulty_io, whose hook stops a thread at a chosen call (nothing fails).
using fio_store = cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, fio_traits>;
using model = std::map<std::string, std::string>;

/// Where a thread waits until the test opens it.
class gate {
 public:
  void wait() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return open_; });
  }
  void open() {
    {
      std::lock_guard lk(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
};

/// A writer in this process whose sealing thread waits at its first call
/// (the flush of the first segment) and whose hint thread waits before it
/// writes the first segment's hint file, until let go. write_into_a_second_segment()
/// then leaves the second segment under its temporary name, `<id>.cask.new`.
struct held_writer {
  explicit held_writer(const std::filesystem::path& dir) {
    io.plan().hook = [this](io_call c, const std::filesystem::path& p) {
      if (std::this_thread::get_id() == owner) return;
      if (c == call_flush && p.filename() == cask::segment<faulty_io>::file_name(1)) seal.wait();
      if (p.filename() == cask::hint_file_name(1) + ".tmp") hints.wait();
    };
    io.plan().armed = true;  // (fail_at -1: no call fails)
    cask::options o;
    o.max_segment_bytes = 4096;  // 30 records of 100-byte values
    o.merge.background = false;
    db.emplace(fio_store::open(dir, o, io));
  }
  ~held_writer() {  // (before db closes, which waits for the seal)
    seal.open();
    hints.open();
  }
  held_writer(const held_writer&) = delete;
  held_writer& operator=(const held_writer&) = delete;

  /// Lets the sealing thread go, and waits until it named the segment.
  void let_the_seal_go() {
    seal.open();
    db->sync();  // (waits for the seals started before it)
  }

  gate seal, hints;
  faulty_io io;
  const std::thread::id owner = std::this_thread::get_id();
  std::optional<fio_store> db;
};

std::uint32_t active_segment(const fio_store& db) {
  for (const auto& s : db.stats().per_segment)
    if (s.active) return s.id;
  return 0;
}

/// Writes to `db` until its first segment is full and on into the second:
/// new keys, overwrites of keys of the first and an erase of one. Returns
/// the second segment's id; `m` gets what `db` holds.
std::uint32_t write_into_a_second_segment(fio_store& db, model& m) {
  auto put = [&](const std::string& k, const std::string& v) {
    db.put(k, v);
    m[k] = v;
  };
  std::uint64_t i = 0;
  for (; active_segment(db) == 1; ++i) put(key_of(i), value_of(i));
  for (const std::uint64_t end = i + 10; i < end; ++i) put(key_of(i), value_of(i));
  for (std::uint64_t k = 0; k < 10; ++k) put(key_of(3 * k), "overwritten " + std::to_string(k));
  BOOST_REQUIRE(db.erase(key_of(1)));
  m.erase(key_of(1));
  BOOST_REQUIRE_EQUAL(db.stats().per_segment.size(), 2u);
  return active_segment(db);
}

/// "" if `db` holds exactly `m` (get() and for_each() agree), else what differs.
template <class Store>
std::string differences(Store& db, const model& m) {
  for (const auto& [k, v] : m) {
    std::error_code ec;
    const auto got = db.get(k, ec);
    if (ec) return k + ": " + ec.message();
    if (got != v) return k + (got ? " has another value" : " not found");
  }
  std::size_t n = 0;
  std::string bad;
  db.for_each([&](const std::string& k, const std::string& v) {
    ++n;
    if (bad.empty() && !(m.count(k) && m.at(k) == v)) bad = "unexpected " + k;
  });
  if (bad.empty() && (n != m.size() || db.size() != m.size()))
    bad = std::to_string(n) + " keys listed, " + std::to_string(db.size()) + " counted, " + std::to_string(m.size()) + " written";
  return bad;
}

/// The directory's files and their sizes.
std::map<std::string, std::uintmax_t> listing(const std::filesystem::path& dir) {
  std::map<std::string, std::uintmax_t> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out[e.path().filename().string()] = e.file_size();
  return out;
}

}  // namespace

// Between a rotation and the sealing thread's rename (held back here), the
// writer's active segment is `<id>.cask.new`. A read-only store opened then,
// in this process or another, reads it there: every key written so far with
// its newest value (some overwritten, one erased, in the unnamed segment).
// It renames and removes nothing. Once the seal is let go and the segment
// named, the open store still reads it.
BOOST_AUTO_TEST_CASE(read_only_stores_open_while_a_segment_is_sealed_in_the_background) {
  temp_dir d("lock5");
  held_writer w(d.path());
  model m;
  const std::uint32_t id = write_into_a_second_segment(*w.db, m);
  const std::string named = cask::segment<cask::posix_io>::file_name(id), unnamed = named + ".new";
  const auto before = listing(d.path());
  BOOST_REQUIRE(before.count(unnamed) && !before.count(named));

  cask::options ro;
  ro.read_only = true;
  auto r = string_store::open(d.path(), ro);
  BOOST_TEST(differences(r, m) == "");
  BOOST_TEST(in_child([&] {
               auto c = string_store::open(d.path(), ro);
               return differences(c, m).empty() ? 0 : 1;
             }) == 0);
  BOOST_TEST((listing(d.path()) == before));

  w.let_the_seal_go();
  const auto after = listing(d.path());
  BOOST_TEST((!after.count(unnamed) && after.count(named)));
  BOOST_TEST(differences(r, m) == "");
}

// The same, with the seal let go inside the read-only open: before its first
// I/O call, then before its second, and so on, until it opens with no call
// left (a hook of the reader's faulty_io lets the sealing thread go and waits
// until the segment is named). Each open succeeds and holds every key written
// before it began; where it then reads the unnamed segment by its old name,
// it meets the rename (ENOENT) and starts over.
BOOST_AUTO_TEST_CASE(a_read_only_open_racing_the_rename_of_an_unnamed_segment_reads_it) {
  cask::options ro;
  ro.read_only = true;
  int points = 0, met = 0;  // points, and those where the open met the rename
  for (long at = 0;; ++at) {
    temp_dir d("lock6", storage::memory);
    held_writer w(d.path());
    model m;
    const std::uint32_t id = write_into_a_second_segment(*w.db, m);
    const std::string named = cask::segment<cask::posix_io>::file_name(id), unnamed = named + ".new";
    BOOST_REQUIRE(listing(d.path()).count(unnamed));

    faulty_io rio;
    long calls = 0, stale = 0;  // stale: calls on the old name after the seal was let go
    std::string where;          // the call before which the seal was let go
    rio.plan().hook = [&](io_call c, const std::filesystem::path& p) {
      if (calls++ == at) {
        where = std::string(call_name(c)) + " " + p.filename().string() + " (call " + std::to_string(at) + ")";
        w.let_the_seal_go();
      }
      if (!where.empty() && p.filename() == unnamed) ++stale;  // (this call too: it goes on after the hook)
    };
    rio.plan().armed = true;
    std::error_code ec;
    auto r = fio_store::open(d.path(), ro, ec, rio);
    rio.plan().armed = false;
    if (where.empty()) {
      BOOST_REQUIRE_MESSAGE(r, "the read-only open failed: " << ec.message());
      BOOST_TEST(differences(*r, m) == "");
      break;  // every call of the open was a point
    }
    ++points;
    BOOST_REQUIRE_MESSAGE(r, "the seal let go before " << where << ": the read-only open failed: " << ec.message());
    BOOST_REQUIRE_MESSAGE(!listing(d.path()).count(unnamed), "the seal let go before " << where << ": not renamed");
    BOOST_TEST(differences(*r, m) == "", "the seal let go before " << where);
    if (stale > 0) ++met;
  }
  BOOST_TEST_MESSAGE("read-only open racing a rename: the seal let go before each of " << points
                                                                                     << " calls; the open met the rename after " << met);
  BOOST_TEST(points > 10);
  BOOST_TEST(met >= 3);  // (and so started over)
}
