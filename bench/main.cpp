// bench/main.cpp - cask_bench: the driver. Parses options, runs one child
// process per (round, workload group, engine), gathers their result lines,
// and reports medians, spread, ratios, latencies, resources and the issue's
// targets as Markdown (stdout, and --markdown FILE), plus data for gnuplot.
#include "engine.hpp"
#include "harness.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <poll.h>
#include <set>
#include <sys/prctl.h>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

namespace bench {
namespace {

const char* usage_text = R"(cask_bench: cask against the engines users would pick instead.

usage: cask_bench [options]
  --engines LIST       comma-separated engines (default: all built; see --list)
  --groups LIST        workload groups (default: all):
                       fillseq main fillsync1 fillsync8 crash merge large4k large64k crc
  --workloads LIST     in the main group, only these (fillrandom always runs, to load):
                       overwrite readrandom readmissing ycsb_a ycsb_b readwhilewriting1
                       readwhilewriting2 reopen deleterandom
  --num N              keys (default 1000000)
  --key-size B         key bytes (default 16)
  --value-size B       value bytes (default 100)
  --repeat R           rounds; engines are interleaved and rotated per round (default 1)
  --baseline NAME      engine the ratio table divides by, or best-peer (default best-peer)
  --seed S             seed of every key order and value (default 301)
  --dir PATH           scratch directory (default /tmp/cask_bench)
  --sync-seconds S     time budget of each fillsync run (default 2)
  --max-seconds S      time budget of each read or mixed workload: a slow engine runs a
                       prefix of the same operations (default 4)
  --sync-threads T     writer threads of fillsync8 (default 8)
  --rww-write-rate W   writer puts/s in readwhilewriting, 0 = unthrottled (default 100000)
  --merge-keys M       keys of the merge workload, each written 5 times (default num/2)
  --large-bytes B      data volume of each large-value run (default 268435456)
  --cask-read MODE     cask reads by visit (zero-copy callback), ref (get_ref, zero-copy)
                       or get (a copy into std::string) (default visit; ref where the
                       headers have no visit)
  --markdown FILE      also write the report to FILE
  --plot-dir DIR       write gnuplot data files (throughput.dat, ratio.dat, latency.dat) to DIR
  --child-timeout S    kill a child running longer than S seconds (default 900)
  --save-results FILE  also write every round's raw results to FILE (tab-separated)
  --replay FILE        write the report from FILE (saved by --save-results) without running anything
  --list               print the engines built in and those missing, then exit
)";

struct options_t {
  params p;
  std::vector<std::string> engines, groups;
  std::size_t repeat = 1;
  std::string baseline = "best-peer";
  std::filesystem::path dir = "/tmp/cask_bench";
  std::string markdown, plot_dir, save_results, replay;
  bool child = false;
  std::string child_engine, child_group;
};

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> r;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ','))
    if (!x.empty()) r.push_back(x);
  return r;
}

// ---- results ----

using metric_key = std::pair<std::string, std::string>;  // workload, metric
struct child_output {
  bool ok = false;
  std::map<metric_key, double> values;
  std::string settings;
  std::vector<std::string> notes;
};

struct stat_t {
  double median = 0, lo = 0, hi = 0;
  std::size_t n = 0;
};

class result_set {
 public:
  void add(const std::string& engine, const child_output& out) {
    for (const auto& [k, v] : out.values) samples_[engine][k].push_back(v);
    if (!out.settings.empty()) settings_[engine].insert(out.settings);
  }
  void add_sample(const std::string& engine, const metric_key& k, double v) { samples_[engine][k].push_back(v); }
  void add_settings(const std::string& engine, const std::string& text) { settings_[engine].insert(text); }
  std::optional<stat_t> get(const std::string& engine, const std::string& w, const std::string& m) const {
    auto e = samples_.find(engine);
    if (e == samples_.end()) return std::nullopt;
    auto it = e->second.find({w, m});
    if (it == e->second.end() || it->second.empty()) return std::nullopt;
    std::vector<double> v = it->second;
    std::sort(v.begin(), v.end());
    stat_t s;
    s.n = v.size();
    s.lo = v.front();
    s.hi = v.back();
    s.median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    return s;
  }
  std::optional<double> median(const std::string& engine, const std::string& w, const std::string& m) const {
    auto s = get(engine, w, m);
    return s ? std::optional<double>(s->median) : std::nullopt;
  }
  const std::map<std::string, std::set<std::string>>& settings() const { return settings_; }

 private:
  std::map<std::string, std::map<metric_key, std::vector<double>>> samples_;
  std::map<std::string, std::set<std::string>> settings_;
};

// ---- running children ----

