// log_store: the public API's behaviour.
#define BOOST_TEST_MODULE log_store
#include <boost/test/unit_test.hpp>

#include "no_threads.hpp"
#include "test_util.hpp"

#include <cctype>
#include <chrono>
#include <fstream>
#include <map>
#include <random>
#include <thread>

using namespace cask_test;

BOOST_AUTO_TEST_CASE(put_get_overwrite_erase) {
  temp_dir d("basic");
  auto db = string_store::open(d.path());
  BOOST_TEST(db.empty());
  BOOST_TEST(!db.get("missing").has_value());  // a missing key is not an error
  db.put("k", "v1");
  BOOST_TEST(*db.get("k") == "v1");
  db.put("k", "v2");
  BOOST_TEST(*db.get("k") == "v2");
  BOOST_TEST(db.size() == 1u);
  BOOST_TEST(db.contains("k"));
  BOOST_TEST(db.erase("k"));
  BOOST_TEST(!db.contains("k"));
  BOOST_TEST(!db.get("k").has_value());
  BOOST_TEST(!db.erase("k"));  // erasing a missing key reports false
  BOOST_TEST(db.size() == 0u);
  db.put("k", "v3");
  BOOST_TEST(*db.get("k") == "v3");
}

BOOST_AUTO_TEST_CASE(lookups_take_views_of_the_key) {
  temp_dir d("hetero");
  auto db = string_store::open(d.path());
  db.put(std::string("abc"), std::string("1"));
  const char* cstr = "abc";
  std::string_view sv = "abc";
  BOOST_TEST(*db.get(cstr) == "1");
  BOOST_TEST(*db.get(sv) == "1");
  BOOST_TEST(db.contains(sv));
  db.put(sv, std::string_view("2"));
  BOOST_TEST(*db.get(std::string("abc")) == "2");
  BOOST_TEST(db.erase(sv));
}

BOOST_AUTO_TEST_CASE(contents_survive_reopen_including_erases) {
  temp_dir d("reopen");
  std::map<std::string, std::string> model;
  std::mt19937 g(3);
  for (int round = 0; round < 4; ++round) {
    auto db = string_store::open(d.path());
    BOOST_REQUIRE_EQUAL(db.size(), model.size());
    for (const auto& [k, v] : model) BOOST_REQUIRE(db.get(k) == v);
    for (int i = 0; i < 500; ++i) {
      const std::string k = key_of(g() % 200);
      if (g() % 4 == 0) {
        BOOST_REQUIRE_EQUAL(db.erase(k), model.erase(k) == 1);
      } else {
        const std::string v = value_of(g(), g() % 300);
        db.put(k, v);
        model[k] = v;
      }
    }
  }
  auto db = string_store::open(d.path());
  BOOST_TEST(db.size() == model.size());
  for (int i = 0; i < 200; ++i) BOOST_REQUIRE(db.get(key_of(i)) == (model.count(key_of(i)) ? std::optional(model[key_of(i)]) : std::nullopt));
}

BOOST_AUTO_TEST_CASE(segments_rotate_at_the_size_limit_and_all_stay_readable) {
  temp_dir d("rotate");
  cask::options o;
  o.max_segment_bytes = 4096;
  {
    auto db = string_store::open(d.path(), o);
    for (int i = 0; i < 300; ++i) db.put(key_of(i), value_of(i));
    const auto st = db.stats();
    BOOST_TEST(st.segments > 5u);
    BOOST_TEST(st.keys == 300u);
    for (const auto& s : st.per_segment) BOOST_TEST(s.bytes <= 4096u);
    for (int i = 0; i < 300; ++i) BOOST_REQUIRE(db.get(key_of(i)) == value_of(i));
  }
  auto db = string_store::open(d.path(), o);
  for (int i = 0; i < 300; ++i) BOOST_REQUIRE(db.get(key_of(i)) == value_of(i));
  // Sealed segments are cut to their data on disk.
  for (const auto& f : segment_files(d.path())) BOOST_TEST(std::filesystem::file_size(f) <= 4096u);
}

