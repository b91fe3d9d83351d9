// bench/engines.cpp - the engines this binary was built with (see meson.build).
#include "engine.hpp"

namespace bench {

std::unique_ptr<engine> make_cask_engine();
std::unique_ptr<engine> make_limit_engine();
#if BENCH_HAVE_LMDB
std::unique_ptr<engine> make_lmdb_engine();
#endif
#if BENCH_HAVE_TKRZW
std::unique_ptr<engine> make_tkrzw_engine();
#endif
#if BENCH_HAVE_LEVELDB
std::unique_ptr<engine> make_leveldb_engine();
#endif
#if BENCH_HAVE_ROCKSDB
std::unique_ptr<engine> make_rocksdb_engine();
#endif
#if BENCH_HAVE_KYOTO
std::unique_ptr<engine> make_kyoto_engine();
#endif

const std::vector<engine_info>& engines() {
  static const std::vector<engine_info> list = [] {
    std::vector<engine_info> v;
    v.push_back({"cask", "", false, &make_cask_engine});
#if BENCH_HAVE_LMDB
    v.push_back({"lmdb", "", true, &make_lmdb_engine});
#endif
#if BENCH_HAVE_TKRZW
    v.push_back({"tkrzw", "", true, &make_tkrzw_engine});
#endif
#if BENCH_HAVE_LEVELDB
    v.push_back({"leveldb", "", true, &make_leveldb_engine});
#endif
#if BENCH_HAVE_ROCKSDB
    v.push_back({"rocksdb", "Debian's librocksdb keeps its assertions on, which slows it", true,
                 &make_rocksdb_engine});
#endif
#if BENCH_HAVE_KYOTO
    v.push_back({"kyoto", "", true, &make_kyoto_engine});
#endif
    v.push_back({"limit",
                 "REFERENCE, NOT A PRODUCT: a bare index over a mapped log with no checksums, locks or durability",
                 false, &make_limit_engine});
    return v;
  }();
  return list;
}

const std::vector<std::pair<std::string, std::string>>& missing_engines() {
  static const std::vector<std::pair<std::string, std::string>> list = [] {
    std::vector<std::pair<std::string, std::string>> v;
#if !BENCH_HAVE_LMDB
    v.emplace_back("lmdb", "not found at build time (apt-get install liblmdb-dev, then reconfigure)");
#endif
#if !BENCH_HAVE_TKRZW
    v.emplace_back("tkrzw", "not found at build time (apt-get install libtkrzw-dev, then reconfigure)");
#endif
#if !BENCH_HAVE_LEVELDB
    v.emplace_back("leveldb", "not found at build time (apt-get install libleveldb-dev, then reconfigure)");
#endif
#if !BENCH_HAVE_ROCKSDB
    v.emplace_back("rocksdb", "not found at build time (apt-get install librocksdb-dev, then reconfigure)");
#endif
#if !BENCH_HAVE_KYOTO
    v.emplace_back("kyoto", "not found at build time (apt-get install libkyotocabinet-dev, then reconfigure)");
#endif
    return v;
  }();
  return list;
}

}  // namespace bench
