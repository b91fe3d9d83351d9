// cask/detail/endian.hpp - explicit little-endian loads and stores.
//
// Every multi-byte integer cask writes to disk goes through these, so the
// format is little-endian on every host (docs/FORMAT.md). On little-endian
// hosts they compile to a plain unaligned load or store.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace cask::detail {

template <class U>
constexpr U byteswap_(U v) noexcept {
  if constexpr (sizeof(U) == 2) return static_cast<U>(__builtin_bswap16(v));
  else if constexpr (sizeof(U) == 4) return static_cast<U>(__builtin_bswap32(v));
  else return static_cast<U>(__builtin_bswap64(v));
}

template <class U>
inline U load_le(const std::byte* p) noexcept {
  U v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = byteswap_(v);
  return v;
}

template <class U>
inline void store_le(std::byte* p, U v) noexcept {
  if constexpr (std::endian::native == std::endian::big) v = byteswap_(v);
  std::memcpy(p, &v, sizeof v);
}

inline std::uint16_t load_u16(const std::byte* p) noexcept { return load_le<std::uint16_t>(p); }
inline std::uint32_t load_u32(const std::byte* p) noexcept { return load_le<std::uint32_t>(p); }
inline std::uint64_t load_u64(const std::byte* p) noexcept { return load_le<std::uint64_t>(p); }
inline void store_u16(std::byte* p, std::uint16_t v) noexcept { store_le(p, v); }
inline void store_u32(std::byte* p, std::uint32_t v) noexcept { store_le(p, v); }
inline void store_u64(std::byte* p, std::uint64_t v) noexcept { store_le(p, v); }

}  // namespace cask::detail
