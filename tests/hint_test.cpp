// Hint files: exact bytes, a clean restart that scans nothing, and every kind
// of damaged hint falling back to a scan that yields the same keydir.
#define BOOST_TEST_MODULE hint
#include <boost/test/unit_test.hpp>

#include "no_threads.hpp"
#include "test_util.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <functional>
#include <map>

using namespace cask_test;
namespace fmt = cask::format;

namespace {
using model = std::map<std::string, std::string>;
model contents(const string_store& db) {
  model m;
  db.for_each([&](const std::string& k, const std::string& v) { m[k] = v; });
  return m;
}
std::vector<cask::segment_stats> live_dead(const cask::store_stats& st) {
  auto v = st.per_segment;
  v.erase(std::remove_if(v.begin(), v.end(), [](const auto& s) { return s.active; }), v.end());
  return v;
}
bool same_segments(const std::vector<cask::segment_stats>& a, const std::vector<cask::segment_stats>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i].id != b[i].id || a[i].bytes != b[i].bytes || a[i].live_records != b[i].live_records ||
        a[i].live_bytes != b[i].live_bytes || a[i].dead_bytes != b[i].dead_bytes ||
        a[i].dead_records != b[i].dead_records)
      return false;
  return true;
}
cask::options opts() {
  cask::options o;
  o.max_segment_bytes = 4096;
  o.merge.background = false;
  o.keydir_snapshot = false;  // what a clean restart would load instead of the hints (snapshot_test.cpp)
  o.parallel_recovery_bytes = 0;  // recovery's helper threads, as for a large store
  o.hint_split_bytes = 0;         // and each hint read in two threads, as a large one
  return o;
}
/// A closed store of a few segments with overwrites and erases; hint files for all.
model build(const std::filesystem::path& dir) {
  model m;
  auto db = string_store::open(dir, opts());
  for (int i = 0; i < 90; ++i) {
    const std::string k = key_of(i % 40);
    if (i % 9 == 4) {
      if (db.erase(k)) m.erase(k);
    } else {
      db.put(k, value_of(i, 30));
      m[k] = value_of(i, 30);
    }
  }
  return m;
}

// A hint file as FORMAT.md "Hint file" describes it, decoded and encoded here
// independently of hint.hpp, so that a change to the code that breaks the
// documented layout fails these tests.
struct raw_entry {
  std::uint8_t flags = 0;
  std::uint64_t key_len = 0, value_len = 0, seq_delta = 0, offset = 0;
  std::string key;
  // Version 4: what the record replaced (descriptor byte 0, bit 7; then byte 2 and three fields).
  bool replaces = false;
  std::uint64_t rseg = 0, roff = 0, rsize = 0;
  int wider = -1;          // which field (0..3, or 4..6 of what it replaced) to write one byte wider than needed
  std::uint8_t extra0 = 0, extra1 = 0, extra2 = 0;  // bits or'ed into the descriptor bytes
};
struct raw_hint {
  std::vector<char> header;  // 32 bytes
  std::vector<raw_entry> entries;
  std::vector<std::uint8_t> sketch;  // version 3: 512 registers; version 2: none
  std::uint64_t records = 0, segment_bytes = 0, min_seq = 0, max_seq = 0;
  std::uint32_t sketch_field = 0;    // the trailer's sketch size
};
/// The sketch of the keys as FORMAT.md defines it: x = fmix64(hash of the
/// key); register x >> 55 holds the most, over the keys, of 1 + the number
/// of leading zeros of the other 55 bits (56 if all are zero).
std::vector<std::uint8_t> sketch_of(const std::vector<raw_entry>& entries) {
  std::vector<std::uint8_t> r(512);
  for (const auto& e : entries) {
    std::uint64_t x = cask::default_hasher{}(std::as_bytes(std::span(e.key)));
    x ^= x >> 33, x *= 0xff51afd7ed558ccdULL, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ULL, x ^= x >> 33;
    std::uint8_t rank = 1;
    for (std::uint64_t rest = x << 9, bit = std::uint64_t{1} << 63; rank < 56 && !(rest & bit); bit >>= 1) ++rank;
    r[x >> 55] = std::max(r[x >> 55], rank);
  }
  return r;
}
std::uint64_t le(const std::vector<char>& b, std::size_t at, int n) {
  std::uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<std::uint8_t>(b.at(at + static_cast<std::size_t>(i)));
  return v;
}
void put_le(std::vector<char>& b, std::uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.push_back(static_cast<char>(n > 8 || i >= 8 ? 0 : v >> (8 * i)));
}
int width(std::uint64_t v) {
  int n = 1;
  while (n < 8 && (v >> (8 * n)) != 0) ++n;
  return n;
}
raw_hint decode(const std::vector<char>& b) {
  raw_hint h;
  h.header.assign(b.begin(), b.begin() + 32);
  const std::size_t trailer = b.size() - 40;
  h.records = le(b, trailer, 8);
  h.segment_bytes = le(b, trailer + 8, 8);
  h.min_seq = le(b, trailer + 16, 8);
  h.max_seq = le(b, trailer + 24, 8);
  h.sketch_field = static_cast<std::uint32_t>(le(b, trailer + 32, 4));
  const std::size_t t = trailer - h.sketch_field;
  for (std::size_t at = t; at < trailer; ++at) h.sketch.push_back(static_cast<std::uint8_t>(b.at(at)));
  for (std::size_t at = 32; at < t;) {
    raw_entry e;
    const auto d0 = static_cast<std::uint8_t>(b.at(at)), d1 = static_cast<std::uint8_t>(b.at(at + 1));
    at += 2;
    e.flags = d0 & 0x0f;
    const int kb = (d1 & 3) + 1, vb = ((d1 >> 2) & 3) + 1, sb = ((d0 >> 4) & 7) + 1, ob = ((d1 >> 4) & 3) + 1;
    e.key_len = le(b, at, kb), at += static_cast<std::size_t>(kb);
    e.value_len = le(b, at, vb), at += static_cast<std::size_t>(vb);
    e.seq_delta = le(b, at, sb), at += static_cast<std::size_t>(sb);
    e.offset = le(b, at, ob), at += static_cast<std::size_t>(ob);
    if (d0 & 0x80) {
      e.replaces = true;
      const auto d2 = static_cast<std::uint8_t>(b.at(at++));
      const int rs = (d2 & 3) + 1, ro = ((d2 >> 2) & 3) + 1, rz = ((d2 >> 4) & 3) + 1;
      e.rseg = le(b, at, rs), at += static_cast<std::size_t>(rs);
      e.roff = le(b, at, ro), at += static_cast<std::size_t>(ro);
      e.rsize = le(b, at, rz), at += static_cast<std::size_t>(rz);
    }
    e.key.assign(b.data() + at, e.key_len);
    at += e.key_len;
    h.entries.push_back(e);
  }
  return h;
}
/// The file's bytes, both checksums made valid.
std::vector<char> encode(const raw_hint& h) {
  std::vector<char> b = h.header;
  auto* hp = reinterpret_cast<std::byte*>(b.data());
  cask::detail::store_u32(hp + 28, fmt::mask(cask::crc32c::compute(hp, 28)));
  for (const auto& e : h.entries) {
    int w[7] = {width(e.key_len), width(e.value_len), width(e.seq_delta), width(e.offset),
                width(e.rseg),    width(e.roff),      width(e.rsize)};
    if (e.wider >= 0) ++w[e.wider];
    b.push_back(static_cast<char>(e.flags | (w[2] - 1) << 4 | (e.replaces ? 0x80 : 0) | e.extra0));
    b.push_back(static_cast<char>((w[0] - 1) | (w[1] - 1) << 2 | (w[3] - 1) << 4 | e.extra1));
    put_le(b, e.key_len, w[0]);
    put_le(b, e.value_len, w[1]);
    put_le(b, e.seq_delta, w[2]);
    put_le(b, e.offset, w[3]);
    if (e.replaces) {
      b.push_back(static_cast<char>((w[4] - 1) | (w[5] - 1) << 2 | (w[6] - 1) << 4 | e.extra2));
      put_le(b, e.rseg, w[4]);
      put_le(b, e.roff, w[5]);
      put_le(b, e.rsize, w[6]);
    }
    b.insert(b.end(), e.key.begin(), e.key.end());
  }
  b.insert(b.end(), h.sketch.begin(), h.sketch.end());
  put_le(b, h.records, 8);
  put_le(b, h.segment_bytes, 8);
  put_le(b, h.min_seq, 8);
  put_le(b, h.max_seq, 8);
  put_le(b, h.sketch_field, 4);
  put_le(b, fmt::mask(cask::crc32c::compute(reinterpret_cast<const std::byte*>(b.data()), b.size())), 4);
  return b;
}
/// `h` with no entry saying what its record replaced (only the writer knows
/// that: a hint written from a scan says nothing of it).
raw_hint without_replaces(raw_hint h) {
  for (auto& e : h.entries) e.replaces = false, e.rseg = e.roff = e.rsize = 0;
  return h;
}
/// `n` random writes to `db` and to its model `m`: puts of values of up to
/// `max_len` - 1 bytes to keys of `keys`, one in `erase_one_in` an erase.
template <class Store>
void write_random(Store& db, model& m, std::mt19937_64& g, int n, std::uint64_t keys, std::uint64_t erase_one_in,
                  std::uint64_t max_len) {
  for (int i = 0; i < n; ++i) {
    const std::string k = key_of(g() % keys);
    if (g() % erase_one_in == 0) {
      if (db.erase(k)) m.erase(k);
    } else {
      const std::string v = value_of(g(), g() % max_len);
      db.put(k, v);
      m[k] = v;
    }
  }
}
/// A fresh copy of the store at `from` in `to`, without its hint files unless `hints`.
void copy_store(const std::filesystem::path& from, const std::filesystem::path& to, bool hints) {
  std::filesystem::remove_all(to);
  copy_dir(from, to);
  if (!hints)
    for (const auto& e : std::filesystem::directory_iterator(to))
      if (e.path().extension() == ".hint") std::filesystem::remove(e.path());
}
bool validates(const std::vector<char>& b, std::uint32_t id, std::uint64_t segment_bytes) {
  cask::hint_summary sum;
  return cask::validate_hint<cask::crc32c>(std::span(reinterpret_cast<const std::byte*>(b.data()), b.size()), id,
                                           fmt::codec_id<cask::crc32c>(cask::basic_codec::name), segment_bytes, sum);
}
}  // namespace

