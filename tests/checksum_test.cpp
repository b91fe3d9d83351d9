// The CRC-32C implementations agree with each other and with the standard check values.
#define BOOST_TEST_MODULE checksum
#include <boost/test/unit_test.hpp>

#include <cask/checksum.hpp>

#include <random>
#include <string_view>
#include <vector>

namespace {
std::uint32_t crc_of(auto policy, std::string_view s) {
  return decltype(policy)::compute(reinterpret_cast<const std::byte*>(s.data()), s.size());
}
}  // namespace

BOOST_AUTO_TEST_CASE(portable_matches_the_standard_check_value) {
  // RFC 3720 B.4 / the CRC catalogue: CRC-32C("123456789") = 0xE3069283.
  BOOST_TEST(crc_of(cask::crc32c_portable{}, "123456789") == 0xE3069283u);
  BOOST_TEST(crc_of(cask::crc32c_portable{}, "") == 0u);
}

BOOST_AUTO_TEST_CASE(default_matches_the_standard_check_value) {
  BOOST_TEST(crc_of(cask::crc32c{}, "123456789") == 0xE3069283u);
  // RFC 3720 B.4: 32 bytes of zeros -> 0x8A9136AA, of 0xFF -> 0x62A8AB43.
  std::vector<std::byte> z(32, std::byte{0}), f(32, std::byte{0xFF});
  BOOST_TEST(cask::crc32c::compute(z.data(), z.size()) == 0x8A9136AAu);
  BOOST_TEST(cask::crc32c::compute(f.data(), f.size()) == 0x62A8AB43u);
}

BOOST_AUTO_TEST_CASE(hardware_and_portable_agree_on_every_length_and_alignment) {
  if (!cask::crc32c_hw::supported()) {
    BOOST_TEST_MESSAGE("no SSE4.2 on this CPU: the default policy uses Boost.CRC, checked above");
    BOOST_TEST(cask::crc32c::compute(nullptr, 0) == cask::crc32c_portable::compute(nullptr, 0));
    return;
  }
  std::vector<std::byte> buf(5000 + 16);
  std::mt19937 g(42);
  for (auto& b : buf) b = std::byte(g());
  std::size_t checked = 0;
  for (std::size_t len = 0; len <= 5000; len += (len < 1100 ? 1 : 37)) {
    for (std::size_t align = 0; align < 16; ++align) {
      const std::uint32_t a = cask::crc32c_portable::compute(buf.data() + align, len);
      const std::uint32_t b = cask::crc32c_hw::compute(buf.data() + align, len);
      if (a != b) BOOST_FAIL("mismatch at length " << len << " alignment " << align);
      ++checked;
    }
  }
  BOOST_TEST(checked > 16000u);
}

// Inputs of 768 bytes to 24 KiB go in chunks of three 256-byte streams and a
// single stream after them; longer ones are one chunk of three streams of a
// third each (the shift by their length kept for the last length seen) and
// a single stream for the last 0-191 bytes. Lengths on and around each
// boundary, alternating so that the kept shift is both reused and replaced,
// and extend() from a CRC of a prefix on long inputs too.
BOOST_AUTO_TEST_CASE(hardware_and_portable_agree_on_long_inputs) {
  if (!cask::crc32c_hw::supported()) {
    BOOST_TEST_MESSAGE("no SSE4.2 on this CPU: the default policy uses Boost.CRC, checked above");
    return;
  }
  std::vector<std::byte> buf(200000 + 8);
  std::mt19937 g(9);
  for (auto& b : buf) b = std::byte(g());
  std::size_t checked = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (const std::size_t len : {767u, 768u, 769u, 1535u, 1536u, 10000u, 16383u, 20011u, 24575u, 24576u, 24577u,
                                  24583u, 24584u, 24599u, 30000u, 65536u, 65557u, 100003u, 200000u, 24576u}) {
      for (std::size_t align = 0; align < 8; align += 3) {
        const std::uint32_t a = cask::crc32c_portable::compute(buf.data() + align, len);
        const std::uint32_t b = cask::crc32c_hw::compute(buf.data() + align, len);
        if (a != b) BOOST_FAIL("mismatch at length " << len << " alignment " << align);
        const std::size_t cut = len / 3 + 1;
        const std::uint32_t e = cask::crc32c_hw::extend(cask::crc32c_hw::compute(buf.data() + align, cut),
                                                        buf.data() + align + cut, len - cut);
        if (a != e) BOOST_FAIL("extend mismatch at length " << len << " cut " << cut << " alignment " << align);
        ++checked;
      }
    }
  }
  BOOST_TEST(checked == 2u * 20u * 3u);
}

BOOST_AUTO_TEST_CASE(extend_equals_compute_of_the_concatenation) {
  std::vector<std::byte> buf(3000);
  std::mt19937 g(7);
  for (auto& b : buf) b = std::byte(g());
  for (std::size_t cut : {0u, 1u, 7u, 8u, 100u, 383u, 384u, 1000u, 2999u, 3000u}) {
    const auto whole = cask::crc32c::compute(buf.data(), buf.size());
    const auto part = cask::crc32c::extend(cask::crc32c::compute(buf.data(), cut), buf.data() + cut, buf.size() - cut);
    BOOST_TEST(whole == part, "cut at " << cut);
    const auto ppart = cask::crc32c_portable::extend(cask::crc32c_portable::compute(buf.data(), cut),
                                                     buf.data() + cut, buf.size() - cut);
    BOOST_TEST(whole == ppart, "portable cut at " << cut);
  }
}

BOOST_AUTO_TEST_CASE(shift_from_the_table_of_powers_equals_the_power_computed_directly) {
  // crc32c_hw shifts a long input's streams by x^(8 len) built from a table of
  // x^(512 * 2^i); it must be the power crc32c_xpow8n() computes bit by bit.
  namespace d = cask::detail;
  constexpr d::crc32c_pow_table t = d::crc32c_make_pow64();
  static_assert(d::crc32c_xpow8n_64(t, 0) == 0x80000000u);  // x^0: no shift
  static_assert(d::crc32c_xpow8n_64(t, 64) == d::crc32c_xpow8n(64));
  static_assert(d::crc32c_xpow8n_64(t, 8192 + 64) == d::crc32c_xpow8n(8192 + 64));
  std::mt19937_64 g(5);
  std::size_t checked = 0;
  for (unsigned top = 0; top < t.size(); ++top) {
    // Every bit of the table alone, and with random lower bits.
    const std::uint64_t one = std::uint64_t{1} << top;
    for (const std::uint64_t m : {one, one | (g() & (one - 1)), one | (g() & (one - 1))}) {
      const std::size_t len = static_cast<std::size_t>(m * 64);
      if (d::crc32c_xpow8n_64(t, len) != d::crc32c_xpow8n(len)) BOOST_FAIL("mismatch at 64 * " << m << " bytes");
      ++checked;
    }
  }
  BOOST_TEST(checked == 3 * t.size());
}
