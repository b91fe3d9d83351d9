// bench/workloads.cpp - the child side: data, timing, and every workload group.
//
// Every key order, every value and every operation sequence derives from
// params::seed alone, so all engines see the same bytes in the same order.
// Index arrays are generated before a timed loop; keys are formatted and
// values located (in a 1 MiB pool of random bytes) inside it, the same for
// every engine. Every read is verified byte for byte against the value the
// key must hold; a wrong value or a lost key stops the run.
#include "engine.hpp"
#include "harness.hpp"

#include <cask/checksum.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <latch>
#include <random>
#include <stdexcept>
#include <thread>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <x86intrin.h>

namespace bench {
namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// ---- output ----

void emit(const std::string& workload, const std::string& metric, double v) {
  std::printf("R\t%s\t%s\t%.9g\n", workload.c_str(), metric.c_str(), v);
  std::fflush(stdout);
}
void note(const std::string& text) {
  std::printf("N\t%s\n", text.c_str());
  std::fflush(stdout);
}
void progress(const std::string& text) {
  std::fprintf(stderr, "    %s\n", text.c_str());
}

// ---- latency: the TSC, one read per operation ----

double g_ns_per_tick = 1.0;

inline std::uint64_t ticks() noexcept { return __rdtsc(); }

void calibrate_ticks() {
  const auto t0 = clock_type::now();
  const std::uint64_t c0 = ticks();
  while (seconds_since(t0) < 0.02) {
  }
  const double ns = std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
  g_ns_per_tick = ns / double(ticks() - c0);
}

/// Log-linear histogram of tick counts: 16 sub-buckets per power of two (6% resolution).
class histogram {
 public:
  void add(std::uint64_t v) noexcept {
    ++b_[index(v)];
    ++n_;
  }
  void merge(const histogram& o) noexcept {
    for (std::size_t i = 0; i < b_.size(); ++i) b_[i] += o.b_[i];
    n_ += o.n_;
  }
  /// The q-quantile in nanoseconds (bucket midpoint).
  double quantile_ns(double q) const noexcept {
    if (!n_) return 0;
    const auto rank = static_cast<std::uint64_t>(std::ceil(q * double(n_)));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < b_.size(); ++i) {
      seen += b_[i];
      if (seen >= rank && b_[i]) return midpoint(i) * g_ns_per_tick;
    }
    return 0;
  }

 private:
  static std::size_t index(std::uint64_t v) noexcept {
    if (v < 16) return static_cast<std::size_t>(v);
    const unsigned e = 63u - static_cast<unsigned>(__builtin_clzll(v));
    return (e - 3) * 16 + ((v >> (e - 4)) & 15);
  }
  static double midpoint(std::size_t i) noexcept {
    if (i < 16) return double(i);
    const unsigned e = static_cast<unsigned>(i / 16) + 3;
    const double lo = double((16 + i % 16) << (e - 4));
    return lo + double(std::uint64_t{1} << (e - 4)) / 2;
  }
  std::array<std::uint64_t, 1024> b_{};
  std::uint64_t n_ = 0;
};

struct phase {
  std::size_t ops = 0;
  double secs = 0;
  histogram lat;
};

void report(const std::string& w, const phase& ph) {
  emit(w, "ops", double(ph.ops));
  emit(w, "secs", ph.secs);
  emit(w, "ops_per_sec", ph.secs > 0 ? double(ph.ops) / ph.secs : 0);
  emit(w, "p50_ns", ph.lat.quantile_ns(0.50));
  emit(w, "p99_ns", ph.lat.quantile_ns(0.99));
  emit(w, "p999_ns", ph.lat.quantile_ns(0.999));
  progress(w + ": " + std::to_string(ph.ops) + " ops in " + std::to_string(ph.secs) + " s = " +
           std::to_string(static_cast<long long>(ph.secs > 0 ? double(ph.ops) / ph.secs : 0)) + " ops/s");
}

/// Runs op(i) for i in [0, n) in this thread, timing each; stops early, after
/// a whole number of 1024 operations, once `budget` seconds have passed.
template <class Op>
phase timed(std::size_t n, Op&& op, double budget = 0) {
  phase ph;
  const auto t0 = clock_type::now();
  const auto deadline = t0 + std::chrono::duration<double>(budget > 0 ? budget : 1e9);
  std::uint64_t prev = ticks();
  std::size_t i = 0;
  for (; i < n; ++i) {
    if ((i & 1023) == 0 && i && clock_type::now() >= deadline) break;
    op(i);
    const std::uint64_t t = ticks();
    ph.lat.add(t - prev);
    prev = t;
  }
  ph.secs = seconds_since(t0);
  ph.ops = i;
  return ph;
}

