// cask/io.hpp - the file-system policy.
//
// Every byte cask reads or writes goes through an I/O policy object, so tests
// can substitute one that injects faults or simulates power loss. The
// reference implementation is posix_io; its members define the interface
// (concept cask::io_policy in concepts.hpp). All members report failure
// through a std::error_code& and never throw; errno values use
// std::system_category().
//
// This is the only header that includes Boost.Interprocess: mappings are
// boost::interprocess::file_mapping + mapped_region, directory locks are
// boost::interprocess::file_lock (an fcntl lock on POSIX).
#pragma once

#include <cask/error.hpp>

#include <boost/interprocess/file_mapping.hpp>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/sync/file_lock.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <set>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace cask {

/// How posix_io::open opens a file.
enum class open_mode {
  read,           ///< read-only; the file must exist
  read_write,     ///< read and write; the file must exist
  create_new,     ///< read and write; the file must not exist (O_EXCL)
  create_always,  ///< read and write; created or truncated to zero
};

/// The POSIX file-system policy (Linux and other POSIX systems). Stateless:
/// copies are interchangeable and every member is thread-safe; a `file` or
/// `mapping` object is used by one thread at a time unless noted.
class posix_io {
 public:
  /// An open file descriptor, closed on destruction. Movable.
  class file {
   public:
    file() = default;
    /// Takes ownership of `fd`, open on `p`.
    explicit file(int fd, std::filesystem::path p) : fd_(fd), path_(std::move(p)) {}
    ///@{
    /// Moves the descriptor; `o` is left closed.
    file(file&& o) noexcept : fd_(std::exchange(o.fd_, -1)), path_(std::move(o.path_)) {}
    file& operator=(file&& o) noexcept {
      if (this != &o) {
        reset();
        fd_ = std::exchange(o.fd_, -1);
        path_ = std::move(o.path_);
      }
      return *this;
    }
    ///@}
    ~file() { reset(); }
    /// Whether a descriptor is held.
    bool is_open() const noexcept { return fd_ >= 0; }
    /// The path the file was opened with.
    const std::filesystem::path& path() const noexcept { return path_; }

    /// The file's size in bytes.
    std::uint64_t size(std::error_code& ec) const {
      struct stat st;
      if (::fstat(fd_, &st) != 0) return ec = detail::errno_code(errno), 0;
      return static_cast<std::uint64_t>(st.st_size);
    }
    /// Reserves disk blocks for [0, len) so later writes through a mapping
    /// cannot fail for lack of space (which would raise SIGBUS).
    void allocate(std::uint64_t len, std::error_code& ec) {
      const int r = ::posix_fallocate(fd_, 0, static_cast<off_t>(len));
      if (r != 0) ec = detail::errno_code(r);
    }
    /// Where the file's last data extent ends, as the file system reports it
    /// (lseek SEEK_DATA / SEEK_HOLE): every byte from there to `size` lies in
    /// a hole or in preallocated, never-written space, and reads as zero.
    /// `size` where the file system cannot tell. Recovery uses it to check a
    /// preallocated tail without reading it; an I/O policy may leave it out.
    std::uint64_t data_end(std::uint64_t size) const noexcept {
      std::uint64_t end = 0;
      for (off_t off = 0; static_cast<std::uint64_t>(off) < size;) {
        const off_t d = ::lseek(fd_, off, SEEK_DATA);
        if (d < 0) return errno == ENXIO ? end : size;  // ENXIO: no data from off on
        const off_t h = ::lseek(fd_, d, SEEK_HOLE);
        if (h < 0 || h <= d) return size;
        end = static_cast<std::uint64_t>(h);
        off = h;
      }
      return std::min(end, size);
    }
    /// Sets the file's size to `len` bytes.
    void truncate(std::uint64_t len, std::error_code& ec) {
      if (::ftruncate(fd_, static_cast<off_t>(len)) != 0) ec = detail::errno_code(errno);
    }
    /// Writes all `n` bytes at `off`; a short write is retried, an error reported.
    void write_at(const std::byte* p, std::size_t n, std::uint64_t off, std::error_code& ec) {
      while (n > 0) {
        const ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(off));
        if (w < 0) {
          if (errno == EINTR) continue;
          ec = detail::errno_code(errno);
          return;
        }
        p += w;
        n -= static_cast<std::size_t>(w);
        off += static_cast<std::uint64_t>(w);
      }
    }
    /// Reads up to `n` bytes at `off`; returns how many were read (less at end of file).
    std::size_t read_at(std::byte* p, std::size_t n, std::uint64_t off, std::error_code& ec) const {
      std::size_t done = 0;
      while (done < n) {
        const ssize_t r = ::pread(fd_, p + done, n - done, static_cast<off_t>(off + done));
        if (r < 0) {
          if (errno == EINTR) continue;
          ec = detail::errno_code(errno);
          return done;
        }
        if (r == 0) break;
        done += static_cast<std::size_t>(r);
      }
      return done;
    }
    /// Makes the file's data durable (fdatasync).
    void sync(std::error_code& ec) {
      if (::fdatasync(fd_) != 0) ec = detail::errno_code(errno);
    }
    /// Closes the descriptor, reporting the error close() returns.
    void close(std::error_code& ec) {
      if (fd_ >= 0 && ::close(std::exchange(fd_, -1)) != 0) ec = detail::errno_code(errno);
    }

