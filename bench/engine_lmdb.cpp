// bench/engine_lmdb.cpp - LMDB: a copy-on-write B+tree in one memory map.
// One write transaction per put (as durable and visible as any other engine's
// put); reads in a per-thread read-only transaction, reset and renewed per get.
#include "engine.hpp"

#include <lmdb.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {
namespace {

void check(int rc, const char* what) {
  if (rc != MDB_SUCCESS) throw std::runtime_error(std::string("lmdb: ") + what + ": " + mdb_strerror(rc));
}

class lmdb_engine final : public engine {
 public:
  ~lmdb_engine() override { close(); }

  void open(const engine_config& cfg) override {
    std::filesystem::create_directories(cfg.dir);
    durable_ = cfg.durable;
    check(mdb_env_create(&env_), "env_create");
    check(mdb_env_set_mapsize(env_, std::size_t{64} << 30), "set_mapsize");
    check(mdb_env_set_maxreaders(env_, 256), "set_maxreaders");
    flags_ = MDB_NOTLS | MDB_NORDAHEAD | (durable_ ? 0u : MDB_NOSYNC | MDB_WRITEMAP);
    check(mdb_env_open(env_, cfg.dir.c_str(), flags_, 0644), "env_open");
    MDB_txn* txn;
    check(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
    check(mdb_dbi_open(txn, nullptr, 0, &dbi_), "dbi_open");
    check(mdb_txn_commit(txn), "commit");
    ++generation_;
  }

  void close() override {
    if (!env_) return;
    if (!durable_) mdb_env_sync(env_, 1);
    {
      // MDB_NOTLS: a read txn is not bound to its thread, so all can be aborted here.
      std::lock_guard lk(readers_mu_);
      for (MDB_txn* t : readers_) mdb_txn_abort(t);
      readers_.clear();
    }
    ++generation_;  // every thread's cached txn is now stale
    mdb_env_close(env_);
    env_ = nullptr;
  }

  void put(std::string_view k, std::string_view v) override {
    MDB_txn* txn;
    check(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
    MDB_val key{k.size(), const_cast<char*>(k.data())}, val{v.size(), const_cast<char*>(v.data())};
    const int rc = mdb_put(txn, dbi_, &key, &val, 0);
    if (rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      check(rc, "put");
    }
    check(mdb_txn_commit(txn), "commit");
  }

  read_status get(std::string_view k, verify_ref verify) override {
    reader& r = my_reader();
    if (!r.txn || r.generation != generation_) {
      check(mdb_txn_begin(env_, nullptr, MDB_RDONLY, &r.txn), "txn_begin(rdonly)");
      r.generation = generation_;
      std::lock_guard lk(readers_mu_);
      readers_.push_back(r.txn);
    } else {
      check(mdb_txn_renew(r.txn), "txn_renew");
    }
    MDB_val key{k.size(), const_cast<char*>(k.data())}, val;
    const int rc = mdb_get(r.txn, dbi_, &key, &val);
    read_status st = read_status::missing;
    if (rc == MDB_SUCCESS) {
      st = verify({static_cast<const char*>(val.mv_data), val.mv_size}) ? read_status::match : read_status::mismatch;
    } else if (rc != MDB_NOTFOUND) {
      mdb_txn_reset(r.txn);
      check(rc, "get");
    }
    mdb_txn_reset(r.txn);
    return st;
  }

  bool erase(std::string_view k) override {
    MDB_txn* txn;
    check(mdb_txn_begin(env_, nullptr, 0, &txn), "txn_begin");
    MDB_val key{k.size(), const_cast<char*>(k.data())};
    const int rc = mdb_del(txn, dbi_, &key, nullptr);
    if (rc == MDB_NOTFOUND) {
      mdb_txn_abort(txn);
      return false;
    }
    if (rc != MDB_SUCCESS) {
      mdb_txn_abort(txn);
      check(rc, "del");
    }
    check(mdb_txn_commit(txn), "commit");
    return true;
  }

  void sync() override { check(mdb_env_sync(env_, 1), "env_sync"); }

  std::string settings() const override {
    return std::string(MDB_VERSION_STRING) + ": one write txn per put; " +
           (durable_ ? "default sync (fsync per commit)" : "MDB_NOSYNC|MDB_WRITEMAP") +
           ", MDB_NOTLS|MDB_NORDAHEAD, mapsize 64 GiB; reads zero-copy in a per-thread read txn (reset/renew)";
  }

 private:
  struct reader {
    MDB_txn* txn = nullptr;
    std::uint64_t generation = 0;
  };
  static reader& my_reader() {
    thread_local reader r;
    return r;
  }
  // Each open and close starts a new generation, so a thread never renews a txn of a closed env.
  inline static std::atomic<std::uint64_t> generation_{0};
  std::mutex readers_mu_;
  std::vector<MDB_txn*> readers_;  // every read txn of the open env, aborted at close

  MDB_env* env_ = nullptr;
  MDB_dbi dbi_ = 0;
  unsigned flags_ = 0;
  bool durable_ = false;
};

}  // namespace

std::unique_ptr<engine> make_lmdb_engine() { return std::make_unique<lmdb_engine>(); }

}  // namespace bench
