// cask/detail/sketch.hpp - a HyperLogLog sketch of key hashes.
//
// Recovery sizes the keydir by the number of distinct keys it will hold, not
// by the number of records it reads (a key written twice is two records, one
// entry). Each hint file carries the sketch of its keys (docs/FORMAT.md "Hint
// file"); the union of the sketches estimates the distinct keys of all the
// segments at once, before any is read, within a few percent (1.04 / sqrt(512),
// 4.6%, standard error). It sizes memory only: a wrong estimate costs time,
// never correctness.
//
// Thread safety: none; a sketch is a value.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>

namespace cask::detail {

class key_sketch {
 public:
  /// Registers: 2^index_bits, one byte each on disk.
  static constexpr unsigned index_bits = 9;
  static constexpr std::size_t registers = std::size_t{1} << index_bits;
  /// The largest register value: the rank of a hash whose 55 low bits are zero.
  static constexpr std::uint8_t max_rank = 64 - index_bits + 1;

  /// The 64-bit finalizer of MurmurHash3 (fmix64): the key hasher's bits,
  /// mixed, so that a register and a rank depend on all of them.
  static constexpr std::uint64_t mix(std::uint64_t h) noexcept {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
  }

  /// Counts a key by its hash (the store's key hasher's).
  void add(std::uint64_t key_hash) noexcept {
    const std::uint64_t x = mix(key_hash);
    const std::size_t j = static_cast<std::size_t>(x >> (64 - index_bits));
    const auto rank = static_cast<std::uint8_t>(std::countl_zero((x << index_bits) | (std::uint64_t{1} << (index_bits - 1))) + 1);
    r_[j] = std::max(r_[j], rank);
  }

  /// This sketch becomes the sketch of the union of both key sets.
  void merge(const key_sketch& o) noexcept {
    for (std::size_t j = 0; j < registers; ++j) r_[j] = std::max(r_[j], o.r_[j]);
  }

  /// The estimated number of distinct keys counted (0 for none).
  double estimate() const noexcept {
    constexpr double m = registers;
    double sum = 0;
    std::size_t zeros = 0;
    for (const std::uint8_t v : r_) {
      sum += std::ldexp(1.0, -static_cast<int>(v));
      zeros += v == 0;
    }
    const double e = 0.7213 / (1 + 1.079 / m) * m * m / sum;
    // Few keys: linear counting of the empty registers is the better estimate.
    if (e <= 2.5 * m && zeros > 0) return m * std::log(m / static_cast<double>(zeros));
    return e;
  }

  /// The registers, as a hint file stores them.
  void store(std::byte* out) const noexcept {
    for (std::size_t j = 0; j < registers; ++j) out[j] = std::byte{r_[j]};
  }
  /// Reads registers stored by store(); false (and the sketch unchanged) if
  /// one is above max_rank.
  bool load(std::span<const std::byte> in) noexcept {
    if (in.size() != registers) return false;
    for (const std::byte b : in)
      if (std::to_integer<std::uint8_t>(b) > max_rank) return false;
    for (std::size_t j = 0; j < registers; ++j) r_[j] = std::to_integer<std::uint8_t>(in[j]);
    return true;
  }

  friend bool operator==(const key_sketch&, const key_sketch&) = default;

 private:
  std::array<std::uint8_t, registers> r_{};
};

}  // namespace cask::detail
