// bench/engine_cask.cpp - cask::log_store<std::string, std::string> with default traits
// (CRC-32C checksums written and verified on every read), or sync_always for durable runs.
#include "engine.hpp"

#include <cask.hpp>

#include <cstring>
#include <span>
#include <stdexcept>

// merge() and hint files arrived with merger.hpp; without them the merge
// workload is skipped with a note and reopen is always a full scan.
#if __has_include(<cask/merger.hpp>)
#define BENCH_CASK_HAS_MERGE 1
#else
#define BENCH_CASK_HAS_MERGE 0
#endif

namespace bench {
namespace {

struct durable_traits : cask::default_traits {
  using sync = cask::sync_always;
};

/// log_store::visit (a zero-copy read through a callback) arrived after get_ref.
template <class Store>
concept has_visit = requires(const Store& s) {
  s.visit(std::string_view{}, [](std::span<const std::byte>) {});
};

template <class Store>
class cask_store_engine {
 public:
  void open(const engine_config& cfg) {
    cask::options o;
    o.verify_checksums = true;
#if BENCH_CASK_HAS_MERGE
    o.merge.background = cfg.background_merge;
#endif
    db_.emplace(Store::open(cfg.dir, o));
    read_ = cfg.cask_read;
  }
  void close() {
    if (db_) db_->close();
    db_.reset();
  }
  void put(std::string_view k, std::string_view v) { db_->put(k, v); }
  read_status get(std::string_view k, verify_ref verify) {
    if constexpr (has_visit<Store>) {
      if (read_ == cask_read_mode::visit) {
        bool ok = false;
        if (!db_->visit(k, [&](std::span<const std::byte> b) {
              ok = verify({reinterpret_cast<const char*>(b.data()), b.size()});
            }))
          return read_status::missing;
        return ok ? read_status::match : read_status::mismatch;
      }
    }
    if (read_ == cask_read_mode::ref) {
      auto r = db_->get_ref(k);
      if (!r) return read_status::missing;
      return verify(r->view()) ? read_status::match : read_status::mismatch;
    }
    auto v = db_->get(k);
    if (!v) return read_status::missing;
    return verify(*v) ? read_status::match : read_status::mismatch;
  }
  bool erase(std::string_view k) { return db_->erase(k); }
  void sync() { db_->sync(); }
  void merge() {
#if BENCH_CASK_HAS_MERGE
    db_->merge(cask::merge_scope::compact);
#endif
  }
  std::optional<double> index_bytes_per_key() const {
    const auto st = db_->stats();
    return st.keys ? std::optional<double>(st.keydir_bytes_per_key) : std::nullopt;
  }
  std::uint64_t live_bytes() const { return db_->stats().live_bytes; }
  std::vector<std::pair<std::string, double>> figures() const {
    const auto st = db_->stats();
    std::vector<std::pair<std::string, double>> r = {{"segments", double(st.segments)},
                                                     {"recovered_torn_bytes", double(st.recovered_torn_bytes)}};
#if BENCH_CASK_HAS_MERGE
    r.emplace_back("segments_from_hints", double(st.recovered_from_hints));
    r.emplace_back("segments_scanned", double(st.recovered_by_scan));
#endif
    if constexpr (requires { st.recovered_from_snapshot; })
      r.emplace_back("from_keydir_snapshot", st.recovered_from_snapshot ? 1.0 : 0.0);
    return r;
  }

 private:
  std::optional<Store> db_;
  cask_read_mode read_ = cask_read_mode::visit;
};

class cask_engine final : public engine {
  using fast_store = cask::log_store<std::string, std::string>;
  using durable_store =
      cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, durable_traits>;

 public:
  void open(const engine_config& cfg) override {
    durable_ = cfg.durable;
    read_ = cfg.cask_read;
    if (read_ == cask_read_mode::visit && !has_visit<fast_store>) read_ = cask_read_mode::ref;
    background_merge_ = cfg.background_merge;
    if (durable_) d_.open(cfg); else f_.open(cfg);
  }
  void close() override { durable_ ? d_.close() : f_.close(); }
  void put(std::string_view k, std::string_view v) override { durable_ ? d_.put(k, v) : f_.put(k, v); }
  read_status get(std::string_view k, verify_ref verify) override {
    return durable_ ? d_.get(k, verify) : f_.get(k, verify);
  }
  bool erase(std::string_view k) override { return durable_ ? d_.erase(k) : f_.erase(k); }
  void sync() override { durable_ ? d_.sync() : f_.sync(); }
  bool can_merge() const override { return BENCH_CASK_HAS_MERGE; }
  void merge() override { durable_ ? d_.merge() : f_.merge(); }
  std::optional<double> index_bytes_per_key() const override {
    return durable_ ? d_.index_bytes_per_key() : f_.index_bytes_per_key();
  }
  std::optional<std::uint64_t> live_bytes() const override { return durable_ ? d_.live_bytes() : f_.live_bytes(); }
  std::vector<std::pair<std::string, double>> figures() const override {
    return durable_ ? d_.figures() : f_.figures();
  }
  std::vector<std::filesystem::path> cache_files(const std::filesystem::path& dir) const override {
    std::error_code ec;
    if (std::filesystem::exists(dir / "KEYDIR", ec)) return {dir / "KEYDIR"};
    return {};
  }
  std::vector<std::filesystem::path> hint_files(const std::filesystem::path& dir) const override {
    std::vector<std::filesystem::path> r;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      const auto n = e.path().filename().string();
      if (n.find("hint") != std::string::npos || n == "KEYDIR") r.push_back(e.path());
    }
    return r;
  }
  std::string settings() const override {
    return std::string("log_store<string,string>, default_hasher, basic_codec; CRC-32C on every record, "
                       "verify_checksums=true; max_segment_bytes=128 MiB; ") +
           (read_ == cask_read_mode::visit ? "reads by visit() (zero-copy callback)"
            : read_ == cask_read_mode::ref ? "reads by get_ref() (zero-copy value_ref)"
                                           : "reads by get() (copy into std::string)") +
           "; no fsync except fillsync (sync_always, group commit)" +
           (BENCH_CASK_HAS_MERGE ? std::string("; background merge ") + (background_merge_ ? "on (default)" : "off") +
                                       "; merge workload: merge(merge_scope::compact)"
                                 : std::string("; merge() not available in this build"));
  }

 private:
  bool durable_ = false;
  cask_read_mode read_ = cask_read_mode::visit;
  bool background_merge_ = true;
  cask_store_engine<fast_store> f_;
  cask_store_engine<durable_store> d_;
};

}  // namespace

std::unique_ptr<engine> make_cask_engine() { return std::make_unique<cask_engine>(); }

}  // namespace bench