child_output run_one(const options_t& o, const std::string& engine, const std::string& group,
                     const std::filesystem::path& dir) {
  child_output out;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  std::vector<std::string> args = {"cask_bench", "--child", "--engine", engine, "--group", group,
                                   "--dir", dir.string(),
                                   "--num", std::to_string(o.p.num),
                                   "--key-size", std::to_string(o.p.key_size),
                                   "--value-size", std::to_string(o.p.value_size),
                                   "--seed", std::to_string(o.p.seed),
                                   "--sync-seconds", std::to_string(o.p.sync_seconds),
                                   "--max-seconds", std::to_string(o.p.max_seconds),
                                   "--sync-threads", std::to_string(o.p.sync_threads),
                                   "--rww-write-rate", std::to_string(o.p.rww_write_rate),
                                   "--merge-keys", std::to_string(o.p.merge_keys),
                                   "--large-bytes", std::to_string(o.p.large_bytes),
                                   "--cask-read", o.p.cask_read};
  if (!o.p.only.empty()) {
    std::string list;
    for (const auto& w : o.p.only) list += (list.empty() ? "" : ",") + w;
    args.push_back("--workloads");
    args.push_back(list);
  }
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a child never outlives the driver
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv("/proc/self/exe", argv.data());
    std::perror("execv");
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  const auto t0 = std::chrono::steady_clock::now();
  bool killed = false;
  for (;;) {
    pollfd pfd{fds[0], POLLIN, 0};
    const int r = ::poll(&pfd, 1, 1000);
    if (r > 0) {
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
    if (!killed && std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > o.p.child_timeout) {
      std::fprintf(stderr, "  %s/%s: timed out after %.0f s; killed\n", engine.c_str(), group.c_str(),
                   o.p.child_timeout);
      ::kill(pid, SIGKILL);
      killed = true;
    }
  }
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  out.ok = !killed && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string x;
    while (std::getline(ls, x, '\t')) f.push_back(x);
    if (f.size() == 4 && f[0] == "R") out.values[{f[1], f[2]}] = std::atof(f[3].c_str());
    else if (f.size() >= 2 && f[0] == "S") out.settings = f[1];
    else if (f.size() >= 2 && f[0] == "N") out.notes.push_back(f[1]);
  }
  std::filesystem::remove_all(dir, ec);
  return out;
}

// ---- formatting ----

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
std::string human(double v) {
  if (v >= 1e9) return fmt("%.3g G", v / 1e9);
  if (v >= 1e6) return fmt("%.3g M", v / 1e6);
  if (v >= 1e3) return fmt("%.3g K", v / 1e3);
  return fmt("%.3g", v);
}
std::string mib(double bytes) { return fmt("%.1f", bytes / 1048576.0); }
std::string spread(const stat_t& s) {
  if (s.n < 2 || s.median == 0) return "";
  return fmt(" ±%.0f%%", (s.hi - s.lo) / 2 / s.median * 100);
}
std::string ratio(double r) {
  if (r >= 10) return fmt("%.0fx", r);
  if (r >= 0.1) return fmt("%.2fx", r);
  return fmt("%.2gx", r);
}

struct row {
  std::string workload, metric, label;
  bool higher_better;
};

const std::vector<row>& speed_rows() {
  static const std::vector<row> r = {
      {"fillseq", "ops_per_sec", "fillseq", true},
      {"fillrandom", "ops_per_sec", "fillrandom", true},
      {"overwrite", "ops_per_sec", "overwrite", true},
      {"readrandom", "ops_per_sec", "readrandom (warm)", true},
      {"readmissing", "ops_per_sec", "readmissing", true},
      {"deleterandom", "ops_per_sec", "deleterandom", true},
      {"fillsync1", "ops_per_sec", "fillsync, 1 thread", true},
      {"fillsync8", "ops_per_sec", "fillsync, 8 threads", true},
      {"readwhilewriting1", "ops_per_sec", "readwhilewriting, 1 reader", true},
      {"readwhilewriting2", "ops_per_sec", "readwhilewriting, 2 readers", true},
      {"ycsb_a", "ops_per_sec", "YCSB A (50/50, zipfian)", true},
      {"ycsb_b", "ops_per_sec", "YCSB B (95/5, zipfian)", true},
      {"fill4k", "ops_per_sec", "fillrandom, 4 KiB values", true},
      {"read4k", "ops_per_sec", "readrandom, 4 KiB values", true},
      {"fill64k", "ops_per_sec", "fillrandom, 64 KiB values", true},
      {"read64k", "ops_per_sec", "readrandom, 64 KiB values", true},
  };
  return r;
}
const std::vector<row>& time_rows() {
  static const std::vector<row> r = {
      {"reopen", "open_ms", "reopen after clean close (ms)", false},
      {"reopen_hints", "open_ms", "reopen from hint files, no keydir snapshot (ms)", false},
      {"reopen_scan", "open_ms", "reopen without hint files (ms)", false},
      {"reopen_cold", "open_ms", "reopen after clean close, cold page cache (ms)", false},
      {"reopen_hints_cold", "open_ms", "reopen from hint files, cold page cache (ms)", false},
      {"reopen_scan_cold", "open_ms", "reopen without hint files, cold page cache (ms)", false},
      {"crashreopen", "open_ms", "reopen after SIGKILL (ms)", false},
      {"merge", "secs", "merge, 5 writes per key (s)", false},
  };
  return r;
}

class reporter {
 public:
  reporter(const options_t& o, const result_set& rs, std::vector<std::string> engines, std::vector<std::string> peers,
           std::vector<std::string> notes, std::vector<std::string> failures, double wall)
      : o_(o), rs_(rs), engines_(std::move(engines)), peers_(std::move(peers)), notes_(std::move(notes)),
        failures_(std::move(failures)), wall_(wall) {}

