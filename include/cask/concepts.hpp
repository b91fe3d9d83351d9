// cask/concepts.hpp - the requirements on cask's policy parameters.
//
// Each concept is checked in log_store's template head, so a type that does
// not fit is named in the compiler's first error. The reference
// implementation of each is named beside it; its documentation describes the
// interface in full.
#pragma once

#include <cask/options.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>

namespace cask {

/// Hashes encoded key bytes to 64 bits (reference: default_hasher).
template <class H>
concept key_hasher = std::default_initializable<H> && requires(const H& h, std::span<const std::byte> b) {
  { h(b) } -> std::convertible_to<std::uint64_t>;
};

/// Encodes and decodes one type T (a key or a value) for Codec C.
template <class C, class T>
concept codec_of = requires(const T& x, std::byte* out, std::span<const std::byte> in) {
  { C::encoded_size(x) } -> std::convertible_to<std::size_t>;
  C::encode(x, out);
  { C::decode(in, std::type_identity<T>{}) } -> std::same_as<T>;
};

/// A codec for a store of Key -> Value (reference: basic_codec).
template <class C, class Key, class Value>
concept codec_for = codec_of<C, Key> && codec_of<C, Value> && requires {
  { C::name } -> std::convertible_to<std::string_view>;
};

/// The codec can hand out the encoded bytes of x without copying them.
template <class C, class T>
concept codec_with_bytes_of = requires(const T& x) {
  { C::bytes_of(x) } -> std::convertible_to<std::span<const std::byte>>;
};

/// A lookup may pass a U instead of a Key: U is Key itself, or the codec is
/// transparent (declares is_transparent) and encodes U.
template <class C, class Key, class U>
concept lookup_key_for = std::same_as<std::remove_cvref_t<U>, Key> || (requires { typename C::is_transparent; } && requires(const U& u, std::byte* out) {
  { C::encoded_size(u) } -> std::convertible_to<std::size_t>;
  C::encode(u, out);
});

/// A checksum policy (reference: crc32c).
template <class C>
concept checksum_policy = requires(const std::byte* p, std::size_t n, std::uint32_t crc) {
  { C::id } -> std::convertible_to<std::uint32_t>;
  { C::compute(p, n) } -> std::same_as<std::uint32_t>;
  { C::extend(crc, p, n) } -> std::same_as<std::uint32_t>;
};

/// A sync policy (reference: sync_none, sync_always, sync_interval).
template <class S>
concept sync_policy = requires {
  { S::every_write } -> std::convertible_to<bool>;
  { S::background } -> std::convertible_to<bool>;
};

}  // namespace cask