/// Runs body(thread index, histogram&) -> ops done in `threads` threads started together.
template <class Body>
phase timed_threads(std::size_t threads, Body&& body) {
  std::vector<histogram> hs(threads);
  std::vector<std::size_t> done(threads, 0);
  std::vector<std::exception_ptr> errors(threads);
  std::latch ready(static_cast<std::ptrdiff_t>(threads) + 1), go(1);
  std::vector<std::thread> ts;
  for (std::size_t t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      ready.count_down();
      go.wait();
      try {
        done[t] = body(t, hs[t]);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  ready.arrive_and_wait();
  const auto t0 = clock_type::now();
  go.count_down();
  for (auto& th : ts) th.join();
  phase ph;
  ph.secs = seconds_since(t0);
  for (std::size_t t = 0; t < threads; ++t) {
    if (errors[t]) std::rethrow_exception(errors[t]);
    ph.ops += done[t];
    ph.lat.merge(hs[t]);
  }
  return ph;
}

// ---- process and disk figures ----

struct memory_figures {
  double rss = 0, anon = 0, file = 0, hwm = 0;  // bytes
};
memory_figures memory_now() {
  memory_figures m;
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    auto field = [&](const char* name, double& out) {
      if (line.rfind(name, 0) == 0) out = std::atof(line.c_str() + std::strlen(name)) * 1024.0;
    };
    field("VmRSS:", m.rss);
    field("RssAnon:", m.anon);
    field("RssFile:", m.file);
    field("VmHWM:", m.hwm);
  }
  return m;
}

struct disk_figures {
  double allocated = 0, apparent = 0;
};
disk_figures disk_usage(const std::filesystem::path& dir) {
  disk_figures d;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      d.allocated += double(st.st_blocks) * 512.0;
      d.apparent += double(st.st_size);
    }
  }
  return d;
}

/// The page cache's copies of every file under `dir`: dropped (what is dirty
/// written back first), so that the next open reads from the device, as after
/// a reboot; or read in, so that it reads from memory. The store must be
/// closed for a drop: a page still mapped is not dropped. A file that goes
/// while this runs (an engine's background work) is passed over.
int open_if_there(const std::filesystem::path& f) {
  const int fd = ::open(f.c_str(), O_RDONLY);
  if (fd < 0 && errno != ENOENT) throw std::runtime_error("cannot open " + f.string());
  return fd;
}
void drop_cached(const std::filesystem::path& dir) {
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir)) {
    std::error_code ec;
    if (!f.is_regular_file(ec)) continue;
    const int fd = open_if_there(f.path());
    if (fd < 0) continue;
    const bool ok = ::fdatasync(fd) == 0 && ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
    ::close(fd);
    if (!ok) throw std::runtime_error("cannot drop the cached pages of " + f.path().string());
  }
}
/// Writes back the dirty pages of every file under `dir` (fdatasync), before
/// a timed phase that follows one that wrote: the write-back a phase leaves
/// to the kernel (every engine's page cache, and cask's background seal)
/// is then not charged to the phase after it.
void write_back(const std::filesystem::path& dir) {
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir)) {
    std::error_code ec;
    if (!f.is_regular_file(ec)) continue;
    const int fd = open_if_there(f.path());
    if (fd < 0) continue;  // (removed meanwhile: a merge's input, a renamed temporary file)
    const bool ok = ::fdatasync(fd) == 0;
    ::close(fd);
    if (!ok) throw std::runtime_error("cannot write back " + f.path().string());
  }
}
void warm_cached(const std::filesystem::path& dir) {
  std::vector<char> buf(1 << 20);
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir)) {
    std::error_code ec;
    if (!f.is_regular_file(ec)) continue;
    const int fd = open_if_there(f.path());
    if (fd < 0) continue;
    while (::read(fd, buf.data(), buf.size()) > 0) {
    }
    ::close(fd);
  }
}

void emit_disk(const std::string& w, const std::string& prefix, const std::filesystem::path& dir) {
  const auto d = disk_usage(dir);
  emit(w, prefix + "disk_bytes", d.allocated);
  emit(w, prefix + "disk_apparent_bytes", d.apparent);
}

// ---- data ----