  /// The engine a row divides by: the named baseline, or the best peer on that row.
  std::optional<std::pair<std::string, double>> baseline(const row& r) const {
    if (o_.baseline != "best-peer") {
      auto v = rs_.median(o_.baseline, r.workload, r.metric);
      if (!v) return std::nullopt;
      return std::make_pair(o_.baseline, *v);
    }
    return best_peer(r);
  }
  std::optional<std::pair<std::string, double>> best_peer(const row& r) const {
    std::optional<std::pair<std::string, double>> best;
    for (const auto& e : peers_) {
      auto v = rs_.median(e, r.workload, r.metric);
      if (!v || *v <= 0) continue;
      if (!best || (r.higher_better ? *v > best->second : *v < best->second)) best = std::make_pair(e, *v);
    }
    return best;
  }
  /// How many times better `v` is than `base` (>1: better), whatever the direction of the metric.
  static double better(const row& r, double v, double base) { return r.higher_better ? v / base : base / v; }

  std::string markdown() const {
    std::ostringstream s;
    const bool best = o_.baseline == "best-peer";
    s << "Keys: " << o_.p.num << " of " << o_.p.key_size << " bytes; values: " << o_.p.value_size
      << " bytes, incompressible; " << o_.repeat << (o_.repeat == 1 ? " round" : " rounds")
      << ", engines interleaved and rotated per round; each figure is the median over the rounds"
      << (o_.repeat > 1 ? ", ± half the range between the rounds, as a percentage of the median" : "")
      << ". Every read was verified byte for byte. Total run time: " << fmt("%.0f", wall_) << " s.\n\n";
    s << "**`limit` is a reference, not a product:** a bare open-addressing index of 8-byte entries over a "
         "memory-mapped log, with no checksums, no locks and no durability. It shows what the hardware allows.\n\n";

    s << "## Throughput (operations per second)\n\n";
    header(s, "workload", true);
    for (const auto& r : speed_rows()) speed_line(s, r);
    s << "\n`ratio` columns: cask divided by " << (best ? "the best peer on that row (named)" : o_.baseline)
      << ", and cask divided by `limit`.\n\n";

    s << "## Ratio of each engine to " << (best ? "the best peer" : o_.baseline) << "\n\n"
      << "Higher is better on every row (for times, the baseline's time divided by the engine's).\n\n";
    s << "| workload |";
    for (const auto& e : engines_) s << ' ' << e << " |";
    s << "\n|---|";
    for (std::size_t i = 0; i < engines_.size(); ++i) s << "---:|";
    s << '\n';
    auto all_rows = speed_rows();
    all_rows.insert(all_rows.end(), time_rows().begin(), time_rows().end());
    for (const auto& r : all_rows) {
      auto b = baseline(r);
      if (!b) continue;
      s << "| " << r.label << " |";
      for (const auto& e : engines_) {
        auto v = rs_.median(e, r.workload, r.metric);
        s << ' ' << (v && *v > 0 ? ratio(better(r, *v, b->second)) : "-") << " |";
      }
      s << '\n';
    }

    s << "\n## Latency (microseconds: p50 / p99 / p99.9)\n\n";
    s << "| workload |";
    for (const auto& e : engines_) s << ' ' << e << " |";
    s << "\n|---|";
    for (std::size_t i = 0; i < engines_.size(); ++i) s << "---:|";
    s << '\n';
    for (const auto& r : speed_rows()) {
      bool any = false;
      std::ostringstream line;
      line << "| " << r.label << " |";
      for (const auto& e : engines_) {
        auto a = rs_.median(e, r.workload, "p50_ns"), b = rs_.median(e, r.workload, "p99_ns"),
             c = rs_.median(e, r.workload, "p999_ns");
        if (a && b && c) {
          any = true;
          line << ' ' << us(*a) << " / " << us(*b) << " / " << us(*c) << " |";
        } else {
          line << " - |";
        }
      }
      if (any) s << line.str() << '\n';
    }

    s << "\n## Open, reopen and merge\n\n";
    header(s, "what", true);
    for (const auto& r : time_rows()) time_line(s, r);
    s << '\n';
    s << "| per key (ns) |";
    for (const auto& e : engines_) s << ' ' << e << " |";
    s << "\n|---|";
    for (std::size_t i = 0; i < engines_.size(); ++i) s << "---:|";
    s << '\n';
    for (const auto& [w, label] : std::vector<std::pair<std::string, std::string>>{
             {"reopen", "reopen after clean close"}, {"reopen_hints", "reopen from hint files"},
             {"reopen_scan", "reopen without hint files"},
             {"reopen_cold", "reopen after clean close, cold page cache"},
             {"reopen_hints_cold", "reopen from hint files, cold page cache"},
             {"reopen_scan_cold", "reopen without hint files, cold page cache"},
             {"crashreopen", "reopen after SIGKILL"}}) {
      if (!any_engine(w, "open_ns_per_key")) continue;
      s << "| " << label << " |";
      for (const auto& e : engines_) {
        auto v = rs_.median(e, w, "open_ns_per_key");
        s << ' ' << (v ? fmt("%.0f", *v) : "-") << " |";
      }
      s << '\n';
    }

    s << '\n';
    s << "| segments at open |";
    for (const auto& e : engines_) s << ' ' << e << " |";
    s << "\n|---|";
    for (std::size_t i = 0; i < engines_.size(); ++i) s << "---:|";
    s << '\n';
    resource_line(s, "reopen: segments", "reopen", "segments", [](double v) { return fmt("%.0f", v); });
    resource_line(s, "reopen: segments loaded from hint files", "reopen", "segments_from_hints",
                  [](double v) { return fmt("%.0f", v); });
    resource_line(s, "reopen: segments scanned", "reopen", "segments_scanned", [](double v) { return fmt("%.0f", v); });
    resource_line(s, "reopen without hints: segments scanned", "reopen_scan", "segments_scanned",
                  [](double v) { return fmt("%.0f", v); });
    resource_line(s, "after SIGKILL: segments loaded from hint files", "crashreopen", "segments_from_hints",
                  [](double v) { return fmt("%.0f", v); });
    resource_line(s, "after SIGKILL: segments scanned", "crashreopen", "segments_scanned",
                  [](double v) { return fmt("%.0f", v); });

    s << "\n## Space and memory\n\n";
    s << "Disk is allocated bytes (`st_blocks`); MiB. RSS counts mapped file pages too (`RssFile`); "
         "anonymous memory is the heap (caches, indexes).\n\n";
    s << "| figure |";
    for (const auto& e : engines_) s << ' ' << e << " |";
    s << "\n|---|";
    for (std::size_t i = 0; i < engines_.size(); ++i) s << "---:|";
    s << '\n';
    const double raw = double(o_.p.num) * double(o_.p.key_size + o_.p.value_size);
    s << "| user data after fillrandom (keys + values) |";
    for (std::size_t i = 0; i < engines_.size(); ++i) s << ' ' << mib(raw) << " |";
    s << '\n';
    resource_line(s, "disk after fillrandom (store open)", "fillrandom", "disk_bytes", mib);
    resource_line(s, "disk after overwrite (store open)", "overwrite", "disk_bytes", mib);
    resource_line(s, "disk after close (before deleterandom)", "reopen", "closed_disk_bytes", mib);
    resource_line(s, "RSS after fillrandom", "fillrandom", "rss_bytes", mib);
    resource_line(s, "anonymous RSS after fillrandom", "fillrandom", "rss_anon_bytes", mib);
    resource_line(s, "peak RSS, main group", "main", "hwm_bytes", mib);
    resource_line(s, "index bytes per key (in memory)", "fillrandom", "index_bytes_per_key",
                  [](double v) { return fmt("%.1f", v); });
    resource_line(s, "merge: user data (live keys + values)", "merge", "raw_live_bytes", mib);
    resource_line(s, "merge: disk after 5 writes per key", "merge", "before_disk_bytes", mib);
    resource_line(s, "merge: disk after merge (store open)", "merge", "after_disk_bytes", mib);
    resource_line(s, "merge: disk after merge and close", "merge", "closed_disk_bytes", mib);
    resource_line(s, "merge: of which an index cache (cask: KEYDIR)", "merge", "closed_cache_bytes", mib);
    resource_line(s, "merge: reads/s with nothing else running", "merge", "idle_read_ops_per_sec", human);
    resource_line(s, "merge: reads/s while the merge runs", "merge", "during_read_ops_per_sec", human);
    resource_line(s, "merge: puts/s with nothing else running", "merge", "idle_put_ops_per_sec", human);
    resource_line(s, "merge: puts/s while the merge runs", "merge", "during_put_ops_per_sec", human);
    resource_line(s, "readwhilewriting: writer puts/s (1 reader)", "readwhilewriting1", "writer_ops_per_sec", human);

    s << "\n## Checksum throughput (GB/s)\n\n| buffer | cask::crc32c | Boost.CRC (crc32c_portable) | ratio |\n"
         "|---:|---:|---:|---:|\n";
    for (const char* sz : {"100", "4096", "1048576"}) {
      const std::string w = std::string("crc") + sz;
      auto hw = rs_.get("cask", w, "crc32c_gb_per_sec"), b = rs_.get("cask", w, "boost_crc_gb_per_sec");
      auto r = rs_.median("cask", w, "ratio");
      if (!hw || !b || !r) continue;
      s << "| " << sz << " B | " << fmt("%.2f", hw->median) << spread(*hw) << " | " << fmt("%.3f", b->median)
        << spread(*b) << " | " << ratio(*r) << " |\n";
    }

    s << "\n## Targets of issue 6\n\n" << targets() << '\n';

    s << "## Settings\n\n";
    for (const auto& e : engines_) {
      auto it = rs_.settings().find(e);
      if (it == rs_.settings().end()) continue;
      for (const auto& st : it->second) s << "- **" << e << "**: " << st << '\n';
    }
    s << "- harness: " << o_.p.num << " keys; readwhilewriting writer limited to "
      << (o_.p.rww_write_rate ? std::to_string(o_.p.rww_write_rate) + " puts/s" : "nothing (unthrottled)")
      << "; fillsync runs " << fmt("%.1f", o_.p.sync_seconds) << " s per engine (" << o_.p.sync_threads
      << " threads for the multi-threaded one); merge: "
      << (o_.p.merge_keys ? o_.p.merge_keys : std::max<std::size_t>(o_.p.num / 2, 1))
      << " keys x 5 writes, one reader beside the merge, then 4 more writes per key and one writer beside a second merge; large values: " << o_.p.large_bytes / 1048576
      << " MiB per run; read and mixed workloads stop after " << fmt("%.0f", o_.p.max_seconds)
      << " s (a slower engine runs a prefix of the same operations); latency is the TSC read once per operation.\n";
    for (const auto& [name, why] : missing_engines()) s << "- **" << name << "**: skipped, " << why << '\n';
    if (!notes_.empty()) {
      s << "\n## Notes\n\n";
      for (const auto& n : notes_) s << "- " << n << '\n';
    }
    if (!failures_.empty()) {
      s << "\n## Failures\n\n";
      for (const auto& f : failures_) s << "- " << f << '\n';
    }
    return s.str();
  }

