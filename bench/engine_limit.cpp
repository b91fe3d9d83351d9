// bench/engine_limit.cpp - the "limit" reference. NOT A PRODUCT.
//
// A bare open-addressing index of 8-byte entries (24-bit hash tag, 40-bit
// log offset; linear probing, load <= 0.5) over one memory-mapped append-only
// log of [u32 key length][u32 value length][key][value] records. No checksums,
// no locks (one writer; readers may run beside it), no durability, no
// compaction, no index growth while readers run. It shows what the hardware
// allows for a hash-indexed mapped log, so cask's figures can be read against
// it; it must never be mistaken for something to store data in.
#include "engine.hpp"

#include <cask/hash.hpp>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <stdexcept>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bench {
namespace {

class limit_engine final : public engine {
  static constexpr std::uint64_t reserve_bytes = std::uint64_t{1} << 40;  // virtual only
  static constexpr std::uint64_t grow_step = std::uint64_t{256} << 20;
  static constexpr std::uint64_t first_offset = 8;
  static constexpr std::uint64_t empty = 0, erased = 1;
  static constexpr std::uint32_t tombstone_len = 0xffffffffu;

 public:
  ~limit_engine() override { close(); }

  void open(const engine_config& cfg) override {
    std::filesystem::create_directories(cfg.dir);
    const auto path = cfg.dir / "limit.log";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
    if (fd_ < 0) throw std::runtime_error("limit: open " + path.string() + ": " + std::strerror(errno));
    struct stat st {};
    ::fstat(fd_, &st);
    file_size_ = static_cast<std::uint64_t>(st.st_size);
    void* p = ::mmap(nullptr, reserve_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error(std::string("limit: mmap: ") + std::strerror(errno));
    base_ = static_cast<std::byte*>(p);
    std::size_t cap = 1024;
    while (cap < 2 * cfg.expected_keys) cap *= 2;
    alloc_index(cap);
    tail_ = first_offset;
    if (file_size_ < first_offset) {
      grow(first_offset);
    } else {
      recover();
    }
  }

  void close() override {
    if (base_) ::munmap(base_, reserve_bytes);
    base_ = nullptr;
    if (fd_ >= 0) {
      if (::ftruncate(fd_, static_cast<off_t>(tail_)) != 0) { /* nothing to do: no durability promised */ }
      ::close(fd_);
    }
    fd_ = -1;
    index_.reset();
  }

  void put(std::string_view k, std::string_view v) override {
    index_put(k, append(k, v.data(), static_cast<std::uint32_t>(v.size())));
  }

  read_status get(std::string_view k, verify_ref verify) override {
    const std::uint64_t h = hash(k);
    const std::uint64_t t = tag(make_entry(h, 0));
    for (std::size_t i = home(h);; i = (i + 1) & mask_) {
      const std::uint64_t e = index_[i].load(std::memory_order_acquire);
      if (e == empty) return read_status::missing;
      if (e != erased && tag(e) == t && key_at(e) == k) {
        const std::byte* p = base_ + offset(e);
        std::uint32_t kl, vl;
        std::memcpy(&kl, p, 4);
        std::memcpy(&vl, p + 4, 4);
        return verify({reinterpret_cast<const char*>(p + 8 + kl), vl}) ? read_status::match : read_status::mismatch;
      }
    }
  }

  bool erase(std::string_view k) override {
    if (!index_erase(k)) return false;
    append(k, nullptr, tombstone_len);
    return true;
  }

  void sync() override {}  // no durability, by design
  bool concurrent_writes() const override { return false; }
  bool supports_durable() const override { return false; }
  std::optional<double> index_bytes_per_key() const override {
    return count_ ? std::optional<double>(double((mask_ + 1) * 8) / double(count_)) : std::nullopt;
  }
  std::string settings() const override {
    return "REFERENCE, NOT A PRODUCT: 8-byte open-addressing index (24-bit tag + 40-bit offset, load <= 0.5) "
           "over one mmap'ed log; no checksums, no locks, no durability, no compaction";
  }

 private:
  static std::uint64_t hash(std::string_view k) noexcept {
    return cask::default_hasher::hash(reinterpret_cast<const std::byte*>(k.data()), k.size());
  }
  static std::uint64_t make_entry(std::uint64_t h, std::uint64_t off) noexcept {
    return ((h & 0xffffffu) << 40) | off;
  }
  static std::uint64_t tag(std::uint64_t e) noexcept { return e >> 40; }
  static std::uint64_t offset(std::uint64_t e) noexcept { return e & ((std::uint64_t{1} << 40) - 1); }
  std::size_t home(std::uint64_t h) const noexcept { return static_cast<std::size_t>(h >> shift_) & mask_; }

  std::string_view key_at(std::uint64_t e) const noexcept {
    const std::byte* p = base_ + offset(e);
    std::uint32_t kl;
    std::memcpy(&kl, p, 4);
    return {reinterpret_cast<const char*>(p + 8), kl};
  }

  void grow(std::uint64_t need) {
    std::uint64_t n = file_size_;
    while (n < need) n += grow_step;
    if (::ftruncate(fd_, static_cast<off_t>(n)) != 0) throw std::runtime_error("limit: ftruncate failed");
    file_size_ = n;
  }

  std::uint64_t append(std::string_view k, const char* v, std::uint32_t vlen) {
    const std::uint64_t vbytes = vlen == tombstone_len ? 0 : vlen;
    const std::uint64_t size = 8 + k.size() + vbytes;
    if (tail_ + size > file_size_) grow(tail_ + size);
    std::byte* p = base_ + tail_;
    const auto kl = static_cast<std::uint32_t>(k.size());
    std::memcpy(p, &kl, 4);
    std::memcpy(p + 4, &vlen, 4);
    std::memcpy(p + 8, k.data(), k.size());
    if (vbytes) std::memcpy(p + 8 + k.size(), v, vbytes);
    const std::uint64_t off = tail_;
    tail_ += size;
    return off;
  }

  void alloc_index(std::size_t cap, bool rehash = false) {
    auto old = std::move(index_);
    const std::size_t old_cap = old ? mask_ + 1 : 0;
    index_ = std::make_unique<std::atomic<std::uint64_t>[]>(cap);
    for (std::size_t i = 0; i < cap; ++i) index_[i].store(empty, std::memory_order_relaxed);
    mask_ = cap - 1;
    shift_ = 64 - static_cast<unsigned>(__builtin_ctzll(cap));
    used_ = count_;
    if (!rehash) return;
    for (std::size_t i = 0; i < old_cap; ++i) {
      const std::uint64_t e = old[i].load(std::memory_order_relaxed);
      if (e == empty || e == erased) continue;
      std::size_t j = home(hash(key_at(e)));
      while (index_[j].load(std::memory_order_relaxed) != empty) j = (j + 1) & mask_;
      index_[j].store(e, std::memory_order_relaxed);
    }
  }

  void recover() {
    std::uint64_t off = first_offset;
    while (off + 8 <= file_size_) {
      std::uint32_t kl, vl;
      std::memcpy(&kl, base_ + off, 4);
      std::memcpy(&vl, base_ + off + 4, 4);
      if (kl == 0) break;
      const std::uint64_t size = 8 + kl + (vl == tombstone_len ? 0 : vl);
      if (off + size > file_size_) break;
      const std::string_view k(reinterpret_cast<const char*>(base_ + off + 8), kl);
      if (vl == tombstone_len) {
        index_erase(k);
      } else {
        index_put(k, off);
      }
      off += size;
    }
    tail_ = off;
  }
  void index_put(std::string_view k, std::uint64_t off) {
    const std::uint64_t h = hash(k);
    const std::uint64_t entry = make_entry(h, off);
    std::size_t free_slot = SIZE_MAX;
    for (std::size_t i = home(h);; i = (i + 1) & mask_) {
      const std::uint64_t e = index_[i].load(std::memory_order_relaxed);
      if (e == empty) {
        if (free_slot == SIZE_MAX) free_slot = i;
        break;
      }
      if (e == erased) {
        if (free_slot == SIZE_MAX) free_slot = i;
      } else if (tag(e) == tag(entry) && key_at(e) == k) {
        index_[i].store(entry, std::memory_order_release);  // the record's bytes first
        return;
      }
    }
    const bool fresh = index_[free_slot].load(std::memory_order_relaxed) == empty;
    index_[free_slot].store(entry, std::memory_order_release);
    ++count_;
    if (fresh && ++used_ * 2 > mask_ + 1) alloc_index((mask_ + 1) * 2, true);
  }
  bool index_erase(std::string_view k) {
    const std::uint64_t h = hash(k);
    const std::uint64_t t = tag(make_entry(h, 0));
    for (std::size_t i = home(h);; i = (i + 1) & mask_) {
      const std::uint64_t e = index_[i].load(std::memory_order_relaxed);
      if (e == empty) return false;
      if (e != erased && tag(e) == t && key_at(e) == k) {
        index_[i].store(erased, std::memory_order_release);
        --count_;
        return true;
      }
    }
  }

  int fd_ = -1;
  std::byte* base_ = nullptr;
  std::uint64_t file_size_ = 0, tail_ = 0;
  std::unique_ptr<std::atomic<std::uint64_t>[]> index_;
  std::size_t mask_ = 0, count_ = 0, used_ = 0;  // used_: live entries and erased markers
  unsigned shift_ = 0;
};

}  // namespace

std::unique_ptr<engine> make_limit_engine() { return std::make_unique<limit_engine>(); }

}  // namespace bench
