// bench/engine_tkrzw.cpp - Tkrzw HashDBM: an on-disk hash table in one file
// (memory-mapped, parallel), the closest hash-based peer of cask.
#include "engine.hpp"

#include <tkrzw_dbm_hash.h>
#include <tkrzw_lib_common.h>

#include <stdexcept>
#include <string>

namespace bench {
namespace {

void check(const tkrzw::Status& s, const char* what) {
  if (s != tkrzw::Status::SUCCESS) throw std::runtime_error(std::string("tkrzw: ") + what + ": " + s.GetMessage());
}

class tkrzw_engine final : public engine {
 public:
  ~tkrzw_engine() override { close(); }

  void open(const engine_config& cfg) override {
    std::filesystem::create_directories(cfg.dir);
    durable_ = cfg.durable;
    tkrzw::HashDBM::TuningParameters p;
    p.update_mode = tkrzw::HashDBM::UPDATE_IN_PLACE;
    p.record_comp_mode = tkrzw::HashDBM::RECORD_COMP_NONE;
    buckets_ = static_cast<std::int64_t>(std::max<std::size_t>(cfg.expected_keys * 2, 1u << 20));
    p.num_buckets = buckets_;
    p.cache_buckets = 1;
    p.restore_mode = tkrzw::HashDBM::RESTORE_DEFAULT;
    check(db_.OpenAdvanced((cfg.dir / "tkrzw.tkh").string(), true, tkrzw::File::OPEN_DEFAULT, p), "open");
  }
  void close() override {
    if (db_.IsOpen()) check(db_.Close(), "close");
  }
  void put(std::string_view k, std::string_view v) override {
    check(db_.Set(k, v), "set");
    if (durable_) check(db_.Synchronize(true), "synchronize");
  }
  read_status get(std::string_view k, verify_ref verify) override {
    thread_local std::string buf;
    const tkrzw::Status s = db_.Get(k, &buf);
    if (s == tkrzw::Status::NOT_FOUND_ERROR) return read_status::missing;
    check(s, "get");
    return verify(buf) ? read_status::match : read_status::mismatch;
  }
  bool erase(std::string_view k) override {
    const tkrzw::Status s = db_.Remove(k);
    if (s == tkrzw::Status::NOT_FOUND_ERROR) return false;
    check(s, "remove");
    if (durable_) check(db_.Synchronize(true), "synchronize");
    return true;
  }
  void sync() override { check(db_.Synchronize(true), "synchronize"); }
  bool can_merge() const override { return true; }
  void merge() override { check(db_.Rebuild(), "rebuild"); }
  std::string settings() const override {
    return std::string("Tkrzw ") + tkrzw::PACKAGE_VERSION + " HashDBM (MemoryMapParallelFile): UPDATE_IN_PLACE, " +
           "no compression, default record CRC (none), num_buckets=" + std::to_string(buckets_) +
           ", cache_buckets=1; fillsync: Synchronize(hard) after each put; merge = Rebuild()";
  }

 private:
  tkrzw::HashDBM db_;
  bool durable_ = false;
  std::int64_t buckets_ = 0;
};

}  // namespace

std::unique_ptr<engine> make_tkrzw_engine() { return std::make_unique<tkrzw_engine>(); }

}  // namespace bench
