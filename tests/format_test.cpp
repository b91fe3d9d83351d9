// The on-disk format: exact bytes (docs/FORMAT.md's worked example) and what validates.
#define BOOST_TEST_MODULE format
#include <boost/test/unit_test.hpp>

#include <cask/checksum.hpp>
#include <cask/codec.hpp>
#include <cask/format.hpp>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace fmt = cask::format;
using crc = cask::crc32c;

namespace {
std::string hex(const std::byte* p, std::size_t n) {
  std::string s;
  char b[4];
  for (std::size_t i = 0; i < n; ++i) {
    std::snprintf(b, sizeof b, "%02x", std::to_integer<unsigned>(p[i]));
    s += b;
  }
  return s;
}
std::vector<std::byte> record(std::uint64_t seq, std::uint8_t flags, std::string_view k, std::string_view v) {
  std::vector<std::byte> r(fmt::record_size(k.size(), v.size()));
  fmt::encode_record_header(r.data(), seq, flags, static_cast<std::uint32_t>(k.size()),
                            static_cast<std::uint32_t>(v.size()));
  std::memcpy(r.data() + fmt::record_header_size, k.data(), k.size());
  std::memcpy(r.data() + fmt::record_header_size + k.size(), v.data(), v.size());
  fmt::seal_record<crc>(r.data(), r.size());
  return r;
}
}  // namespace

BOOST_AUTO_TEST_CASE(codec_id_of_basic_codec_is_pinned) {
  BOOST_TEST(fmt::codec_id<crc>(cask::basic_codec::name) == 0x38b142a2u);
}

BOOST_AUTO_TEST_CASE(segment_header_golden_bytes) {
  fmt::file_header h;
  h.kind = fmt::file_kind::segment;
  h.checksum_id = crc::id;
  h.codec_id = fmt::codec_id<crc>(cask::basic_codec::name);
  h.segment_id = 7;
  std::byte out[fmt::file_header_size];
  fmt::encode_file_header<crc>(h, out);
  // magic | version 1 | kind 1 | checksum 1 | codec id | segment 7 | reserved | masked crc
  const std::string expect = std::string("894341534b0d0a1a") + "0100" + "0100" + "01000000" + "a242b138" + "07000000" +
                             "00000000" + hex(out + 28, 4);
  BOOST_TEST(hex(out, sizeof out) == expect);
  BOOST_TEST(hex(out + 28, 4) == "8e199578");
  fmt::file_header back;
  BOOST_TEST((fmt::decode_file_header<crc>(std::span(out), fmt::file_kind::segment, back) == fmt::header_status::ok));
  BOOST_TEST(back.segment_id == 7u);
  BOOST_TEST(back.codec_id == h.codec_id);
  BOOST_TEST((fmt::decode_file_header<crc>(std::span(out), fmt::file_kind::hint, back) == fmt::header_status::wrong_kind));
}

BOOST_AUTO_TEST_CASE(record_golden_bytes) {
  const auto r = record(1, 0, "k1", "v1");
  BOOST_TEST(r.size() == 25u);
  // masked crc | seq 1 | flags 0 | key_len 2 | value_len 2 | "k1" | "v1"
  BOOST_TEST(hex(r.data() + 4, r.size() - 4) == "0100000000000000" "00" "02000000" "02000000" "6b31" "7631");
  BOOST_TEST(hex(r.data(), 4) == "07e2900c");
  // The stored checksum is the masked CRC-32C (Boost.CRC as the reference) of bytes 4..end.
  BOOST_TEST(cask::detail::load_u32(r.data()) ==
             fmt::mask(cask::crc32c_portable::compute(r.data() + 4, r.size() - 4)));
  const auto t = record(2, fmt::tombstone, "k1", "");
  BOOST_TEST(hex(t.data() + 4, t.size() - 4) == "0200000000000000" "01" "02000000" "00000000" "6b31");
  BOOST_TEST(hex(t.data(), 4) == "96469d87");
}

BOOST_AUTO_TEST_CASE(checksum_covers_every_byte_after_it) {
  const auto r = record(42, 0, "key", "value");
  fmt::record_view rv;
  BOOST_TEST((fmt::parse_record<crc>(r.data(), r.size(), rv) == fmt::record_status::ok));
  BOOST_TEST(rv.seq == 42u);
  for (std::size_t i = 4; i < r.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      auto c = r;
      c[i] ^= std::byte(1u << bit);
      const auto st = fmt::parse_record<crc>(c.data(), c.size(), rv);
      BOOST_TEST((st != fmt::record_status::ok), "flip of byte " << i << " bit " << bit << " went unnoticed");
    }
  }
}