  void write_plot_data(const std::filesystem::path& dir) const {
    std::filesystem::create_directories(dir);
    std::ofstream t(dir / "throughput.dat"), r(dir / "ratio.dat"), l(dir / "latency.dat");
    t << "workload";
    l << "workload";
    for (const auto& e : engines_) {
      t << '\t' << e;
      l << '\t' << e;
    }
    t << '\n';
    l << '\n';
    r << "workload\tcask_vs_best_peer\tlimit_vs_best_peer\n";
    for (const auto& row : speed_rows()) {
      if (!any_engine(row.workload, row.metric)) continue;
      t << row.workload;
      l << row.workload;
      for (const auto& e : engines_) {
        auto v = rs_.median(e, row.workload, row.metric);
        t << '\t' << (v && *v > 0 ? fmt("%.6g", *v) : "NaN");
        auto p = rs_.median(e, row.workload, "p99_ns");
        l << '\t' << (p && *p > 0 ? fmt("%.6g", *p / 1000) : "NaN");
      }
      t << '\n';
      l << '\n';
    }
    // Times are left out: the on-disk tables reopen in microseconds by loading nothing, and a
    // merge with nothing to do (in-place updates) takes milliseconds; the tables have them.
    for (const auto& row : speed_rows()) {
      auto b = best_peer(row);
      auto c = rs_.median("cask", row.workload, row.metric);
      if (!b || !c || *c <= 0) continue;
      auto lim = rs_.median("limit", row.workload, row.metric);
      r << row.workload << '\t' << fmt("%.6g", better(row, *c, b->second)) << '\t'
        << (lim && *lim > 0 ? fmt("%.6g", better(row, *lim, b->second)) : "NaN") << '\n';
    }
  }

