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
    std::uint64_t c = ~crc;
    // Three independent streams hide the instruction's 3-cycle latency on long inputs.
    if (n >= 384) {
      const std::size_t block = (n / 24) * 8;  // bytes per stream, a multiple of 8
      std::uint64_t c1 = 0, c2 = 0;
      const std::byte* p1 = p + block;
      const std::byte* p2 = p + 2 * block;
      // A record read from a mapped segment is mostly not in the cache: ask
      // for each stream's lines `ahead` bytes before they are needed, so
      // the misses overlap instead of stalling the loop one at a time.
      constexpr std::size_t ahead = 1024;
      for (std::size_t i = 0; i < ahead && i < block; i += 64) {
        __builtin_prefetch(p + i);
        __builtin_prefetch(p1 + i);
        __builtin_prefetch(p2 + i);
      }
      std::size_t i = 0;
      for (; i + 64 <= block; i += 64) {
        if (i + ahead < block) {  // (past it, the lines were asked for, or lie outside the input)
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
      for (; i < block; i += 8) {
        std::uint64_t a, b, d;
        std::memcpy(&a, p + i, 8);
        std::memcpy(&b, p1 + i, 8);
        std::memcpy(&d, p2 + i, 8);
        c = _mm_crc32_u64(c, a);
        c1 = _mm_crc32_u64(c1, b);
        c2 = _mm_crc32_u64(c2, d);
      }
      // crc(A||B) = shift(crc(A), |B|) ^ crc(B) for the raw (no pre/post xor) register.
      c = shift(static_cast<std::uint32_t>(c), block) ^ c1;
      c = shift(static_cast<std::uint32_t>(c), block) ^ c2;
      p += 3 * block;
      n -= 3 * block;
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
  // GF(2) arithmetic for combining the three streams (reflected polynomial 0x82F63B78).
  static std::uint32_t gf_mul(std::uint32_t a, std::uint32_t b) noexcept {
    // a, b: reflected polynomials; returns a*b mod P (reflected), x^0 is bit 31.
    std::uint32_t r = 0;
    for (int i = 0; i < 32; ++i) {
      if (a & 0x80000000u) r ^= b;
      a <<= 1;
      b = (b & 1) ? (b >> 1) ^ 0x82F63B78u : b >> 1;
    }
    return r;
  }
  /// x^(8*len) mod P, reflected; cached for the last length asked.
  static std::uint32_t xpow8n(std::size_t len) noexcept {
    thread_local std::size_t last_len = 0;
    thread_local std::uint32_t last_val = 0x80000000u;
    if (len == last_len) return last_val;
    std::uint32_t result = 0x80000000u;  // x^0
    std::uint32_t sq = 0x00800000u;      // x^8
    for (std::size_t k = len; k; k >>= 1) {
      if (k & 1) result = gf_mul(result, sq);
      sq = gf_mul(sq, sq);
    }
    last_len = len;
    last_val = result;
    return result;
  }
  /// The raw register after feeding `len` zero bytes: crc * x^(8 len) mod P.
  static std::uint32_t shift(std::uint32_t crc, std::size_t len) noexcept { return gf_mul(xpow8n(len), crc); }
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
