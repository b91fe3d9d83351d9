// epoch_domain: synchronize() waits for read sections that began before it, and only for those.
#define BOOST_TEST_MODULE epoch
#include <boost/test/unit_test.hpp>

#include <cask/detail/epoch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

using cask::detail::epoch_domain;

BOOST_AUTO_TEST_CASE(synchronize_waits_for_an_earlier_reader) {
  epoch_domain d;
  std::atomic<int> stage{0};
  std::atomic<bool> reader_done{false};
  std::thread reader([&] {
    epoch_domain::guard g(d);
    stage = 1;
    while (stage.load() < 2) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    reader_done = true;
  });
  while (stage.load() < 1) std::this_thread::yield();
  stage = 2;
  d.synchronize();
  BOOST_TEST(reader_done.load());
  reader.join();
}

BOOST_AUTO_TEST_CASE(freed_objects_are_never_read_by_readers) {
  // Readers dereference the current pointer inside a section; the writer
  // swaps in a new object, synchronizes, then poisons and frees the old one.
  struct obj {
    std::atomic<int> alive{1};
  };
  epoch_domain d;
  std::atomic<obj*> cur{new obj};
  std::atomic<bool> stop{false};
  std::atomic<long> bad{0}, reads{0};
  auto reader = [&] {
    while (!stop.load(std::memory_order_relaxed)) {
      epoch_domain::guard g(d);
      obj* o = cur.load(std::memory_order_seq_cst);
      if (o->alive.load(std::memory_order_relaxed) != 1) bad.fetch_add(1);
      reads.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::vector<std::thread> rs;
  for (int i = 0; i < 3; ++i) rs.emplace_back(reader);
  while (reads.load() == 0) std::this_thread::yield();  // readers are running
  for (int i = 0; i < 2000 || reads.load() < 10000; ++i) {
    obj* old = cur.exchange(new obj, std::memory_order_release);
    d.synchronize();
    old->alive.store(0, std::memory_order_relaxed);  // a reader that still held it would see this
    delete old;
  }
  stop = true;
  for (auto& t : rs) t.join();
  delete cur.load();
  BOOST_TEST(bad.load() == 0);
  BOOST_TEST(reads.load() > 0);
}