   private:
    void reset() noexcept {
      if (fd_ >= 0) ::close(std::exchange(fd_, -1));
    }
    int fd_ = -1;
    std::filesystem::path path_;
  };

  /// A memory mapping of [0, size) of a file, unmapped on destruction.
  /// data() stays valid until then; reading bytes past the file's current
  /// end raises SIGBUS, which cask never does.
  class mapping {
   public:
    mapping() = default;
    /// The first mapped byte (nullptr for an empty mapping).
    std::byte* data() const noexcept { return static_cast<std::byte*>(region_.get_address()); }
    /// The number of bytes mapped.
    std::size_t size() const noexcept { return region_.get_size(); }
    /// Whether the mapping may be written.
    bool writable() const noexcept { return writable_; }
    /// Makes [off, off + len) durable (msync MS_SYNC).
    void flush(std::size_t off, std::size_t len, std::error_code& ec) {
      if (len == 0) return;
      // msync wants a page-aligned address; the mapping starts at file offset 0.
      const std::size_t page = boost::interprocess::mapped_region::get_page_size();
      const std::size_t start = off & ~(page - 1);
      errno = 0;
      if (!region_.flush(start, len + (off - start), /*async=*/false)) ec = detail::errno_code(errno ? errno : EIO);
    }

    /// Maps the pages of [off, off + len) writable now, taking the page
    /// faults the first writes to them would take (madvise
    /// MADV_POPULATE_WRITE, Linux 5.14 and later). Only a hint, safe beside
    /// writes to other pages of the mapping: returns false, and changes
    /// nothing, where it is unsupported or fails (past the file's end, say).
    /// log_store calls it from a background thread ahead of the writer
    /// (options::prefault_bytes); an I/O policy may leave it out.
    bool prefault(std::size_t off, std::size_t len) const noexcept {
#ifdef __linux__
      constexpr int populate_write = 23;  // MADV_POPULATE_WRITE, in case the C library's headers predate it
      const std::size_t page = boost::interprocess::mapped_region::get_page_size();
      const std::size_t start = off & ~(page - 1);
      if (!writable_ || len == 0 || off + len > size()) return false;
      return ::madvise(data() + start, len + (off - start), populate_write) == 0;
#else
      (void)off;
      (void)len;
      return false;
#endif
    }

   private:
    friend class posix_io;
    boost::interprocess::mapped_region region_;
    bool writable_ = false;
  };

  /// An exclusive lock on a store directory, held until destruction.
  /// Held through one object per directory per process (see lock()).
  class dir_lock {
   public:
    dir_lock() = default;
    /// Whether the lock is held.
    bool held() const noexcept { return static_cast<bool>(entry_); }

   private:
    friend class posix_io;
    std::shared_ptr<void> entry_;
  };

  /// Opens `p` as `m` says (close-on-exec).
  file open(const std::filesystem::path& p, open_mode m, std::error_code& ec) const {
    int flags = O_CLOEXEC;
    switch (m) {
      case open_mode::read: flags |= O_RDONLY; break;
      case open_mode::read_write: flags |= O_RDWR; break;
      case open_mode::create_new: flags |= O_RDWR | O_CREAT | O_EXCL; break;
      case open_mode::create_always: flags |= O_RDWR | O_CREAT | O_TRUNC; break;
    }
    int fd;
    do fd = ::open(p.c_str(), flags, 0644);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return ec = detail::errno_code(errno), file{};
    return file(fd, p);
  }

  /// Maps [0, size) of `f`'s file, read-only or read-write (MAP_SHARED).
  /// `size` must be > 0 and <= the file's size.
  mapping map(const file& f, std::size_t size, bool writable, std::error_code& ec) const {
    namespace bip = boost::interprocess;
    mapping m;
    try {
      const auto mode = writable ? bip::read_write : bip::read_only;
      bip::file_mapping fm(f.path().c_str(), mode);
      m.region_ = bip::mapped_region(fm, mode, 0, size);
      m.writable_ = writable;
    } catch (const bip::interprocess_exception& e) {
      const int native = e.get_native_error();
      ec = detail::errno_code(native ? native : EIO);
    }
    return m;
  }

  /// fsync of a directory, so that creates, renames and unlinks in it are durable.
  void sync_dir(const std::filesystem::path& dir, std::error_code& ec) const {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return void(ec = detail::errno_code(errno));
    if (::fsync(fd) != 0) ec = detail::errno_code(errno);
    ::close(fd);
  }
  /// Renames `from` to `to`, replacing `to` atomically.
  void rename(const std::filesystem::path& from, const std::filesystem::path& to, std::error_code& ec) const {
    if (::rename(from.c_str(), to.c_str()) != 0) ec = detail::errno_code(errno);
  }
  /// Removes the file `p`.
  void remove(const std::filesystem::path& p, std::error_code& ec) const {
    if (::unlink(p.c_str()) != 0) ec = detail::errno_code(errno);
  }
  /// Creates `dir` (and its parents) if missing; returns whether it was created.
  bool create_directories(const std::filesystem::path& dir, std::error_code& ec) const {
    return std::filesystem::create_directories(dir, ec);
  }
  /// Whether `p` exists.
  bool exists(const std::filesystem::path& p) const {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0;
  }
  /// The names of the regular files in `dir`, unsorted.
  std::vector<std::string> list(const std::filesystem::path& dir, std::error_code& ec) const {
    std::vector<std::string> out;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return ec = detail::errno_code(errno), out;
    while (const dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      out.push_back(name);
    }
    ::closedir(d);
    return out;
  }

  /// Takes the exclusive lock of store directory `dir` (on the file `dir/LOCK`).
  /// Fails with errc::store_locked if another process holds it, or if this
  /// process already does: an fcntl lock belongs to the process and is dropped
  /// when any descriptor of the file is closed, so the lock file is opened at
  /// most once per process, through a process-wide registry.
  dir_lock lock(const std::filesystem::path& dir, std::error_code& ec) const {
    namespace bip = boost::interprocess;
    dir_lock out;
    const std::filesystem::path lock_path = dir / "LOCK";
    // Nothing here opens the lock file while this process might hold a lock on
    // it: stat() first, create only a file that does not exist yet.
    struct stat st;
    if (::stat(lock_path.c_str(), &st) != 0) {
      if (errno != ENOENT) return ec = detail::errno_code(errno), out;
      file f = open(lock_path, open_mode::create_new, ec);
      if (ec == std::errc::file_exists) ec.clear();
      if (ec) return out;
      if (::stat(lock_path.c_str(), &st) != 0) return ec = detail::errno_code(errno), out;
    }
    const auto key = std::make_pair(static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino));
    {
      std::lock_guard g(registry_mutex());
      if (!registry().insert(key).second) return ec = make_error_code(errc::store_locked), out;
    }
    struct entry {
      std::pair<std::uint64_t, std::uint64_t> key;
      bip::file_lock lock;
      ~entry() {
        try {
          lock.unlock();
        } catch (...) {
        }
        lock = bip::file_lock();  // closes the descriptor
        std::lock_guard g(registry_mutex());
        registry().erase(key);
      }
    };
    try {
      auto e = std::make_shared<entry>();
      e->key = key;  // from here on, e's destructor unregisters the key
      e->lock = bip::file_lock(lock_path.c_str());
      if (!e->lock.try_lock()) return ec = make_error_code(errc::store_locked), out;
      out.entry_ = std::move(e);
    } catch (const bip::interprocess_exception& ex) {
      const int native = ex.get_native_error();
      ec = detail::errno_code(native ? native : EIO);
    }
    return out;
  }

 private:
  static std::mutex& registry_mutex() {
    static std::mutex m;
    return m;
  }
  static std::set<std::pair<std::uint64_t, std::uint64_t>>& registry() {
    static std::set<std::pair<std::uint64_t, std::uint64_t>> s;
    return s;
  }
};

}  // namespace cask
