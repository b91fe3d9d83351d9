// detail::task and detail::job (recovery's parallel steps): a task given a
// thread runs on it, one not given one runs in get(), results and exceptions
// reach get(), destruction joins a running task and never runs one that had
// no thread, and a task whose thread the system refuses runs in get().
#define BOOST_TEST_MODULE task
#include <boost/test/unit_test.hpp>

#include <cask/detail/task.hpp>

#include "no_threads.hpp"

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using cask::detail::task;

BOOST_AUTO_TEST_CASE(a_task_given_a_thread_runs_on_it_before_get) {
  std::atomic<bool> ran{false};
  std::thread::id where;
  task<int> t(true, [&] {
    where = std::this_thread::get_id();
    ran = true;
    return 42;
  });
  while (!ran.load()) std::this_thread::yield();  // runs without get() being called
  BOOST_TEST(t.get() == 42);
  BOOST_TEST((where != std::this_thread::get_id()));
}

BOOST_AUTO_TEST_CASE(a_task_without_a_thread_runs_in_get_on_the_caller) {
  bool ran = false;
  std::thread::id where;
  task<std::string> t(false, [&] {
    where = std::this_thread::get_id();
    ran = true;
    return std::string(100, 'x');
  });
  BOOST_TEST(!ran);
  BOOST_TEST(t.get() == std::string(100, 'x'));
  BOOST_TEST(ran);
  BOOST_TEST((where == std::this_thread::get_id()));
}

// A thread the system will not start (a process or thread limit) costs only
// the parallelism: the task runs in get(), on the caller, as one not given a
// thread, and its exceptions still reach get().
BOOST_AUTO_TEST_CASE(a_task_whose_thread_is_refused_runs_in_get) {
  const auto r = cask_test::run_where_threads_are_refused([] {
    std::thread::id where;
    task<int> t(true, [&] {
      where = std::this_thread::get_id();
      return 42;
    });
    const bool result = t.get() == 42 && where == std::this_thread::get_id();
    task<void> v(true, [] { throw std::out_of_range("refused"); });
    bool rethrown = false;
    try {
      v.get();
    } catch (const std::out_of_range&) {
      rethrown = true;
    }
    return result && rethrown;
  });
  BOOST_TEST((r == cask_test::refused_threads_result::passed), "child ended " << static_cast<int>(r));
}

BOOST_AUTO_TEST_CASE(a_move_only_result_is_moved_out) {
  for (const bool thread : {true, false}) {
    task<std::unique_ptr<int>> t(thread, [] { return std::make_unique<int>(7); });
    const auto p = t.get();
    BOOST_REQUIRE(p);
    BOOST_TEST(*p == 7);
  }
}

BOOST_AUTO_TEST_CASE(what_the_function_throws_reaches_get) {
  for (const bool thread : {true, false}) {
    task<int> t(thread, []() -> int { throw std::runtime_error("boom"); });
    BOOST_CHECK_EXCEPTION(t.get(), std::runtime_error, [](const std::runtime_error& e) {
      return std::string(e.what()) == "boom";
    });
    task<void> v(thread, [] { throw std::out_of_range("void boom"); });
    BOOST_CHECK_THROW(v.get(), std::out_of_range);
  }
}

BOOST_AUTO_TEST_CASE(destruction_joins_a_running_task_and_never_runs_one_without_a_thread) {
  std::atomic<int> finished{0};
  {
    task<void> t(true, [&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      finished = 1;
    });
  }  // never waited for: the destructor waits
  BOOST_TEST(finished.load() == 1);
  bool ran = false;
  { task<void> t(false, [&] { ran = true; }); }
  BOOST_TEST(!ran);
  // A thrown exception never waited for is dropped, not std::terminate.
  { task<int> t(true, []() -> int { throw std::runtime_error("unseen"); }); }
}

BOOST_AUTO_TEST_CASE(tasks_in_a_deque_keep_their_place_as_recovery_uses_them) {
  // Recovery keeps up to two prepares ahead in a deque: emplaced at the
  // back, taken from the front, cleared (joined) on an error.
  std::deque<task<int>> ahead;
  std::vector<int> got;
  int next = 0;
  auto launch = [&] {
    if (next == 50) return;
    const int k = next++;
    ahead.emplace_back(k % 2 == 0, [k] { return k * k; });
  };
  launch();
  launch();
  while (!ahead.empty()) {
    got.push_back(ahead.front().get());
    ahead.pop_front();
    launch();
    if (got.size() == 40) {
      ahead.clear();
      break;
    }
  }
  BOOST_TEST(got.size() == 40u);
  for (int k = 0; k < 40; ++k) BOOST_TEST(got[static_cast<std::size_t>(k)] == k * k);
}
