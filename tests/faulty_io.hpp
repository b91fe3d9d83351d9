// tests/faulty_io.hpp - an I/O policy that fails or "crashes" at the N-th
// I/O call, for testing every failure point of an operation.
//
// Every call is of one kind (io_call). The calls a plan counts are chosen by
// `fault_plan::calls` (default: the mutating ones: creating or writing a
// file, fsync, msync, truncate, allocate, rename, unlink, directory fsync,
// mkdir), optionally narrowed to one thread and by a predicate on the call.
// The counted call number `fail_at` fails with `error`:
//   - once (default): only that call fails;
//   - persistent: every counted call after it fails too (a disk that stays
//     full or broken while the process goes on);
//   - crash: every later *mutating* call fails, whatever `calls` says, so the
//     disk keeps exactly the state the calls before produced, as if the
//     process had died there. Reads always work in crash mode.
// With `short_io`, a failing write first writes the first half of its bytes
// (then reports `error`, as a write that hits a full disk does), and a failing
// read returns the first half of the bytes with no error (the caller must
// check the count). A failing close still closes the descriptor.
//
// `hook`, if set, runs before every call while armed (tests use it to act at
// an exact point of an operation); `tracing` records every call in `trace`.
#pragma once

#include <cask/io.hpp>

#include <atomic>
#include <cerrno>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace cask_test {

/// The kinds of I/O call, as bits of fault_plan::calls.
enum io_call : unsigned {
  call_create = 1u << 0,     ///< open with create_new or create_always
  call_allocate = 1u << 1,   ///< posix_fallocate
  call_truncate = 1u << 2,   ///< ftruncate
  call_write = 1u << 3,      ///< pwrite
  call_sync = 1u << 4,       ///< fdatasync of a file
  call_flush = 1u << 5,      ///< msync of a mapping
  call_sync_dir = 1u << 6,   ///< fsync of a directory
  call_rename = 1u << 7,     ///< rename
  call_remove = 1u << 8,     ///< unlink
  call_mkdir = 1u << 9,      ///< create_directories
  call_open = 1u << 10,      ///< open with read or read_write (an existing file)
  call_read = 1u << 11,      ///< pread
  call_map = 1u << 12,       ///< mmap
  call_close = 1u << 13,     ///< close
  call_list = 1u << 14,      ///< readdir
};
/// Calls that change the disk (what the plan counts by default).
inline constexpr unsigned mutating_calls = call_create | call_allocate | call_truncate | call_write | call_sync |
                                           call_flush | call_sync_dir | call_rename | call_remove | call_mkdir;
/// Calls that make data or names durable.
inline constexpr unsigned sync_calls = call_sync | call_flush | call_sync_dir;
/// Calls that read or acquire resources without changing the disk.
inline constexpr unsigned read_calls = call_open | call_read | call_map | call_list;
inline constexpr unsigned all_calls = mutating_calls | read_calls | call_close;

inline const char* call_name(unsigned c) {
  switch (c) {
    case call_create: return "create";
    case call_allocate: return "allocate";
    case call_truncate: return "truncate";
    case call_write: return "write";
    case call_sync: return "sync";
    case call_flush: return "flush";
    case call_sync_dir: return "sync_dir";
    case call_rename: return "rename";
    case call_remove: return "remove";
    case call_mkdir: return "mkdir";
    case call_open: return "open";
    case call_read: return "read";
    case call_map: return "map";
    case call_close: return "close";
    case call_list: return "list";
  }
  return "?";
}

/// One call seen while tracing.
struct traced_call {
  io_call call;
  std::filesystem::path path;
  std::thread::id thread;
  bool failed = false;
};

