// bench/harness.hpp - what the driver (parent) and the workloads (children) share:
// the run parameters, the workload groups, and the result line format.
//
// The parent runs one child process per (round, group, engine), each in a
// fresh directory: `cask_bench --child --engine E --group G --dir D ...`.
// A child prints its results on stdout, one per line:
//   R <tab> workload <tab> metric <tab> value     a measurement
//   S <tab> settings                              the engine's settings in force
//   N <tab> text                                  a note for the report
// and its progress on stderr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace bench {

struct params {
  std::size_t num = 1'000'000;     ///< keys in the main workloads
  std::size_t key_size = 16;       ///< bytes; "k" + zero-padded decimal id
  std::size_t value_size = 100;    ///< bytes, incompressible
  std::uint64_t seed = 301;        ///< every key order and value derives from it
  double sync_seconds = 2.0;       ///< time budget of each fillsync run
  double max_seconds = 4.0;        ///< time budget of each read or mixed workload (a prefix of its operations)
  std::size_t rww_write_rate = 100'000;  ///< puts/s of the writer in readwhilewriting (0: unthrottled)
  std::size_t merge_keys = 0;      ///< keys in the merge workload (0: num / 2), each written 5 times
  std::size_t large_bytes = std::size_t{256} << 20;  ///< data volume of each large-value run
  std::size_t sync_threads = 8;    ///< writer threads of fillsync8
  std::string cask_read = "visit"; ///< cask's read API: visit, ref (get_ref) or get
  double child_timeout = 900;      ///< seconds before a child is killed
  std::vector<std::string> only;   ///< main group: run only these workloads (fillrandom always loads)
};

/// The workload groups: each runs in a fresh process and directory.
///   fillseq    fillseq
///   main       fillrandom overwrite readrandom readmissing ycsb_a ycsb_b
///              readwhilewriting1 readwhilewriting2 reopen [reopen_scan] deleterandom
///   fillsync1  fillsync with 1 thread; fillsync8: with params::sync_threads threads
///   crash      load, SIGKILL the loader, time the open (crashreopen)
///   merge      each key written 5 times; merge with a reader running beside it
///   large4k    fill4k read4k;  large64k: fill64k read64k
///   crc        CRC-32C hardware vs Boost.CRC (engine-independent; run with the cask child)
inline const std::vector<std::string>& all_groups() {
  static const std::vector<std::string> g = {"fillseq", "main",  "fillsync1", "fillsync8", "crash",
                                             "merge",   "large4k", "large64k", "crc"};
  return g;
}

/// Runs one group for one engine in this process; prints result lines. Returns the exit status.
int run_child(const params& p, const std::string& engine, const std::string& group, const std::filesystem::path& dir);

}  // namespace bench