 private:
  static std::string us(double ns) { return ns < 10000 ? fmt("%.2g", ns / 1000) : fmt("%.0f", ns / 1000); }

  bool any_engine(const std::string& w, const std::string& m) const {
    for (const auto& e : engines_)
      if (rs_.median(e, w, m)) return true;
    return false;
  }

  void header(std::ostringstream& s, const char* first, bool ratios) const {
    s << "| " << first << " |";
    for (const auto& e : engines_) s << ' ' << e << " |";
    if (ratios) s << " baseline | cask ratio | cask / limit |";
    s << "\n|---|";
    for (std::size_t i = 0; i < engines_.size() + (ratios ? 3 : 0); ++i) s << "---:|";
    s << '\n';
  }

  void speed_line(std::ostringstream& s, const row& r) const {
    if (!any_engine(r.workload, r.metric)) return;
    s << "| " << r.label << " |";
    for (const auto& e : engines_) {
      auto st = rs_.get(e, r.workload, r.metric);
      s << ' ' << (st ? human(st->median) + spread(*st) : "-") << " |";
    }
    ratio_cells(s, r);
  }
  void time_line(std::ostringstream& s, const row& r) const {
    if (!any_engine(r.workload, r.metric)) return;
    s << "| " << r.label << " |";
    for (const auto& e : engines_) {
      auto st = rs_.get(e, r.workload, r.metric);
      s << ' ' << (st ? fmt("%.3g", st->median) + spread(*st) : "-") << " |";
    }
    ratio_cells(s, r);
  }
  void ratio_cells(std::ostringstream& s, const row& r) const {
    auto b = baseline(r);
    auto c = rs_.median("cask", r.workload, r.metric);
    auto lim = rs_.median("limit", r.workload, r.metric);
    s << ' ' << (b ? b->first : "-") << " | " << (b && c && *c > 0 ? ratio(better(r, *c, b->second)) : "-") << " | "
      << (lim && c && *lim > 0 && *c > 0 ? ratio(better(r, *c, *lim)) : "-") << " |\n";
  }
  template <class F>
  void resource_line(std::ostringstream& s, const char* label, const std::string& w, const std::string& m, F&& f) const {
    if (!any_engine(w, m)) return;
    s << "| " << label << " |";
    for (const auto& e : engines_) {
      auto v = rs_.median(e, w, m);
      s << ' ' << (v ? f(*v) : "-") << " |";
    }
    s << '\n';
  }