BOOST_AUTO_TEST_CASE(a_record_larger_than_a_segment_gets_a_segment_of_its_own) {
  temp_dir d("big");
  cask::options o;
  o.max_segment_bytes = 4096;
  const std::string big(100000, 'B');
  {
    auto db = string_store::open(d.path(), o);
    db.put("small", "s");
    db.put("big", big);
    db.put("after", "a");
    BOOST_TEST(*db.get("big") == big);
  }
  auto db = string_store::open(d.path(), o);
  BOOST_TEST(*db.get("big") == big);
  BOOST_TEST(*db.get("small") == "s");
  BOOST_TEST(*db.get("after") == "a");
}

BOOST_AUTO_TEST_CASE(a_value_ref_outlives_overwrites_erases_rotation_and_close) {
  temp_dir d("ref");
  cask::options o;
  o.max_segment_bytes = 4096;
  std::optional<string_store::value_ref> ref;
  {
    auto db = string_store::open(d.path(), o);
    db.put("k", "first value");
    ref = db.get_ref("k");
    BOOST_REQUIRE(ref.has_value());
    BOOST_TEST(ref->view() == "first value");
    db.put("k", "second value");
    for (int i = 0; i < 200; ++i) db.put(key_of(i), value_of(i));  // several rotations
    db.erase("k");
    BOOST_TEST(ref->view() == "first value");
    BOOST_TEST(ref->decode() == "first value");
  }
  BOOST_TEST(ref->view() == "first value");  // after close
  BOOST_TEST(ref->size() == 11u);
}

BOOST_AUTO_TEST_CASE(visit_hands_the_value_bytes_to_a_callback_without_copying) {
  temp_dir d("visit");
  auto db = string_store::open(d.path());
  db.put("k", "the value");
  std::string seen;
  const std::byte* where = nullptr;
  BOOST_TEST(db.visit("k", [&](std::span<const std::byte> v) {
    seen.assign(reinterpret_cast<const char*>(v.data()), v.size());
    where = v.data();
  }));
  BOOST_TEST(seen == "the value");
  // The bytes are the ones in the mapping, the same a value_ref views.
  BOOST_TEST(where == db.get_ref("k")->bytes().data());
  int calls = 0;
  BOOST_TEST(!db.visit("missing", [&](std::span<const std::byte>) { ++calls; }));
  BOOST_TEST(calls == 0);
}

BOOST_AUTO_TEST_CASE(oversized_keys_and_values_are_refused_and_nothing_is_written) {
  temp_dir d("limits");
  cask::options o;
  o.max_key_bytes = 8;
  o.max_value_bytes = 16;
  auto db = string_store::open(d.path(), o);
  std::error_code ec;
  db.put(std::string(9, 'k'), "v", ec);
  BOOST_TEST((ec == cask::errc::key_too_large));
  db.put("k", std::string(17, 'v'), ec);
  BOOST_TEST((ec == cask::errc::value_too_large));
  BOOST_CHECK_THROW(db.put("k", std::string(17, 'v')), cask::error);
  BOOST_TEST(db.size() == 0u);
  db.put(std::string(8, 'k'), std::string(16, 'v'), ec);
  BOOST_TEST(!ec);
}

// max_key_bytes limits put only: a key stored under a larger limit is still
// found, and erased, after a reopen with a smaller one.
BOOST_AUTO_TEST_CASE(a_key_longer_than_the_limit_of_this_open_is_erased) {
  temp_dir d("shrunk_limit");
  const std::string long_key(16, 'k');
  string_store::open(d.path()).put(long_key, "v");
  cask::options o;
  o.max_key_bytes = 4;
  auto db = string_store::open(d.path(), o);
  BOOST_TEST(db.contains(long_key));
  BOOST_TEST(db.erase(long_key));
  BOOST_TEST(!db.contains(long_key));
  BOOST_TEST(db.size() == 0u);
  db.close();
  BOOST_TEST(!string_store::open(d.path(), o).contains(long_key));
}