BOOST_AUTO_TEST_CASE(hint_file_golden_bytes) {
  fmt::record_view rv;
  const std::string key = "k1";
  rv.seq = 1000;
  rv.flags = 0;
  rv.size = 25;
  rv.key = std::as_bytes(std::span(key));
  cask::hint_builder<cask::crc32c> b(7, fmt::codec_id<cask::crc32c>(cask::basic_codec::name));
  const std::uint64_t h = cask::default_hasher{}(rv.key);
  b.add(rv, 32, h);
  rv.seq = 1001;
  rv.flags = fmt::tombstone;
  rv.size = 23;
  b.add(rv, 300, h, {7, 32, 25});  // it replaced the first
  const auto bytes = std::move(b).finish(400);
  auto hex = [&](std::size_t from, std::size_t n) {
    std::string s;
    char h[4];
    for (std::size_t i = from; i < from + n; ++i) {
      std::snprintf(h, sizeof h, "%02x", std::to_integer<unsigned>(bytes[i]));
      s += h;
    }
    return s;
  };
  BOOST_TEST(bytes.size() == 32u + 8u + 13u + 512u + 40u);
  BOOST_TEST(hex(0, 12) == "894341534b0d0a1a" "0400" "0200");  // magic, hint format version 4, kind 2: hint
  // entries: flags | seq delta bytes - 1 << 4 | replaces << 7, then key length bytes - 1 | value length's << 2 |
  // offset's << 4; key length, value length, seq - min seq, offset (each in as few bytes as it needs); if it
  // replaced a record, its segment id bytes - 1 | offset's << 2 | size's << 4, and the three; key
  BOOST_TEST(hex(32, 8) == "00" "00" "02" "02" "00" "20" "6b31");
  // a tombstone; offset 300 in two bytes; it replaced segment 7's record at 32, of 25 bytes
  BOOST_TEST(hex(40, 13) == "81" "10" "02" "00" "01" "2c01" "00" "07" "20" "19" "6b31");
  // the sketch: one key, so one register is set, register x >> 55 of x =
  // fmix64(hash("k1")), to 1 + the leading zeros of x's other 55 bits
  std::uint64_t x = h;
  x ^= x >> 33, x *= 0xff51afd7ed558ccdULL, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ULL, x ^= x >> 33;
  const std::size_t reg = x >> 55;
  const auto rank = static_cast<unsigned>(std::countl_zero(x << 9 | 0x100) + 1);
  for (std::size_t j = 0; j < 512; ++j)
    BOOST_TEST(std::to_integer<unsigned>(bytes[53 + j]) == (j == reg ? rank : 0u), "register " << j);
  BOOST_TEST(reg == 152u);  // default_hasher's output is pinned by hash_test.cpp
  BOOST_TEST(rank == 1u);
  // trailer: records 2 | segment bytes 400 | min seq 1000 | max seq 1001 | sketch size 512 | masked crc
  BOOST_TEST(hex(565, 36) == "0200000000000000" "9001000000000000" "e803000000000000" "e903000000000000" "00020000");
  BOOST_TEST(hex(601, 4) == "c69fb5ab");
  cask::hint_summary sum;
  BOOST_TEST(cask::validate_hint<cask::crc32c>(bytes, 7, fmt::codec_id<cask::crc32c>(cask::basic_codec::name), 400, sum));
  BOOST_TEST(sum.records == 2u);
  BOOST_TEST(sum.min_seq == 1000u);
  std::vector<cask::hint_entry> got;
  cask::for_each_hint_entry(bytes, [&](const cask::hint_entry& e) { got.push_back(e); });
  BOOST_REQUIRE(got.size() == 2u);
  BOOST_TEST(sum.has_sketch);
  BOOST_TEST(std::abs(sum.sketch.estimate() - 1.0) < 0.01);  // one key, written twice
  BOOST_TEST((got[1].seq == 1001u && got[1].offset == 300u && got[1].size == 23u && got[1].is_tombstone()));
  BOOST_TEST(!got[0].replaces);
  BOOST_TEST((got[1].replaces == cask::replaced_record{7, 32, 25}));
  // The test's own encoder, from FORMAT.md, writes the same bytes.
  std::vector<char> mine(bytes.size());
  std::memcpy(mine.data(), bytes.data(), bytes.size());
  BOOST_TEST((encode(decode(mine)) == mine));
}