  std::string targets() const {
    std::ostringstream s;
    s << "| target | measured | met |\n|---|---:|:---:|\n";
    auto line = [&](const std::string& what, std::optional<double> v, double goal, bool at_least, const char* unit) {
      s << "| " << what << " | ";
      if (!v) {
        s << "not measured | - |\n";
        return;
      }
      s << fmt(std::string("%.3g").append(unit).c_str(), *v) << " | " << ((at_least ? *v >= goal : *v <= goal) ? "yes" : "**no**")
        << " |\n";
    };
    auto vs_best = [&](const std::string& w) -> std::optional<double> {
      const row r{w, "ops_per_sec", w, true};
      auto b = best_peer(r);
      auto c = rs_.median("cask", w, "ops_per_sec");
      if (!b || !c) return std::nullopt;
      return *c / b->second;
    };
    auto div = [](std::optional<double> a, std::optional<double> b) -> std::optional<double> {
      if (!a || !b || *b == 0) return std::nullopt;
      return *a / *b;
    };
    line("readrandom >= 5x the best peer", vs_best("readrandom"), 5, true, "x");
    line("readrandom >= 0.5x the limit reference",
         div(rs_.median("cask", "readrandom", "ops_per_sec"), rs_.median("limit", "readrandom", "ops_per_sec")), 0.5,
         true, "x");
    line("readmissing >= 3x the best peer", vs_best("readmissing"), 3, true, "x");
    line("fillrandom >= 2.5x the best peer", vs_best("fillrandom"), 2.5, true, "x");
    line("overwrite >= 2.5x the best peer", vs_best("overwrite"), 2.5, true, "x");
    line("fillsync, 1 thread >= 0.9x the best peer", vs_best("fillsync1"), 0.9, true, "x");
    {
      auto b = best_peer({"fillsync1", "ops_per_sec", "", true});
      line("fillsync, 8 threads >= 5x the best peer's 1-thread figure",
           div(rs_.median("cask", "fillsync8", "ops_per_sec"), b ? std::optional<double>(b->second) : std::nullopt), 5,
           true, "x");
    }
    line("readwhilewriting: 2 readers >= 1.7x 1 reader",
         div(rs_.median("cask", "readwhilewriting2", "ops_per_sec"),
             rs_.median("cask", "readwhilewriting1", "ops_per_sec")),
         1.7, true, "x");
    line("reads during a merge >= 0.7x reads without",
         div(rs_.median("cask", "merge", "during_read_ops_per_sec"), rs_.median("cask", "merge", "idle_read_ops_per_sec")),
         0.7, true, "x");
    const std::string hinted = rs_.median("cask", "reopen_hints", "open_ms") ? "reopen_hints" : "reopen";
    line("open from hint files <= 60 ns per key", rs_.median("cask", hinted, "open_ns_per_key"), 60, false, " ns");
    line("open from hint files >= 2.5x faster than a full scan",
         div(rs_.median("cask", "reopen_scan", "open_ms"), rs_.median("cask", hinted, "open_ms")), 2.5, true, "x");
    line("open from hint files, cold page cache <= 60 ns per key", rs_.median("cask", "reopen_hints_cold", "open_ns_per_key"),
         60, false, " ns");
    line("open from hint files, cold page cache >= 2.5x faster than a full scan, cold",
         div(rs_.median("cask", "reopen_scan_cold", "open_ms"), rs_.median("cask", "reopen_hints_cold", "open_ms")), 2.5,
         true, "x");
    if (hinted == "reopen_hints") {
      line("clean reopen (keydir snapshot) <= 60 ns per key", rs_.median("cask", "reopen", "open_ns_per_key"), 60, false,
           " ns");
      line("clean reopen (keydir snapshot) >= 2.5x faster than a full scan",
           div(rs_.median("cask", "reopen_scan", "open_ms"), rs_.median("cask", "reopen", "open_ms")), 2.5, true, "x");
    }
    line("CRC32C >= 15x Boost.CRC (4 KiB buffers)", rs_.median("cask", "crc4096", "ratio"), 15, true, "x");
    line("disk after merge (closed) <= 1.2x the live records",
         div(rs_.median("cask", "merge", "closed_disk_bytes"), rs_.median("cask", "merge", "engine_live_bytes_after")),
         1.2, false, "x");
    {
      auto closed = rs_.median("cask", "merge", "closed_disk_bytes");
      auto cache = rs_.median("cask", "merge", "closed_cache_bytes");
      line("disk after merge (closed), less the keydir snapshot, <= 1.2x the live records",
           div(closed && cache ? std::optional<double>(*closed - *cache) : std::nullopt,
               rs_.median("cask", "merge", "engine_live_bytes_after")),
           1.2, false, "x");
    }
    line("disk after merge (closed) <= 1.2x the user data (keys + values)",
         div(rs_.median("cask", "merge", "closed_disk_bytes"), rs_.median("cask", "merge", "raw_live_bytes")), 1.2,
         false, "x");
    line("keydir <= 32 bytes per key beyond the key (keys are not held in memory)",
         rs_.median("cask", "fillrandom", "index_bytes_per_key"), 32, false, " B");
    return s.str();
  }