BOOST_AUTO_TEST_CASE(invalid_options_are_refused) {
  temp_dir d("badopt");
  cask::options o;
  o.max_segment_bytes = 100;
  std::error_code ec;
  BOOST_TEST(!string_store::open(d.path(), o, ec).has_value());
  BOOST_TEST((ec == cask::errc::invalid_argument));
  o = {};
  o.max_key_bytes = (1u << 20) + 1;
  BOOST_TEST(!string_store::open(d.path(), o, ec).has_value());
  BOOST_TEST((ec == cask::errc::invalid_argument));
}

BOOST_AUTO_TEST_CASE(create_if_missing_and_error_if_exists) {
  temp_dir d("create");
  cask::options o;
  o.create_if_missing = false;
  std::error_code ec;
  BOOST_TEST(!string_store::open(d / "nope", o, ec).has_value());
  BOOST_TEST((ec == cask::errc::not_found));
  { string_store::open(d / "s").put("a", "b"); }
  o = {};
  o.error_if_exists = true;
  BOOST_TEST(!string_store::open(d / "s", o, ec).has_value());
  BOOST_TEST((ec == cask::errc::already_exists));
  try {
    string_store::open(d / "s", o);
    BOOST_FAIL("expected an exception");
  } catch (const cask::error& e) {
    BOOST_TEST((e.code() == cask::errc::already_exists));
    BOOST_TEST(e.path() == d / "s");
    BOOST_TEST(std::string(e.what()).find((d / "s").string()) != std::string::npos);
  }
}

// create_if_missing = false: a directory that exists but holds no store is
// not one; open creates no store in it (errc::not_found), writer or reader.
BOOST_AUTO_TEST_CASE(without_create_if_missing_an_empty_directory_is_not_a_store) {
  temp_dir d("create-empty");
  cask::options o;
  o.create_if_missing = false;
  for (const bool read_only : {false, true}) {
    o.read_only = read_only;
    std::error_code ec;
    auto db = string_store::open(d.path(), o, ec);
    BOOST_TEST(!db.has_value(), (read_only ? "read-only: " : "writer: ") << "opened");
    BOOST_TEST((ec == cask::errc::not_found), ec.message());
    db.reset();
    BOOST_TEST(segment_files(d.path()).empty());
    try {
      string_store::open(d.path(), o);
      BOOST_ERROR("expected an exception");
    } catch (const cask::error& e) {
      BOOST_TEST((e.code() == cask::errc::not_found));
      BOOST_TEST(e.path() == d.path());
    }
  }
  { string_store::open(d.path()).put("a", "b"); }
  o.read_only = false;
  BOOST_TEST((string_store::open(d.path(), o).get("a") == "b"));
}

// An open that error_if_exists or create_if_missing = false refuses changes
// nothing in the directory: not even the leftovers (temporary files) a
// writer's recovery would remove.
BOOST_AUTO_TEST_CASE(a_refused_open_leaves_the_directory_as_it_was) {
  temp_dir d("refused");
  const auto leftover = d / "s" / "0000000001.hint.tmp";
  { string_store::open(d / "s").put("a", "b"); }
  write_file(leftover, {'x'});
  cask::options o;
  o.error_if_exists = true;
  std::error_code ec;
  BOOST_TEST(!string_store::open(d / "s", o, ec).has_value());
  BOOST_TEST((ec == cask::errc::already_exists));
  BOOST_TEST(std::filesystem::exists(leftover));

  std::filesystem::create_directories(d / "e");
  write_file(d / "e" / "KEYDIR.tmp", {'x'});
  o = {};
  o.create_if_missing = false;
  BOOST_TEST(!string_store::open(d / "e", o, ec).has_value());
  BOOST_TEST((ec == cask::errc::not_found));
  BOOST_TEST(std::filesystem::exists(d / "e" / "KEYDIR.tmp"));
}

