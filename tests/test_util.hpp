// tests/test_util.hpp - helpers shared by the tests: temporary directories,
// file byte access, deterministic data.
#pragma once

#include <cask.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

namespace cask_test {

/// Where a temp_dir lives.
enum class storage {
  disk,    ///< the system temp dir: real fsyncs, the file system users have
  memory,  ///< /dev/shm (tmpfs) when present: for sweeps that open a store thousands of
           ///< times and test recovery logic, not durability (powerloss_test does that)
};

/// A fresh directory, removed on destruction.
class temp_dir {
 public:
  explicit temp_dir(const std::string& tag = "t", storage where = storage::disk) {
    static int counter = 0;
    std::filesystem::path base = std::filesystem::temp_directory_path();
    if (where == storage::memory && std::filesystem::is_directory("/dev/shm")) base = "/dev/shm";
    path_ = base / ("cask-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& s) const { return path_ / s; }

 private:
  std::filesystem::path path_;
};

inline std::vector<char> read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
inline void write_file(const std::filesystem::path& p, const std::vector<char>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

/// Segment files of a store directory, ascending by id.
inline std::vector<std::filesystem::path> segment_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> v;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".cask") v.push_back(e.path());
  std::sort(v.begin(), v.end());
  return v;
}

/// Removes the hint files and the keydir snapshot of a closed store, so that
/// its next open scans (and so checks) every segment.
inline void remove_index_files(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> v;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().extension() == ".hint" || e.path().filename() == "KEYDIR") v.push_back(e.path());
  for (const auto& p : v) std::filesystem::remove(p);
}

/// A copy of a whole store directory.
inline void copy_dir(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::filesystem::remove_all(to);
  std::filesystem::create_directories(to);
  for (const auto& e : std::filesystem::directory_iterator(from))
    if (e.path().filename() != "LOCK") std::filesystem::copy_file(e.path(), to / e.path().filename());
}

inline std::string key_of(std::uint64_t i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "key%013llu", static_cast<unsigned long long>(i));
  return buf;
}
inline std::string value_of(std::uint64_t i, std::size_t len = 100) {
  std::string v(len, '\0');
  std::mt19937_64 g(i * 0x9E3779B97F4A7C15ull + 1);
  for (auto& c : v) c = static_cast<char>('a' + g() % 26);
  return v;
}

using string_store = cask::log_store<std::string, std::string>;

}  // namespace cask_test