// A large hint is read in two threads, split at an entry (log_store's
// read_hint_halves()): split anywhere, the runs find what one walk finds, and
// records out of file order across the split fail the join as they fail the walk.
BOOST_AUTO_TEST_CASE(a_hint_read_in_two_runs_validates_as_in_one) {
  const std::uint32_t codec = fmt::codec_id<cask::crc32c>(cask::basic_codec::name);
  auto build_hint = [&](const std::vector<std::uint32_t>& offsets) {
    cask::hint_builder<cask::crc32c> b(7, codec);
    for (std::size_t i = 0; i < offsets.size(); ++i) {
      const std::string key = "key" + std::to_string(i);
      fmt::record_view rv;
      rv.seq = 100 + i;
      rv.flags = 0;
      rv.size = static_cast<std::uint32_t>(fmt::record_size(key.size(), 10));
      rv.key = std::as_bytes(std::span(key));
      b.add(rv, offsets[i], cask::default_hasher{}(rv.key));
    }
    return std::move(b).finish(4096);
  };
  // Records of 34 bytes: in order at 32, 100, 200, ...; or the fourth before
  // the third ends (its entry as long: the two hints' entries start alike).
  const std::vector<std::uint32_t> in_order{32, 100, 200, 240, 400, 500}, crossed{32, 100, 200, 220, 400, 500};
  std::vector<std::size_t> entries;  // where each entry starts, from the first byte of the file
  {
    cask::hint_summary whole;
    BOOST_REQUIRE(cask::validate_hint<cask::crc32c>(build_hint(in_order), 7, codec, 4096, whole,
                                                    [&](const cask::hint_entry&, std::size_t at) { entries.push_back(at); }));
    BOOST_REQUIRE(entries.size() == in_order.size());
  }
  for (const auto* offsets : {&in_order, &crossed}) {
    const auto image = build_hint(*offsets);
    cask::hint_summary whole;
    const bool valid = cask::validate_hint<cask::crc32c>(image, 7, codec, 4096, whole);
    BOOST_TEST(valid == (offsets == &in_order));
    cask::hint_summary sum;
    cask::hint_frame fr;
    BOOST_REQUIRE(cask::check_hint_frame<cask::crc32c>(image, 7, codec, 4096, sum, fr, true));
    BOOST_TEST(!sum.trailer_valid);  // the checksum is left to hint_checksum_ok()
    BOOST_TEST(cask::hint_checksum_ok<cask::crc32c>(image, sum));
    BOOST_TEST(sum.trailer_valid);
    const auto span = static_cast<std::size_t>(fr.end - fr.entries);
    std::size_t splits = 0;
    for (std::size_t at = 0; at < span; ++at) {
      const std::byte* mid = cask::hint_entry_near(fr, at);
      // The first entry that starts at or past `at`; none past the last one's start.
      const auto next = std::lower_bound(entries.begin(), entries.end(), fmt::file_header_size + at);
      if (next == entries.end()) {
        BOOST_TEST(!mid, "split at entry byte " << at);
        continue;
      }
      BOOST_REQUIRE(mid != nullptr);
      BOOST_TEST(static_cast<std::size_t>(mid - fr.begin) == *next);
      cask::hint_run a, b;
      std::vector<std::uint32_t> got;
      auto keep = [&](const cask::hint_entry& e, std::size_t) { got.push_back(e.offset); };
      const bool ok_a = cask::walk_hint_entries(fr, sum, 7, 4096, fr.entries, mid, a, keep);
      const bool ok_b = cask::walk_hint_entries(fr, sum, 7, 4096, mid, fr.end, b, keep);
      // Each run is in order by itself unless the split leaves 200 and 220 on one side.
      BOOST_TEST((ok_a && ok_b && cask::join_hint_runs(sum, a, b)) == valid, "split at entry byte " << at);
      if (valid) BOOST_TEST((got == *offsets));
      BOOST_TEST(a.n + b.n <= offsets->size());
      ++splits;
    }
    BOOST_TEST(splits == entries.back() - fmt::file_header_size + 1);  // every byte up to the last entry's start
    BOOST_TEST(cask::hint_entry_near(fr, span) == nullptr);
  }
}

BOOST_AUTO_TEST_CASE(a_clean_restart_loads_every_segment_from_hints) {
  temp_dir d("clean");
  const model m = build(d.path());
  auto db = string_store::open(d.path(), opts());
  const auto st = db.stats();
  BOOST_TEST(st.recovered_by_scan == 0u);
  BOOST_TEST(st.recovered_from_hints == live_dead(st).size());
  BOOST_TEST(st.recovered_from_hints >= 2u);
  BOOST_TEST((contents(db) == m));
}

// A key written twice meets its older record at open; the newer record's
// hint entry names the older one, so the pair is settled without comparing
// keys: once for each key the second pass wrote, from hints (threads or
// not), never from scans or from hints whose entries name nothing.
BOOST_AUTO_TEST_CASE(a_key_written_twice_is_settled_by_its_hint_note) {
  temp_dir d("notes");
  constexpr int keys = 120;
  model m;
  {
    auto db = string_store::open(d / "ref", opts());
    for (int pass = 0; pass < 2; ++pass)
      for (int i = 0; i < keys; ++i) {
        db.put(key_of(i), value_of(pass * keys + i, 30));
        m[key_of(i)] = value_of(pass * keys + i, 30);
      }
    BOOST_REQUIRE(db.stats().segments >= 4u);  // the passes span several segments
  }
  for (int variant = 0; variant < 4; ++variant) {  // hints with threads, without; no hints; version-3 hints
    copy_store(d / "ref", d / "x", variant != 2);
    auto o = opts();
    if (variant == 1) o.parallel_recovery_bytes = ~std::uint64_t{0};
    if (variant == 3)
      for (const auto& seg : segment_files(d / "x")) {
        const auto hint = seg.parent_path() / (seg.stem().string() + ".hint");
        if (!std::filesystem::exists(hint)) continue;
        raw_hint v3 = without_replaces(decode(read_file(hint)));
        v3.header[8] = 3;
        write_file(hint, encode(v3));
      }
    {
      auto db = string_store::open(d / "x", o);
      const auto st = db.stats();
      BOOST_TEST((contents(db) == m), "variant " << variant);
      BOOST_TEST((variant == 2 ? st.recovered_from_hints : st.recovered_by_scan) == 0u, "variant " << variant);
      BOOST_TEST(st.recovered_pairs_by_note == (variant < 2 ? std::uint64_t{keys} : 0u), "variant " << variant);
    }
    std::filesystem::remove_all(d / "x");
  }
}

BOOST_AUTO_TEST_CASE(hints_and_scans_build_the_same_keydir) {
  temp_dir d("same");
  const model m = build(d / "ref");
  std::vector<cask::segment_stats> with_hints, scanned;
  {
    copy_dir(d / "ref", d / "a");
    auto db = string_store::open(d / "a", opts());
    with_hints = live_dead(db.stats());
    BOOST_TEST((contents(db) == m));
  }
  {
    copy_dir(d / "ref", d / "b");
    for (const auto& e : std::filesystem::directory_iterator(d / "b"))
      if (e.path().extension() == ".hint") std::filesystem::remove(e.path());
    auto db = string_store::open(d / "b", opts());
    BOOST_TEST(db.stats().recovered_from_hints == 0u);
    scanned = live_dead(db.stats());
    BOOST_TEST((contents(db) == m));
  }
  BOOST_TEST(same_segments(with_hints, scanned));
}

// A small store is recovered in the opening thread, a large one with helper
// threads: the two build the same keydir, from hints and from scans.
BOOST_AUTO_TEST_CASE(recovery_with_and_without_threads_builds_the_same_keydir) {
  temp_dir d("threads");
  const model m = build(d / "ref");
  for (const bool hints : {true, false}) {
    std::vector<cask::segment_stats> got[2];
    for (const std::uint64_t threshold : {std::uint64_t{0}, ~std::uint64_t{0}}) {
      const auto dir = d / "x";
      copy_dir(d / "ref", dir);
      if (!hints)
        for (const auto& e : std::filesystem::directory_iterator(dir))
          if (e.path().extension() == ".hint") std::filesystem::remove(e.path());
      auto o = opts();
      o.parallel_recovery_bytes = threshold;
      {
        auto db = string_store::open(dir, o);
        BOOST_TEST((contents(db) == m));
        BOOST_TEST((hints ? db.stats().recovered_by_scan : db.stats().recovered_from_hints) == 0u);
        got[threshold == 0 ? 0 : 1] = live_dead(db.stats());
      }
      std::filesystem::remove_all(dir);
    }
    BOOST_TEST(got[0].size() >= 2u);
    BOOST_TEST(same_segments(got[0], got[1]));
  }
}

// Where the system refuses recovery's helper threads (a process or thread
// limit), open recovers in the opening thread alone: the same keydir, from
// hints read whole and from scans. (A read-only open, which starts no
// background thread of its own; the child may read what the parent made.)
BOOST_AUTO_TEST_CASE(recovery_where_threads_are_refused_builds_the_same_keydir) {
  temp_dir d("nothreads");
  const model m = build(d / "hinted");
  copy_dir(d / "hinted", d / "scanned");
  remove_index_files(d / "scanned");
  open_to_others(d.path());  // the child may run as another user
  auto o = opts();
  o.read_only = true;
  for (const char* name : {"hinted", "scanned"}) {
    const auto dir = d / name;
    std::vector<cask::segment_stats> want;
    std::uint64_t from_hints = 0, by_scan = 0;
    {
      auto db = string_store::open(dir, o);  // with its helper threads
      const auto st = db.stats();
      want = live_dead(st);
      from_hints = st.recovered_from_hints;
      by_scan = st.recovered_by_scan;
    }
    const auto r = run_where_threads_are_refused([&] {
      auto db = string_store::open(dir, o);
      const auto st = db.stats();
      return contents(db) == m && same_segments(live_dead(st), want) && st.recovered_from_hints == from_hints &&
             st.recovered_by_scan == by_scan;
    });
    BOOST_TEST((r == refused_threads_result::passed), name << ": child ended " << static_cast<int>(r));
    BOOST_TEST(want.size() >= 2u);
    BOOST_TEST((std::string(name) == "hinted" ? from_hints : by_scan) >= 2u);
  }
}