BOOST_AUTO_TEST_CASE(a_closed_store_reports_closed) {
  temp_dir d("closed");
  auto db = string_store::open(d.path());
  db.put("a", "1");
  db.close();
  BOOST_TEST(!db.is_open());
  std::error_code ec;
  db.put("a", "2", ec);
  BOOST_TEST((ec == cask::errc::closed));
  BOOST_TEST(!db.get("a", ec).has_value());
  BOOST_TEST((ec == cask::errc::closed));
  db.close();  // idempotent
  auto again = string_store::open(d.path());
  BOOST_TEST(*again.get("a") == "1");
}

// Like every fallible member, for_each has a std::error_code& form, which
// reports instead of throwing (here: errc::closed; damage as get() does).
BOOST_AUTO_TEST_CASE(for_each_reports_through_an_error_code) {
  temp_dir d("iter-ec");
  auto db = string_store::open(d.path());
  db.put("a", "1");
  db.put("b", "2");
  std::error_code ec = cask::errc::corruption;  // cleared by a call that succeeds
  std::size_t seen = 0;
  db.for_each([&](const std::string&, const std::string&) { ++seen; }, ec);
  BOOST_TEST(!ec);
  BOOST_TEST(seen == 2u);
  db.close();
  seen = 0;
  db.for_each([&](const std::string&, const std::string&) { ++seen; }, ec);
  BOOST_TEST((ec == cask::errc::closed));
  BOOST_TEST(seen == 0u);
}

BOOST_AUTO_TEST_CASE(a_moved_store_keeps_working_and_the_source_is_closed) {
  temp_dir d("move");
  auto a = string_store::open(d.path());
  a.put("x", "1");
  string_store b = std::move(a);
  BOOST_TEST(*b.get("x") == "1");
  BOOST_TEST(!a.is_open());  // NOLINT(bugprone-use-after-move): moved-from state is specified
  b.put("y", "2");
  BOOST_TEST(b.size() == 2u);
}

BOOST_AUTO_TEST_CASE(for_each_visits_every_live_entry_once) {
  temp_dir d("iter");
  cask::options o;
  o.max_segment_bytes = 8192;
  auto db = string_store::open(d.path(), o);
  std::map<std::string, std::string> model;
  for (int i = 0; i < 1000; ++i) {
    db.put(key_of(i), value_of(i, 20));
    model[key_of(i)] = value_of(i, 20);
  }
  for (int i = 0; i < 1000; i += 3) {
    db.erase(key_of(i));
    model.erase(key_of(i));
  }
  std::map<std::string, std::string> seen;
  db.for_each([&](const std::string& k, const std::string& v) { BOOST_REQUIRE(seen.emplace(k, v).second); });
  BOOST_TEST((seen == model));
  // The callback may write to the store.
  db.for_each([&](const std::string& k, const std::string&) { db.put(k, "rewritten"); });
  BOOST_TEST(*db.get(key_of(1)) == "rewritten");
}

BOOST_AUTO_TEST_CASE(stats_account_live_and_dead_bytes) {
  temp_dir d("stats");
  auto db = string_store::open(d.path());
  db.put("a", std::string(100, 'x'));  // 21 + 1 + 100 = 122 bytes
  db.put("b", std::string(100, 'y'));
  db.put("a", std::string(50, 'z'));   // the first "a" becomes dead: 122
  db.erase("b");                       // "b" dead (122) + tombstone (22)
  const auto st = db.stats();
  BOOST_TEST(st.keys == 1u);
  BOOST_TEST(st.live_bytes == 72u);
  BOOST_TEST(st.dead_bytes == 122u + 122u + 22u);
  BOOST_TEST(st.data_bytes == 32u + 122u * 2 + 72u + 22u);
  BOOST_TEST(st.keydir_bytes > 0u);
  BOOST_REQUIRE(st.per_segment.size() == 1u);
  BOOST_TEST(st.per_segment[0].active);
  db.close();
  // No background merge: the segment, sealed now and 72% dead, triggers one
  // at the first check (a second after open), which would leave nothing dead.
  cask::options o;
  o.merge.background = false;
  auto again = string_store::open(d.path(), o);
  const auto st2 = again.stats();  // recovery recomputes the same figures
  BOOST_TEST(st2.live_bytes == 72u);
  BOOST_TEST(st2.dead_bytes == 122u + 122u + 22u);
}

