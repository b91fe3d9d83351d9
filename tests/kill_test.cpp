// Real processes, really killed: a forked writer runs a random workload on a
// store with tiny segments (rotation every few dozen writes, background merges
// every few milliseconds, explicit merges and syncs in between) and appends
// every operation to its own log, once before it starts and once after it
// returned. The parent kills it with SIGKILL at a random moment, then checks
// the store against that log:
//  - every acknowledged put and erase is there (a process kill loses nothing,
//    whatever the sync policy: the records are in the page cache);
//  - the operation in flight at the kill took effect or did not; nothing else
//    differs (no hole, no deleted key back, no wrong or damaged value);
//  - the store opens, read-only (as the killed writer left it) and, every few
//    cycles, for writing (recovery: cut tails, finished merges), and the next
//    writer's own recovery finds the same contents.
// The store lives on from cycle to cycle, so each writer starts from the mess
// the previous one left (and may itself be killed while recovering it).
//
// Environment: CASK_KILL_CYCLES (default 600), CASK_KILL_SEED (default 1),
// CASK_KILL_SECONDS (time cap, default 75; 0: none), CASK_KILL_KEEP_DIR (on
// failure, copy the store and the log there), CASK_TEST_DIR (where stores
// go). tests/kill_soak.sh runs thousands of cycles over many seeds.
#define BOOST_TEST_MODULE kill
#include <boost/test/unit_test.hpp>

#include "reliability_util.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

using namespace cask_test;

namespace {

constexpr int key_count = 48;

long env_long(const char* name, long dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtol(v, nullptr, 10) : dflt;
}

std::string value_for(int key, std::uint64_t version) {
  std::size_t pad = (version * 2654435761u) % 200;
  if (version % 97 == 0) pad = 5000;  // larger than a segment: a segment of its own
  return checked_value(key_of(static_cast<std::uint64_t>(key)), version, pad);
}

cask::options writer_options() {
  cask::options o;
  o.max_segment_bytes = 4096;
  o.merge.background = true;
  o.merge.check_interval = std::chrono::milliseconds(2);
  return o;
}

/// One line of the writer's log: "B|D kind key version result".
struct logged {
  char phase = 0;  // 'B' before the call, 'D' after it returned, 'X' the writer found a problem
  char kind = 0;   // 'O' open, 'P' put, 'E' erase, 'S' sync, 'M' merge all, 'm' merge by policy, 'C' close
  int key = -1;
  std::uint64_t version = 0;
  int result = 0;
  std::string text;  // for 'X'
};

class ack_log {
 public:
  explicit ack_log(const std::filesystem::path& p) : fd_(::open(p.c_str(), O_WRONLY | O_APPEND | O_CREAT, 0644)) {}
  ~ack_log() {
    if (fd_ >= 0) ::close(fd_);
  }
  void put(char phase, char kind, int key = -1, std::uint64_t version = 0, int result = 0) {
    char buf[96];
    const int n = std::snprintf(buf, sizeof buf, "%c %c %d %llu %d\n", phase, kind, key,
                                static_cast<unsigned long long>(version), result);
    write_all(buf, static_cast<std::size_t>(n));
  }
  void problem(const std::string& what) {
    const std::string line = "X " + what + "\n";
    write_all(line.data(), line.size());
  }

 private:
  void write_all(const char* p, std::size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w <= 0) ::_exit(20);
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }
  int fd_;
};

template <class Sync>
struct writer_traits : cask::default_traits {
  using sync = Sync;
};

/// The writer: runs until killed (or, after `budget` operations, closes and exits 0).
template <class Sync>
[[noreturn]] void writer(const std::filesystem::path& dir, const std::filesystem::path& log_path, model m,
                         std::uint64_t version, unsigned seed, long budget) {
  using store = cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, writer_traits<Sync>>;
  ack_log log(log_path);
  try {
    std::mt19937_64 g(seed);
    log.put('B', 'O');
    auto db = store::open(dir, writer_options());
    log.put('D', 'O');
    if (contents(db) != m) {
      log.problem("the writer's own recovery found other contents than the parent saw");
      ::_exit(3);
    }
    for (long i = 0; i < budget; ++i) {
      const int key = static_cast<int>(g() % key_count);
      const std::string k = key_of(static_cast<std::uint64_t>(key));
      const unsigned dice = static_cast<unsigned>(g() % 1000);
      if (dice < 200) {
        // A read, checked against the writer's own model (not logged).
        const auto v = db.get(k);
        const auto it = m.find(k);
        if (v != (it == m.end() ? std::nullopt : std::optional(it->second))) {
          log.problem("read of " + k + " returned another value than the writer wrote");
          ::_exit(4);
        }
      } else if (dice < 820) {
        ++version;
        const std::string v = value_for(key, version);
        log.put('B', 'P', key, version);
        db.put(k, v);
        log.put('D', 'P', key, version);
        m[k] = v;
      } else if (dice < 970) {
        log.put('B', 'E', key);
        const bool was = db.erase(k);
        log.put('D', 'E', key, 0, was ? 1 : 0);
        if (was != (m.erase(k) == 1)) {
          log.problem("erase of " + k + " saw the key " + (was ? "present" : "absent") + ", the writer thought otherwise");
          ::_exit(5);
        }
      } else if (dice < 985) {
        log.put('B', 'S');
        db.sync();
        log.put('D', 'S');
      } else if (dice < 993) {
        log.put('B', 'm');
        db.merge(cask::merge_scope::policy);
        log.put('D', 'm');
      } else {
        log.put('B', 'M');
        db.merge(cask::merge_scope::all);
        log.put('D', 'M');
      }
    }
    log.put('B', 'C');
    db.close();
    log.put('D', 'C');
  } catch (const std::exception& e) {
    log.problem(std::string("exception: ") + e.what());
    ::_exit(6);
  }
  ::_exit(0);
}

