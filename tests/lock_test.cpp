// One writer per directory, in this process and across processes; readers alongside.
#define BOOST_TEST_MODULE lock
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <csignal>
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