// Recovery tells two records of a key apart by their hint entries in hinted
// segments and by their headers in scanned ones: any mix gives the same keydir.
BOOST_AUTO_TEST_CASE(hinted_and_scanned_segments_mixed_build_the_same_keydir) {
  temp_dir d("mixed");
  const model m = build(d / "ref");
  std::vector<cask::segment_stats> all_hinted;
  {
    copy_dir(d / "ref", d / "a");
    auto db = string_store::open(d / "a", opts());
    all_hinted = live_dead(db.stats());
  }
  for (int phase = 0; phase < 2; ++phase) {
    const auto dir = d / ("mix" + std::to_string(phase));
    copy_dir(d / "ref", dir);
    std::size_t removed = 0, i = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.path().extension() == ".hint" && i++ % 2 == static_cast<std::size_t>(phase)) {
        std::filesystem::remove(e.path());
        ++removed;
      }
    BOOST_TEST(removed > 0u);
    auto db = string_store::open(dir, opts());
    const auto st = db.stats();
    BOOST_TEST(st.recovered_from_hints > 0u);
    BOOST_TEST(st.recovered_by_scan >= removed);
    BOOST_TEST((contents(db) == m));
    BOOST_TEST(same_segments(live_dead(st), all_hinted));
  }
}

// Recovery sizes the keydir for every record it will read before it knows how
// many are overwritten, then gives the excess back: a reopened store's keydir
// costs what a freshly written one does, however often its keys were written.
BOOST_AUTO_TEST_CASE(a_reopened_keydir_is_sized_for_its_keys_not_its_records) {
  temp_dir d("sized");
  constexpr int keys = 4000, writes = 5;
  {
    auto o = opts();
    o.max_segment_bytes = 64 << 10;
    auto db = string_store::open(d.path(), o);
    for (int w = 0; w < writes; ++w)
      for (int k = 0; k < keys; ++k) db.put(key_of(k), value_of(w * keys + k, 8));
  }
  for (const bool with_hints : {true, false}) {
    if (!with_hints)
      for (const auto& e : std::filesystem::directory_iterator(d.path()))
        if (e.path().extension() == ".hint") std::filesystem::remove(e.path());
    auto o = opts();
    o.max_segment_bytes = 64 << 10;
    auto db = string_store::open(d.path(), o);
    const auto st = db.stats();
    BOOST_TEST(st.keys == std::size_t(keys));
    BOOST_TEST((with_hints ? st.recovered_from_hints : st.recovered_by_scan) > 2u);
    // 16-byte slots at a load of at least 0.4 (the table's own bound), plus
    // the fixed part of a 64-shard table spread over few keys.
    BOOST_TEST(st.keydir_bytes_per_key <= 16 / 0.4 + 10, "keydir bytes per key " << st.keydir_bytes_per_key);
    BOOST_TEST(db.get(key_of(keys - 1)).value_or("") == value_of((writes - 1) * keys + keys - 1, 8));
    db.close();
  }
}

BOOST_AUTO_TEST_CASE(every_damaged_or_truncated_hint_byte_falls_back_to_the_same_keydir) {
  temp_dir d("damage", storage::memory);
  const model m = build(d / "ref");
  std::filesystem::path hint;
  for (const auto& e : std::filesystem::directory_iterator(d / "ref"))
    if (e.path().extension() == ".hint") hint = e.path();  // any one of them
  const auto original = read_file(hint);
  std::vector<cask::segment_stats> expect;
  {
    copy_dir(d / "ref", d / "e");
    expect = live_dead(string_store::open(d / "e", opts()).stats());
  }
  long cases = 0;
  for (std::size_t i = 0; i < original.size(); ++i) {
    // Flip the byte, or cut the file there, the hint read in two threads;
    // or flip it, the hint read in one.
    for (int variant = 0; variant < 3; ++variant) {
      const auto dir = d / "x";
      copy_dir(d / "ref", dir);
      auto b = original;
      if (variant != 1)
        b[i] = static_cast<char>(b[i] ^ 0x5a);
      else
        b.resize(i);
      write_file(dir / hint.filename(), b);
      {
        auto o = opts();
        if (variant == 2) o.hint_split_bytes = ~std::uint64_t{0};
        auto db = string_store::open(dir, o);
        BOOST_REQUIRE_MESSAGE((contents(db) == m), "hint damage at " << i << " variant " << variant);
        BOOST_REQUIRE(same_segments(live_dead(db.stats()), expect));
        BOOST_REQUIRE_EQUAL(db.stats().recovered_by_scan, 1u);
      }
      std::filesystem::remove_all(dir);
      ++cases;
    }
  }
  BOOST_TEST(cases > 300);
}

BOOST_AUTO_TEST_CASE(a_hint_that_points_past_its_segment_or_is_stale_is_ignored) {
  temp_dir d("past");
  const model m = build(d / "ref");
  const auto segs = segment_files(d / "ref");
  const auto seg = segs.at(0);
  const auto hint = seg.parent_path() / (seg.stem().string() + ".hint");
  const std::uint64_t seg_size = std::filesystem::file_size(seg);
  // Rewrite the first entry's offset past the end, with a correct checksum.
  auto raw = decode(read_file(hint));
  raw.entries.at(0).offset = seg_size;
  const auto bytes = encode(raw);
  BOOST_TEST(!validates(bytes, 1, seg_size));
  copy_dir(d / "ref", d / "a");
  write_file(d / "a" / hint.filename(), bytes);
  {
    auto db = string_store::open(d / "a", opts());
    BOOST_TEST((contents(db) == m));
    BOOST_TEST(db.stats().recovered_by_scan == 1u);
  }
  // A valid hint describing a segment of another size means the segment was
  // cut or extended: damage, refused under corruption_policy::fail, scanned
  // and reported under skip.
  copy_dir(d / "ref", d / "b");
  const auto other = seg.parent_path() / (segs.at(1).stem().string() + ".hint");
  auto stale = read_file(d / "ref" / hint.filename());
  auto sb = reinterpret_cast<std::byte*>(stale.data());
  cask::detail::store_u64(sb + stale.size() - 32, seg_size + 1);
  cask::detail::store_u32(sb + stale.size() - 4, fmt::mask(cask::crc32c::compute(sb, stale.size() - 4)));
  write_file(d / "b" / hint.filename(), stale);
  try {
    string_store::open(d / "b", opts());
    BOOST_FAIL("opened a segment whose size differs from its hint's");
  } catch (const cask::error& e) {
    BOOST_TEST((e.code() == cask::errc::corruption));
    BOOST_TEST(e.path() == d / "b" / seg.filename());
    BOOST_TEST(e.offset() == seg_size);
  }
  auto o = opts();
  o.on_corruption = cask::corruption_policy::skip;
  std::vector<cask::recovery_event> events;
  o.reporter = [&](const cask::recovery_event& e) { events.push_back(e); };
  auto db = string_store::open(d / "b", o);
  BOOST_TEST((contents(db) == m));
  BOOST_TEST(db.stats().recovered_by_scan == 1u);
  BOOST_REQUIRE(events.size() == 1u);
  BOOST_TEST(events[0].file == d / "b" / seg.filename());
  (void)other;
}

BOOST_AUTO_TEST_CASE(damage_in_a_hinted_segment_is_caught_when_the_record_is_read) {
  temp_dir d("readtime");
  {
    auto db = string_store::open(d.path(), opts());
    db.put("k", "value");
    for (int i = 0; i < 60; ++i) db.put(key_of(i), value_of(i));
  }
  const auto seg = segment_files(d.path()).at(0);
  auto b = read_file(seg);
  b[fmt::file_header_size + fmt::record_size(1, 0)] ^= 0x01;  // first byte of "value"
  write_file(seg, b);
  auto db = string_store::open(d.path(), opts());
  BOOST_TEST(db.stats().recovered_by_scan == 0u);  // the hint was trusted for the index...
  std::error_code ec;
  BOOST_TEST(!db.get("k", ec).has_value());        // ...but never for a value
  BOOST_TEST((ec == cask::errc::checksum_mismatch));
  try {
    (void)db.get("k");
    BOOST_FAIL("expected an exception");
  } catch (const cask::error& e) {
    BOOST_TEST(e.path() == seg);
    BOOST_TEST(e.offset() == fmt::file_header_size);
  }
  // A merge reads every record and refuses to rewrite a damaged one.
  BOOST_TEST(db.merge(cask::merge_scope::all, ec).segments_in == 0u);
  BOOST_TEST((ec == cask::errc::checksum_mismatch));
  BOOST_TEST(*db.get(key_of(1)) == value_of(1));
}