inline std::uint64_t mix64(std::uint64_t x) noexcept {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

constexpr std::uint32_t deleted = 0xffffffffu;

/// Keys, values, operation orders and the version each key must hold.
class dataset {
 public:
  dataset(const params& p, std::size_t n, std::size_t value_size)
      : n_(n), key_size_(p.key_size), value_size_(value_size), seed_(p.seed), ver_(new std::atomic<std::uint32_t>[n]) {
    const std::size_t digits = std::to_string(2 * n + 1).size();
    if (key_size_ < digits + 1)
      throw std::runtime_error("--key-size " + std::to_string(key_size_) + " is too small for " + std::to_string(n) +
                               " keys (needs " + std::to_string(digits + 1) + ")");
    std::mt19937_64 rng(seed_ ^ 0x5eedull);
    pool_.resize(pool_span + value_size_);
    for (std::size_t i = 0; i + 8 <= pool_.size(); i += 8) {
      const std::uint64_t r = rng();
      std::memcpy(pool_.data() + i, &r, 8);
    }
    for (std::size_t i = 0; i < n; ++i) ver_[i].store(deleted, std::memory_order_relaxed);
  }

  std::size_t size() const noexcept { return n_; }
  std::size_t key_size() const noexcept { return key_size_; }
  std::size_t value_size() const noexcept { return value_size_; }

  /// Key of item i: id 2i ("present" keys); missing_key: id 2i+1, never written,
  /// interleaved with the present ones in key order.
  std::string_view key(std::uint64_t i, char* buf) const noexcept { return format(2 * i, buf); }
  std::string_view missing_key(std::uint64_t i, char* buf) const noexcept { return format(2 * i + 1, buf); }

  /// The value item i holds at `version`: value_size bytes of the random pool.
  std::string_view value(std::uint64_t i, std::uint32_t version) const noexcept {
    const std::uint64_t off = mix64(seed_ ^ (i * 0x9e3779b97f4a7c15ull) ^ (std::uint64_t{version} << 40)) % pool_span;
    return {pool_.data() + off, value_size_};
  }

  std::atomic<std::uint32_t>& version(std::uint64_t i) noexcept { return ver_[i]; }

  /// Whether `got` is the value of item i at a version in [lo, its version now + 1]
  /// (a concurrent writer may have stored the next version and not yet counted it).
  bool matches(std::uint64_t i, std::uint32_t lo, std::string_view got) const noexcept {
    if (got == value(i, lo)) return true;
    const std::uint32_t hi = ver_[i].load(std::memory_order_acquire);
    for (std::uint32_t v = lo + 1; v <= hi + 1 && v != deleted; ++v)
      if (got == value(i, v)) return true;
    return false;
  }

  std::vector<std::uint32_t> permutation(std::uint64_t salt) const {
    std::vector<std::uint32_t> v(n_);
    for (std::size_t i = 0; i < n_; ++i) v[i] = static_cast<std::uint32_t>(i);
    std::mt19937_64 rng(seed_ * 1000003 + salt);
    for (std::size_t i = n_; i > 1; --i) std::swap(v[i - 1], v[rng() % i]);
    return v;
  }
  std::vector<std::uint32_t> uniform(std::size_t count, std::uint64_t salt) const {
    std::vector<std::uint32_t> v(count);
    std::mt19937_64 rng(seed_ * 1000003 + salt);
    for (auto& x : v) x = static_cast<std::uint32_t>(rng() % n_);
    return v;
  }
  /// YCSB's scrambled Zipfian (theta 0.99): a few keys are hot, spread over the key space.
  std::vector<std::uint32_t> zipfian(std::size_t count, std::uint64_t salt) const {
    const double theta = 0.99;
    double zetan = 0;
    for (std::size_t i = 1; i <= n_; ++i) zetan += 1.0 / std::pow(double(i), theta);
    const double zeta2 = 1.0 + 1.0 / std::pow(2.0, theta);
    const double alpha = 1.0 / (1.0 - theta);
    const double eta = (1.0 - std::pow(2.0 / double(n_), 1.0 - theta)) / (1.0 - zeta2 / zetan);
    std::mt19937_64 rng(seed_ * 1000003 + salt);
    std::uniform_real_distribution<double> u01(0.0, 1.0);
    std::vector<std::uint32_t> v(count);
    for (auto& x : v) {
      const double u = u01(rng);
      const double uz = u * zetan;
      std::uint64_t r;
      if (uz < 1.0) {
        r = 0;
      } else if (uz < 1.0 + std::pow(0.5, theta)) {
        r = 1;
      } else {
        r = static_cast<std::uint64_t>(double(n_) * std::pow(eta * u - eta + 1.0, alpha));
      }
      x = static_cast<std::uint32_t>(mix64(r ^ 0xcbf29ce484222325ull) % n_);
    }
    return v;
  }

 private:
  static constexpr std::size_t pool_span = std::size_t{1} << 20;

  std::string_view format(std::uint64_t id, char* buf) const noexcept {
    static constexpr char digits2[] =
        "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
        "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
        "8081828384858687888990919293949596979899";
    char* p = buf + key_size_;
    while (id >= 100) {
      const auto d = static_cast<std::size_t>(id % 100) * 2;
      id /= 100;
      *--p = digits2[d + 1];
      *--p = digits2[d];
    }
    if (id >= 10) {
      *--p = digits2[id * 2 + 1];
      *--p = digits2[id * 2];
    } else {
      *--p = static_cast<char>('0' + id);
    }
    while (p > buf + 1) *--p = '0';
    buf[0] = 'k';
    return {buf, key_size_};
  }

  std::size_t n_, key_size_, value_size_;
  std::uint64_t seed_;
  std::vector<char> pool_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> ver_;
};

/// Starts loading the version of the item `ahead` operations on, so the
/// harness's own bookkeeping adds no cache miss to the engine's.
inline void prefetch_version(dataset& d, const std::vector<std::uint32_t>& ids, std::size_t j) {
  constexpr std::size_t ahead = 16;
  if (j + ahead < ids.size()) __builtin_prefetch(&d.version(ids[j + ahead]));
}

/// A key buffer per call site (keys are at most a few hundred bytes).
struct key_buf {
  char b[512];
};

[[noreturn]] void verification_failed(const std::string& what, std::string_view key) {
  throw std::runtime_error("VERIFICATION FAILED: " + what + " for key " + std::string(key));
}

/// Reads item i and checks the value byte for byte.
void checked_read(engine& e, dataset& d, std::uint32_t i, char* kb) {
  const std::uint32_t v = d.version(i).load(std::memory_order_acquire);
  const auto k = d.key(i, kb);
  const read_status st = e.get(k, [&](std::string_view got) { return d.matches(i, v, got); });
  if (v == deleted) {
    if (st != read_status::missing) verification_failed("an erased key was found", k);
  } else if (st == read_status::missing) {
    verification_failed("a stored key was not found", k);
  } else if (st == read_status::mismatch) {
    verification_failed("wrong value", k);
  }
}

void checked_missing(engine& e, dataset& d, std::uint32_t i, char* kb) {
  const auto k = d.missing_key(i, kb);
  if (e.get(k, [](std::string_view) { return false; }) != read_status::missing)
    verification_failed("a key never written was found", k);
}

void put_version(engine& e, dataset& d, std::uint32_t i, std::uint32_t v, char* kb) {
  e.put(d.key(i, kb), d.value(i, v));
  d.version(i).store(v, std::memory_order_release);
}

/// Every item read back and checked (untimed).
void verify_all(engine& e, dataset& d, const std::string& when) {
  key_buf kb;
  for (std::uint32_t i = 0; i < d.size(); ++i) checked_read(e, d, i, kb.b);
  progress("verified all " + std::to_string(d.size()) + " keys " + when);
}

/// Up to `count` items, spread over all of them, read back and checked (untimed).
void verify_sample(engine& e, dataset& d, std::size_t count, const std::string& when) {
  if (count >= d.size()) return verify_all(e, d, when);
  key_buf kb;
  const std::size_t step = d.size() / count;
  for (std::size_t i = 0; i < d.size(); i += step) checked_read(e, d, static_cast<std::uint32_t>(i), kb.b);
  progress("verified every " + std::to_string(step) + "th key " + when);
}

engine_config config_for(const params& p, const std::filesystem::path& dir, std::size_t keys, std::size_t vsize,
                         bool durable = false) {
  engine_config c;
  c.dir = dir;
  c.durable = durable;
  c.expected_keys = keys;
  c.value_size = vsize;
  c.cask_read = p.cask_read == "get" ? cask_read_mode::get : p.cask_read == "ref" ? cask_read_mode::ref
                                                                                  : cask_read_mode::visit;
  return c;
}

std::unique_ptr<engine> make(const std::string& name) {
  for (const auto& info : engines())
    if (info.name == name) return info.make();
  throw std::runtime_error("unknown engine " + name);
}

void emit_figures(const std::string& w, const engine& e) {
  for (const auto& [name, v] : e.figures()) emit(w, name, v);
}

void emit_settings(const engine& e) {
  std::printf("S\t%s\n", e.settings().c_str());
  std::fflush(stdout);
}

void emit_memory(const std::string& w, const engine& e) {
  const auto m = memory_now();
  emit(w, "rss_bytes", m.rss);
  emit(w, "rss_anon_bytes", m.anon);
  emit(w, "rss_file_bytes", m.file);
  if (auto b = e.index_bytes_per_key()) emit(w, "index_bytes_per_key", *b);
}

/// Fills items in `order` at version v.
phase fill(engine& e, dataset& d, const std::vector<std::uint32_t>& order, std::uint32_t v) {
  key_buf kb;
  return timed(order.size(), [&](std::size_t j) {
    prefetch_version(d, order, j);
    put_version(e, d, order[j], v, kb.b);
  });
}

// ---- groups ----

void group_fillseq(const params& p, const std::string& name, const std::filesystem::path& dir) {
  dataset d(p, p.num, p.value_size);
  auto e = make(name);
  e->open(config_for(p, dir, p.num, p.value_size));
  emit_settings(*e);
  key_buf kb;
  report("fillseq", timed(d.size(), [&](std::size_t i) { put_version(*e, d, static_cast<std::uint32_t>(i), 0, kb.b); }));
  emit_disk("fillseq", "", dir);
  verify_sample(*e, d, 100000, "after fillseq");
  e->close();
}

/// One writer (rate-limited) and `readers` reader threads doing `reads` reads in all.
void read_while_writing(const params& p, engine& e, dataset& d, std::size_t readers, std::size_t reads) {
  const std::string w = "readwhilewriting" + std::to_string(readers);
  const auto ids = d.uniform(reads, 70 + readers);
  const auto wids = d.uniform(d.size(), 80 + readers);
  std::atomic<bool> stop{false};
  std::size_t writes = 0;
  double write_secs = 0;
  std::exception_ptr werr;
  std::thread writer([&] {
    try {
      key_buf kb;
      const auto t0 = clock_type::now();
      for (std::size_t j = 0; !stop.load(std::memory_order_relaxed); ++j) {
        const std::uint32_t i = wids[j % wids.size()];
        put_version(e, d, i, d.version(i).load(std::memory_order_relaxed) + 1, kb.b);
        ++writes;
        if (p.rww_write_rate && (writes & 63) == 0) {
          const auto due = t0 + std::chrono::nanoseconds(static_cast<std::int64_t>(double(writes) * 1e9 /
                                                                                   double(p.rww_write_rate)));
          if (clock_type::now() < due) std::this_thread::sleep_until(due);
        }
      }
      write_secs = seconds_since(t0);
    } catch (...) {
      werr = std::current_exception();
    }
  });
  phase ph;
  try {
    const auto deadline = clock_type::now() + std::chrono::duration<double>(p.max_seconds);
    ph = timed_threads(readers, [&](std::size_t t, histogram& h) {
      key_buf kb;
      const std::size_t per = reads / readers, from = t * per;
      std::uint64_t prev = ticks();
      std::size_t j = from;
      for (; j < from + per; ++j) {
        if (((j - from) & 1023) == 0 && j > from && clock_type::now() >= deadline) break;
        prefetch_version(d, ids, j);
        checked_read(e, d, ids[j], kb.b);
        const std::uint64_t now = ticks();
        h.add(now - prev);
        prev = now;
      }
      return j - from;
    });
  } catch (...) {
    stop = true;
    writer.join();
    throw;
  }
  stop = true;
  writer.join();
  if (werr) std::rethrow_exception(werr);
  report(w, ph);
  emit(w, "writer_ops_per_sec", write_secs > 0 ? double(writes) / write_secs : 0);
}

phase ycsb(engine& e, dataset& d, double read_fraction, std::uint64_t salt, double budget) {
  const auto ids = d.zipfian(d.size(), salt);
  std::vector<std::uint8_t> is_read(d.size());
  std::mt19937_64 rng(salt);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  for (auto& r : is_read) r = u01(rng) < read_fraction;
  key_buf kb;
  return timed(d.size(), [&](std::size_t j) {
    prefetch_version(d, ids, j);
    const std::uint32_t i = ids[j];
    if (is_read[j]) {
      checked_read(e, d, i, kb.b);
    } else {
      put_version(e, d, i, d.version(i).load(std::memory_order_relaxed) + 1, kb.b);
    }
  }, budget);
}

void group_main(const params& p, const std::string& name, const std::filesystem::path& dir) {
  dataset d(p, p.num, p.value_size);
  const std::size_t n = d.size();
  auto e = make(name);
  const auto cfg = config_for(p, dir, n, p.value_size);
  e->open(cfg);
  emit_settings(*e);
  key_buf kb;

  auto want = [&](const char* w) { return p.only.empty() || std::find(p.only.begin(), p.only.end(), w) != p.only.end(); };

  report("fillrandom", fill(*e, d, d.permutation(1), 0));
  emit_disk("fillrandom", "", dir);
  emit_memory("fillrandom", *e);

  if (want("overwrite")) {
    write_back(dir);
    report("overwrite", fill(*e, d, d.permutation(2), 1));
    emit_disk("overwrite", "", dir);
  }
  write_back(dir);  // (and after each phase below that writes)
  if (want("readrandom")) {
    const auto ids = d.uniform(n, 3);
    report("readrandom", timed(n, [&](std::size_t j) {
             prefetch_version(d, ids, j);
             checked_read(*e, d, ids[j], kb.b);
           }, p.max_seconds));
  }
  if (want("readmissing")) {
    const auto ids = d.uniform(n, 4);
    report("readmissing", timed(n, [&](std::size_t j) { checked_missing(*e, d, ids[j], kb.b); }, p.max_seconds));
  }
  if (want("ycsb_a")) report("ycsb_a", ycsb(*e, d, 0.5, 5, p.max_seconds)), write_back(dir);
  if (want("ycsb_b")) report("ycsb_b", ycsb(*e, d, 0.95, 6, p.max_seconds)), write_back(dir);
  if (want("readwhilewriting1")) read_while_writing(p, *e, d, 1, n), write_back(dir);
  if (want("readwhilewriting2")) read_while_writing(p, *e, d, 2, n), write_back(dir);

  if (want("reopen")) {
    const auto t0 = clock_type::now();
    e->close();
    emit("reopen", "close_ms", seconds_since(t0) * 1e3);
    emit_disk("reopen", "closed_", dir);
    // Opens the closed store and times it as workload w.
    auto timed_open = [&](const std::string& w, const std::string& what) {
      const auto t1 = clock_type::now();
      e->open(cfg);
      const double secs = seconds_since(t1);
      emit(w, "open_ms", secs * 1e3);
      emit(w, "open_ns_per_key", secs * 1e9 / double(n));
      emit_figures(w, *e);
      progress(what + ": " + std::to_string(secs * 1e3) + " ms");
      verify_sample(*e, d, 100000, "after " + what);
    };
    timed_open("reopen", "reopen");
    // Each open below finds the page cache as it says: warm (every file
    // read in first) or cold (every file dropped from it first, as after a
    // reboot); the reads that verify an open warm some of it.
    e->close();
    drop_cached(dir);
    timed_open("reopen_cold", "reopen, cold page cache");
    const auto hints = e->hint_files(dir);
    if (!hints.empty()) {
      // cask's keydir snapshot (KEYDIR) spares the hint files at a clean
      // restart: time them without it, then a scan without either.
      const auto figs = e->figures();
      const bool snapshot = std::any_of(figs.begin(), figs.end(), [](const auto& f) {
        return f.first == "from_keydir_snapshot" && f.second > 0;
      });
      auto remove = [&](bool all) {
        for (const auto& h : e->hint_files(dir))
          if (all || h.filename() == "KEYDIR") std::filesystem::remove(h);
      };
      if (snapshot) {
        e->close();
        remove(false);
        warm_cached(dir);
        timed_open("reopen_hints", "reopen from hint files");
        e->close();
        remove(false);  // (written again at close)
        drop_cached(dir);
        timed_open("reopen_hints_cold", "reopen from hint files, cold page cache");
      }
      e->close();
      remove(true);
      warm_cached(dir);
      timed_open("reopen_scan", "reopen by full scan");
      e->close();
      remove(true);  // (written again after the scan, and at close)
      drop_cached(dir);
      timed_open("reopen_scan_cold", "reopen by full scan, cold page cache");
    } else if (name == "cask") {
      note("cask wrote no hint files: reopen is a full scan of the segments");
    }
    warm_cached(dir);  // what follows, as before these opens: on a warm cache
  }

  if (want("deleterandom")) {
    const auto order = d.permutation(9);
    const bool presence = e->erase_reports_presence();
    report("deleterandom", timed(n, [&](std::size_t j) {
             const std::uint32_t i = order[j];
             const bool had = e->erase(d.key(i, kb.b));
             if (presence && !had) verification_failed("erase did not find a stored key", d.key(i, kb.b));
             d.version(i).store(deleted, std::memory_order_relaxed);
           }));
    const auto sample = d.uniform(std::min<std::size_t>(n, 10000), 10);
    for (const auto i : sample) checked_read(*e, d, i, kb.b);
  }
  emit("main", "hwm_bytes", memory_now().hwm);
  e->close();
}

void group_fillsync(const params& p, const std::string& name, const std::filesystem::path& dir, std::size_t threads) {
  const std::string w = "fillsync" + std::string(threads == 1 ? "1" : "8");
  auto e = make(name);
  if (!e->supports_durable()) {
    note(w + ": " + name + " has no durable mode; skipped");
    return;
  }
  if (threads > 1 && !e->concurrent_writes()) {
    note(w + ": " + name + " does not allow concurrent writers; skipped");
    return;
  }
  dataset d(p, p.num, p.value_size);
  e->open(config_for(p, dir, d.size(), p.value_size, /*durable=*/true));
  emit_settings(*e);
  const auto order = d.permutation(11);
  std::vector<std::size_t> counts(threads, 0);
  const auto deadline = clock_type::now() + std::chrono::duration<double>(p.sync_seconds);
  const phase ph = timed_threads(threads, [&](std::size_t t, histogram& h) {
    key_buf kb;
    std::size_t done = 0;
    std::uint64_t prev = ticks();
    for (std::size_t j = t; j < order.size(); j += threads) {
      put_version(*e, d, order[j], 0, kb.b);
      ++done;
      const std::uint64_t now = ticks();
      h.add(now - prev);
      prev = now;
      if (clock_type::now() >= deadline) break;
    }
    counts[t] = done;
    return done;
  });
  report(w, ph);
  emit(w, "threads", double(threads));
  // Everything each thread wrote reads back (versions of unwritten items are `deleted`).
  {
    key_buf kb;
    for (std::size_t t = 0; t < threads; ++t)
      for (std::size_t k = 0; k < counts[t]; ++k) checked_read(*e, d, order[t + k * threads], kb.b);
    progress("verified every key written " + w);
  }
  e->close();
}

void group_crash(const params& p, const std::string& name, const std::filesystem::path& dir) {
  dataset d(p, p.num, p.value_size);
  const auto order = d.permutation(12);
  const auto cfg = config_for(p, dir, d.size(), p.value_size);
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::fflush(stdout);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    try {
      auto e = make(name);
      e->open(cfg);
      key_buf kb;
      for (const auto i : order) e->put(d.key(i, kb.b), d.value(i, 0));
      const char c = 'x';
      if (::write(fds[1], &c, 1) != 1) ::_exit(3);
      for (;;) ::pause();  // killed here, the store open and never closed
    } catch (const std::exception& ex) {
      std::fprintf(stderr, "crash loader: %s\n", ex.what());
      ::_exit(2);
    }
  }
  ::close(fds[1]);
  char c = 0;
  const bool loaded = ::read(fds[0], &c, 1) == 1;
  ::close(fds[0]);
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!loaded) throw std::runtime_error("the crash loader failed before it had loaded");
  for (const auto i : order) d.version(i).store(0, std::memory_order_relaxed);

  auto e = make(name);
  const auto t0 = clock_type::now();
  e->open(cfg);
  const double secs = seconds_since(t0);
  emit_settings(*e);
  emit("crashreopen", "open_ms", secs * 1e3);
  emit("crashreopen", "open_ns_per_key", secs * 1e9 / double(d.size()));
  emit_figures("crashreopen", *e);
  progress("open after SIGKILL: " + std::to_string(secs * 1e3) + " ms");
  // A killed process loses nothing that reached the page cache: every key must be there.
  verify_all(*e, d, "after the crash");
  e->close();
}

