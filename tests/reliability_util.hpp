// tests/reliability_util.hpp - helpers of the reliability tests (kill, I/O
// error, regression): scratch directories on tmpfs, descriptor and mapping
// counts, self-checking values, and a model of the store's contents.
#pragma once

#include "test_util.hpp"

#include <dirent.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

namespace cask_test {

using model = std::map<std::string, std::string>;

/// Everything a store holds, read through for_each.
template <class Store>
model contents(const Store& db) {
  model m;
  db.for_each([&](const std::string& k, const std::string& v) { m[k] = v; });
  return m;
}

/// Where scratch stores go: $CASK_TEST_DIR, else /dev/shm (tmpfs: fsync is
/// free, and these tests inject their faults rather than rely on the disk),
/// else the system temp dir.
inline std::filesystem::path scratch_root() {
  if (const char* d = std::getenv("CASK_TEST_DIR"); d && *d) return d;
  std::error_code ec;
  if (std::filesystem::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0) return "/dev/shm";
  return std::filesystem::temp_directory_path();
}

/// A fresh directory under scratch_root(), removed on destruction.
class scratch_dir {
 public:
  explicit scratch_dir(const std::string& tag) {
    static int counter = 0;
    path_ = scratch_root() / ("cask-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& s) const { return path_ / s; }

 private:
  std::filesystem::path path_;
};

/// Open descriptors of this process, and how many of them name a file under `under`.
struct fd_census {
  std::size_t total = 0, under = 0;
  bool operator==(const fd_census&) const = default;
};
inline fd_census count_fds(const std::filesystem::path& under) {
  fd_census c;
  const std::string prefix = under.string();
  DIR* d = ::opendir("/proc/self/fd");
  if (!d) return c;
  const int own = ::dirfd(d);
  while (const dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n == "." || n == ".." || n == std::to_string(own)) continue;
    ++c.total;
    char buf[4096];
    const ssize_t len = ::readlink(("/proc/self/fd/" + n).c_str(), buf, sizeof buf - 1);
    if (len > 0 && std::string(buf, static_cast<std::size_t>(len)).rfind(prefix, 0) == 0) ++c.under;
  }
  ::closedir(d);
  return c;
}

/// Lines of /proc/self/maps that map a file under `under` (deleted files included).
inline std::size_t count_mappings(const std::filesystem::path& under) {
  std::ifstream in("/proc/self/maps");
  std::size_t n = 0;
  const std::string prefix = under.string();
  for (std::string line; std::getline(in, line);)
    if (line.find(prefix) != std::string::npos) ++n;
  return n;
}

/// A value naming its key and version, padded to a length that varies with
/// the version, and ending in a checksum of everything before it.
inline std::string checked_value(const std::string& key, std::uint64_t version, std::size_t pad) {
  std::string v = key + ":" + std::to_string(version) + ":";
  v.append(pad, static_cast<char>('a' + version % 26));
  const std::uint32_t c = cask::crc32c::compute(reinterpret_cast<const std::byte*>(v.data()), v.size());
  return v + "#" + std::to_string(c);
}
/// The version a checked_value carries, or -1 if it is damaged or belongs to another key.
inline long long checked_version(const std::string& key, const std::string& v) {
  const auto hash = v.rfind('#');
  if (hash == std::string::npos) return -1;
  const std::string body = v.substr(0, hash);
  if (std::to_string(cask::crc32c::compute(reinterpret_cast<const std::byte*>(body.data()), body.size())) !=
      v.substr(hash + 1))
    return -1;
  if (body.compare(0, key.size() + 1, key + ":") != 0) return -1;
  const auto start = key.size() + 1;
  const auto end = body.find(':', start);
  if (end == std::string::npos) return -1;
  return std::stoll(body.substr(start, end - start));
}

}  // namespace cask_test