  const options_t& o_;
  const result_set& rs_;
  std::vector<std::string> engines_, peers_, notes_, failures_;
  double wall_;
};

int parse(int argc, char** argv, options_t& o) {
  auto need = [&](int& i) -> std::string {
    if (i + 1 >= argc) throw std::runtime_error(std::string("missing value after ") + argv[i]);
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(usage_text, stdout);
      return 0;
    } else if (a == "--list") {
      for (const auto& e : engines()) std::printf("%s%s%s\n", e.name.c_str(), e.note.empty() ? "" : ": ", e.note.c_str());
      for (const auto& [n, why] : missing_engines()) std::printf("%s: skipped, %s\n", n.c_str(), why.c_str());
      return 0;
    } else if (a == "--child") o.child = true;
    else if (a == "--engine") o.child_engine = need(i);
    else if (a == "--group") o.child_group = need(i);
    else if (a == "--engines") o.engines = split(need(i));
    else if (a == "--groups") o.groups = split(need(i));
    else if (a == "--workloads") o.p.only = split(need(i));
    else if (a == "--num") o.p.num = std::stoull(need(i));
    else if (a == "--key-size") o.p.key_size = std::stoull(need(i));
    else if (a == "--value-size") o.p.value_size = std::stoull(need(i));
    else if (a == "--repeat") o.repeat = std::stoull(need(i));
    else if (a == "--baseline") o.baseline = need(i);
    else if (a == "--seed") o.p.seed = std::stoull(need(i));
    else if (a == "--dir") o.dir = need(i);
    else if (a == "--sync-seconds") o.p.sync_seconds = std::stod(need(i));
    else if (a == "--max-seconds") o.p.max_seconds = std::stod(need(i));
    else if (a == "--sync-threads") o.p.sync_threads = std::stoull(need(i));
    else if (a == "--rww-write-rate") o.p.rww_write_rate = std::stoull(need(i));
    else if (a == "--merge-keys") o.p.merge_keys = std::stoull(need(i));
    else if (a == "--large-bytes") o.p.large_bytes = std::stoull(need(i));
    else if (a == "--cask-read") {
      const std::string v = need(i);
      if (v != "get" && v != "ref" && v != "visit") throw std::runtime_error("--cask-read takes visit, ref or get");
      o.p.cask_read = v;
    } else if (a == "--markdown") o.markdown = need(i);
    else if (a == "--plot-dir") o.plot_dir = need(i);
    else if (a == "--save-results") o.save_results = need(i);
    else if (a == "--replay") o.replay = need(i);
    else if (a == "--child-timeout") o.p.child_timeout = std::stod(need(i));
    else throw std::runtime_error("unknown option " + a + " (see --help)");
  }
  return -1;
}

void write_report(const options_t& o, const result_set& rs, const std::vector<std::string>& engines_run,
                  const std::vector<std::string>& peers, const std::vector<std::string>& notes,
                  const std::vector<std::string>& failures, double wall) {
  reporter rep(o, rs, engines_run, peers, notes, failures, wall);
  const std::string md = rep.markdown();
  std::fputs(md.c_str(), stdout);
  if (!o.markdown.empty()) std::ofstream(o.markdown) << md;
  if (!o.plot_dir.empty()) rep.write_plot_data(o.plot_dir);
}

