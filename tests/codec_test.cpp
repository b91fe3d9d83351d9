// basic_codec round-trips every type it supports, alone and through a store,
// and a user codec plugs in.
#define BOOST_TEST_MODULE codec
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <cstdint>
#include <string>
#include <vector>

using cask::basic_codec;

namespace {
template <class T>
T round_trip(const T& x) {
  std::vector<std::byte> buf(basic_codec::encoded_size(x));
  basic_codec::encode(x, buf.data());
  return basic_codec::decode(std::span<const std::byte>(buf), std::type_identity<T>{});
}

struct point {
  std::int32_t x, y;
  friend bool operator==(const point&, const point&) = default;
};
enum class color : std::uint8_t { red = 1, green = 2 };

// A user codec: a struct with a string member, serialized field by field.
struct person {
  std::string name;
  std::uint32_t age = 0;
  friend bool operator==(const person&, const person&) = default;
};
struct person_codec : cask::basic_codec {
  static constexpr std::string_view name = "test.person/1";
  using basic_codec::decode;
  using basic_codec::encode;
  using basic_codec::encoded_size;
  static std::size_t encoded_size(const person& p) { return 4 + p.name.size(); }
  static void encode(const person& p, std::byte* out) {
    cask::detail::store_u32(out, p.age);
    std::memcpy(out + 4, p.name.data(), p.name.size());
  }
  static person decode(std::span<const std::byte> in, std::type_identity<person>) {
    if (in.size() < 4) throw cask::decode_error("person: too short");
    return {std::string(reinterpret_cast<const char*>(in.data() + 4), in.size() - 4), cask::detail::load_u32(in.data())};
  }
};
}  // namespace

BOOST_AUTO_TEST_CASE(strings_round_trip_as_their_bytes) {
  for (std::string s : {std::string(), std::string("x"), std::string(1000, 'z'), std::string("a\0b", 3)}) {
    BOOST_TEST(round_trip(s) == s);
    BOOST_TEST(basic_codec::encoded_size(s) == s.size());
  }
  // string_view and const char* encode exactly like the equal std::string (transparent lookups).
  const std::string s = "hello";
  BOOST_TEST(basic_codec::bytes_of(std::string_view("hello")).size() == 5u);
  BOOST_TEST(std::memcmp(basic_codec::bytes_of("hello").data(), basic_codec::bytes_of(s).data(), 5) == 0);
}

BOOST_AUTO_TEST_CASE(byte_and_char_vectors_round_trip) {
  const std::vector<std::byte> b = {std::byte{0}, std::byte{255}, std::byte{7}};
  BOOST_TEST((round_trip(b) == b));
  const std::vector<std::uint8_t> u = {1, 2, 3, 0};
  BOOST_TEST((round_trip(u) == u));
  const std::vector<char> c = {'a', '\0', 'c'};
  BOOST_TEST((round_trip(c) == c));
}

BOOST_AUTO_TEST_CASE(trivially_copyable_types_round_trip_and_integers_are_little_endian) {
  BOOST_TEST(round_trip(std::uint64_t{0x0102030405060708}) == 0x0102030405060708u);
  BOOST_TEST(round_trip(-5) == -5);
  BOOST_TEST(round_trip(3.25) == 3.25);
  BOOST_TEST((round_trip(point{-1, 7}) == point{-1, 7}));
  BOOST_TEST((round_trip(color::green) == color::green));
  std::byte out[4];
  basic_codec::encode(std::uint32_t{0x11223344}, out);
  BOOST_TEST(std::to_integer<int>(out[0]) == 0x44);
  BOOST_TEST(std::to_integer<int>(out[3]) == 0x11);
}

BOOST_AUTO_TEST_CASE(decoding_the_wrong_size_throws) {
  const std::byte three[3] = {};
  BOOST_CHECK_THROW(basic_codec::decode(std::span<const std::byte>(three), std::type_identity<std::uint32_t>{}),
                    cask::decode_error);
}

template <class K, class V, class C = cask::basic_codec>
void store_round_trip(const std::vector<std::pair<K, V>>& data) {
  cask_test::temp_dir d("codec");
  {
    auto db = cask::log_store<K, V, cask::default_hasher, C>::open(d.path());
    for (const auto& [k, v] : data) db.put(k, v);
    for (const auto& [k, v] : data) BOOST_TEST((db.get(k) == v));
  }
  auto db = cask::log_store<K, V, cask::default_hasher, C>::open(d.path());
  BOOST_TEST(db.size() == data.size());
  for (const auto& [k, v] : data) BOOST_TEST((db.get(k) == v));
}