// An empty session leaves its segment cut to its header, and the next session
// writes into that same segment: empty sessions never pile up segments, and
// the writer's newest segment is never removed (recovery_test.cpp,
// damage_in_a_sealed_segment_stays_damage_after_empty_sessions).
BOOST_AUTO_TEST_CASE(empty_sessions_reuse_one_empty_segment) {
  temp_dir d("empty");
  { auto db = string_store::open(d.path()); }
  { auto db = string_store::open(d.path()); }
  auto segs = segment_files(d.path());
  BOOST_REQUIRE_EQUAL(segs.size(), 1u);
  BOOST_TEST(std::filesystem::file_size(segs[0]) == cask::format::file_header_size);
  { string_store::open(d.path()).put("a", "1"); }
  BOOST_TEST(segment_files(d.path()) == segs);  // "a" went into the empty segment
  { auto db = string_store::open(d.path()); }
  { auto db = string_store::open(d.path()); }
  segs = segment_files(d.path());
  BOOST_REQUIRE_EQUAL(segs.size(), 2u);
  BOOST_TEST(std::filesystem::file_size(segs[1]) == cask::format::file_header_size);
  BOOST_TEST(*string_store::open(d.path()).get("a") == "1");
}

struct always_traits : cask::default_traits {
  using sync = cask::sync_always;
};
struct interval_traits : cask::default_traits {
  using sync = cask::sync_interval;
};

BOOST_AUTO_TEST_CASE(sync_policies_write_and_read_back) {
  temp_dir d("sync");
  {
    auto db = cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, always_traits>::open(
        d / "always");
    for (int i = 0; i < 50; ++i) db.put(key_of(i), value_of(i));
    db.erase(key_of(0));
    db.sync();
  }
  {
    cask::options o;
    o.sync_interval = std::chrono::milliseconds(5);
    auto db = cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, interval_traits>::open(
        d / "interval", o);
    for (int i = 0; i < 50; ++i) db.put(key_of(i), value_of(i));
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  auto a = string_store::open(d / "always");
  auto b = string_store::open(d / "interval");
  BOOST_TEST(a.size() == 49u);
  BOOST_TEST(b.size() == 50u);
  for (int i = 1; i < 50; ++i) BOOST_REQUIRE(a.get(key_of(i)) == value_of(i));
}

BOOST_AUTO_TEST_CASE(concurrent_durable_writers_all_land) {
  temp_dir d("group");
  using store = cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, always_traits>;
  {
    auto db = store::open(d.path());
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&, t] {
        for (int i = 0; i < 100; ++i) db.put(key_of(t * 1000 + i), value_of(i));
      });
    for (auto& t : ts) t.join();
    BOOST_TEST(db.size() == 400u);
  }
  auto db = string_store::open(d.path());
  BOOST_TEST(db.size() == 400u);
}

BOOST_AUTO_TEST_CASE(a_read_only_store_reads_and_refuses_writes) {
  temp_dir d("ro");
  { string_store::open(d.path()).put("a", "1"); }
  cask::options o;
  o.read_only = true;
  auto db = string_store::open(d.path(), o);
  BOOST_TEST(*db.get("a") == "1");
  std::error_code ec;
  db.put("b", "2", ec);
  BOOST_TEST((ec == cask::errc::read_only));
  db.erase("a", ec);
  BOOST_TEST((ec == cask::errc::read_only));
  db.sync(ec);
  BOOST_TEST(!ec);  // nothing to make durable
}

namespace {
/// Bytes of `file`'s mappings in this process that are mapped in the page
/// tables (Rss in /proc/self/smaps): pages touched, or prefaulted.
std::uint64_t mapped_bytes_of(const std::filesystem::path& file) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool ours = false;
  std::uint64_t kb = 0;
  while (std::getline(in, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') < line.find(' ')) {
      ours = line.size() >= file.string().size() && line.ends_with(file.string());
    } else if (ours && line.starts_with("Rss:")) {
      kb += std::stoull(line.substr(4));
    }
  }
  return kb << 10;
}
}  // namespace