// Every entry has exactly one encoding, inside the format's limits, and the
// trailer's counts and sequence range are its entries': a hint whose checksum
// holds but which breaks any of that is not used, and the segment is scanned.
BOOST_AUTO_TEST_CASE(a_hint_that_breaks_the_entry_grammar_is_not_used) {
  temp_dir d("grammar");
  const model m = build(d / "ref");
  const auto seg = segment_files(d / "ref").at(0);
  const auto hint = seg.parent_path() / (seg.stem().string() + ".hint");
  const std::uint64_t seg_size = std::filesystem::file_size(seg);
  const raw_hint good = decode(read_file(hint));
  BOOST_REQUIRE(good.entries.size() >= 3u);
  BOOST_REQUIRE((encode(good) == read_file(hint)));  // the model is exact
  BOOST_REQUIRE(validates(encode(good), 1, seg_size));
  BOOST_REQUIRE(good.header[8] == 4);
  BOOST_REQUIRE((good.sketch == sketch_of(good.entries)));  // the sketch, too
  // The entry with the highest sequence number, and one that is not the lowest.
  std::size_t top = 0;
  for (std::size_t i = 0; i < good.entries.size(); ++i)
    if (good.entries[i].seq_delta > good.entries[top].seq_delta) top = i;
  std::size_t put = 0;
  while (good.entries[put].flags != 0) ++put;
  // An entry that says what its record replaced: in this segment (keys are written again in it).
  std::size_t rep = 0;
  while (rep < good.entries.size() && !good.entries[rep].replaces) ++rep;
  BOOST_REQUIRE(rep < good.entries.size());
  BOOST_REQUIRE(good.entries[rep].rseg == 1u);
  // A put whose record replaced none, and the record before it.
  std::size_t fresh = 1;
  while (good.entries[fresh].replaces || good.entries[fresh].flags != 0) ++fresh;
  const std::pair<const char*, std::function<void(raw_hint&)>> cases[] = {
      {"key length wider than needed", [](raw_hint& h) { h.entries[1].wider = 0; }},
      {"value length wider than needed", [](raw_hint& h) { h.entries[1].wider = 1; }},
      {"sequence delta wider than needed", [](raw_hint& h) { h.entries[1].wider = 2; }},
      {"offset wider than needed", [](raw_hint& h) { h.entries[1].wider = 3; }},
      {"a reserved descriptor bit (byte 0)", [](raw_hint& h) { h.entries[1].extra0 = 0x80; }},
      {"a reserved descriptor bit (byte 1)", [](raw_hint& h) { h.entries[1].extra1 = 0x40; }},
      {"a reserved flag", [](raw_hint& h) { h.entries[1].flags |= 0x02; }},
      {"a tombstone with a value", [put](raw_hint& h) { h.entries[put].flags |= fmt::tombstone; }},
      {"a key past the limit", [](raw_hint& h) { h.entries[1].key_len = fmt::max_key_len + 1; }},
      {"a value past the limit", [](raw_hint& h) { h.entries[1].value_len = fmt::max_value_len + 1ull; }},
      {"an offset inside the header", [](raw_hint& h) { h.entries[0].offset = 31; }},
      {"a sequence number above the trailer's highest", [top](raw_hint& h) { ++h.entries[top].seq_delta; }},
      {"a lowest sequence number no entry has", [](raw_hint& h) {
         --h.min_seq;
         for (auto& e : h.entries) ++e.seq_delta;
       }},
      {"a highest sequence number no entry has", [](raw_hint& h) { ++h.max_seq; }},
      {"a record count other than the entries'", [](raw_hint& h) { ++h.records; }},
      {"an entry cut short", [](raw_hint& h) { h.entries.back().key_len += 1; }},
      {"hint format version 1", [](raw_hint& h) { h.header[8] = 1; }},
      {"hint format version 5", [](raw_hint& h) { h.header[8] = 5; }},
      // What a record replaced (version 4).
      {"a replaced segment id wider than needed", [rep](raw_hint& h) { h.entries[rep].wider = 4; }},
      {"a replaced offset wider than needed", [rep](raw_hint& h) { h.entries[rep].wider = 5; }},
      {"a replaced size wider than needed", [rep](raw_hint& h) { h.entries[rep].wider = 6; }},
      {"a reserved descriptor bit (byte 2)", [rep](raw_hint& h) { h.entries[rep].extra2 = 0x40; }},
      {"a replaced record in segment 0", [rep](raw_hint& h) { h.entries[rep].rseg = 0; }},
      {"a replaced record of a segment of a higher id", [rep](raw_hint& h) { h.entries[rep].rseg = 2; }},
      {"a replaced record inside the header", [rep](raw_hint& h) { h.entries[rep].roff = 31; }},
      {"a replaced record smaller than a record header", [rep](raw_hint& h) { h.entries[rep].rsize = 20; }},
      {"a replaced record of this segment that ends after this one starts",
       [rep](raw_hint& h) { h.entries[rep].roff = h.entries[rep].offset - h.entries[rep].rsize + 1; }},
      {"what a record replaced, in version 3", [](raw_hint& h) { h.header[8] = 3; }},
      {"a replaced record of this segment that is this one", [fresh](raw_hint& h) {
         auto& e = h.entries[fresh];
         e.replaces = true, e.rseg = 1, e.roff = e.offset, e.rsize = 21 + e.key_len + e.value_len;
       }},
      {"a header flag (the merge flag is a segment's)", [](raw_hint& h) { h.header[24] = 1; }},
      {"version 4 without its sketch", [](raw_hint& h) {
         h.sketch.clear();
         h.sketch_field = 0;
       }},
      {"version 2 with a sketch", [](raw_hint& h) {
         h = without_replaces(h);
         h.header[8] = 2;
       }},
      {"a sketch size other than 512", [](raw_hint& h) { h.sketch_field = 256; }},
      {"a sketch register above 56", [](raw_hint& h) { h.sketch[7] = 57; }},
      // Entries are in file order: open finds a record's entry from its offset.
      {"two entries out of file order", [](raw_hint& h) { std::swap(h.entries[1], h.entries[2]); }},
      {"a record that overlaps the one before", [](raw_hint& h) { --h.entries[1].offset; }},
  };
  for (const auto& [what, change] : cases) {
    raw_hint bad = good;
    change(bad);
    const auto bytes = encode(bad);
    BOOST_TEST_CONTEXT(what) {
      BOOST_TEST(!validates(bytes, 1, seg_size));
      const auto dir = d / "x";
      copy_dir(d / "ref", dir);
      write_file(dir / hint.filename(), bytes);
      std::vector<cask::recovery_event> events;
      auto o = opts();
      o.reporter = [&](const cask::recovery_event& e) { events.push_back(e); };
      {
        auto db = string_store::open(dir, o);
        BOOST_TEST((contents(db) == m));
        BOOST_TEST(db.stats().recovered_by_scan == 1u);
      }
      BOOST_TEST((events.size() == 1u && events[0].what == cask::recovery_event::kind::bad_hint &&
                  events[0].file == dir / hint.filename()));
      // The writer wrote the segment's hint again, in the current format,
      // from the scan (which cannot know what a record replaced).
      BOOST_TEST((read_file(dir / hint.filename()) == encode(without_replaces(good))));
      std::filesystem::remove_all(dir);
    }
  }
}

/// Opens and closes the store at `dir`: it must hold `m`, load every segment
/// from its hint file, and report nothing.
static void opens_quietly_from_hints(const std::filesystem::path& dir, const model& m) {
  const auto segments = segment_files(dir).size();
  std::vector<cask::recovery_event> events;
  auto o = opts();
  o.reporter = [&](const cask::recovery_event& e) { events.push_back(e); };
  {
    auto db = string_store::open(dir, o);
    BOOST_TEST((contents(db) == m));
    BOOST_TEST(db.stats().recovered_from_hints == segments);
    BOOST_TEST(db.stats().recovered_by_scan == 0u);
    db.close();
  }
  BOOST_TEST(events.empty());
}

