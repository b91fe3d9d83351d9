// cask/codec.hpp - the reference codec.
//
// A codec turns keys and values into the bytes stored in the log and back.
// It is one class serving both the Key and the Value type of a store:
//
//   static constexpr std::string_view name;                 // identity, stored in every file header
//   static std::size_t encoded_size(const T& x);           // bytes encode() will write
//   static void encode(const T& x, std::byte* out);        // writes exactly encoded_size(x) bytes
//   static T decode(std::span<const std::byte> in, std::type_identity<T>);   // throws on bad input
//
// for T = Key and T = Value (concept cask::codec_for<Codec, Key, Value>).
// encode() writes straight into the log's mapping, so a put copies the bytes
// once. Key encoding must be deterministic: equal keys, equal bytes.
// Optionally:
//   using is_transparent = void;  lookups may pass any type U the codec can
//       encode, which must encode to the same bytes as the equal Key would
//       (basic_codec: std::string_view and const char* for std::string).
//   static std::span<const std::byte> bytes_of(const T& x);  the encoding is
//       x's own bytes; lookups then hash and compare them in place, copying nothing.
//
// A store remembers its codec's name (as a CRC-32C of it) and refuses to open
// with another, so changing an encoding means choosing a new name.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace cask {

/// Thrown by a codec's decode() when the bytes cannot be a T.
class decode_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Encodes std::string, std::string_view, const char*, byte and char vectors
/// as their bytes, and trivially copyable types as their object
/// representation (arithmetic types explicitly little-endian). Stateless.
struct basic_codec {
  /// The codec's identity, stored (as a CRC-32C) in every file header.
  static constexpr std::string_view name = "cask.basic/1";
  /// Lookups may pass std::string_view or const char* for a std::string key.
  using is_transparent = void;

  // --- strings and byte sequences: the bytes themselves ---
  ///@{
  /// Strings: encoded as their characters; encoded_size() is their length,
  /// bytes_of() views them in place, decode() copies them into a std::string.
  static std::size_t encoded_size(std::string_view s) noexcept { return s.size(); }
  static void encode(std::string_view s, std::byte* out) noexcept {
    if (!s.empty()) std::memcpy(out, s.data(), s.size());
  }
  static std::span<const std::byte> bytes_of(std::string_view s) noexcept { return std::as_bytes(std::span(s)); }
  static std::span<const std::byte> bytes_of(const std::string& s) noexcept { return bytes_of(std::string_view(s)); }
  static std::span<const std::byte> bytes_of(const char* s) noexcept { return bytes_of(std::string_view(s)); }
  static std::size_t encoded_size(const std::string& s) noexcept { return s.size(); }
  static void encode(const std::string& s, std::byte* out) noexcept { encode(std::string_view(s), out); }
  static std::size_t encoded_size(const char* s) noexcept { return std::strlen(s); }
  static void encode(const char* s, std::byte* out) noexcept { encode(std::string_view(s), out); }
  static std::string decode(std::span<const std::byte> in, std::type_identity<std::string>) {
    return std::string(reinterpret_cast<const char*>(in.data()), in.size());
  }
  ///@}

  ///@{
  /// Vectors of a byte-sized type (std::byte, char, std::uint8_t, ...):
  /// encoded as their elements' bytes.
  template <class B>
    requires(sizeof(B) == 1 && std::is_trivially_copyable_v<B>)
  static std::size_t encoded_size(const std::vector<B>& v) noexcept {
    return v.size();
  }
  template <class B>
    requires(sizeof(B) == 1 && std::is_trivially_copyable_v<B>)
  static void encode(const std::vector<B>& v, std::byte* out) noexcept {
    if (!v.empty()) std::memcpy(out, v.data(), v.size());
  }
  template <class B>
    requires(sizeof(B) == 1 && std::is_trivially_copyable_v<B>)
  static std::span<const std::byte> bytes_of(const std::vector<B>& v) noexcept {
    return std::as_bytes(std::span(v));
  }
  template <class B>
    requires(sizeof(B) == 1 && std::is_trivially_copyable_v<B>)
  static std::vector<B> decode(std::span<const std::byte> in, std::type_identity<std::vector<B>>) {
    std::vector<B> v(in.size());
    if (!in.empty()) std::memcpy(v.data(), in.data(), in.size());
    return v;
  }
  ///@}

  // --- trivially copyable types: their object representation ---
  // Arithmetic types and enums are stored little-endian, so integer keys are
  // portable across hosts; other trivially copyable structs are stored as
  // their in-memory bytes (padding included) and are only portable between
  // hosts of the same ABI. Give such structs a codec of their own (see
  // examples/custom_codec.cpp) when that matters, or when they have padding:
  // padding bytes are unspecified, so two equal keys could encode differently.
  ///@{
  /// Trivially copyable types: sizeof(T) bytes, as described above. decode()
  /// throws decode_error unless given exactly sizeof(T) bytes.
  template <class T>
    requires(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>)
  static constexpr std::size_t encoded_size(const T&) noexcept {
    return sizeof(T);
  }
  template <class T>
    requires(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>)
  static void encode(const T& x, std::byte* out) noexcept {
    std::memcpy(out, &x, sizeof(T));
    if constexpr ((std::is_arithmetic_v<T> || std::is_enum_v<T>) && std::endian::native == std::endian::big)
      std::reverse(out, out + sizeof(T));
  }
  template <class T>
    requires(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>)
  static T decode(std::span<const std::byte> in, std::type_identity<T>) {
    if (in.size() != sizeof(T))
      throw decode_error("cask::basic_codec: expected " + std::to_string(sizeof(T)) + " bytes, got " +
                         std::to_string(in.size()));
    T x;
    std::memcpy(&x, in.data(), sizeof(T));
    if constexpr ((std::is_arithmetic_v<T> || std::is_enum_v<T>) && std::endian::native == std::endian::big) {
      auto* b = reinterpret_cast<std::byte*>(&x);
      std::reverse(b, b + sizeof(T));
    }
    return x;
  }
  ///@}
};

}  // namespace cask
