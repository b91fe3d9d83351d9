// tests/fuzz/fuzz_util.hpp - what the fuzz targets share: the libFuzzer entry
// point's declaration, a check that aborts (a "crash" to libFuzzer, a failed
// test to the replay program), and a reader of the input's bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace cask_fuzz {
/// Called before a failed check aborts (a target cleans up its files here).
inline void (*on_failure)() = nullptr;
}  // namespace cask_fuzz

/// Aborts with a message when `cond` is false: the input shows a defect.
#define FUZZ_CHECK(cond, ...)                                                     \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: check failed: %s\n  ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                          \
      std::fprintf(stderr, "\n");                                                 \
      if (cask_fuzz::on_failure) cask_fuzz::on_failure();                         \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

namespace cask_fuzz {

/// Consumes an input from the front; reads past the end give zeros.
class input {
 public:
  input(const std::uint8_t* data, std::size_t size) : p_(data), n_(size) {}
  std::size_t left() const noexcept { return n_; }
  bool empty() const noexcept { return n_ == 0; }
  std::uint8_t byte() noexcept {
    if (!n_) return 0;
    --n_;
    return *p_++;
  }
  std::uint16_t u16() noexcept { return static_cast<std::uint16_t>(byte() | (byte() << 8)); }
  std::uint32_t u32() noexcept { return u16() | (std::uint32_t{u16()} << 16); }
  /// Up to `n` bytes (fewer at the end of the input).
  std::span<const std::uint8_t> bytes(std::size_t n) noexcept {
    if (n > n_) n = n_;
    std::span<const std::uint8_t> s(p_, n);
    p_ += n;
    n_ -= n;
    return s;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
};

}  // namespace cask_fuzz
