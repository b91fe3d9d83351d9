// bench/engine.hpp - the interface every benchmarked engine implements.
//
// One engine object lives in one child process and one directory. The
// harness calls it from the threads a workload starts; an engine must allow
// concurrent get() calls, and concurrent put() calls when
// concurrent_writes() says so. Everything here is benchmark plumbing, not
// part of cask: a virtual call costs every engine the same few nanoseconds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace bench {

/// A non-owning reference to a callable bool(std::string_view), cheaper than
/// std::function (no allocation). Valid while the callable lives.
class verify_ref {
 public:
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, verify_ref>)
  verify_ref(F&& f) noexcept  // NOLINT: implicit on purpose
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o, std::string_view v) { return (*static_cast<std::remove_reference_t<F>*>(o))(v); }) {}
  bool operator()(std::string_view v) const { return call_(obj_, v); }

 private:
  void* obj_;
  bool (*call_)(void*, std::string_view);
};

/// What a read found.
enum class read_status { match, mismatch, missing };

/// How the cask engine reads: visit() (zero-copy callback, where the headers
/// have it), get_ref() (zero-copy value_ref) or get() (a copy).
enum class cask_read_mode { visit, ref, get };

/// How an engine is opened.
struct engine_config {
  std::filesystem::path dir;
  bool durable = false;          ///< put/erase return only once durable (fillsync)
  std::size_t expected_keys = 0; ///< sizing hint for hash tables and buckets
  std::size_t value_size = 100;  ///< typical value size
  cask_read_mode cask_read = cask_read_mode::visit;  ///< cask: which read API
  bool background_merge = true;  ///< cask: merge in the background when its policy says (the default)
};

class engine {
 public:
  virtual ~engine() = default;

  /// Opens (creating when missing) the store in cfg.dir. Throws on failure.
  virtual void open(const engine_config& cfg) = 0;
  /// Closes cleanly (everything durable and consistent on disk).
  virtual void close() = 0;

  virtual void put(std::string_view key, std::string_view value) = 0;
  /// Looks `key` up; if found, calls verify(value bytes) while they are valid
  /// and returns match or mismatch by its answer.
  virtual read_status get(std::string_view key, verify_ref verify) = 0;
  /// Removes `key`; returns whether it was there (true when the engine cannot tell).
  virtual bool erase(std::string_view key) = 0;
  /// Makes every write so far durable.
  virtual void sync() = 0;

  /// Compacts away overwritten data (cask merge, LSM full compaction, hash rebuild).
  virtual bool can_merge() const { return false; }
  virtual void merge() {}

  virtual bool concurrent_writes() const { return true; }
  virtual bool supports_durable() const { return true; }
  virtual bool erase_reports_presence() const { return true; }
  /// Bytes of the in-memory index per key, where the engine has one.
  virtual std::optional<double> index_bytes_per_key() const { return std::nullopt; }
  /// Bytes of live records as the engine counts them (record headers included), where it does.
  virtual std::optional<std::uint64_t> live_bytes() const { return std::nullopt; }
  /// Engine-specific figures worth reporting after an open (name, value).
  virtual std::vector<std::pair<std::string, double>> figures() const { return {}; }
  /// Files that make a reopen load the index faster (cask hint files); removed
  /// to time a reopen by full scan. Empty when the engine has none.
  virtual std::vector<std::filesystem::path> hint_files(const std::filesystem::path&) const { return {}; }
  /// Files that only cache the index of a closed store (cask's keydir
  /// snapshot): removing them costs a slower open, nothing else.
  virtual std::vector<std::filesystem::path> cache_files(const std::filesystem::path&) const { return {}; }

  /// One line describing the settings in force (printed in every report).
  virtual std::string settings() const = 0;
};

/// An engine the binary was built with.
struct engine_info {
  std::string name;
  std::string note;  ///< printed with the results (e.g. "reference, not a product")
  bool peer = true;  ///< counted as a peer for "best peer" ratios
  std::unique_ptr<engine> (*make)();
};

/// The engines compiled in, in report order.
const std::vector<engine_info>& engines();
/// Engines that were looked for at build time but not found, with why.
const std::vector<std::pair<std::string, std::string>>& missing_engines();

}  // namespace bench
