// One writer, several readers, constant rotation: every read is linearizable
// and every value intact. Run under TSan and ASan by CI.
#define BOOST_TEST_MODULE concurrency
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <atomic>
#include <thread>

using namespace cask_test;

namespace {
constexpr int keys = 64;

// A value names its key and version and carries its own checksum.
std::string make_value(int key, std::uint64_t version) {
  std::string v = std::to_string(key) + ":" + std::to_string(version) + ":";
  v.resize(v.size() + version % 50, 'p');
  const std::uint32_t c = cask::crc32c::compute(reinterpret_cast<const std::byte*>(v.data()), v.size());
  return v + "#" + std::to_string(c);
}
/// The version in a value, or -1 if it is not intact or not for `key`.
long long check_value(int key, const std::string& v) {
  const auto hash = v.rfind('#');
  if (hash == std::string::npos) return -1;
  const std::string body = v.substr(0, hash);
  if (std::to_string(cask::crc32c::compute(reinterpret_cast<const std::byte*>(body.data()), body.size())) !=
      v.substr(hash + 1))
    return -1;
  const auto c1 = body.find(':');
  if (std::stoi(body.substr(0, c1)) != key) return -1;
  return std::stoll(body.substr(c1 + 1, body.find(':', c1 + 1) - c1 - 1));
}

struct versions {
  std::atomic<std::uint64_t> started[keys] = {};   // highest version whose put began
  std::atomic<std::uint64_t> finished[keys] = {};  // highest version whose put returned
};
}  // namespace

BOOST_AUTO_TEST_CASE(reads_are_linearizable_under_one_writer_and_rotation) {
  temp_dir d("lin");
  cask::options o;
  o.max_segment_bytes = 4096;  // rotate every ~40 writes
  auto db = string_store::open(d.path(), o);
  versions ver;
  for (int k = 0; k < keys; ++k) {
    db.put(key_of(k), make_value(k, 1));
    ver.started[k] = ver.finished[k] = 1;
  }
  std::atomic<bool> stop{false};
  std::atomic<long> reads{0}, violations{0};
  auto reader = [&](int id) {
    std::mt19937 g(static_cast<unsigned>(id));
    while (!stop.load(std::memory_order_relaxed)) {
      const int k = static_cast<int>(g() % keys);
      const std::uint64_t lo = ver.finished[k].load();
      std::optional<std::string> v;
      if (id % 2 == 0) {
        v = db.get(key_of(k));
      } else if (auto r = db.get_ref(key_of(k))) {
        v = std::string(r->view());
      }
      const std::uint64_t hi = ver.started[k].load();
      const long long got = v ? check_value(k, *v) : -1;
      if (got < 0 || static_cast<std::uint64_t>(got) < lo || static_cast<std::uint64_t>(got) > hi) {
        violations.fetch_add(1);
        BOOST_TEST_MESSAGE("key " << k << " read version " << got << " outside [" << lo << ", " << hi << "]");
      }
      reads.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::vector<std::thread> readers;
  for (int i = 0; i < 3; ++i) readers.emplace_back(reader, i);
  std::mt19937 g(99);
  for (int i = 0; i < 4000; ++i) {
    const int k = static_cast<int>(g() % keys);
    const std::uint64_t next = ver.started[k].load() + 1;
    ver.started[k].store(next);
    db.put(key_of(k), make_value(k, next));
    ver.finished[k].store(next);
  }
  stop = true;
  for (auto& t : readers) t.join();
  BOOST_TEST(violations.load() == 0);
  BOOST_TEST(reads.load() > 0);
  BOOST_TEST(db.stats().segments > 10u);
}

BOOST_AUTO_TEST_CASE(concurrent_writers_readers_and_iteration_stay_consistent) {
  temp_dir d("mix");
  cask::options o;
  o.max_segment_bytes = 8192;
  auto db = string_store::open(d.path(), o);
  std::atomic<bool> stop{false};
  std::atomic<long> bad{0};
  // Two writers on disjoint key ranges, erasing and rewriting.
  auto writer = [&](int base) {
    for (int i = 0; i < 1500; ++i) {
      const int k = base + i % 50;
      if (i % 7 == 0)
        db.erase(key_of(k));
      else
        db.put(key_of(k), make_value(k, static_cast<std::uint64_t>(i)));
    }
  };
  auto scanner = [&] {
    while (!stop.load()) {
      db.for_each([&](const std::string& k, const std::string& v) {
        if (check_value(std::stoi(k.substr(3)), v) < 0) bad.fetch_add(1);
      });
      (void)db.stats();
    }
  };
  std::thread s(scanner);
  std::thread w1(writer, 0), w2(writer, 1000);
  w1.join();
  w2.join();
  stop = true;
  s.join();
  BOOST_TEST(bad.load() == 0);
  db.close();
  auto again = string_store::open(d.path(), o);
  again.for_each([&](const std::string& k, const std::string& v) {
    BOOST_REQUIRE(check_value(std::stoi(k.substr(3)), v) >= 0);
  });
}