struct fault_plan {
  std::atomic<long> steps{0};   ///< counted calls seen while armed
  long fail_at = -1;            ///< the counted call that fails (-1: none)
  bool crash = true;            ///< after failing, fail every mutating call
  bool persistent = false;      ///< after failing, fail every counted call
  bool short_io = false;        ///< a failing write/read transfers half its bytes first
  int error = EIO;              ///< the errno a failing call reports
  unsigned calls = mutating_calls;  ///< which kinds of call are counted
  std::thread::id only_thread{};    ///< if set, calls from other threads are not counted
  std::function<bool(io_call, const std::filesystem::path&)> filter;  ///< if set, counts only calls it accepts
  std::function<void(io_call, const std::filesystem::path&)> hook;    ///< if set, runs before each call while armed
  std::atomic<bool> armed{false};
  std::atomic<bool> crashed{false};
  std::atomic<long> failures{0};
  std::atomic<bool> tracing{false};

  /// Counts one call; false (and `ec` set) if it must fail.
  bool step(io_call c, const std::filesystem::path& p, std::error_code& ec) {
    const bool ok = decide(c, p);
    if (tracing.load()) {
      std::lock_guard g(mu_);
      trace_.push_back({c, p, std::this_thread::get_id(), !ok});
    }
    if (!ok) ec = {error, std::system_category()};
    return ok;
  }

  /// The first call that failed, and its path (call 0 if none did).
  std::pair<unsigned, std::filesystem::path> first_failure() const {
    std::lock_guard g(mu_);
    return {first_call_, first_path_};
  }
  /// The calls recorded while `tracing` was on.
  std::vector<traced_call> trace() const {
    std::lock_guard g(mu_);
    return trace_;
  }
  void clear_trace() {
    std::lock_guard g(mu_);
    trace_.clear();
  }

 private:
  bool decide(io_call c, const std::filesystem::path& p) {
    if (crashed.load() && (c & mutating_calls)) return false;
    if (!armed.load()) return true;
    if (hook) hook(c, p);
    if (!(calls & c)) return true;
    if (only_thread != std::thread::id{} && std::this_thread::get_id() != only_thread) return true;
    if (filter && !filter(c, p)) return true;
    if (persistent && failures.load() > 0) {
      failures.fetch_add(1);
      return false;
    }
    const long n = steps.fetch_add(1);
    if (n != fail_at) return true;
    {
      std::lock_guard g(mu_);
      first_call_ = c;
      first_path_ = p;
    }
    failures.fetch_add(1);
    if (crash) crashed = true;
    return false;
  }

  mutable std::mutex mu_;
  std::vector<traced_call> trace_;
  unsigned first_call_ = 0;
  std::filesystem::path first_path_;
};

class faulty_io {
 public:
  faulty_io() : plan_(std::make_shared<fault_plan>()) {}
  explicit faulty_io(std::shared_ptr<fault_plan> p) : plan_(std::move(p)) {}

  class file {
   public:
    file() = default;
    file(cask::posix_io::file f, std::shared_ptr<fault_plan> p) : f_(std::move(f)), plan_(std::move(p)) {}
    bool is_open() const noexcept { return f_.is_open(); }
    const std::filesystem::path& path() const noexcept { return f_.path(); }
    std::uint64_t size(std::error_code& ec) const { return f_.size(ec); }
    /// Changes nothing on disk, so not a counted call (faults are injected only into calls that do I/O).
    std::uint64_t data_end(std::uint64_t size) const noexcept { return f_.data_end(size); }
    void allocate(std::uint64_t len, std::error_code& ec) {
      if (plan_->step(call_allocate, path(), ec)) f_.allocate(len, ec);
    }
    void truncate(std::uint64_t len, std::error_code& ec) {
      if (plan_->step(call_truncate, path(), ec)) f_.truncate(len, ec);
    }
    void write_at(const std::byte* p, std::size_t n, std::uint64_t off, std::error_code& ec) {
      if (plan_->step(call_write, path(), ec)) return f_.write_at(p, n, off, ec);
      if (plan_->short_io && n > 1) {
        std::error_code ignored;
        f_.write_at(p, n / 2, off, ignored);
      }
    }
    std::size_t read_at(std::byte* p, std::size_t n, std::uint64_t off, std::error_code& ec) const {
      if (plan_->step(call_read, path(), ec)) return f_.read_at(p, n, off, ec);
      if (!plan_->short_io) return 0;
      ec.clear();  // a short read: fewer bytes, no error
      return f_.read_at(p, n / 2, off, ec);
    }
    void sync(std::error_code& ec) {
      if (plan_->step(call_sync, path(), ec)) f_.sync(ec);
    }
    void close(std::error_code& ec) {
      std::error_code injected;
      const bool ok = !f_.is_open() || plan_->step(call_close, path(), injected);
      f_.close(ec);  // the descriptor is gone either way, as after a failed close(2)
      if (!ok && !ec) ec = injected;
    }
    cask::posix_io::file& base() { return f_; }
    const cask::posix_io::file& base() const { return f_; }