BOOST_AUTO_TEST_CASE(every_codec_works_through_a_store_and_a_reopen) {
  store_round_trip<std::string, std::string>({{"a", "1"}, {"", "empty key"}, {"b", ""}});
  store_round_trip<std::uint64_t, double>({{1, 1.5}, {0, -2.0}, {~0ull, 1e300}});
  store_round_trip<std::vector<std::byte>, std::vector<std::uint8_t>>(
      {{{std::byte{1}}, {1, 2}}, {{}, {}}, {{std::byte{0}, std::byte{0}}, {9}}});
  store_round_trip<point, std::string>({{{1, 2}, "p"}, {{-3, 4}, "q"}});
  store_round_trip<std::string, person, person_codec>({{"ada", {"Ada", 36}}, {"alan", {"Alan", 41}}});
}

BOOST_AUTO_TEST_CASE(a_store_refuses_to_open_with_another_codec) {
  cask_test::temp_dir d("codec-mismatch");
  { cask::log_store<std::string, person, cask::default_hasher, person_codec>::open(d.path()).put("k", person{"x", 1}); }
  std::error_code ec;
  auto db = cask::log_store<std::string, std::string>::open(d.path(), {}, ec);
  BOOST_TEST(!db.has_value());
  BOOST_TEST((ec == cask::errc::codec_mismatch));
}

BOOST_AUTO_TEST_CASE(a_value_the_codec_cannot_decode_is_reported_as_corruption) {
  cask_test::temp_dir d("codec-bad");
  // Written as 3-byte strings, read back as 4-byte integers under the same codec name.
  { cask::log_store<std::string, std::string>::open(d.path()).put("k", "abc"); }
  auto db = cask::log_store<std::string, std::uint32_t>::open(d.path());
  std::error_code ec;
  BOOST_TEST(!db.get("k", ec).has_value());
  BOOST_TEST((ec == cask::errc::corruption));
  BOOST_CHECK_THROW(db.get("k"), cask::error);
}

// A checksum policy other than CRC-32C: the CRC-32 of zlib and Ethernet, with its own id.
struct crc32_ieee {
  static constexpr std::uint32_t id = 2;
  static std::uint32_t extend(std::uint32_t crc, const std::byte* p, std::size_t n) noexcept {
    boost::crc_optimal<32, 0x04C11DB7, 0xFFFFFFFF, 0xFFFFFFFF, true, true> c(reflect(crc ^ 0xFFFFFFFFu));
    c.process_bytes(p, n);
    return c.checksum();
  }
  static std::uint32_t compute(const std::byte* p, std::size_t n) noexcept { return extend(0, p, n); }
  static constexpr std::uint32_t reflect(std::uint32_t x) noexcept {
    std::uint32_t r = 0;
    for (int i = 0; i < 32; ++i, x >>= 1) r = (r << 1) | (x & 1u);
    return r;
  }
};
struct ieee_traits : cask::default_traits {
  using checksum = crc32_ieee;
};
using ieee_store = cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, ieee_traits>;
using crc32c_store = cask::log_store<std::string, std::string>;
// basic_codec under another name: the same bytes, another codec id.
struct other_name_codec : cask::basic_codec {
  static constexpr std::string_view name = "test.other/1";
};

// Each policy also sums the file headers, so a reader cannot verify a header
// written under another one: it must refuse the store (codec_mismatch, naming
// the segment), not take the header for one a crash tore and rewrite the
// segment (which lost the whole of a one-segment store) or, read-only, open it empty.
template <class Writer, class Reader>
void refuses_other_checksum(const std::string& tag, std::uint64_t segment_bytes) {
  cask_test::temp_dir d(tag);
  cask::options o;
  o.max_segment_bytes = segment_bytes;
  o.merge.background = false;
  {
    auto db = Writer::open(d.path(), o);
    for (int i = 0; i < 100; ++i) db.put("k" + std::to_string(i), std::string(40, char('a' + i % 26)));
  }
  const bool one_segment = cask_test::segment_files(d.path()).size() == 1;
  BOOST_TEST_MESSAGE(tag << ": " << cask_test::segment_files(d.path()).size() << " segments");
  for (const bool read_only : {false, true}) {
    o.read_only = read_only;
    {
      std::error_code ec;
      auto db = Reader::open(d.path(), o, ec);
      BOOST_TEST(!db.has_value(), tag << (read_only ? " read-only" : "") << ": opened, " << (db ? db->size() : 0) << " keys");
      BOOST_TEST((ec == cask::errc::codec_mismatch), tag << ": " << ec.message());
    }
    try {
      Reader::open(d.path(), o);
      BOOST_ERROR(tag << ": expected an exception");
    } catch (const cask::error& e) {
      BOOST_TEST((e.code() == cask::errc::codec_mismatch), e.what());
      BOOST_TEST(e.path().parent_path() == d.path());
      BOOST_TEST(e.offset() == 0u);
    }
  }
  o.read_only = false;
  auto db = Writer::open(d.path(), o);
  BOOST_TEST(db.size() == 100u, tag << (one_segment ? " (one segment)" : "") << ": data lost");
  BOOST_TEST((db.get("k7") == std::string(40, 'h')));
}