std::vector<logged> read_log(const std::filesystem::path& p) {
  std::vector<logged> out;
  const auto bytes = read_file(p);
  std::string s(bytes.begin(), bytes.end());
  std::size_t at = 0;
  for (;;) {
    const auto nl = s.find('\n', at);
    if (nl == std::string::npos) break;  // a line cut by the kill is no line
    const std::string line = s.substr(at, nl - at);
    at = nl + 1;
    logged l;
    if (line.size() >= 2 && line[0] == 'X') {
      l.phase = 'X';
      l.text = line.substr(2);
    } else {
      std::istringstream in(line);
      unsigned long long v = 0;
      in >> l.phase >> l.kind >> l.key >> v >> l.result;
      l.version = v;
    }
    out.push_back(l);
  }
  return out;
}

struct figures {
  long cycles = 0, killed = 0, exited = 0, acked = 0, inflight_applied = 0, inflight_lost = 0;
  long killed_in_open = 0, killed_in_merge = 0, killed_in_sync = 0, writable_checks = 0, sync_always_cycles = 0;
};

}  // namespace

BOOST_AUTO_TEST_CASE(killed_writers_lose_no_acknowledged_write) {
  const long cycles = env_long("CASK_KILL_CYCLES", 600);
  const long seconds = env_long("CASK_KILL_SECONDS", 75);
  const auto seed = static_cast<unsigned>(env_long("CASK_KILL_SEED", 1));
  BOOST_TEST_MESSAGE("kill test: seed " << seed << ", " << cycles << " cycles");
  scratch_dir d("kill");
  const auto dir = d / "store";
  const auto log_path = d / "acks.log";
  std::mt19937_64 g(seed);
  model m;
  std::uint64_t version = 0;
  figures f;
  const auto start = std::chrono::steady_clock::now();

  auto keep = [&](long cycle) {
    if (const char* k = std::getenv("CASK_KILL_KEEP_DIR"); k && *k) {
      const std::filesystem::path to = std::filesystem::path(k) / ("seed" + std::to_string(seed) + "-cycle" + std::to_string(cycle));
      std::filesystem::create_directories(to);
      copy_dir(dir, to / "store");
      std::filesystem::copy_file(log_path, to / "acks.log", std::filesystem::copy_options::overwrite_existing);
      BOOST_TEST_MESSAGE("kept the store and log in " << to);
    }
  };

  for (long cycle = 0; cycle < cycles; ++cycle) {
    if (seconds > 0 && std::chrono::steady_clock::now() - start > std::chrono::seconds(seconds)) break;
    std::filesystem::remove(log_path);
    const bool durable = cycle % 4 == 3;
    const unsigned child_seed = static_cast<unsigned>(g());
    // Mostly 0-40 ms of work; one cycle in eight is killed within 3 ms (often while recovering).
    const auto delay = std::chrono::microseconds(g() % 8 == 0 ? g() % 3000 : g() % 40000);
    const pid_t pid = ::fork();
    BOOST_REQUIRE(pid >= 0);
    if (pid == 0) {
      if (durable)
        writer<cask::sync_always>(dir, log_path, m, version, child_seed, 400000);
      else
        writer<cask::sync_none>(dir, log_path, m, version, child_seed, 400000);
    }
    std::this_thread::sleep_for(delay);
    ::kill(pid, SIGKILL);
    int status = 0;
    BOOST_REQUIRE_EQUAL(::waitpid(pid, &status, 0), pid);
    const auto log = read_log(log_path);
    for (const auto& l : log)
      if (l.phase == 'X') {
        keep(cycle);
        BOOST_FAIL("cycle " << cycle << ": the writer reports: " << l.text);
      }
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
      ++f.killed;
    } else {
      BOOST_REQUIRE_MESSAGE(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                            "cycle " << cycle << ": the writer died on its own, status " << status);
      ++f.exited;
    }
    ++f.cycles;
    f.sync_always_cycles += durable ? 1 : 0;

    // Replay the acknowledged operations; find the one in flight.
    model acked = m;
    std::optional<logged> inflight;
    for (std::size_t i = 0; i < log.size(); ++i) {
      const auto& l = log[i];
      if (l.phase == 'B') {
        BOOST_REQUIRE_MESSAGE(!inflight, "cycle " << cycle << ": two operations began at once");
        inflight = l;
        continue;
      }
      BOOST_REQUIRE_MESSAGE(inflight && l.phase == 'D' && l.kind == inflight->kind && l.key == inflight->key &&
                                l.version == inflight->version,
                            "cycle " << cycle << ": the log is out of order at line " << i);
      const std::string k = key_of(static_cast<std::uint64_t>(l.key));
      if (l.kind == 'P') {
        acked[k] = value_for(l.key, l.version);
        ++f.acked;
      } else if (l.kind == 'E') {
        BOOST_REQUIRE_EQUAL(l.result == 1, acked.erase(k) == 1);
        ++f.acked;
      }
      version = std::max(version, l.version);
      inflight.reset();
    }
    if (inflight) {
      version = std::max(version, inflight->version);
      if (inflight->kind == 'O') ++f.killed_in_open;
      if (inflight->kind == 'M' || inflight->kind == 'm') ++f.killed_in_merge;
      if (inflight->kind == 'S') ++f.killed_in_sync;
    }

    // The store as the killed writer left it.
    auto check = [&](const model& got, const char* how) {
      std::string bad;
      std::set<std::string> keys;
      for (const auto& [k, v] : got) keys.insert(k);
      for (const auto& [k, v] : acked) keys.insert(k);
      for (const auto& k : keys) {
        const auto have = got.count(k) ? std::optional(got.at(k)) : std::nullopt;
        const auto want = acked.count(k) ? std::optional(acked.at(k)) : std::nullopt;
        if (have == want) continue;
        if (inflight && key_of(static_cast<std::uint64_t>(inflight->key)) == k) {
          if (inflight->kind == 'P' && have == value_for(inflight->key, inflight->version)) continue;
          if (inflight->kind == 'E' && !have) continue;
        }
        bad = k + ": " + (have ? "version " + std::to_string(checked_version(k, *have)) : std::string("absent")) +
              ", expected " + (want ? "version " + std::to_string(checked_version(k, *want)) : std::string("absent"));
        break;
      }
      if (!bad.empty()) keep(cycle);
      BOOST_REQUIRE_MESSAGE(bad.empty(), "cycle " << cycle << " (" << how << "): " << bad << "; in flight: "
                                                  << (inflight ? std::string(1, inflight->kind) : std::string("nothing")));
    };
    model got;
    {
      cask::options ro;
      ro.read_only = true;
      std::error_code ec;
      auto db = string_store::open(dir, ro, ec);
      if (!db && ec == cask::errc::not_found) {
        // Killed before the first store existed.
        BOOST_REQUIRE_MESSAGE(acked.empty(), "cycle " << cycle << ": no store, yet writes were acknowledged");
      } else {
        if (!db) keep(cycle);
        BOOST_REQUIRE_MESSAGE(db, "cycle " << cycle << ": read-only open failed: " << ec.message());
        got = contents(*db);
      }
    }
    check(got, "read-only");
    if (inflight && inflight->kind == 'P' && got != acked) ++f.inflight_applied;
    if (inflight && inflight->kind == 'E' && got != acked) ++f.inflight_applied;
    if (inflight && (inflight->kind == 'P' || inflight->kind == 'E') && got == acked) ++f.inflight_lost;
    m = got;

    if (cycle % 10 == 9 || cycle + 1 == cycles) {
      // Recover for writing here too (the next writer also checks its own recovery).
      std::size_t damage = 0;
      cask::options o = writer_options();
      o.merge.background = false;
      o.reporter = [&](const cask::recovery_event& e) {
        if (e.what == cask::recovery_event::kind::corrupt_record) ++damage;
      };
      auto db = string_store::open(dir, o);
      BOOST_REQUIRE_EQUAL(damage, 0u);
      check(contents(db), "writable");
      ++f.writable_checks;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  BOOST_TEST_MESSAGE("kill test: " << f.cycles << " cycles in " << secs << " s (" << f.killed << " killed, " << f.exited
                                   << " finished), " << f.sync_always_cycles << " under sync_always; " << f.acked
                                   << " acknowledged writes checked; killed in recovery " << f.killed_in_open
                                   << ", in an explicit merge " << f.killed_in_merge << ", in sync " << f.killed_in_sync
                                   << "; write in flight found applied " << f.inflight_applied << ", not applied "
                                   << f.inflight_lost << "; writable recoveries checked " << f.writable_checks);
  BOOST_TEST(f.cycles >= std::min<long>(cycles, 50));
  BOOST_TEST(f.acked > 0);
}
