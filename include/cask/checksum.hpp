// cask/checksum.hpp - checksum policies.
//
// A checksum policy is a type C with
//   static constexpr std::uint32_t id;                       // written into file headers
//   static std::uint32_t extend(std::uint32_t crc, const std::byte* p, std::size_t n) noexcept;
//   static std::uint32_t compute(const std::byte* p, std::size_t n) noexcept;  // extend(0, p, n)
// (concept cask::checksum_policy in concepts.hpp). Two policies with the same
// id must compute the same function: a store written by one is read by the other.
//
// All three policies here compute CRC-32C (Castagnoli, reflected, init and
// final xor 0xFFFFFFFF: the iSCSI / ext4 / LevelDB CRC), id 1:
//   crc32c_portable - Boost.CRC, the portable reference;
//   crc32c_hw       - SSE4.2 `crc32` instructions; only call when supported();
//   crc32c          - the default: crc32c_hw when the CPU has SSE4.2 (checked
//                     once at run time, no -msse4.2 needed), else crc32c_portable.
// All are stateless and thread-safe.
#pragma once

#include <boost/crc.hpp>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define CASK_HAVE_CRC32C_X86 1
#else
#define CASK_HAVE_CRC32C_X86 0
#endif

namespace cask {

/// CRC-32C through Boost.CRC: portable, about 0.3 GB/s.
struct crc32c_portable {
  /// Identifies the checksum in file headers; equal for every CRC-32C implementation.
  static constexpr std::uint32_t id = 1;
  /// The CRC-32C of the bytes that gave `crc`, followed by [p, p + n).
  static std::uint32_t extend(std::uint32_t crc, const std::byte* p, std::size_t n) noexcept {
    // crc_optimal takes its initial remainder unreflected: undo the final xor
    // and the output reflection of `crc` to resume from it.
    boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true> c(reflect(crc ^ 0xFFFFFFFFu));
    c.process_bytes(p, n);
    return c.checksum();
  }
  /// The CRC-32C of [p, p + n).
  static std::uint32_t compute(const std::byte* p, std::size_t n) noexcept { return extend(0, p, n); }

 private:
  static constexpr std::uint32_t reflect(std::uint32_t x) noexcept {
    std::uint32_t r = 0;
    for (int i = 0; i < 32; ++i, x >>= 1) r = (r << 1) | (x & 1u);
    return r;
  }
};

namespace detail {

// GF(2) arithmetic for combining crc32c_hw's three streams (the reflected
// CRC-32C polynomial 0x82F63B78); the short chunks' table is made at compile time.

/// a * b mod P; a, b and the result reflected (x^0 is bit 31).
/// (Without branches: the bits of the operands are data, which a branch
/// would mispredict half the time.)
constexpr std::uint32_t crc32c_gf_mul(std::uint32_t a, std::uint32_t b) noexcept {
  std::uint32_t r = 0;
  for (int i = 0; i < 32; ++i) {
    r ^= b & (0u - (a >> 31));
    a <<= 1;
    b = (b >> 1) ^ (0x82F63B78u & (0u - (b & 1)));
  }
  return r;
}
/// x^(8 len) mod P, reflected.
constexpr std::uint32_t crc32c_xpow8n(std::size_t len) noexcept {
  std::uint32_t result = 0x80000000u;  // x^0
  std::uint32_t sq = 0x00800000u;      // x^8
  for (std::size_t k = len; k; k >>= 1) {
    if (k & 1) result = crc32c_gf_mul(result, sq);
    sq = crc32c_gf_mul(sq, sq);
  }
  return result;
}
/// The operator "append `len` zero bytes" on the raw CRC register (crc *
/// x^(8 len) mod P), as four tables of 256 entries: it is linear, so the
/// register is shifted a byte at a time and the four results xor'ed.
using crc32c_shift_table = std::array<std::array<std::uint32_t, 256>, 4>;
constexpr crc32c_shift_table crc32c_make_shift(std::size_t len) noexcept {
  const std::uint32_t x = crc32c_xpow8n(len);
  crc32c_shift_table t{};
  for (std::uint32_t k = 0; k < 4; ++k)
    for (std::uint32_t v = 0; v < 256; ++v) t[k][v] = crc32c_gf_mul(x, v << (8 * k));
  return t;
}
/// x^(512 * 2^i) mod P, reflected, for i = 0..57: the shift by 64 * 2^i
/// bytes. A shift by any multiple of 64 bytes is the product of those its
/// bits name, one GF(2) product a bit set.
using crc32c_pow_table = std::array<std::uint32_t, 58>;
constexpr crc32c_pow_table crc32c_make_pow64() noexcept {
  crc32c_pow_table t{};
  t[0] = crc32c_xpow8n(64);
  for (std::size_t i = 1; i < t.size(); ++i) t[i] = crc32c_gf_mul(t[i - 1], t[i - 1]);
  return t;
}
/// x^(8 len) mod P for `len` a multiple of 64 below 2^63 (the table's bits).
constexpr std::uint32_t crc32c_xpow8n_64(const crc32c_pow_table& t, std::size_t len) noexcept {
  std::uint32_t result = 0x80000000u;  // x^0
  for (std::uint64_t m = len / 64; m != 0; m &= m - 1) {
    const std::uint32_t p = t[static_cast<std::size_t>(std::countr_zero(m))];
    result = result == 0x80000000u ? p : crc32c_gf_mul(result, p);
  }
  return result;
}
/// crc32c_hw's short chunks: three blocks of this many bytes, and the shift by one block.
inline constexpr std::size_t crc32c_short_block = 256;
#if CASK_HAVE_CRC32C_X86
inline constexpr crc32c_shift_table crc32c_short_shift = crc32c_make_shift(crc32c_short_block);
inline constexpr crc32c_pow_table crc32c_pow64 = crc32c_make_pow64();
#endif

}  // namespace detail

/// CRC-32C with the SSE4.2 crc32 instruction. Requires supported().
struct crc32c_hw {
  /// As crc32c_portable::id.
  static constexpr std::uint32_t id = 1;

