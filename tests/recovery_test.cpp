// Recovery: torn tails at every byte offset, bit flips everywhere, damage in
// sealed segments under both corruption policies, partial segments.
#define BOOST_TEST_MODULE recovery
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <map>
#include <set>

using namespace cask_test;
namespace fmt = cask::format;

namespace {

struct op {
  bool erase;
  std::string key, value;
};
using model = std::map<std::string, std::string>;

/// A small workload of puts, overwrites and erases (only of present keys, so
/// every op writes exactly one record).
std::vector<op> workload(int n, unsigned seed) {
  std::vector<op> ops;
  model m;
  std::mt19937 g(seed);
  for (int i = 0; i < n; ++i) {
    const std::string k = "k" + std::to_string(g() % 6);
    if (m.count(k) && g() % 3 == 0) {
      ops.push_back({true, k, ""});
      m.erase(k);
    } else {
      const std::string v = value_of(g(), 1 + g() % 40);
      ops.push_back({false, k, v});
      m[k] = v;
    }
  }
  return ops;
}
model state_after(const std::vector<op>& ops, std::size_t count) {
  model m;
  for (std::size_t i = 0; i < count; ++i) {
    if (ops[i].erase)
      m.erase(ops[i].key);
    else
      m[ops[i].key] = ops[i].value;
  }
  return m;
}
/// Byte offset of each record in the (single) segment, and the end.
std::vector<std::uint64_t> offsets(const std::vector<op>& ops) {
  std::vector<std::uint64_t> v{fmt::file_header_size};
  for (const auto& o : ops) v.push_back(v.back() + fmt::record_size(o.key.size(), o.value.size()));
  return v;
}
void run(string_store& db, const std::vector<op>& ops) {
  for (const auto& o : ops) {
    if (o.erase)
      BOOST_REQUIRE(db.erase(o.key));
    else
      db.put(o.key, o.value);
  }
}
model contents(const string_store& db) {
  model m;
  db.for_each([&](const std::string& k, const std::string& v) { m[k] = v; });
  return m;
}
struct reports {
  std::vector<cask::recovery_event> events;
  cask::options opts(cask::options o = {}) {
    o.max_segment_bytes = 64 << 10;  // small preallocation: these tests open thousands of stores
    o.reporter = [this](const cask::recovery_event& e) { events.push_back(e); };
    return o;
  }
  std::size_t count(cask::recovery_event::kind k) const {
    return static_cast<std::size_t>(std::count_if(events.begin(), events.end(), [k](const auto& e) { return e.what == k; }));
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(torn_tail_is_cut_at_every_byte_offset) {
  temp_dir d("torn", storage::memory);
  const auto ops = workload(12, 1);
  const auto offs = offsets(ops);
  { auto db = string_store::open(d / "ref"); run(db, ops); }
  const auto seg = segment_files(d / "ref").at(0);
  const auto bytes = read_file(seg);
  BOOST_REQUIRE_EQUAL(bytes.size(), offs.back());

  for (std::uint64_t len = fmt::file_header_size; len <= bytes.size(); ++len) {
    for (bool zero_fill : {false, true}) {  // cut file, or cut then preallocated zeros (as after a crash)
      const auto dir = d / ("c" + std::to_string(len) + (zero_fill ? "z" : ""));
      std::filesystem::create_directories(dir);
      std::vector<char> b(bytes.begin(), bytes.begin() + static_cast<long>(len));
      if (zero_fill) b.resize(bytes.size() + 4096, '\0');
      write_file(dir / seg.filename(), b);
      // Records wholly inside the cut survive, in order; nothing after them.
      const std::size_t complete = static_cast<std::size_t>(
          std::upper_bound(offs.begin(), offs.end(), len) - offs.begin() - 1);
      // What is reported cut: from the last good record to the last non-zero byte
      // (a preallocated tail of zeros is not data).
      std::uint64_t nonzero_end = len;
      while (nonzero_end > offs[complete] && bytes[nonzero_end - 1] == '\0') --nonzero_end;
      const bool torn = nonzero_end != offs[complete];
      reports r;
      {
        auto db = string_store::open(dir, r.opts());
        BOOST_REQUIRE_MESSAGE((contents(db) == state_after(ops, complete)), "cut at " << len);
        BOOST_REQUIRE_EQUAL(r.count(cask::recovery_event::kind::torn_tail), torn ? 1u : 0u);
        if (torn) {
          BOOST_TEST(r.events[0].file == dir / seg.filename());
          BOOST_TEST(r.events[0].offset == offs[complete]);
          BOOST_TEST(r.events[0].bytes == nonzero_end - offs[complete]);
          BOOST_TEST(db.stats().recovered_torn_bytes == nonzero_end - offs[complete]);
        }
        // Never append after a torn tail: write more, reopen, all consistent.
        db.put("after", "crash");
      }
      if (complete == 0) {
        // The segment held no record; it may be removed. Nothing else to compare.
      } else {
        BOOST_TEST(std::filesystem::file_size(dir / seg.filename()) == offs[complete]);
      }
      reports r2;
      auto db = string_store::open(dir, r2.opts());
      auto expect = state_after(ops, complete);
      expect["after"] = "crash";
      BOOST_REQUIRE_MESSAGE((contents(db) == expect), "reopen after cut at " << len);
      BOOST_REQUIRE(r2.events.empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(every_bit_flip_in_the_newest_segment_is_detected_and_never_returns_a_wrong_value) {
  temp_dir d("flip", storage::memory);
  const auto ops = workload(8, 2);
  const auto offs = offsets(ops);
  { auto db = string_store::open(d / "ref"); run(db, ops); }
  const auto seg = segment_files(d / "ref").at(0);
  const auto bytes = read_file(seg);
  int header_errors = 0;
  for (std::size_t byte = 0; byte < bytes.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      const auto dir = d / ("f" + std::to_string(byte) + "_" + std::to_string(bit));
      std::filesystem::create_directories(dir);
      auto b = bytes;
      b[byte] = static_cast<char>(b[byte] ^ (1 << bit));
      write_file(dir / seg.filename(), b);
      reports r;
      std::error_code ec;
      auto db = string_store::open(dir, r.opts(), ec);
      if (byte < fmt::file_header_size) {
        // A damaged file header: refuse to open, naming the file.
        BOOST_REQUIRE_MESSAGE(!db.has_value(), "header flip at " << byte << ":" << bit << " opened");
        ++header_errors;
      } else {
        BOOST_REQUIRE_MESSAGE(db.has_value(), "flip at " << byte << ":" << bit << ": " << ec.message());
        // The damaged record and everything after it are cut: the state after a prefix.
        const std::size_t rec = static_cast<std::size_t>(
            std::upper_bound(offs.begin(), offs.end(), byte) - offs.begin() - 1);
        BOOST_REQUIRE_MESSAGE((contents(*db) == state_after(ops, rec)), "flip at " << byte << ":" << bit);
        BOOST_REQUIRE_EQUAL(r.count(cask::recovery_event::kind::torn_tail), 1u);
        BOOST_REQUIRE_EQUAL(r.events.back().offset, offs[rec]);
      }
      db.reset();
      std::filesystem::remove_all(dir);
    }
  }
  BOOST_TEST(header_errors == 32 * 8);
}

namespace {
/// A store of two sealed segments plus records in a third; returns the
/// workloads and the first segment's path.
struct sealed_fixture {
  temp_dir d{"sealed", storage::memory};
  std::vector<op> first = workload(10, 5), second = workload(10, 6);
  std::filesystem::path seg0;
  sealed_fixture() {
    // No background merge: one that a slow run gives time to start (its check
    // comes every second) would rewrite the first session's segment under a
    // new id, and the damage below would land in another segment.
    cask::options o;
    o.merge.background = false;
    { auto db = string_store::open(d / "ref", o); run(db, first); }
    { auto db = string_store::open(d / "ref", o); run(db, second); }
    seg0 = segment_files(d / "ref").at(0);
    // Without hint files open scans (and so checks) every record; with them,
    // damage is found when the record is read (hint_test.cpp).
    remove_index_files(d / "ref");
  }
};
}  // namespace

BOOST_FIXTURE_TEST_CASE(damage_in_a_sealed_segment_fails_the_open_naming_file_and_offset, sealed_fixture) {
  const auto offs = offsets(first);
  const auto bytes = read_file(seg0);
  for (std::size_t byte = fmt::file_header_size; byte < bytes.size(); byte += 3) {
    const auto dir = d / ("s" + std::to_string(byte));
    copy_dir(d / "ref", dir);
    auto b = bytes;
    b[byte] = static_cast<char>(b[byte] ^ 0x10);
    write_file(dir / seg0.filename(), b);
    const std::size_t rec =
        static_cast<std::size_t>(std::upper_bound(offs.begin(), offs.end(), byte) - offs.begin() - 1);
    try {
      string_store::open(dir);
      BOOST_FAIL("opened despite damage at " << byte);
    } catch (const cask::error& e) {
      BOOST_TEST((e.code() == cask::errc::checksum_mismatch || e.code() == cask::errc::corruption));
      BOOST_TEST(e.path() == dir / seg0.filename());
      BOOST_TEST(e.offset() == offs[rec], "damage at " << byte);
      BOOST_TEST(std::string(e.what()).find("offset " + std::to_string(offs[rec])) != std::string::npos);
    }
    std::filesystem::remove_all(dir);
  }
}

BOOST_FIXTURE_TEST_CASE(damage_in_a_sealed_segment_is_skipped_and_reported_under_skip, sealed_fixture) {
  const auto offs = offsets(first);
  const auto bytes = read_file(seg0);
  // Every value ever written for each key: a skipped record may expose an older one, never a foreign one.
  std::map<std::string, std::set<std::string>> ever;
  for (const auto* w : {&first, &second})
    for (const auto& o : *w)
      if (!o.erase) ever[o.key].insert(o.value);
  for (std::size_t byte = fmt::file_header_size; byte < bytes.size(); byte += 2) {
    const auto dir = d / ("k" + std::to_string(byte));
    copy_dir(d / "ref", dir);
    auto b = bytes;
    b[byte] = static_cast<char>(b[byte] ^ 0x01);
    write_file(dir / seg0.filename(), b);
    reports r;
    cask::options o;
    o.on_corruption = cask::corruption_policy::skip;
    // (A background merge would report the skipped record again, from its
    // own thread, while this one reads the events.)
    o.merge.background = false;
    auto db = string_store::open(dir, r.opts(o));
    const std::size_t rec =
        static_cast<std::size_t>(std::upper_bound(offs.begin(), offs.end(), byte) - offs.begin() - 1);
    BOOST_REQUIRE(r.count(cask::recovery_event::kind::corrupt_record) >= 1u);
    BOOST_TEST(r.events.front().offset == offs[rec]);
    BOOST_TEST(db.stats().recovered_skipped_records >= 1u);
    // Records of the second session are all intact and newer: they win.
    const auto m2 = state_after(second, second.size());
    for (const auto& [k, v] : contents(db)) {
      BOOST_REQUIRE(ever[k].count(v) == 1);
      if (m2.count(k)) BOOST_REQUIRE(m2.at(k) == v);
    }
    db.close();
    std::filesystem::remove_all(dir);
  }
}

BOOST_AUTO_TEST_CASE(a_deleted_key_stays_deleted_across_reopens_and_segments) {
  temp_dir d("deleted");
  cask::options o;
  o.max_segment_bytes = 4096;
  {
    auto db = string_store::open(d.path(), o);
    for (int i = 0; i < 100; ++i) db.put(key_of(i), value_of(i));
    for (int i = 0; i < 100; i += 2) db.erase(key_of(i));
  }
  for (int round = 0; round < 3; ++round) {
    auto db = string_store::open(d.path(), o);
    BOOST_TEST(db.size() == 50u);
    for (int i = 0; i < 100; ++i) BOOST_REQUIRE_EQUAL(db.contains(key_of(i)), i % 2 == 1);
  }
}

BOOST_AUTO_TEST_CASE(a_partial_newest_segment_is_rewritten_and_reported) {
  // A crash right after creating the next segment: the file is empty, or
  // holds only the zeros of its preallocation, or a torn header.
  for (int variant = 0; variant < 3; ++variant) {
    temp_dir d("partial");
    { string_store::open(d.path()).put("a", "1"); }
    std::vector<char> b;
    if (variant == 1) b.assign(8192, '\0');
    if (variant == 2) {
      b.assign(8192, '\0');
      b[0] = static_cast<char>(0x89);
      b[1] = 'C';
    }
    write_file(d / "0000000002.cask", b);
    write_file(d / "0000000009.cask.tmp", {'x'});  // a leftover temporary file
    reports r;
    {
      auto db = string_store::open(d.path(), r.opts());
      BOOST_TEST(*db.get("a") == "1");
      db.put("b", "2");
    }
    BOOST_TEST(r.count(cask::recovery_event::kind::removed_partial) == 1u, "variant " << variant);
    BOOST_TEST(r.count(cask::recovery_event::kind::removed_temp) == 1u);
    BOOST_TEST(!std::filesystem::exists(d / "0000000009.cask.tmp"));
    auto db = string_store::open(d.path());
    BOOST_TEST(*db.get("a") == "1");
    BOOST_TEST(*db.get("b") == "2");
  }
}

// Regression (found by fuzz_recovery): an empty writer segment was removed at
// close, and a partial or empty one at open, so a sealed segment became the
// newest, and damage in it, skipped under corruption_policy::skip, was cut
// at the next open as a torn tail. Now the writer's segment is kept and
// reused: the damage stays damage, under every later open.
BOOST_AUTO_TEST_CASE(damage_in_a_sealed_segment_stays_damage_after_empty_sessions) {
  for (int variant = 0; variant < 2; ++variant) {
    temp_dir d("stays");
    { string_store::open(d.path()).put("a", value_of(1, 50)); }
    {
      auto db = string_store::open(d.path());
      db.put("b", value_of(2, 50));
      db.put("c", value_of(3, 50));
    }
    if (variant == 0)
      auto db = string_store::open(d.path());  // an empty session
    else
      write_file(d / "0000000003.cask", {});  // a crash while creating the next segment
    auto segs = segment_files(d.path());
    BOOST_REQUIRE_EQUAL(segs.size(), 3u);
    remove_index_files(d.path());
    // Damage the last record of the newest sealed segment.
    auto b = read_file(segs[1]);
    b[b.size() - 3] = static_cast<char>(b[b.size() - 3] ^ 0x40);
    write_file(segs[1], b);
    cask::options skip;
    skip.on_corruption = cask::corruption_policy::skip;
    for (int session = 0; session < 2; ++session) {
      reports r;
      auto db = string_store::open(d.path(), r.opts(skip));
      BOOST_TEST(r.count(cask::recovery_event::kind::corrupt_record) == 1u, "session " << session);
      BOOST_TEST(r.count(cask::recovery_event::kind::torn_tail) == 0u, "session " << session);
      BOOST_TEST((db.get("b") == std::optional<std::string>(value_of(2, 50))));
      BOOST_TEST(!db.contains("c"));
    }
    BOOST_TEST(read_file(segs[1]) == b);  // never cut
    std::error_code ec;
    BOOST_TEST(!string_store::open(d.path(), {}, ec).has_value(), "variant " << variant);
    BOOST_TEST((ec == cask::errc::checksum_mismatch || ec == cask::errc::corruption));
  }
}

BOOST_AUTO_TEST_CASE(an_empty_file_that_is_not_the_newest_is_corruption) {
  temp_dir d("gap");
  { string_store::open(d.path()).put("a", "1"); }
  { string_store::open(d.path()).put("b", "2"); }
  const auto segs = segment_files(d.path());
  BOOST_REQUIRE_EQUAL(segs.size(), 2u);
  write_file(segs[0], {});
  std::error_code ec;
  BOOST_TEST(!string_store::open(d.path(), {}, ec).has_value());
  BOOST_TEST((ec == cask::errc::corruption));
}

BOOST_AUTO_TEST_CASE(a_foreign_file_and_a_newer_format_are_refused) {
  temp_dir d("foreign");
  { string_store::open(d.path()).put("a", "1"); }
  const auto seg = segment_files(d.path()).at(0);
  auto b = read_file(seg);
  auto other = b;
  other[1] = 'X';  // magic
  write_file(seg, other);
  std::error_code ec;
  BOOST_TEST(!string_store::open(d.path(), {}, ec).has_value());
  BOOST_TEST((ec == cask::errc::bad_magic));
  // Version 2 with a valid header checksum.
  std::vector<std::byte> h(fmt::file_header_size);
  fmt::file_header fh;
  fh.version = 2;
  fh.checksum_id = 1;
  fh.codec_id = fmt::codec_id<cask::crc32c>(cask::basic_codec::name);
  fh.segment_id = 1;
  fmt::encode_file_header<cask::crc32c>(fh, h.data());
  std::memcpy(b.data(), h.data(), h.size());
  write_file(seg, b);
  BOOST_TEST(!string_store::open(d.path(), {}, ec).has_value());
  BOOST_TEST((ec == cask::errc::unsupported_version));
}

BOOST_AUTO_TEST_CASE(a_checksum_failure_at_read_time_is_an_error_not_a_value) {
  temp_dir d("readflip");
  auto db = string_store::open(d.path());
  db.put("k", "value!");
  // Damage the record in place behind the store's back (as a failing disk would).
  const auto seg = segment_files(d.path()).at(0);
  {
    std::error_code ec;
    auto f = cask::posix_io{}.open(seg, cask::open_mode::read_write, ec);
    BOOST_REQUIRE(!ec);
    const std::byte x{'V'};
    f.write_at(&x, 1, fmt::file_header_size + fmt::record_size(1, 0), ec);
    BOOST_REQUIRE(!ec);
  }
  std::error_code ec;
  BOOST_TEST(!db.get("k", ec).has_value());
  BOOST_TEST((ec == cask::errc::checksum_mismatch));
  try {
    (void)db.get("k");
    BOOST_FAIL("expected an exception");
  } catch (const cask::error& e) {
    BOOST_TEST(e.path() == seg);
    BOOST_TEST(e.offset() == fmt::file_header_size);
  }
  BOOST_TEST(!db.get_ref("k", ec).has_value());
  BOOST_TEST((ec == cask::errc::checksum_mismatch));
}
