// bench/engine_rocksdb.cpp - RocksDB: a log-structured merge tree.
// No compression, a 10-bit Bloom filter, 64 MiB block cache. Debian's
// librocksdb is built with its assertions on, which slows it somewhat.
#include "engine.hpp"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/table.h>
#include <rocksdb/version.h>

#include <stdexcept>
#include <string>

namespace bench {
namespace {

void check(const rocksdb::Status& s, const char* what) {
  if (!s.ok()) throw std::runtime_error(std::string("rocksdb: ") + what + ": " + s.ToString());
}

class rocksdb_engine final : public engine {
 public:
  ~rocksdb_engine() override { close(); }

  void open(const engine_config& cfg) override {
    std::filesystem::create_directories(cfg.dir);
    rocksdb::Options o;
    o.create_if_missing = true;
    o.compression = rocksdb::kNoCompression;
    o.bottommost_compression = rocksdb::kNoCompression;
    o.max_open_files = 10000;
    o.IncreaseParallelism(2);
    rocksdb::BlockBasedTableOptions t;
    t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    t.block_cache = rocksdb::NewLRUCache(64 << 20);
    o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
    rocksdb::DB* db = nullptr;
    check(rocksdb::DB::Open(o, cfg.dir.string(), &db), "open");
    db_.reset(db);
    wo_.sync = cfg.durable;
  }
  void close() override {
    if (db_) check(db_->Close(), "close");
    db_.reset();
  }
  void put(std::string_view k, std::string_view v) override {
    check(db_->Put(wo_, rocksdb::Slice(k.data(), k.size()), rocksdb::Slice(v.data(), v.size())), "put");
  }
  read_status get(std::string_view k, verify_ref verify) override {
    rocksdb::PinnableSlice v;
    const rocksdb::Status s =
        db_->Get(rocksdb::ReadOptions(), db_->DefaultColumnFamily(), rocksdb::Slice(k.data(), k.size()), &v);
    if (s.IsNotFound()) return read_status::missing;
    check(s, "get");
    return verify({v.data(), v.size()}) ? read_status::match : read_status::mismatch;
  }
  bool erase(std::string_view k) override {
    check(db_->Delete(wo_, rocksdb::Slice(k.data(), k.size())), "delete");
    return true;
  }
  void sync() override { check(db_->FlushWAL(true), "sync"); }
  bool erase_reports_presence() const override { return false; }
  bool can_merge() const override { return true; }
  void merge() override {
    rocksdb::CompactRangeOptions c;
    c.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    check(db_->CompactRange(c, nullptr, nullptr), "compact");
  }
  std::string settings() const override {
    return "RocksDB " + std::to_string(ROCKSDB_MAJOR) + "." + std::to_string(ROCKSDB_MINOR) + "." +
           std::to_string(ROCKSDB_PATCH) +
           " (Debian build: assertions ON, slower than a release build): kNoCompression, Bloom filter 10 bits/key, "
           "LRU block cache 64 MiB, write_buffer 64 MiB (default), IncreaseParallelism(2), reads into PinnableSlice; "
           "fillsync: WriteOptions.sync; merge = CompactRange(all, forced bottommost)";
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::WriteOptions wo_;
};

}  // namespace

std::unique_ptr<engine> make_rocksdb_engine() { return std::make_unique<rocksdb_engine>(); }

}  // namespace bench
