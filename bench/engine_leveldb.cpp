// bench/engine_leveldb.cpp - LevelDB: a log-structured merge tree.
// No compression, a 10-bit Bloom filter (so readmissing is fair), 64 MiB block cache.
#include "engine.hpp"

#include <leveldb/cache.h>
#include <leveldb/db.h>
#include <leveldb/filter_policy.h>
#include <leveldb/write_batch.h>

#include <stdexcept>
#include <string>

namespace bench {
namespace {

void check(const leveldb::Status& s, const char* what) {
  if (!s.ok()) throw std::runtime_error(std::string("leveldb: ") + what + ": " + s.ToString());
}

class leveldb_engine final : public engine {
 public:
  ~leveldb_engine() override { close(); }

  void open(const engine_config& cfg) override {
    std::filesystem::create_directories(cfg.dir);
    filter_.reset(leveldb::NewBloomFilterPolicy(10));
    cache_.reset(leveldb::NewLRUCache(64 << 20));
    leveldb::Options o;
    o.create_if_missing = true;
    o.compression = leveldb::kNoCompression;
    o.filter_policy = filter_.get();
    o.block_cache = cache_.get();
    o.max_open_files = 10000;
    leveldb::DB* db = nullptr;
    check(leveldb::DB::Open(o, cfg.dir.string(), &db), "open");
    db_.reset(db);
    wo_.sync = cfg.durable;
  }
  void close() override { db_.reset(); }
  void put(std::string_view k, std::string_view v) override {
    check(db_->Put(wo_, leveldb::Slice(k.data(), k.size()), leveldb::Slice(v.data(), v.size())), "put");
  }
  read_status get(std::string_view k, verify_ref verify) override {
    thread_local std::string buf;
    const leveldb::Status s = db_->Get(leveldb::ReadOptions(), leveldb::Slice(k.data(), k.size()), &buf);
    if (s.IsNotFound()) return read_status::missing;
    check(s, "get");
    return verify(buf) ? read_status::match : read_status::mismatch;
  }
  bool erase(std::string_view k) override {
    check(db_->Delete(wo_, leveldb::Slice(k.data(), k.size())), "delete");
    return true;
  }
  void sync() override {
    leveldb::WriteOptions w;
    w.sync = true;
    leveldb::WriteBatch empty;
    check(db_->Write(w, &empty), "sync");
  }
  bool erase_reports_presence() const override { return false; }
  bool can_merge() const override { return true; }
  void merge() override { db_->CompactRange(nullptr, nullptr); }
  std::string settings() const override {
    return "LevelDB " + std::to_string(leveldb::kMajorVersion) + "." + std::to_string(leveldb::kMinorVersion) +
           ": kNoCompression, Bloom filter 10 bits/key, LRU block cache 64 MiB, write_buffer 4 MiB (default), "
           "max_open_files 10000; fillsync: WriteOptions.sync; merge = CompactRange(all)";
  }

 private:
  std::unique_ptr<const leveldb::FilterPolicy> filter_;
  std::unique_ptr<leveldb::Cache> cache_;
  std::unique_ptr<leveldb::DB> db_;
  leveldb::WriteOptions wo_;
};

}  // namespace

std::unique_ptr<engine> make_leveldb_engine() { return std::make_unique<leveldb_engine>(); }

}  // namespace bench
