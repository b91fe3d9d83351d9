// examples/custom_codec.cpp - store a struct under a codec of its own.
//
// Usage: custom_codec [directory]   (default: a temporary directory, removed at exit)
//
// basic_codec would store a trivially copyable struct as its in-memory bytes,
// padding included; a struct holding a std::string it cannot store at all.
// A codec of its own gives the struct a portable, explicit encoding. Deriving
// from cask::basic_codec keeps the string handling for the keys.
// Exits non-zero if any check fails.
#include <cask.hpp>

#include <bit>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include <unistd.h>

namespace fs = std::filesystem;

// [custom_codec]
/// The value type: one temperature reading.
struct reading {
  std::string sensor;
  double celsius = 0;
  std::uint64_t taken_at = 0;  // seconds since the epoch
  bool operator==(const reading&) const = default;
};

/// Encodes a reading as: u32 sensor length, sensor bytes, f64 celsius, u64
/// taken_at; numbers little-endian. Keys (std::string) use basic_codec's
/// encoding.
struct reading_codec : cask::basic_codec {
  // A store remembers its codec's name and refuses to open with another one:
  // change the name whenever the encoding changes.
  static constexpr std::string_view name = "example.reading/1";

  using cask::basic_codec::decode;  // keep the string overloads visible
  using cask::basic_codec::encode;
  using cask::basic_codec::encoded_size;

  static std::size_t encoded_size(const reading& r) noexcept { return 4 + r.sensor.size() + 8 + 8; }

  static void encode(const reading& r, std::byte* out) noexcept {
    out = put_le(out, static_cast<std::uint32_t>(r.sensor.size()));
    for (char c : r.sensor) *out++ = static_cast<std::byte>(c);
    out = put_le(out, std::bit_cast<std::uint64_t>(r.celsius));
    put_le(out, r.taken_at);
  }

  static reading decode(std::span<const std::byte> in, std::type_identity<reading>) {
    if (in.size() < 4) throw cask::decode_error("reading: too short");
    const auto len = get_le<std::uint32_t>(in.data());
    if (in.size() != 4 + std::size_t{len} + 16) throw cask::decode_error("reading: wrong size");
    reading r;
    r.sensor.assign(reinterpret_cast<const char*>(in.data() + 4), len);
    r.celsius = std::bit_cast<double>(get_le<std::uint64_t>(in.data() + 4 + len));
    r.taken_at = get_le<std::uint64_t>(in.data() + 4 + len + 8);
    return r;
  }

 private:
  template <class U>
  static std::byte* put_le(std::byte* out, U v) noexcept {
    for (std::size_t i = 0; i < sizeof(U); ++i) *out++ = static_cast<std::byte>(v >> (8 * i));
    return out;
  }
  template <class U>
  static U get_le(const std::byte* in) noexcept {
    U v = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i) v |= static_cast<U>(std::to_integer<U>(in[i]) << (8 * i));
    return v;
  }
};

using reading_store = cask::log_store<std::string, reading, cask::default_hasher, reading_codec>;
// [custom_codec]

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::cout << (ok ? "  ok    " : "  FAIL  ") << what << '\n';
  if (!ok) ++failures;
}

}  // namespace

int main(int argc, char** argv) {
  const bool own_dir = argc < 2;
  const fs::path dir =
      own_dir ? fs::temp_directory_path() / ("cask-custom-codec-" + std::to_string(::getpid())) : fs::path(argv[1]);
  std::error_code ec;
  if (own_dir) fs::remove_all(dir, ec);
  std::cout << "store in " << dir << '\n';

  try {
    const reading kitchen{"kitchen", 21.5, 1'700'000'000};
    const reading cellar{"cellar, north wall", -3.25, 1'700'000'060};
    {
      reading_store db = reading_store::open(dir);
      db.put("r1", kitchen);
      db.put("r2", cellar);
      expect(db.get("r1") == kitchen, "get(\"r1\") decodes the kitchen reading");
      expect(db.get("r2") == cellar, "get(\"r2\") decodes the cellar reading");
      auto ref = db.get_ref("r2");
      expect(ref && ref->size() == reading_codec::encoded_size(cellar), "the stored value has the codec's size");
    }
    {
      reading_store db = reading_store::open(dir);
      expect(db.get("r1") == kitchen && db.get("r2") == cellar, "after reopening, both readings are intact");
    }
    {
      // The store remembers its codec: opening it with another one fails.
      using string_store = cask::log_store<std::string, std::string>;
      std::error_code open_ec;
      auto other = string_store::open(dir, cask::options{}, open_ec);
      expect(!other && open_ec == cask::errc::codec_mismatch, "opening with basic_codec fails with codec_mismatch");
    }
  } catch (const std::exception& e) {
    std::cout << "  FAIL  exception: " << e.what() << '\n';
    ++failures;
  }

  if (own_dir) fs::remove_all(dir, ec);
  std::cout << (failures ? "custom_codec: FAILED\n" : "custom_codec: all checks passed\n");
  return failures ? 1 : 0;
}