// Version 2 is version 3 without the sketch: such a hint is still loaded
// (the keydir is then sized by its record count), and left as it is.
BOOST_AUTO_TEST_CASE(a_version_2_hint_is_still_read) {
  temp_dir d("v2");
  const model m = build(d.path());
  const auto seg = segment_files(d.path()).at(0);
  const auto hint = seg.parent_path() / (seg.stem().string() + ".hint");
  raw_hint v2 = without_replaces(decode(read_file(hint)));
  v2.header[8] = 2;
  v2.sketch.clear();
  v2.sketch_field = 0;
  const auto bytes = encode(v2);
  BOOST_REQUIRE(validates(bytes, 1, std::filesystem::file_size(seg)));
  write_file(hint, bytes);
  opens_quietly_from_hints(d.path(), m);
  BOOST_TEST((read_file(hint) == bytes));
}

// Version 3 is version 4 with no entry saying what its record replaced:
// such a hint is still loaded (every key met twice is compared), and left as it is.
BOOST_AUTO_TEST_CASE(a_version_3_hint_is_still_read) {
  temp_dir d("v3");
  const model m = build(d.path());
  const auto seg = segment_files(d.path()).at(0);
  const auto hint = seg.parent_path() / (seg.stem().string() + ".hint");
  raw_hint v3 = without_replaces(decode(read_file(hint)));
  v3.header[8] = 3;
  const auto bytes = encode(v3);
  BOOST_REQUIRE(validates(bytes, 1, std::filesystem::file_size(seg)));
  write_file(hint, bytes);
  opens_quietly_from_hints(d.path(), m);
  BOOST_TEST((read_file(hint) == bytes));
}

// The sketch only sizes the keydir: a hint whose sketch is not its entries'
// (well formed, its checksum valid: written under another hasher, say) is
// still loaded, without a word, and written again with the right sketch.
BOOST_AUTO_TEST_CASE(a_hint_whose_sketch_is_not_its_entries_is_used_and_written_again) {
  temp_dir d("sketch");
  const model m = build(d.path());
  const auto seg = segment_files(d.path()).at(0);
  const auto hint = seg.parent_path() / (seg.stem().string() + ".hint");
  const auto original = read_file(hint);
  raw_hint bad = decode(original);
  const auto zero = std::find(bad.sketch.begin(), bad.sketch.end(), 0);
  BOOST_REQUIRE(zero != bad.sketch.end());
  *zero = 1;  // a key the entries do not have
  const auto bytes = encode(bad);
  BOOST_REQUIRE(validates(bytes, 1, std::filesystem::file_size(seg)));  // in form, it is valid
  write_file(hint, bytes);
  opens_quietly_from_hints(d.path(), m);
  BOOST_TEST((read_file(hint) == original));  // written again (at the close), right
}

BOOST_AUTO_TEST_CASE(the_key_sketch_estimates_distinct_keys) {
  using cask::detail::key_sketch;
  auto hash_of = [](std::uint64_t i) { return cask::default_hasher::hash(reinterpret_cast<const std::byte*>(&i), 8); };
  BOOST_TEST(key_sketch{}.estimate() == 0.0);
  // Within 3 standard errors (1.04 / sqrt(512) each) at every size, and close
  // to exact while few registers are set (linear counting).
  for (const std::uint64_t n : {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull}) {
    key_sketch s;
    for (std::uint64_t i = 0; i < n; ++i) s.add(hash_of(i));
    const double e = s.estimate(), err = std::abs(e - double(n)) / double(n);
    BOOST_TEST(err < (n <= 100 ? 0.1 : 3 * 1.04 / std::sqrt(512.0)), "n " << n << " estimate " << e);
    // The same keys again change nothing.
    key_sketch again = s;
    for (std::uint64_t i = 0; i < n; ++i) again.add(hash_of(i));
    BOOST_TEST((again == s));
  }
  // A union counts shared keys once: [0, 60000) and [40000, 100000).
  key_sketch a, b;
  for (std::uint64_t i = 0; i < 60000; ++i) a.add(hash_of(i));
  for (std::uint64_t i = 40000; i < 100000; ++i) b.add(hash_of(i));
  a.merge(b);
  BOOST_TEST(std::abs(a.estimate() - 100000.0) / 100000.0 < 3 * 1.04 / std::sqrt(512.0));
  // Stored and loaded, a register at most 56.
  std::byte buf[key_sketch::registers];
  a.store(buf);
  key_sketch c;
  BOOST_TEST(c.load(buf));
  BOOST_TEST((c == a));
  buf[3] = std::byte{57};
  BOOST_TEST(!c.load(buf));
  BOOST_TEST((c == a));  // unchanged
}

// open reads the sketches before it validates any hint, to size the keydir:
// one damaged into large registers (a sketch of some 10^16 keys) must
// not make it allocate for them. It is capped by the record count the hint
// can hold; the hint itself then fails its checksum and the segment is scanned.
BOOST_AUTO_TEST_CASE(a_damaged_sketch_costs_time_not_memory) {
  temp_dir d("hugesketch");
  const model m = build(d.path());
  const auto seg = segment_files(d.path()).at(0);
  const auto hint = seg.parent_path() / (seg.stem().string() + ".hint");
  auto b = read_file(hint);
  const std::size_t sketch_at = b.size() - 40 - 512;
  for (std::size_t j = 0; j < 512; ++j) b[sketch_at + j] = 45;
  write_file(hint, b);
  auto db = string_store::open(d.path(), opts());
  BOOST_TEST((contents(db) == m));
  BOOST_TEST(db.stats().recovered_by_scan == 1u);
  // At most what the hint's size could justify (a few hundred slots here),
  // far from an allocation that fails.
  const double keydir_bytes = db.stats().keydir_bytes_per_key * double(db.stats().keys);
  BOOST_TEST(keydir_bytes < double(1 << 20), "keydir bytes " << keydir_bytes);
}

// Recovery files each record under its keydir shard and applies a shard's
// records in hash order (a counting sort, for shards of 64 records or more);
// each segment's live and dead counts start from totals and are corrected
// for every record that loses to a newer one. The writer counts the same
// things its own way, put by put: both must agree, from hints and by scan.
BOOST_AUTO_TEST_CASE(recovery_counts_large_segments_as_the_writer_did) {
  temp_dir d("counts");
  auto o = opts();
  o.max_segment_bytes = 1 << 20;
  model m;
  std::vector<cask::segment_stats> written;
  {
    auto db = string_store::open(d.path(), o);
    constexpr int keys = 8000;
    for (int i = 0; i < keys; ++i) db.put(key_of(i), value_of(i, 60)), m[key_of(i)] = value_of(i, 60);
    for (int i = 0; i < keys; ++i) {
      if (i % 7 == 0) {
        if (db.erase(key_of(i))) m.erase(key_of(i));
      } else if (i % 2 == 0) {
        db.put(key_of(i), value_of(keys + i, 60));
        m[key_of(i)] = value_of(keys + i, 60);
      }
    }
    for (int i = 0; i < keys; i += 3) db.put(key_of(i), value_of(2 * keys + i, 30)), m[key_of(i)] = value_of(2 * keys + i, 30);
    BOOST_TEST((contents(db) == m));
    written = live_dead(db.stats());  // the sealed segments, as the writer counted them
  }
  BOOST_REQUIRE(written.size() >= 1u);
  BOOST_REQUIRE(written[0].live_records + written[0].dead_records > 64u * 64u);  // shards of more than 64 records
  std::vector<cask::segment_stats> hinted;
  {
    auto db = string_store::open(d.path(), o);
    BOOST_TEST(db.stats().recovered_by_scan == 0u);
    BOOST_TEST((contents(db) == m));
    hinted = live_dead(db.stats());
  }
  BOOST_REQUIRE(hinted.size() > written.size());  // the segment active at close is sealed now
  BOOST_TEST(same_segments(std::vector(hinted.begin(), hinted.begin() + static_cast<long>(written.size())), written));
  for (const auto& e : std::filesystem::directory_iterator(d.path()))
    if (e.path().extension() == ".hint") std::filesystem::remove(e.path());
  auto db = string_store::open(d.path(), o);
  BOOST_TEST(db.stats().recovered_from_hints == 0u);
  BOOST_TEST((contents(db) == m));
  BOOST_TEST(same_segments(live_dead(db.stats()), hinted));
}