  /// Whether this CPU has the instruction (checked once).
  static bool supported() noexcept {
#if CASK_HAVE_CRC32C_X86
    static const bool s = __builtin_cpu_supports("sse4.2");
    return s;
#else
    return false;
#endif
  }

#if CASK_HAVE_CRC32C_X86
  /// As crc32c_portable::extend().
  __attribute__((target("sse4.2"))) static std::uint32_t extend(std::uint32_t crc, const std::byte* p,
                                                                std::size_t n) noexcept {
    const std::byte* const end = p + n;
    std::uint64_t c = ~crc;
    // Three independent streams hide the instruction's 3-cycle latency. An
    // input of 3 * long_block bytes or more is one chunk of three streams of
    // a third each (all but its last 0-191 bytes). A shorter one of 768 bytes
    // or more goes in chunks of three short_block streams, whose CRCs are
    // combined by shifting through a table made for that size (four
    // lookups), so that a combine costs the same whatever the input's length
    // (computing the shift for each length cost 150-200 ns an input). What
    // is left after the chunks goes through one stream.
    if (n >= 3 * short_block) {
      // A record read from a mapped segment is mostly not in the cache: its
      // first lines are asked for now, and the streams ask for theirs about
      // `in_flight` bytes in all before they need them, so the misses
      // overlap instead of stalling the CRC one line at a time.
      if (n < 3 * long_block)
        for (std::size_t i = 0; i < in_flight && i < n; i += 64) __builtin_prefetch(p + i);
      else {
        // The shift by the streams' length is the product of the powers its
        // bits name (a table made at compile time: one GF(2) product a bit
        // set, 30-150 ns), and kept for the last length seen: values of one
        // size pay it once.
        const std::size_t block = (n / 192) * 64;  // bytes per stream, a multiple of 64
        thread_local std::size_t last_block = 0;
        thread_local std::uint32_t last_x = 0x80000000u;  // x^0
        if (block != last_block) last_x = detail::crc32c_xpow8n_64(detail::crc32c_pow64, block), last_block = block;
        const std::uint32_t x = last_x;
        c = three_streams(c, p, end, block,
                          [x](std::uint64_t r) { return detail::crc32c_gf_mul(x, static_cast<std::uint32_t>(r)); });
        p += 3 * block;
      }
      while (static_cast<std::size_t>(end - p) >= 3 * short_block) {
        c = three_streams(c, p, end, short_block,
                          [](std::uint64_t r) { return shift(detail::crc32c_short_shift, r); });
        p += 3 * short_block;
      }
      n = static_cast<std::size_t>(end - p);
    }
    for (; n >= 8; n -= 8, p += 8) {
      std::uint64_t v;
      std::memcpy(&v, p, 8);
      c = _mm_crc32_u64(c, v);
    }
    auto c32 = static_cast<std::uint32_t>(c);
    for (; n > 0; --n, ++p) c32 = _mm_crc32_u8(c32, static_cast<unsigned char>(*p));
    return ~c32;
  }
#else
  static std::uint32_t extend(std::uint32_t crc, const std::byte* p, std::size_t n) noexcept {
    return crc32c_portable::extend(crc, p, n);
  }
#endif
  /// As crc32c_portable::compute().
  static std::uint32_t compute(const std::byte* p, std::size_t n) noexcept { return extend(0, p, n); }