int drive(options_t& o) {
  const auto& built = engines();
  if (o.engines.empty() || (o.engines.size() == 1 && o.engines[0] == "all"))
    for (const auto& e : built) o.engines.push_back(e.name);
  std::vector<std::string> peers;
  for (const auto& name : o.engines) {
    auto it = std::find_if(built.begin(), built.end(), [&](const auto& e) { return e.name == name; });
    if (it == built.end()) throw std::runtime_error("engine " + name + " is not built in (see --list)");
    if (it->peer) peers.push_back(name);
  }
  if (o.groups.empty()) o.groups = all_groups();
  for (const auto& g : o.groups)
    if (std::find(all_groups().begin(), all_groups().end(), g) == all_groups().end())
      throw std::runtime_error("unknown group " + g);
  if (o.baseline != "best-peer" && std::find(o.engines.begin(), o.engines.end(), o.baseline) == o.engines.end())
    throw std::runtime_error("baseline " + o.baseline + " is not among the engines run");
  if (o.repeat < 1) o.repeat = 1;

  for (const auto& [n, why] : missing_engines()) std::fprintf(stderr, "note: %s skipped: %s\n", n.c_str(), why.c_str());
  for (const auto& e : built)
    if (!e.note.empty() && std::find(o.engines.begin(), o.engines.end(), e.name) != o.engines.end())
      std::fprintf(stderr, "note: %s: %s\n", e.name.c_str(), e.note.c_str());

  result_set rs;
  std::vector<std::string> notes, failures;
  std::set<std::string> seen_notes;
  std::ofstream save;
  if (!o.save_results.empty()) {
    save.open(o.save_results);
    if (!save) throw std::runtime_error("cannot write " + o.save_results);
    save << "O\tnum\t" << o.p.num << "\nO\tkey_size\t" << o.p.key_size << "\nO\tvalue_size\t" << o.p.value_size
         << "\nO\trepeat\t" << o.repeat << "\nO\tsync_seconds\t" << o.p.sync_seconds << "\nO\tsync_threads\t"
         << o.p.sync_threads << "\nO\trww_write_rate\t" << o.p.rww_write_rate << "\nO\tmerge_keys\t" << o.p.merge_keys
         << "\nO\tlarge_bytes\t" << o.p.large_bytes << "\nO\tmax_seconds\t" << o.p.max_seconds << '\n';
    if (o.baseline != "best-peer") save << "B\t" << o.baseline << '\n';
    for (const auto& e : o.engines)
      save << "E\t" << e << '\t' << (std::find(peers.begin(), peers.end(), e) != peers.end() ? 1 : 0) << '\n';
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t round = 0; round < o.repeat; ++round) {
    std::vector<std::string> order = o.engines;
    std::rotate(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(round % order.size()), order.end());
    for (const auto& g : o.groups) {
      for (const auto& e : order) {
        if (g == "crc" && e != "cask") continue;
        const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::fprintf(stderr, "[round %zu/%zu, %5.0f s] %s: %s\n", round + 1, o.repeat, el, g.c_str(), e.c_str());
        const auto out = run_one(o, e, g, o.dir / (e + "-" + g + "-r" + std::to_string(round + 1)));
        rs.add(e, out);
        for (const auto& n : out.notes)
          if (seen_notes.insert(n).second) {
            notes.push_back(n);
            if (save) save << "N\t" << n << '\n';
          }
        if (!out.ok) {
          failures.push_back(e + " / " + g + " (round " + std::to_string(round + 1) + "): failed, see stderr");
          if (save) save << "F\t" << failures.back() << '\n';
        }
        if (save) {
          for (const auto& [k, v] : out.values)
            save << "R\t" << e << '\t' << round + 1 << '\t' << k.first << '\t' << k.second << '\t' << fmt("%.9g", v) << '\n';
          if (!out.settings.empty()) save << "S\t" << e << '\t' << out.settings << '\n';
          save.flush();
        }
      }
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (save) save << "W\t" << fmt("%.1f", wall) << '\n';
  write_report(o, rs, o.engines, peers, notes, failures, wall);
  return failures.empty() ? 0 : 1;
}

/// Rebuilds the report from a file written by --save-results.
int replay(options_t& o) {
  std::ifstream in(o.replay);
  if (!in) throw std::runtime_error("cannot read " + o.replay);
  result_set rs;
  std::vector<std::string> engines_run, peers, notes, failures;
  double wall = 0;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string x;
    while (std::getline(ls, x, '\t')) f.push_back(x);
    if (f.empty()) continue;
    const std::string& t = f[0];
    if (t == "R" && f.size() == 6) rs.add_sample(f[1], {f[3], f[4]}, std::atof(f[5].c_str()));
    else if (t == "S" && f.size() >= 3) rs.add_settings(f[1], f[2]);
    else if (t == "N" && f.size() >= 2) notes.push_back(f[1]);
    else if (t == "F" && f.size() >= 2) failures.push_back(f[1]);
    else if (t == "W" && f.size() >= 2) wall = std::atof(f[1].c_str());
    else if (t == "E" && f.size() >= 3) {
      engines_run.push_back(f[1]);
      if (f[2] == "1") peers.push_back(f[1]);
    } else if (t == "O" && f.size() >= 3) {
      const std::string& k = f[1];
      const double v = std::atof(f[2].c_str());
      if (k == "num") o.p.num = static_cast<std::size_t>(v);
      else if (k == "key_size") o.p.key_size = static_cast<std::size_t>(v);
      else if (k == "value_size") o.p.value_size = static_cast<std::size_t>(v);
      else if (k == "repeat") o.repeat = static_cast<std::size_t>(v);
      else if (k == "sync_seconds") o.p.sync_seconds = v;
      else if (k == "sync_threads") o.p.sync_threads = static_cast<std::size_t>(v);
      else if (k == "rww_write_rate") o.p.rww_write_rate = static_cast<std::size_t>(v);
      else if (k == "merge_keys") o.p.merge_keys = static_cast<std::size_t>(v);
      else if (k == "large_bytes") o.p.large_bytes = static_cast<std::size_t>(v);
      else if (k == "max_seconds") o.p.max_seconds = v;
      else if (k == "baseline" ) {}
    } else if (t == "B" && f.size() >= 2 && o.baseline == "best-peer") o.baseline = f[1];
  }
  write_report(o, rs, engines_run, peers, notes, failures, wall);
  return 0;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  bench::options_t o;
  try {
    const int r = bench::parse(argc, argv, o);
    if (r >= 0) return r;
    if (o.child) return bench::run_child(o.p, o.child_engine, o.child_group, o.dir);
    if (!o.replay.empty()) return bench::replay(o);
    return bench::drive(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cask_bench: %s\n", e.what());
    return 2;
  }
}