// Recovery keeps records' offsets in the keydir and finds a hinted record's
// entry, when another record of its key turns up, through a directory of the
// segment cut into buckets of about a record each: with records of every size
// (many starting in one bucket, or none in many), in large segments and small,
// each is found, and hints and scans count every segment alike.
BOOST_AUTO_TEST_CASE(a_hinted_record_is_found_among_records_of_any_size) {
  for (const std::uint64_t segment_bytes : {std::uint64_t{4096}, std::uint64_t{1} << 20}) {
    BOOST_TEST_CONTEXT("segments of " << segment_bytes << " bytes") {
      temp_dir d("sizes");
      auto o = opts();
      o.max_segment_bytes = segment_bytes;
      std::mt19937_64 g(segment_bytes);
      model m;
      {
        auto db = string_store::open(d / "ref", o);
        constexpr int keys = 3000;
        for (int i = 0; i < 4 * keys; ++i) {
          const std::string k = key_of(g() % keys);
          // Mostly tiny values, runs of them, and now and then a large one.
          const std::size_t len = g() % 8 == 0 ? 500 + g() % 3000 : g() % 3 == 0 ? 0 : g() % 40;
          if (g() % 11 == 0) {
            if (db.erase(k)) m.erase(k);
          } else {
            db.put(k, value_of(static_cast<std::uint64_t>(i), len));
            m[k] = value_of(static_cast<std::uint64_t>(i), len);
          }
        }
      }
      std::vector<cask::segment_stats> counted[2];
      for (const bool hints : {true, false}) {
        const auto dir = d / (hints ? "hinted" : "scanned");
        copy_dir(d / "ref", dir);
        if (!hints)
          for (const auto& e : std::filesystem::directory_iterator(dir))
            if (e.path().extension() == ".hint") std::filesystem::remove(e.path());
        auto db = string_store::open(dir, o);
        const auto st = db.stats();
        BOOST_TEST((hints ? st.recovered_by_scan : st.recovered_from_hints) == 0u);
        BOOST_TEST((contents(db) == m));
        counted[hints ? 0 : 1] = live_dead(st);
      }
      BOOST_TEST(counted[0].size() >= 2u);
      BOOST_TEST(same_segments(counted[0], counted[1]));
    }
  }
}

// The keydir is sized by the distinct keys the sketches estimate, not by the
// records read: with 1.3 records per key, sizing by records would leave the
// tables at a load of 0.42 (about 38 bytes per key), too full for the last
// pass to shrink them.
BOOST_AUTO_TEST_CASE(the_keydir_is_sized_by_distinct_keys_not_records) {
  temp_dir d("distinct");
  auto o = opts();
  o.max_segment_bytes = 256 << 10;
  constexpr int keys = 20000;
  {
    auto db = string_store::open(d.path(), o);
    for (int i = 0; i < keys; ++i) db.put(key_of(i), value_of(i, 8));
    for (int i = 0; i < keys; i += 10) {
      for (int j = i; j < i + 3; ++j) db.put(key_of(j), value_of(keys + j, 8));
    }
  }
  for (const bool with_hints : {true, false}) {
    if (!with_hints)
      for (const auto& e : std::filesystem::directory_iterator(d.path()))
        if (e.path().extension() == ".hint") std::filesystem::remove(e.path());
    auto db = string_store::open(d.path(), o);
    const auto st = db.stats();
    BOOST_TEST(st.keys == std::size_t(keys));
    BOOST_TEST((with_hints ? st.recovered_from_hints : st.recovered_by_scan) > 2u);
    // 16 / 0.55 = 29.1 bytes per key, within the estimate's error.
    BOOST_TEST(st.keydir_bytes_per_key < 33.0, "keydir bytes per key " << st.keydir_bytes_per_key << " with hints: " << with_hints);
  }
}

// Open applies the records of consecutive segments to the keydir in batches
// (options::recovery_batch_records), each batch in one pass over the tables:
// a segment at a time, a few, or all at once, from hints or scans, give the
// same keydir and the same counts for every segment. The store mixes merge
// outputs with the writer's segments, and the writer's last segment, cut by a
// crash, lies before the merge outputs in id order (so within a batch).
BOOST_AUTO_TEST_CASE(recovery_in_batches_of_any_size_builds_the_same_keydir) {
  temp_dir d("batches");
  std::mt19937_64 g(11);
  model m;
  std::uint32_t writer_segment = 0;
  {
    auto db = string_store::open(d / "ref", opts());
    constexpr int keys = 400;
    auto write = [&](int n) { write_random(db, m, g, n, keys, 9, 70); };
    write(2500);
    db.merge(cask::merge_scope::all);  // outputs take ids above the writer's segment
    write(3);                          // into the writer's segment, below the outputs
    for (const auto& s : db.stats().per_segment)
      if (s.active) writer_segment = s.id;
  }
  std::uint32_t max_id = 0;
  for (const auto& e : std::filesystem::directory_iterator(d / "ref"))
    if (e.path().extension() == ".cask") max_id = std::max<std::uint32_t>(max_id, std::stoul(e.path().stem().string()));
  BOOST_REQUIRE(writer_segment > 0u);
  BOOST_REQUIRE(max_id > writer_segment);  // merge outputs follow the writer's segment
  // A torn record after the writer's last one; a crash leaves that segment no hint.
  char name[11];
  std::snprintf(name, sizeof name, "%010u", writer_segment);
  const std::string seg_name = std::string(name) + ".cask", hint_name = std::string(name) + ".hint";
  BOOST_REQUIRE(std::filesystem::exists(d / "ref" / seg_name));
  {
    auto bytes = read_file(d / "ref" / seg_name);
    bytes.insert(bytes.end(), 25, '\x5a');
    write_file(d / "ref" / seg_name, bytes);
    std::filesystem::remove(d / "ref" / hint_name);
  }
  for (const bool hints : {true, false}) {
    BOOST_TEST_CONTEXT((hints ? "from hints" : "by scans")) {
      std::vector<cask::segment_stats> reference;
      for (const std::size_t batch : {std::size_t{1} << 23, std::size_t{0}, std::size_t{1}, std::size_t{40},
                                      std::size_t{700}}) {
        BOOST_TEST_CONTEXT("batches of " << batch << " records") {
          const auto dir = d / "x";
          copy_store(d / "ref", dir, hints);
          auto o = opts();
          o.recovery_batch_records = batch;
          std::size_t torn = 0;
          o.reporter = [&](const cask::recovery_event& e) { torn += e.what == cask::recovery_event::kind::torn_tail; };
          auto db = string_store::open(dir, o);
          const auto st = db.stats();
          BOOST_TEST(torn == 1u);
          BOOST_TEST(st.recovered_torn_bytes == 25u);
          BOOST_TEST(st.recovered_by_scan == (hints ? 1u : live_dead(st).size()));
          BOOST_TEST((contents(db) == m));
          if (reference.empty()) {
            reference = live_dead(st);
            BOOST_TEST(reference.size() >= 4u);
          } else {
            BOOST_TEST(same_segments(live_dead(st), reference));
          }
          db.put("after", "open");  // the cut segment is sealed, the store writable
          m["after"] = "open";
          BOOST_TEST((contents(db) == m));
          m.erase("after");
        }
      }
    }
  }
}