BOOST_AUTO_TEST_CASE(a_store_refuses_to_open_with_another_checksum_and_keeps_its_data) {
  refuses_other_checksum<ieee_store, crc32c_store>("sum-one", std::uint64_t{1} << 20);
  refuses_other_checksum<ieee_store, crc32c_store>("sum-many", 4096);
  refuses_other_checksum<crc32c_store, ieee_store>("sum-one-rev", std::uint64_t{1} << 20);
  refuses_other_checksum<crc32c_store, ieee_store>("sum-many-rev", 4096);
}

// The same after a crash that left the newest segment unnamed (`<id>.cask.new`,
// options::background_seal): the open under the wrong checksum must not drop
// it as a segment whose header never became durable before refusing the store.
BOOST_AUTO_TEST_CASE(another_checksum_is_refused_before_an_unnamed_segment_is_dropped) {
  cask_test::temp_dir d("sum-unnamed");
  cask::options o;
  o.merge.background = false;
  o.keydir_snapshot = false;
  for (const char* prefix : {"a", "b"}) {
    auto db = ieee_store::open(d.path(), o);
    for (int i = 0; i < 50; ++i) db.put(prefix + std::to_string(i), "v");
  }
  // As a crash leaves it after the seal of segment 1, before segment 2 got its name.
  cask_test::remove_index_files(d.path());
  std::filesystem::rename(d / "0000000002.cask", d / "0000000002.cask.new");
  std::error_code ec;
  BOOST_TEST(!crc32c_store::open(d.path(), o, ec).has_value());
  BOOST_TEST((ec == cask::errc::codec_mismatch), ec.message());
  BOOST_TEST(std::filesystem::exists(d / "0000000002.cask.new"));
  BOOST_TEST(ieee_store::open(d.path(), o).size() == 100u);
}

// A merge manifest left by a crash is read before any segment: one written
// under another codec or checksum is the store's, not damage. The open must
// report codec_mismatch (not corruption) and, under corruption_policy::skip,
// not discard it as damaged.
template <class Writer, class Checksum>
void manifest_of_another_store(const std::string& tag) {
  cask_test::temp_dir d(tag);
  { Writer::open(d.path()).put("k", "v"); }
  cask::merge_manifest m;
  m.inputs = {1};
  m.outputs = {7};  // not there: an uncommitted merge
  const auto bytes = m.encode<Checksum>(cask::format::codec_id<Checksum>(std::string_view(Writer::codec::name)));
  const auto path = d / cask::merge_manifest::file_name(7);
  cask_test::write_file(path, {reinterpret_cast<const char*>(bytes.data()), reinterpret_cast<const char*>(bytes.data()) + bytes.size()});
  for (const auto policy : {cask::corruption_policy::fail, cask::corruption_policy::skip}) {
    cask::options o;
    o.on_corruption = policy;
    std::error_code ec;
    BOOST_TEST(!crc32c_store::open(d.path(), o, ec).has_value());
    BOOST_TEST((ec == cask::errc::codec_mismatch), tag << ": " << ec.message());
    BOOST_TEST(std::filesystem::exists(path), tag << ": manifest removed");
  }
}

BOOST_AUTO_TEST_CASE(a_merge_manifest_of_another_codec_or_checksum_is_a_codec_mismatch) {
  manifest_of_another_store<ieee_store, crc32_ieee>("manifest-sum");
  manifest_of_another_store<cask::log_store<std::string, std::string, cask::default_hasher, other_name_codec>, cask::crc32c>(
      "manifest-codec");
}
