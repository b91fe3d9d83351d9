// bench/engine_kyoto.cpp - Kyoto Cabinet HashDB: an on-disk hash table in one file.
#include "engine.hpp"

#include <kchashdb.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace bench {
namespace {

class kyoto_engine final : public engine {
 public:
  ~kyoto_engine() override { close(); }

  void open(const engine_config& cfg) override {
    std::filesystem::create_directories(cfg.dir);
    durable_ = cfg.durable;
    buckets_ = static_cast<std::int64_t>(std::max<std::size_t>(cfg.expected_keys * 2, 1u << 20));
    db_.tune_buckets(buckets_);
    db_.tune_map(std::int64_t{1} << 30);
    db_.tune_options(0);  // no compression, no small/linear tricks
    std::uint32_t mode = kyotocabinet::HashDB::OWRITER | kyotocabinet::HashDB::OCREATE;
    if (durable_) mode |= kyotocabinet::HashDB::OAUTOSYNC;
    if (!db_.open((cfg.dir / "kyoto.kch").string(), mode))
      throw std::runtime_error(std::string("kyoto: open: ") + db_.error().message());
    open_ = true;
  }
  void close() override {
    if (open_ && !db_.close()) throw std::runtime_error(std::string("kyoto: close: ") + db_.error().message());
    open_ = false;
  }
  void put(std::string_view k, std::string_view v) override {
    if (!db_.set(k.data(), k.size(), v.data(), v.size()))
      throw std::runtime_error(std::string("kyoto: set: ") + db_.error().message());
  }
  read_status get(std::string_view k, verify_ref verify) override {
    thread_local std::vector<char> buf(1 << 20);
    const std::int32_t n = db_.get(k.data(), k.size(), buf.data(), buf.size());
    if (n < 0) {
      if (db_.error() == kyotocabinet::BasicDB::Error::NOREC) return read_status::missing;
      throw std::runtime_error(std::string("kyoto: get: ") + db_.error().message());
    }
    return verify({buf.data(), static_cast<std::size_t>(n)}) ? read_status::match : read_status::mismatch;
  }
  bool erase(std::string_view k) override {
    if (db_.remove(k.data(), k.size())) return true;
    if (db_.error() == kyotocabinet::BasicDB::Error::NOREC) return false;
    throw std::runtime_error(std::string("kyoto: remove: ") + db_.error().message());
  }
  void sync() override { db_.synchronize(true); }
  bool can_merge() const override { return true; }
  void merge() override {
    if (!db_.defrag(0)) throw std::runtime_error(std::string("kyoto: defrag: ") + db_.error().message());
  }
  std::string settings() const override {
    return std::string("Kyoto Cabinet ") + kyotocabinet::VERSION + " HashDB: tune_buckets=" + std::to_string(buckets_) +
           ", tune_map=1 GiB, no compression; fillsync: OAUTOSYNC; merge = defrag(0) (whole file)";
  }

 private:
  kyotocabinet::HashDB db_;
  bool open_ = false;
  bool durable_ = false;
  std::int64_t buckets_ = 0;
};

}  // namespace

std::unique_ptr<engine> make_kyoto_engine() { return std::make_unique<kyoto_engine>(); }

}  // namespace bench