   private:
    cask::posix_io::file f_;
    std::shared_ptr<fault_plan> plan_;
  };

  class mapping {
   public:
    mapping() = default;
    mapping(cask::posix_io::mapping m, std::filesystem::path path, std::shared_ptr<fault_plan> p)
        : m_(std::move(m)), path_(std::move(path)), plan_(std::move(p)) {}
    std::byte* data() const noexcept { return m_.data(); }
    std::size_t size() const noexcept { return m_.size(); }
    bool writable() const noexcept { return m_.writable(); }
    void flush(std::size_t off, std::size_t len, std::error_code& ec) {
      if (plan_->step(call_flush, path_, ec)) m_.flush(off, len, ec);
    }
    /// Only a hint (never fails a store), so not a counted call.
    bool prefault(std::size_t off, std::size_t len) const noexcept { return m_.prefault(off, len); }

   private:
    cask::posix_io::mapping m_;
    std::filesystem::path path_;
    std::shared_ptr<fault_plan> plan_;
  };

  using dir_lock = cask::posix_io::dir_lock;

  file open(const std::filesystem::path& p, cask::open_mode m, std::error_code& ec) const {
    const bool creates = m != cask::open_mode::read && m != cask::open_mode::read_write;
    if (!plan_->step(creates ? call_create : call_open, p, ec)) return {};
    return file(base_.open(p, m, ec), plan_);
  }
  mapping map(const file& f, std::size_t size, bool writable, std::error_code& ec) const {
    if (!plan_->step(call_map, f.path(), ec)) return {};
    return mapping(base_.map(f.base(), size, writable, ec), f.path(), plan_);
  }
  void sync_dir(const std::filesystem::path& dir, std::error_code& ec) const {
    if (plan_->step(call_sync_dir, dir, ec)) base_.sync_dir(dir, ec);
  }
  void rename(const std::filesystem::path& a, const std::filesystem::path& b, std::error_code& ec) const {
    if (plan_->step(call_rename, a, ec)) base_.rename(a, b, ec);
  }
  void remove(const std::filesystem::path& p, std::error_code& ec) const {
    if (plan_->step(call_remove, p, ec)) base_.remove(p, ec);
  }
  bool create_directories(const std::filesystem::path& d, std::error_code& ec) const {
    return plan_->step(call_mkdir, d, ec) ? base_.create_directories(d, ec) : false;
  }
  bool exists(const std::filesystem::path& p) const { return base_.exists(p); }
  std::vector<std::string> list(const std::filesystem::path& d, std::error_code& ec) const {
    if (!plan_->step(call_list, d, ec)) return {};
    return base_.list(d, ec);
  }
  dir_lock lock(const std::filesystem::path& d, std::error_code& ec) const { return base_.lock(d, ec); }

  fault_plan& plan() const { return *plan_; }

 private:
  cask::posix_io base_;
  std::shared_ptr<fault_plan> plan_;
};

}  // namespace cask_test