// Prefaulting: a background thread maps the active segment's pages about
// options::prefault_bytes ahead of the writer, so the writer takes no page
// faults (Linux 5.14 and later, MADV_POPULATE_WRITE). Without it, only the
// pages written are mapped.
BOOST_AUTO_TEST_CASE(the_active_segment_is_mapped_ahead_of_the_writer) {
  temp_dir d("prefault");
  for (const std::uint64_t ahead : {std::uint64_t{0}, std::uint64_t{2} << 20}) {
    cask::options o;
    o.prefault_bytes = ahead;
    o.merge.background = false;
    const auto dir = d / std::to_string(ahead);
    auto db = string_store::open(dir, o);
    db.put("k", "v");
    const auto seg = segment_files(dir).back();
    std::uint64_t mapped = mapped_bytes_of(seg);
    for (int i = 0; i < 500 && mapped < ahead; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      mapped = mapped_bytes_of(seg);
    }
    BOOST_TEST_MESSAGE("prefault_bytes " << ahead << ": " << mapped << " bytes of the active segment mapped");
    if (ahead == 0)
      BOOST_TEST(mapped <= 64u << 10);  // the page written, and a few the kernel may add
    else
      BOOST_TEST(mapped >= ahead);
  }
}

// The pages mapped ahead hold zeros and are cut off when a segment is sealed:
// with many rotations, small segments and prefaulting on, every sealed
// segment ends at its last record (recovery would report zeros after it as
// damage) and the store reopens to exactly what was written.
BOOST_AUTO_TEST_CASE(pages_mapped_ahead_never_stay_in_sealed_segments) {
  temp_dir d("prefault-seal");
  cask::options o;
  o.max_segment_bytes = 64u << 10;
  o.prefault_bytes = 32u << 10;
  o.merge.background = false;
  std::map<std::string, std::string> m;
  {
    auto db = string_store::open(d.path(), o);
    for (int i = 0; i < 3000; ++i) {
      const auto k = key_of(static_cast<std::uint64_t>(i % 700));
      m[k] = value_of(static_cast<std::uint64_t>(i), 90 + static_cast<std::size_t>(i % 40));
      db.put(k, m[k]);
    }
  }
  BOOST_TEST(segment_files(d.path()).size() >= 5u);
  std::vector<cask::recovery_event> events;
  o.reporter = [&](const cask::recovery_event& e) { events.push_back(e); };
  remove_index_files(d.path());  // scan every segment
  auto db = string_store::open(d.path(), o);
  BOOST_TEST(events.empty());
  BOOST_TEST(db.size() == m.size());
  for (const auto& [k, v] : m) BOOST_REQUIRE(db.get(k) == v);
}

// Where the system refuses a writer's background threads (a process or
// thread limit), open fails with that error, naming the directory, and
// stops the threads it had started (with one allowed, the second is
// refused): never std::terminate for a thread left running. What the
// refused opens leave is a store that opens and takes writes.
BOOST_AUTO_TEST_CASE(an_open_whose_threads_are_refused_fails_and_leaves_the_store_usable) {
  temp_dir d("nothreads");
  open_to_others(d.path(), /*writable=*/true);  // the child may run as another user
  for (const unsigned allowed : {0u, 1u}) {
    const auto dir = d / ("allowed" + std::to_string(allowed));
    const auto r = run_where_threads_are_refused(
        [&] {
          std::error_code ec;
          auto db = string_store::open(dir, cask::options{}, ec);
          if (db || ec != std::errc::resource_unavailable_try_again) return false;
          try {
            (void)string_store::open(dir);
          } catch (const cask::error& e) {
            return e.code() == std::errc::resource_unavailable_try_again && e.path() == dir;
          }
          return false;
        },
        allowed);
    BOOST_TEST((r == refused_threads_result::passed), allowed << " allowed: the child ended " << static_cast<int>(r));
    auto db = string_store::open(dir);
    BOOST_TEST(db.empty());
    db.put("k", "v");
    BOOST_TEST((db.get("k") == "v"));
  }
}
