// The keydir snapshot (KEYDIR, FORMAT.md "Keydir snapshot"): written at a
// clean close, loaded at open only when it validates and matches every
// segment file, removed by a writer as it opens. Whatever happens to it, the
// store shows exactly what a rebuild from hints and scans shows.
#define BOOST_TEST_MODULE snapshot
#include <boost/test/unit_test.hpp>

#include "test_util.hpp"

#include <map>

using namespace cask_test;
namespace fs = std::filesystem;

namespace {

using model = std::map<std::string, std::string>;

cask::options opts(std::vector<cask::recovery_event>* events = nullptr) {
  cask::options o;
  o.max_segment_bytes = 4096;
  o.merge.background = false;
  if (events) o.reporter = [events](const cask::recovery_event& e) { events->push_back(e); };
  return o;
}

/// A closed store of several segments with overwrites and erases, and a merge.
model build(const fs::path& dir) {
  model m;
  auto db = string_store::open(dir, opts());
  for (int round = 0; round < 3; ++round)
    for (int i = 0; i < 120; ++i) {
      const auto k = key_of(static_cast<std::uint64_t>(i));
      if ((i + round) % 7 == 0) {
        db.erase(k);
        m.erase(k);
      } else {
        db.put(k, value_of(static_cast<std::uint64_t>(i * 10 + round), 40));
        m[k] = value_of(static_cast<std::uint64_t>(i * 10 + round), 40);
      }
    }
  db.merge(cask::merge_scope::all);
  db.put("after-merge", "x");
  m["after-merge"] = "x";
  return m;
}

model contents(string_store& db) {
  model m;
  db.for_each([&](const std::string& k, const std::string& v) { m[k] = v; });
  return m;
}

/// The per-segment figures, which a snapshot carries over.
std::vector<std::tuple<std::uint32_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t>> figures(
    const cask::store_stats& st) {
  std::vector<std::tuple<std::uint32_t, std::uint64_t, std::uint64_t, std::uint64_t, std::uint64_t>> v;
  for (const auto& s : st.per_segment) v.emplace_back(s.id, s.live_records, s.live_bytes, s.dead_records, s.dead_bytes);
  return v;
}

std::size_t count(const std::vector<cask::recovery_event>& ev, cask::recovery_event::kind k) {
  return static_cast<std::size_t>(std::count_if(ev.begin(), ev.end(), [k](const auto& e) { return e.what == k; }));
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_clean_restart_loads_the_keydir_snapshot_and_shows_the_same_store) {
  temp_dir d("snap-same");
  const model m = build(d / "a");
  BOOST_REQUIRE(fs::exists(d / "a" / "KEYDIR"));
  copy_dir(d / "a", d / "b");
  fs::remove(d / "b" / "KEYDIR");  // b rebuilds from its hint files
  auto a = string_store::open(d / "a", opts());
  auto b = string_store::open(d / "b", opts());
  BOOST_TEST(a.stats().recovered_from_snapshot);
  BOOST_TEST(a.stats().recovered_from_hints == 0u);
  BOOST_TEST(a.stats().recovered_by_scan == 0u);
  BOOST_TEST(!b.stats().recovered_from_snapshot);
  BOOST_TEST(b.stats().recovered_from_hints > 0u);
  BOOST_TEST((contents(a) == m));
  BOOST_TEST((contents(b) == m));
  for (const auto& [k, v] : m) BOOST_REQUIRE(a.get(k) == std::optional<std::string>(v));
  BOOST_TEST(!a.contains(key_of(5)));  // erased in the last round
  BOOST_TEST(a.stats().keys == m.size());
  BOOST_TEST((figures(a.stats()) == figures(b.stats())));
  // The writer removed the snapshot as it opened: it is stale once anything is written.
  BOOST_TEST(!fs::exists(d / "a" / "KEYDIR"));
  a.put("new", "y");
  a.erase(key_of(1));
  BOOST_TEST(a.merge(cask::merge_scope::all).segments_in > 0u);  // the carried-over figures drive a merge
  BOOST_TEST((a.get("new") == std::optional<std::string>("y")));
}

BOOST_AUTO_TEST_CASE(a_read_only_open_uses_the_snapshot_and_leaves_it) {
  temp_dir d("snap-ro");
  const model m = build(d.path());
  auto o = opts();
  o.read_only = true;
  auto db = string_store::open(d.path(), o);
  BOOST_TEST(db.stats().recovered_from_snapshot);
  BOOST_TEST((contents(db) == m));
  BOOST_TEST(fs::exists(d / "KEYDIR"));
}

BOOST_AUTO_TEST_CASE(a_crash_after_a_snapshot_was_used_never_brings_it_back) {
  temp_dir d("snap-crash");
  model m = build(d / "s");
  {
    auto db = string_store::open(d / "s", opts());
    BOOST_REQUIRE(db.stats().recovered_from_snapshot);
    db.put(key_of(3), "changed");
    db.erase(key_of(4));
    db.sync();
    m[key_of(3)] = "changed";
    m.erase(key_of(4));
    // A crash: the store's files as they are now, without a close.
    copy_dir(d / "s", d / "crashed");
  }
  auto db = string_store::open(d / "crashed", opts());
  BOOST_TEST(!db.stats().recovered_from_snapshot);
  BOOST_TEST((contents(db) == m));
}

BOOST_AUTO_TEST_CASE(a_snapshot_that_no_longer_matches_its_segments_is_ignored_and_reported) {
  temp_dir d("snap-stale");
  const model m = build(d / "ref");
  const auto snapshot = read_file(d / "ref" / "KEYDIR");
  const auto segs = segment_files(d / "ref");
  BOOST_REQUIRE(segs.size() >= 3u);
  int variant = 0;
  auto check = [&](const std::string& what, auto&& change, bool same_contents) {
    const auto dir = d / ("v" + std::to_string(variant++));
    copy_dir(d / "ref", dir);
    change(dir);
    write_file(dir / "KEYDIR", snapshot);  // the old snapshot, beside the changed segments
    std::vector<cask::recovery_event> ev;
    std::error_code ec;
    auto o = opts(&ev);
    o.on_corruption = cask::corruption_policy::skip;
    auto opened = string_store::open(dir, o, ec);
    BOOST_REQUIRE_MESSAGE(!ec && opened, what << ": " << ec.message());
    auto& db = *opened;
    BOOST_TEST(!db.stats().recovered_from_snapshot, what);
    BOOST_TEST(count(ev, cask::recovery_event::kind::bad_snapshot) == 1u, what);
    for (const auto& e : ev)
      if (e.what == cask::recovery_event::kind::bad_snapshot) {
        BOOST_TEST(e.file == dir / "KEYDIR", what);
        BOOST_TEST(!e.detail.empty(), what);
      }
    if (same_contents) BOOST_TEST((contents(db) == m), what);
  };
  // A segment one byte longer (damage under skip) or cut short.
  check("a byte appended", [&](const fs::path& dir) {
    auto b = read_file(dir / segs[1].filename());
    b.push_back('\x7f');
    write_file(dir / segs[1].filename(), b);
  }, false);
  check("cut short", [&](const fs::path& dir) {
    auto b = read_file(dir / segs[0].filename());
    b.pop_back();
    write_file(dir / segs[0].filename(), b);
  }, false);
  // A segment removed.
  check("a segment removed", [&](const fs::path& dir) { fs::remove(dir / segs[0].filename()); }, false);
  // A store opened with another hasher: same files, but the hashes differ.
  {
    struct other_hasher {
      std::uint64_t operator()(std::span<const std::byte> b) const noexcept {
        return cask::default_hasher::hash(b.data(), b.size()) * 0x9e3779b97f4a7c15ull + 1;
      }
    };
    using other_store = cask::log_store<std::string, std::string, other_hasher>;
    const auto dir = d / "hasher";
    copy_dir(d / "ref", dir);
    std::vector<cask::recovery_event> ev;
    auto db = other_store::open(dir, opts(&ev));
    BOOST_TEST(!db.stats().recovered_from_snapshot);
    BOOST_TEST(count(ev, cask::recovery_event::kind::bad_snapshot) == 1u);
    model got;
    db.for_each([&](const std::string& k, const std::string& v) { got[k] = v; });
    BOOST_TEST((got == m));
    for (const auto& [k, v] : m) BOOST_REQUIRE(db.get(k) == std::optional<std::string>(v));
  }
}

BOOST_AUTO_TEST_CASE(every_cut_and_sampled_bit_flip_of_the_snapshot_falls_back_to_the_same_store) {
  temp_dir d("snap-damage", storage::memory);
  const model m = build(d / "ref");
  const auto snapshot = read_file(d / "ref" / "KEYDIR");
  const std::size_t fixed = 32 + 24 + 64 * segment_files(d / "ref").size();
  std::size_t cases = 0;
  auto check = [&](const std::vector<char>& bytes, const std::string& what) {
    const auto dir = d / "x";
    copy_dir(d / "ref", dir);
    write_file(dir / "KEYDIR", bytes);
    std::vector<cask::recovery_event> ev;
    auto o = opts(&ev);
    o.read_only = true;  // nothing else changes between cases
    auto db = string_store::open(dir, o);
    BOOST_REQUIRE_MESSAGE(!db.stats().recovered_from_snapshot, what << ": a damaged snapshot was loaded");
    BOOST_REQUIRE_MESSAGE(count(ev, cask::recovery_event::kind::bad_snapshot) == 1u, what << ": not reported");
    BOOST_REQUIRE_MESSAGE((contents(db) == m), what << ": another store");
    ++cases;
  };
  for (std::size_t cut = 0; cut < snapshot.size(); cut += cut < fixed || cut + 64 > snapshot.size() ? 1 : 61)
    check(std::vector<char>(snapshot.begin(), snapshot.begin() + static_cast<long>(cut)), "cut at " + std::to_string(cut));
  for (std::size_t i = 0; i < snapshot.size(); ++i) {
    const bool dense = i < fixed || i + 16 >= snapshot.size();
    if (!dense && i % 53 != 0) continue;
    for (int bit = 0; bit < 8; ++bit) {
      if (!dense && bit != static_cast<int>(i % 8)) continue;
      auto b = snapshot;
      b[i] = static_cast<char>(b[i] ^ (1 << bit));
      check(b, "flip " + std::to_string(i) + ":" + std::to_string(bit));
    }
  }
  auto longer = snapshot;
  longer.push_back('\0');
  check(longer, "a byte appended");
  BOOST_TEST(cases > 1000u);
}

BOOST_AUTO_TEST_CASE(the_snapshot_option_off_writes_none_and_ignores_one) {
  temp_dir d("snap-off");
  const model m = build(d.path());
  BOOST_REQUIRE(fs::exists(d / "KEYDIR"));
  auto o = opts();
  o.keydir_snapshot = false;
  {
    auto db = string_store::open(d.path(), o);
    BOOST_TEST(!db.stats().recovered_from_snapshot);
    BOOST_TEST((contents(db) == m));
    BOOST_TEST(!fs::exists(d / "KEYDIR"));  // a writer removes it all the same
  }
  BOOST_TEST(!fs::exists(d / "KEYDIR"));
}