// Batches large enough to be sorted (at least 64 records of a shard from
// several segments, sort_by_hash()), several of them (a later batch meets
// the keydir of the earlier ones), over three stores: many small writer
// segments overwriting one another with no merge and a torn tail on the
// last; and merge outputs above a writer segment that a crash left holding
// no record (the header alone, then the preallocated zeros) or with a header
// that never became valid. Every batch size, from hints and by scans,
// writable and read-only, yields the same contents and counts.
BOOST_AUTO_TEST_CASE(recovery_in_sorted_batches_builds_the_same_keydir) {
  enum class shape { writers_only, empty_writer, unheaded_writer };
  for (const shape sh : {shape::writers_only, shape::empty_writer, shape::unheaded_writer}) {
    BOOST_TEST_CONTEXT("store shape " << static_cast<int>(sh)) {
      temp_dir d("sorted");
      std::mt19937_64 g(23 + static_cast<int>(sh));
      model m;
      std::uint32_t writer_segment = 0;
      {
        auto db = string_store::open(d / "ref", opts());
        constexpr int keys = 5000;
        auto write = [&](int n) { write_random(db, m, g, n, keys, 11, 40); };
        write(15000);
        if (sh != shape::writers_only) {
          // Every record into merge outputs, whose ids are above the writer's new segment.
          db.merge(cask::merge_scope::compact);
          const model before = m;
          write(3);  // lost below: the crash leaves the writer's segment none of them
          m = before;
        }
        for (const auto& s : db.stats().per_segment)
          if (s.active) writer_segment = s.id;
      }
      std::uint32_t max_id = 0;
      std::size_t files = 0;
      for (const auto& e : std::filesystem::directory_iterator(d / "ref"))
        if (e.path().extension() == ".cask")
          ++files, max_id = std::max<std::uint32_t>(max_id, std::stoul(e.path().stem().string()));
      BOOST_REQUIRE(files >= 60u);  // enough records for batches of at least 64 per shard
      BOOST_REQUIRE(writer_segment > 0u);
      if (sh == shape::writers_only) BOOST_REQUIRE(max_id == writer_segment);
      else BOOST_REQUIRE(max_id > writer_segment);  // in the middle of the ids, so of a batch
      char name[11];
      std::snprintf(name, sizeof name, "%010u", writer_segment);
      const auto seg_path = d / "ref" / (std::string(name) + ".cask");
      {
        auto bytes = read_file(seg_path);
        BOOST_REQUIRE(bytes.size() > 32u);
        if (sh == shape::writers_only) bytes.insert(bytes.end(), 19, '\x5a');  // a torn record
        else std::fill(bytes.begin() + (sh == shape::empty_writer ? 32 : 0), bytes.end(), '\0');
        write_file(seg_path, bytes);
        std::filesystem::remove(d / "ref" / (std::string(name) + ".hint"));
      }
      const std::size_t torn_bytes = sh == shape::writers_only ? 19 : 0;
      for (const bool read_only : {false, true}) {
        for (const bool hints : {true, false}) {
          BOOST_TEST_CONTEXT((read_only ? "read-only, " : "writable, ") << (hints ? "from hints" : "by scans")) {
            std::vector<cask::segment_stats> reference;
            // (A batch closes at this many refs reserved, at least 16 of each
            // shard's per segment: 100000 makes batches of some 90 segments.)
            for (const std::size_t batch : {std::size_t{1} << 23, std::size_t{0}, std::size_t{700},
                                            std::size_t{100000}}) {
              BOOST_TEST_CONTEXT("batches of " << batch << " records") {
                const auto dir = d / "x";
                copy_dir(d / "ref", dir);
                if (!hints)
                  for (const auto& e : std::filesystem::directory_iterator(dir))
                    if (e.path().extension() == ".hint") std::filesystem::remove(e.path());
                auto o = opts();
                o.recovery_batch_records = batch;
                o.read_only = read_only;
                std::size_t torn = 0;
                o.reporter = [&](const cask::recovery_event& e) {
                  torn += e.what == cask::recovery_event::kind::torn_tail;
                };
                auto db = string_store::open(dir, o);
                const auto st = db.stats();
                BOOST_TEST(torn == (torn_bytes > 0 ? 1u : 0u));
                if (!read_only) BOOST_TEST(st.recovered_torn_bytes == torn_bytes);
                BOOST_TEST((contents(db) == m));
                const auto segments = live_dead(st);
                if (reference.empty()) {
                  reference = segments;
                  BOOST_TEST(reference.size() + 1 >= files);
                } else {
                  BOOST_TEST(same_segments(segments, reference));
                }
                if (read_only) continue;
                bool writer_kept = false;
                for (const auto& s : st.per_segment) writer_kept = writer_kept || s.id == writer_segment;
                BOOST_TEST(writer_kept);  // the cut one sealed, or the empty one rewritten as the active one
                db.put("after", "open");
                if (sh != shape::writers_only)
                  for (const auto& s : db.stats().per_segment)
                    if (s.active) BOOST_TEST(s.id == writer_segment);
                m["after"] = "open";
                BOOST_TEST((contents(db) == m));
                m.erase("after");
              }
            }
          }
        }
      }
    }
  }
}

// Recovery takes two records of one hash for one key without comparing their
// keys when the newer's hint entry says it replaced the older (FORMAT.md
// "Hint file", DESIGN.md "Recovery"). Under a hasher that gives many keys
// one hash, records of different keys meet at every step: each is told apart
// all the same, in batches of any size, from hints (whose entries say what
// records replaced, across writer segments and merge outputs) as by scans.
BOOST_AUTO_TEST_CASE(keys_of_one_hash_are_told_apart_from_hints_that_say_what_records_replaced) {
  struct few_hashes {  // five hashes in all, in different shards and home slots
    std::uint64_t operator()(std::span<const std::byte> b) const noexcept {
      const auto last = b.empty() ? 0u : std::to_integer<unsigned>(b.back());
      return 0x9e3779b97f4a7c15ull * (last % 5 + 1);
    }
  };
  using store = cask::log_store<std::string, std::string, few_hashes>;
  temp_dir d("few");
  std::mt19937_64 g(5);
  model m;
  {
    auto db = store::open(d / "ref", opts());
    auto write = [&](int n) { write_random(db, m, g, n, 60, 8, 30); };
    write(700);
    db.merge(cask::merge_scope::all);  // outputs: records that replaced none
    write(400);                        // records that replaced ones in the outputs
  }
  // The writer's hints say what records replaced.
  std::size_t replacing = 0, entries = 0;
  for (const auto& seg : segment_files(d / "ref")) {
    const auto hint = seg.parent_path() / (seg.stem().string() + ".hint");
    if (!std::filesystem::exists(hint)) continue;
    const auto raw = decode(read_file(hint));
    for (const auto& e : raw.entries) entries += 1, replacing += e.replaces;
  }
  BOOST_TEST(replacing > 100u);
  BOOST_TEST(replacing < entries);  // (merge outputs' records replaced none)
  auto contents_of = [](const store& db) {
    model r;
    db.for_each([&](const std::string& k, const std::string& v) { r[k] = v; });
    return r;
  };
  std::vector<cask::segment_stats> reference;
  for (const bool hints : {true, false}) {
    for (const std::size_t batch : {std::size_t{1} << 23, std::size_t{0}, std::size_t{300}}) {
      BOOST_TEST_CONTEXT((hints ? "from hints" : "by scans") << ", batches of " << batch << " records") {
        const auto dir = d / "x";
        copy_store(d / "ref", dir, hints);
        auto o = opts();
        o.recovery_batch_records = batch;
        auto db = store::open(dir, o);
        BOOST_TEST(db.stats().recovered_by_scan == (hints ? 0u : live_dead(db.stats()).size()));
        BOOST_TEST((contents_of(db) == m));
        for (const auto& [k, v] : m) BOOST_TEST((db.get(k) == std::optional<std::string>(v)), k);
        if (reference.empty()) reference = live_dead(db.stats());
        else BOOST_TEST(same_segments(live_dead(db.stats()), reference));
      }
    }
  }
}

// The writer notes what a record replaced only where it found the key's
// bytes: a put of a key whose keydir entry (from a trusted hint) points at a
// record with a damaged header notes nothing, and the new segment's hint is
// valid at the next open (a note of that record, of size 0, would not be).
BOOST_AUTO_TEST_CASE(a_put_over_a_damaged_record_notes_nothing) {
  temp_dir d("noted");
  {
    auto db = string_store::open(d.path(), opts());
    db.put("k", "value");  // the first record of segment 1, at offset 32
    for (int i = 0; i < 60; ++i) db.put(key_of(i), value_of(i));
  }
  const auto seg = segment_files(d.path()).at(0);
  auto b = read_file(seg);
  b[fmt::file_header_size + fmt::flags_offset] = '\x80';  // a reserved flag: the header does not parse
  write_file(seg, b);
  {
    auto db = string_store::open(d.path(), opts());
    BOOST_REQUIRE(db.stats().recovered_by_scan == 0u);  // the hint is trusted: the keydir names the record
    db.put("k", "new");
  }
  std::vector<cask::recovery_event> events;
  auto o = opts();
  o.reporter = [&](const cask::recovery_event& e) { events.push_back(e); };
  auto db = string_store::open(d.path(), o);
  BOOST_TEST(events.empty());
  BOOST_TEST(db.stats().recovered_by_scan == 0u);
  BOOST_TEST((db.get("k") == std::optional<std::string>("new")));
  // And the new segment's hint says nothing of what its record replaced.
  std::size_t replacing = 0;
  for (const auto& s : segment_files(d.path())) {
    const auto hint = s.parent_path() / (s.stem().string() + ".hint");
    if (s == seg || !std::filesystem::exists(hint)) continue;
    for (const auto& e : decode(read_file(hint)).entries) replacing += e.replaces;
  }
  BOOST_TEST(replacing == 0u);
}