 private:
  // Inputs of 3 * long_block bytes and more start with a chunk of three streams of a third each.
  static constexpr std::size_t long_block = 8192;
  static constexpr std::size_t short_block = detail::crc32c_short_block;
  static constexpr std::size_t in_flight = 3072;  // bytes the streams ask for ahead of their reads

  /// The raw register `crc` followed by as many zero bytes as `t` was made for.
  static std::uint32_t shift(const detail::crc32c_shift_table& t, std::uint64_t crc) noexcept {
    return t[0][crc & 0xff] ^ t[1][(crc >> 8) & 0xff] ^ t[2][(crc >> 16) & 0xff] ^ t[3][(crc >> 24) & 0xff];
  }

#if CASK_HAVE_CRC32C_X86
  /// The raw register `c` extended by the 3 * block bytes at `p` (of an
  /// input that ends at `end`), as three streams of `block` bytes (a
  /// multiple of 64) combined by shifted(r), which appends `block` zero bytes.
  template <class Shift>
  __attribute__((target("sse4.2"), always_inline)) static inline std::uint64_t three_streams(
      std::uint64_t c, const std::byte* p, const std::byte* end, std::size_t block, Shift shifted) noexcept {
    std::uint64_t c1 = 0, c2 = 0;
    const std::byte* const p1 = p + block;
    const std::byte* const p2 = p + 2 * block;
    // Streams far apart each prefetch a third of in_flight ahead (and first
    // their own first lines, which no earlier read asked for); adjacent ones
    // (a short chunk: the next chunks follow) each all of it.
    const bool apart = block > in_flight / 3;
    const std::size_t ahead = apart ? in_flight / 3 : in_flight;
    if (apart) {
      for (std::size_t i = 0; i < ahead; i += 64) {
        __builtin_prefetch(p + i);
        __builtin_prefetch(p1 + i);
        __builtin_prefetch(p2 + i);
      }
    }
    for (std::size_t i = 0; i < block; i += 64) {
      if (ahead < static_cast<std::size_t>(end - (p2 + i))) {  // (past the input's end, nothing to ask for)
        __builtin_prefetch(p + i + ahead);
        __builtin_prefetch(p1 + i + ahead);
        __builtin_prefetch(p2 + i + ahead);
      }
      for (std::size_t j = i; j < i + 64; j += 8) {
        std::uint64_t a, b, d;
        std::memcpy(&a, p + j, 8);
        std::memcpy(&b, p1 + j, 8);
        std::memcpy(&d, p2 + j, 8);
        c = _mm_crc32_u64(c, a);
        c1 = _mm_crc32_u64(c1, b);
        c2 = _mm_crc32_u64(c2, d);
      }
    }
    // crc(A||B) = shift(crc(A), |B|) ^ crc(B) for the raw (no pre/post xor) register.
    c = shifted(c) ^ c1;
    return shifted(c) ^ c2;
  }
#endif
};

/// The default: hardware CRC-32C where the CPU has it, Boost.CRC otherwise.
struct crc32c {
  /// As crc32c_portable::id.
  static constexpr std::uint32_t id = 1;
  /// As crc32c_portable::extend().
  static std::uint32_t extend(std::uint32_t crc, const std::byte* p, std::size_t n) noexcept {
    return crc32c_hw::supported() ? crc32c_hw::extend(crc, p, n) : crc32c_portable::extend(crc, p, n);
  }
  /// As crc32c_portable::compute().
  static std::uint32_t compute(const std::byte* p, std::size_t n) noexcept { return extend(0, p, n); }
};

}  // namespace cask