/// Runs e.merge() while another thread calls op(j, key buffer) for j = 0, 1,
/// ... until the merge returns. Returns the merge's seconds and op's calls per
/// second; rethrows what either threw.
template <class Op>
std::pair<double, double> beside_merge(engine& e, Op op) {
  std::atomic<bool> done{false};
  std::size_t calls = 0;
  double op_secs = 0;
  std::exception_ptr err;
  std::latch started(1);
  std::thread t([&] {
    try {
      key_buf kb;
      const auto t0 = clock_type::now();
      started.count_down();
      std::size_t j = 0;
      for (; !done.load(std::memory_order_relaxed); ++j) op(j, kb.b);
      op_secs = seconds_since(t0);
      calls = j;
    } catch (...) {
      err = std::current_exception();
      started.count_down();
    }
  });
  started.wait();
  const auto t0 = clock_type::now();
  try {
    e.merge();
  } catch (...) {
    done = true;
    t.join();
    throw;
  }
  const double secs = seconds_since(t0);
  done = true;
  t.join();
  if (err) std::rethrow_exception(err);
  return {secs, op_secs > 0 ? double(calls) / op_secs : 0};
}

void group_merge(const params& p, const std::string& name, const std::filesystem::path& dir) {
  const std::size_t m = p.merge_keys ? p.merge_keys : std::max<std::size_t>(p.num / 2, 1);
  dataset d(p, m, p.value_size);
  auto e = make(name);
  // The merge timed here is the whole job: no background merge does part of it first.
  auto cfg = config_for(p, dir, m, p.value_size);
  cfg.background_merge = false;
  e->open(cfg);
  emit_settings(*e);
  phase load;
  for (std::uint32_t v = 0; v < 5; ++v) {
    phase ph = fill(*e, d, d.permutation(20 + v), v);
    load.ops += ph.ops;
    load.secs += ph.secs;
  }
  emit("merge", "load_ops_per_sec", double(load.ops) / load.secs);
  emit("merge", "keys", double(m));
  emit("merge", "raw_live_bytes", double(m * (p.key_size + p.value_size)));
  emit_disk("merge", "before_", dir);
  if (auto lb = e->live_bytes()) emit("merge", "engine_live_bytes", double(*lb));
  if (!e->can_merge()) {
    note("merge: " + name + " has no compaction to run; disk after 5 writes per key reported only");
    verify_sample(*e, d, 100000, "after 5 writes per key");
    e->close();
    return;
  }
  // Reads go to even keys (the puts of the second merge below go to odd ones).
  auto ids = d.uniform(m, 21);
  for (auto& i : ids) i &= ~1u;
  std::vector<std::uint32_t> odd;
  for (const auto i : d.permutation(22))
    if (i & 1u) odd.push_back(i);
  if (odd.empty()) odd.push_back(0);
  // Reads with nothing else running, for the same time a merge takes at most.
  write_back(dir);
  {
    key_buf kb;
    const auto t0 = clock_type::now();
    std::size_t j = 0;
    for (; j < m && ((j & 1023) || seconds_since(t0) < 1.0); ++j) checked_read(*e, d, ids[j], kb.b);
    emit("merge", "idle_read_ops_per_sec", double(j) / seconds_since(t0));
  }
  // The merge, with one reader beside it.
  const auto [secs, reads] = beside_merge(*e, [&](std::size_t j, char* kb) { checked_read(*e, d, ids[j % m], kb); });
  emit("merge", "secs", secs);
  emit("merge", "during_read_ops_per_sec", reads);
  progress("merge: " + std::to_string(secs) + " s");
  emit_disk("merge", "after_", dir);
  if (auto lb = e->live_bytes()) emit("merge", "engine_live_bytes_after", double(*lb));
  verify_sample(*e, d, 100000, "after merge");
  e->close();
  emit_disk("merge", "closed_", dir);
  {
    double cache = 0;
    for (const auto& f : e->cache_files(dir)) {
      struct stat st {};
      if (::lstat(f.c_str(), &st) == 0) cache += double(st.st_blocks) * 512.0;
    }
    emit("merge", "closed_cache_bytes", cache);
  }

  // Puts beside a merge: four more versions of every key, then a second
  // merge with one writer beside it (apart from the first, whose disk
  // figures its puts would change).
  e->open(cfg);
  for (std::uint32_t v = 5; v < 9; ++v) fill(*e, d, d.permutation(30 + v), v);
  {
    // Puts with nothing else running, for a second.
    key_buf kb;
    const auto t0 = clock_type::now();
    std::size_t j = 0;
    for (; j < odd.size() && ((j & 1023) || seconds_since(t0) < 1.0); ++j) put_version(*e, d, odd[j], 9, kb.b);
    emit("merge", "idle_put_ops_per_sec", double(j) / seconds_since(t0));
  }
  const double puts =
      beside_merge(*e, [&](std::size_t j, char* kb) { put_version(*e, d, odd[j % odd.size()], 10, kb); }).second;
  emit("merge", "during_put_ops_per_sec", puts);
  verify_sample(*e, d, 100000, "after the merge beside a writer");
  e->close();
}