BOOST_AUTO_TEST_CASE(an_all_zero_header_never_validates) {
  std::vector<std::byte> z(64, std::byte{0});
  fmt::record_view rv;
  BOOST_TEST((fmt::parse_record<crc>(z.data(), z.size(), rv) == fmt::record_status::zero));
  // Zero except for a zero-length key and value that a checksum of zero would "cover".
  BOOST_TEST(fmt::mask(crc::compute(z.data() + 4, fmt::record_header_size - 4)) != 0u);
  // Sequence 0 is invalid even with a correct checksum.
  auto r = record(0, 0, "", "");
  BOOST_TEST((fmt::parse_record<crc>(r.data(), r.size(), rv) == fmt::record_status::bad_header));
}

BOOST_AUTO_TEST_CASE(reserved_flags_and_tombstones_with_values_are_refused) {
  fmt::record_view rv;
  for (std::uint8_t f : {std::uint8_t{0x02}, std::uint8_t{0x04}, std::uint8_t{0x80}}) {
    auto r = record(5, f, "k", "v");
    BOOST_TEST((fmt::parse_record<crc>(r.data(), r.size(), rv) == fmt::record_status::bad_header));
  }
  auto t = record(5, fmt::tombstone, "k", "v");
  BOOST_TEST((fmt::parse_record<crc>(t.data(), t.size(), rv) == fmt::record_status::bad_header));
}

BOOST_AUTO_TEST_CASE(a_record_cut_short_is_truncated) {
  const auto r = record(9, 0, "key", "a longer value");
  fmt::record_view rv;
  for (std::size_t n = 1; n < r.size(); ++n)
    BOOST_TEST((fmt::parse_record<crc>(r.data(), n, rv) == fmt::record_status::truncated), "cut at " << n);
}

BOOST_AUTO_TEST_CASE(mask_round_trips) {
  for (std::uint32_t v : {0u, 1u, 0xFFFFFFFFu, 0xE3069283u, 0x12345678u}) BOOST_TEST(fmt::unmask(fmt::mask(v)) == v);
}

BOOST_AUTO_TEST_CASE(header_damage_is_classified) {
  fmt::file_header h;
  h.checksum_id = 1;
  h.segment_id = 3;
  std::byte out[fmt::file_header_size];
  fmt::encode_file_header<crc>(h, out);
  fmt::file_header back;
  auto copy = [&] { return std::vector<std::byte>(out, out + sizeof out); };
  auto b = copy();
  b[0] = std::byte{'X'};
  BOOST_TEST((fmt::decode_file_header<crc>(std::span(b), fmt::file_kind::segment, back) == fmt::header_status::bad_magic));
  b = copy();
  b[20] ^= std::byte{1};
  BOOST_TEST((fmt::decode_file_header<crc>(std::span(b), fmt::file_kind::segment, back) == fmt::header_status::bad_checksum));
  b = copy();
  BOOST_TEST((fmt::decode_file_header<crc>(std::span(b).first(31), fmt::file_kind::segment, back) ==
              fmt::header_status::short_file));
  h.version = 2;
  fmt::encode_file_header<crc>(h, out);
  b = copy();
  BOOST_TEST((fmt::decode_file_header<crc>(std::span(b), fmt::file_kind::segment, back) ==
              fmt::header_status::unsupported_version));
  // Hint files count their versions on their own: 2, 3 and 4 are known (4
  // is the current one), 5 is newer.
  h.kind = fmt::file_kind::hint;
  for (const std::uint16_t v : {2, 3, 4}) {
    h.version = v;
    fmt::encode_file_header<crc>(h, out);
    b = copy();
    BOOST_TEST((fmt::decode_file_header<crc>(std::span(b), fmt::file_kind::hint, back) == fmt::header_status::ok));
    BOOST_TEST(back.version == v);
  }
  h.version = 5;
  fmt::encode_file_header<crc>(h, out);
  b = copy();
  BOOST_TEST((fmt::decode_file_header<crc>(std::span(b), fmt::file_kind::hint, back) ==
              fmt::header_status::unsupported_version));
}
