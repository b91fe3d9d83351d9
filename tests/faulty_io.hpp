// tests/faulty_io.hpp - an I/O policy that fails or "crashes" at the N-th
// mutating call, for testing every failure point of an operation.
//
// Every call that changes the disk (creating or writing a file, fsync, msync,
// truncate, allocate, rename, unlink, directory fsync) counts as one step.
// At step `fail_at` the call fails with `error`; in crash mode every later
// mutating call fails too, so the disk keeps exactly the state the steps
// before produced, as if the process had died there. Reads always work.
#pragma once

#include <cask/io.hpp>

#include <atomic>
#include <cerrno>
#include <memory>

namespace cask_test {

struct fault_plan {
  std::atomic<long> steps{0};   ///< mutating calls seen while armed
  long fail_at = -1;            ///< the step that fails (-1: none)
  bool crash = true;            ///< after failing, fail everything
  int error = EIO;
  std::atomic<bool> armed{false};
  std::atomic<bool> crashed{false};
  std::atomic<long> failures{0};

  /// Counts one mutating call; false (and `ec` set) if it must fail.
  bool step(std::error_code& ec) {
    if (crashed.load()) {
      ec = {error, std::system_category()};
      return false;
    }
    if (!armed.load()) return true;
    const long n = steps.fetch_add(1);
    if (n == fail_at) {
      failures.fetch_add(1);
      if (crash) crashed = true;
      ec = {error, std::system_category()};
      return false;
    }
    return true;
  }
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
    void allocate(std::uint64_t len, std::error_code& ec) {
      if (plan_->step(ec)) f_.allocate(len, ec);
    }
    void truncate(std::uint64_t len, std::error_code& ec) {
      if (plan_->step(ec)) f_.truncate(len, ec);
    }
    void write_at(const std::byte* p, std::size_t n, std::uint64_t off, std::error_code& ec) {
      if (plan_->step(ec)) f_.write_at(p, n, off, ec);
    }
    std::size_t read_at(std::byte* p, std::size_t n, std::uint64_t off, std::error_code& ec) const {
      return f_.read_at(p, n, off, ec);
    }
    void sync(std::error_code& ec) {
      if (plan_->step(ec)) f_.sync(ec);
    }
    void close(std::error_code& ec) { f_.close(ec); }
    cask::posix_io::file& base() { return f_; }
    const cask::posix_io::file& base() const { return f_; }

   private:
    cask::posix_io::file f_;
    std::shared_ptr<fault_plan> plan_;
  };

  class mapping {
   public:
    mapping() = default;
    mapping(cask::posix_io::mapping m, std::shared_ptr<fault_plan> p) : m_(std::move(m)), plan_(std::move(p)) {}
    std::byte* data() const noexcept { return m_.data(); }
    std::size_t size() const noexcept { return m_.size(); }
    bool writable() const noexcept { return m_.writable(); }
    void flush(std::size_t off, std::size_t len, std::error_code& ec) {
      if (plan_->step(ec)) m_.flush(off, len, ec);
    }

   private:
    cask::posix_io::mapping m_;
    std::shared_ptr<fault_plan> plan_;
  };

  using dir_lock = cask::posix_io::dir_lock;

  file open(const std::filesystem::path& p, cask::open_mode m, std::error_code& ec) const {
    if (m != cask::open_mode::read && m != cask::open_mode::read_write && !plan_->step(ec)) return {};
    return file(base_.open(p, m, ec), plan_);
  }
  mapping map(const file& f, std::size_t size, bool writable, std::error_code& ec) const {
    return mapping(base_.map(f.base(), size, writable, ec), plan_);
  }
  void sync_dir(const std::filesystem::path& dir, std::error_code& ec) const {
    if (plan_->step(ec)) base_.sync_dir(dir, ec);
  }
  void rename(const std::filesystem::path& a, const std::filesystem::path& b, std::error_code& ec) const {
    if (plan_->step(ec)) base_.rename(a, b, ec);
  }
  void remove(const std::filesystem::path& p, std::error_code& ec) const {
    if (plan_->step(ec)) base_.remove(p, ec);
  }
  bool create_directories(const std::filesystem::path& d, std::error_code& ec) const {
    return plan_->step(ec) ? base_.create_directories(d, ec) : false;
  }
  bool exists(const std::filesystem::path& p) const { return base_.exists(p); }
  std::vector<std::string> list(const std::filesystem::path& d, std::error_code& ec) const { return base_.list(d, ec); }
  dir_lock lock(const std::filesystem::path& d, std::error_code& ec) const { return base_.lock(d, ec); }

  fault_plan& plan() const { return *plan_; }

 private:
  cask::posix_io base_;
  std::shared_ptr<fault_plan> plan_;
};

}  // namespace cask_test