void group_large(const params& p, const std::string& name, const std::filesystem::path& dir, std::size_t vsize) {
  const std::string tag = vsize >= 65536 ? "64k" : "4k";
  const std::size_t n = std::max<std::size_t>(1, std::min(p.num, p.large_bytes / vsize));
  dataset d(p, n, vsize);
  auto e = make(name);
  e->open(config_for(p, dir, n, vsize));
  emit_settings(*e);
  const phase f = fill(*e, d, d.permutation(30), 0);
  report("fill" + tag, f);
  emit("fill" + tag, "mb_per_sec", double(n * vsize) / f.secs / 1e6);
  emit_disk("fill" + tag, "", dir);
  write_back(dir);
  key_buf kb;
  const auto ids = d.uniform(n, 31);
  const phase r = timed(n, [&](std::size_t j) {
    prefetch_version(d, ids, j);
    checked_read(*e, d, ids[j], kb.b);
  }, p.max_seconds);
  report("read" + tag, r);
  emit("read" + tag, "mb_per_sec", double(n * vsize) / r.secs / 1e6);
  e->close();
}

void group_crc() {
  std::vector<std::byte> buf(std::size_t{1} << 20);
  std::mt19937_64 rng(7);
  for (auto& b : buf) b = static_cast<std::byte>(rng());
  for (const std::size_t size : {std::size_t{100}, std::size_t{4096}, std::size_t{1} << 20}) {
    auto rate = [&](auto compute) {
      volatile std::uint32_t sink = 0;
      std::size_t bytes = 0;
      const auto t0 = clock_type::now();
      double secs = 0;
      do {
        for (int k = 0; k < 64; ++k) {
          sink = sink + compute(buf.data() + (bytes % (buf.size() - size + 1) & ~std::size_t{7}), size);
          bytes += size;
        }
        secs = seconds_since(t0);
      } while (secs < 0.25);
      return double(bytes) / secs / 1e9;
    };
    const double hw = rate([](const std::byte* q, std::size_t n) { return cask::crc32c::compute(q, n); });
    const double boost = rate([](const std::byte* q, std::size_t n) { return cask::crc32c_portable::compute(q, n); });
    const std::string w = "crc" + std::to_string(size);
    emit(w, "crc32c_gb_per_sec", hw);
    emit(w, "boost_crc_gb_per_sec", boost);
    emit(w, "ratio", hw / boost);
    progress(w + ": crc32c " + std::to_string(hw) + " GB/s, Boost.CRC " + std::to_string(boost) + " GB/s");
  }
  note(std::string("crc32c uses ") + (cask::crc32c_hw::supported() ? "SSE4.2 crc32 instructions" : "Boost.CRC (no SSE4.2)"));
}

}  // namespace

int run_child(const params& p, const std::string& engine, const std::string& group, const std::filesystem::path& dir) {
  try {
    calibrate_ticks();
    std::filesystem::create_directories(dir);
    if (group == "fillseq") group_fillseq(p, engine, dir);
    else if (group == "main") group_main(p, engine, dir);
    else if (group == "fillsync1") group_fillsync(p, engine, dir, 1);
    else if (group == "fillsync8") group_fillsync(p, engine, dir, p.sync_threads);
    else if (group == "crash") group_crash(p, engine, dir);
    else if (group == "merge") group_merge(p, engine, dir);
    else if (group == "large4k") group_large(p, engine, dir, 4096);
    else if (group == "large64k") group_large(p, engine, dir, 65536);
    else if (group == "crc") group_crc();
    else throw std::runtime_error("unknown group " + group);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "%s/%s: %s\n", engine.c_str(), group.c_str(), ex.what());
    return 1;
  }
  return 0;
}

}  // namespace bench
