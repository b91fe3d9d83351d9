// cask/hash.hpp - the default key hasher.
//
// A hasher hashes the *encoded* key bytes (what the codec writes to the log),
// so the keydir can be rebuilt from the log alone without decoding keys, and
// a lookup by std::string_view hashes exactly what a lookup by std::string
// would. Concept: cask::key_hasher (concepts.hpp).
//
// The keydir takes its shard from the low bits of the hash and the home slot
// from the high bits, so both ends must be well mixed. tests/hash_test.cpp
// pins the output on fixed inputs: changing it changes nothing on disk (hashes
// are never stored), but it is a deliberate decision all the same.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

namespace cask {

/// A fast 64-bit hash of byte strings in the style of wyhash: 16 bytes per
/// step folded through 64x64->128-bit multiplies. Stateless and thread-safe.
struct default_hasher {
  /// The hash of the encoded key bytes.
  std::uint64_t operator()(std::span<const std::byte> key) const noexcept { return hash(key.data(), key.size()); }

  /// The hash of [p, p + n).
  static std::uint64_t hash(const std::byte* p, std::size_t n) noexcept {
    constexpr std::uint64_t k0 = 0xa0761d6478bd642full, k1 = 0xe7037ed1a0b428dbull, k2 = 0x8ebc6af09c88c6e3ull,
                            k3 = 0x589965cc75374cc3ull;
    std::uint64_t seed = k0 ^ mix(n ^ k1, k2);
    std::uint64_t a, b;
    if (n <= 16) {
      if (n >= 4) {
        a = (r32(p) << 32) | r32(p + ((n >> 3) << 2));
        b = (r32(p + n - 4) << 32) | r32(p + n - 4 - ((n >> 3) << 2));
      } else if (n > 0) {
        a = (std::uint64_t(std::to_integer<unsigned>(p[0])) << 16) |
            (std::uint64_t(std::to_integer<unsigned>(p[n >> 1])) << 8) | std::to_integer<unsigned>(p[n - 1]);
        b = 0;
      } else {
        a = b = 0;
      }
    } else {
      std::size_t i = n;
      while (i > 16) {
        seed = mix(r64(p) ^ k1, r64(p + 8) ^ seed);
        p += 16;
        i -= 16;
      }
      a = r64(p + i - 16);
      b = r64(p + i - 8);
    }
    return mix(k1 ^ n, mix(a ^ k1, b ^ seed) ^ k3);
  }

 private:
  __extension__ typedef unsigned __int128 u128;  // __extension__: accepted under -Wpedantic
  static std::uint64_t mix(std::uint64_t a, std::uint64_t b) noexcept {
    const u128 r = static_cast<u128>(a) * b;
    return static_cast<std::uint64_t>(r) ^ static_cast<std::uint64_t>(r >> 64);
  }
  static std::uint64_t r64(const std::byte* p) noexcept {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
  }
  static std::uint64_t r32(const std::byte* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
};

}  // namespace cask
