// A program that uses cask the way a user's program would: a value type of
// its own, stored under a codec of its own. Puts, gets, reopens and checks;
// exits non-zero on any mismatch. tests/consumers/run.sh builds it with Meson
// (subproject and pkg-config), CMake and Conan.
#include <cask.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include <unistd.h>

namespace {

struct point {
  std::int32_t x = 0, y = 0;
  std::string label;
  bool operator==(const point&) const = default;
};

// Value: x and y as 4 little-endian bytes each, then the label's bytes.
// Keys (std::uint64_t) keep basic_codec's little-endian encoding.
struct point_codec : cask::basic_codec {
  static constexpr std::string_view name = "consumer.point/1";
  using cask::basic_codec::decode;
  using cask::basic_codec::encode;
  using cask::basic_codec::encoded_size;

  static std::size_t encoded_size(const point& p) noexcept { return 8 + p.label.size(); }
  static void encode(const point& p, std::byte* out) noexcept {
    put32(out, static_cast<std::uint32_t>(p.x));
    put32(out + 4, static_cast<std::uint32_t>(p.y));
    for (std::size_t i = 0; i < p.label.size(); ++i) out[8 + i] = static_cast<std::byte>(p.label[i]);
  }
  static point decode(std::span<const std::byte> in, std::type_identity<point>) {
    if (in.size() < 8) throw cask::decode_error("point: fewer than 8 bytes");
    return {static_cast<std::int32_t>(get32(in.data())), static_cast<std::int32_t>(get32(in.data() + 4)),
            std::string(reinterpret_cast<const char*>(in.data() + 8), in.size() - 8)};
  }

 private:
  static void put32(std::byte* out, std::uint32_t v) noexcept {
    for (int i = 0; i < 4; ++i) out[i] = static_cast<std::byte>(v >> (8 * i));
  }
  static std::uint32_t get32(const std::byte* in) noexcept {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::to_integer<std::uint32_t>(in[i]) << (8 * i);
    return v;
  }
};

using point_store = cask::log_store<std::uint64_t, point, cask::default_hasher, point_codec>;

point point_for(std::uint64_t i) {
  return {static_cast<std::int32_t>(i) - 50, static_cast<std::int32_t>(i * 3), "p" + std::to_string(i)};
}

}  // namespace

int main() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("cask-consumer-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  int mismatches = 0;
  try {
    {
      auto db = point_store::open(dir);
      for (std::uint64_t i = 0; i < 100; ++i) db.put(i, point_for(i));
      db.erase(std::uint64_t{7});
      for (std::uint64_t i = 0; i < 100; ++i)
        if (db.get(i) != (i == 7 ? std::nullopt : std::optional<point>(point_for(i)))) ++mismatches;
    }
    auto db = point_store::open(dir);  // reopen: recovery must give back the same contents
    for (std::uint64_t i = 0; i < 100; ++i)
      if (db.get(i) != (i == 7 ? std::nullopt : std::optional<point>(point_for(i)))) ++mismatches;
    if (db.size() != 99) ++mismatches;
  } catch (const std::exception& e) {
    std::cerr << "consumer: " << e.what() << '\n';
    ++mismatches;
  }
  fs::remove_all(dir);
  std::cout << "consumer of cask " << cask::version_string << " (CASK_VERSION " << CASK_VERSION << "): "
            << (mismatches ? "FAILED, " + std::to_string(mismatches) + " mismatches" : std::string("ok")) << '\n';
  return mismatches ? 1 : 0;
}
