// The merger: space reclaimed, contents unchanged, tombstones kept exactly as
// long as they shadow something (Bitcask #82), concurrent writes win, and a
// crash or failure at every I/O step of a merge changes nothing.
#define BOOST_TEST_MODULE merge
#include <boost/test/unit_test.hpp>

#include "faulty_io.hpp"
#include "test_util.hpp"

#include <map>
#include <thread>

using namespace cask_test;

namespace {
using model = std::map<std::string, std::string>;

template <class Store>
model contents(const Store& db) {
  model m;
  db.for_each([&](const std::string& k, const std::string& v) { m[k] = v; });
  return m;
}

/// A merge policy that merges exactly the segments a test names.
struct pick_policy {
  static inline std::vector<std::uint32_t> picks;
  static std::vector<std::uint32_t> select(const std::vector<cask::merge_input>&, const cask::merge_options&,
                                           std::uint64_t) {
    return picks;
  }
};
struct pick_traits : cask::default_traits {
  using merge_policy = pick_policy;
};
using pick_store = cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, pick_traits>;

cask::options small(std::uint64_t seg = 4096) {
  cask::options o;
  o.max_segment_bytes = seg;
  o.merge.background = false;
  o.parallel_recovery_bytes = 0;  // reopens recover with the helper threads, as a large store does
  return o;
}

/// Writes keys [0, keys) `rounds` times each, then erases every `erase_every`-th; `m` follows.
void overwrite_and_erase(string_store& db, model& m, int keys, int rounds, int erase_every) {
  for (int round = 0; round < rounds; ++round)
    for (int i = 0; i < keys; ++i) {
      db.put(key_of(i), value_of(i * 10 + round));
      m[key_of(i)] = value_of(i * 10 + round);
    }
  for (int i = 0; i < keys; i += erase_every) {
    db.erase(key_of(i));
    m.erase(key_of(i));
  }
}

std::uint64_t dir_bytes(const std::filesystem::path& d, const std::string& ext) {
  std::uint64_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(d))
    if (e.path().extension() == ext) n += std::filesystem::file_size(e.path());
  return n;
}
}  // namespace

BOOST_AUTO_TEST_CASE(merging_reclaims_the_space_of_overwritten_and_erased_records) {
  temp_dir d("reclaim");
  model m;
  {
    auto db = string_store::open(d.path(), small(64 << 10));
    overwrite_and_erase(db, m, 500, 5, 5);
    const auto before = db.stats();
    const auto r = db.merge(cask::merge_scope::all);
    BOOST_TEST(r.segments_in > 1u);
    BOOST_TEST(r.records_dropped > 0u);
    const auto after = db.stats();
    BOOST_TEST(after.data_bytes < before.data_bytes);
    BOOST_TEST((contents(db) == m));
    for (int i = 0; i < 500; ++i) BOOST_REQUIRE(db.get(key_of(i)) == (m.count(key_of(i)) ? std::optional(m[key_of(i)]) : std::nullopt));
  }
  // Disk after merge: the live data plus the newest segment's tombstones and headers.
  const double live = double(m.size()) * double(cask::format::record_size(16, 100));
  BOOST_TEST(double(dir_bytes(d.path(), ".cask")) / live <= 1.2);
  auto db = string_store::open(d.path(), small(64 << 10));
  BOOST_TEST((contents(db) == m));
  BOOST_TEST(db.stats().recovered_by_scan == 0u);  // outputs have hint files
}

// merge_scope::all leaves the active segment as it is; merge_scope::compact
// seals it first and merges it too: afterwards the segments hold exactly the
// live records, and the active segment is a new, empty one.
BOOST_AUTO_TEST_CASE(compact_merges_the_active_segment_too) {
  temp_dir d("compact");
  model m;
  auto db = string_store::open(d.path(), small(64 << 10));
  overwrite_and_erase(db, m, 400, 4, 7);
  auto dead_in_active = [](const cask::store_stats& st) {
    for (const auto& sg : st.per_segment)
      if (sg.active) return sg.dead_bytes;
    return std::uint64_t{0};
  };
  db.merge(cask::merge_scope::all);
  BOOST_TEST(dead_in_active(db.stats()) > 0u);  // all: the active segment's garbage stays
  const auto r = db.merge(cask::merge_scope::compact);
  BOOST_TEST(r.segments_in >= 1u);
  const auto st = db.stats();
  std::uint64_t live = 0, bytes = 0;
  for (const auto& sg : st.per_segment) {
    BOOST_TEST(sg.dead_bytes == 0u);
    if (sg.active) {
      BOOST_TEST(sg.bytes == cask::format::file_header_size);
      continue;
    }
    live += sg.live_bytes;
    bytes += sg.bytes - cask::format::file_header_size;
  }
  BOOST_TEST(bytes == live);
  BOOST_TEST(live == st.live_bytes);
  BOOST_TEST((contents(db) == m));
  // An empty active segment is not sealed again.
  auto active_id = [](const cask::store_stats& s) {
    for (const auto& sg : s.per_segment)
      if (sg.active) return sg.id;
    return std::uint32_t{0};
  };
  const std::uint32_t active_before = active_id(st);
  db.merge(cask::merge_scope::compact);
  BOOST_TEST(active_id(db.stats()) == active_before);
  BOOST_TEST((contents(db) == m));
  // Writes go on into the new active segment, and a reopen sees it all.
  db.put("after", "compact");
  m["after"] = "compact";
  db.close();
  auto again = string_store::open(d.path(), small(64 << 10));
  BOOST_TEST((contents(again) == m));
  BOOST_TEST(again.stats().recovered_by_scan <= 1u);  // only the last active segment has no hint
}

// A merge refuses damage (here a value byte of one record) under fail, and
// under skip where a trusted hint file hid it from recovery: skipping could
// drop intact records the hint made visible. Under skip, where recovery
// scanned the segment and skipped the damage, the merge skips it too and
// reports it with file and offset. No other key changes in any case.
BOOST_AUTO_TEST_CASE(a_merge_under_skip_compacts_past_the_damage_recovery_skipped) {
  temp_dir d("skipmerge");
  model m;
  {
    auto db = string_store::open(d.path(), small());
    for (int i = 0; i < 60; ++i) {
      db.put(key_of(i), value_of(i, 50));
      m[key_of(i)] = value_of(i, 50);
    }
  }
  const auto seg = segment_files(d.path()).front();  // its first record is key_of(0)'s
  auto b = read_file(seg);
  const std::size_t at = cask::format::file_header_size + cask::format::record_header_size + key_of(0).size() + 10;
  b[at] = static_cast<char>(b[at] ^ 0x20);
  write_file(seg, b);
  m.erase(key_of(0));
  {
    auto db = string_store::open(d.path(), small());  // the hint is trusted: it opens
    std::error_code ec;
    const auto r = db.merge(cask::merge_scope::all, ec);
    BOOST_TEST((ec == cask::errc::checksum_mismatch));
    BOOST_TEST(r.segments_in == 0u);
    for (const auto& [k, v] : m) BOOST_REQUIRE(db.get(k) == std::optional<std::string>(v));
    BOOST_CHECK_THROW(db.get(key_of(0)), cask::error);
  }
  auto skip = small();
  skip.on_corruption = cask::corruption_policy::skip;
  {
    auto db = string_store::open(d.path(), skip);  // the hint is trusted: the damage is not seen
    std::error_code ec;
    const auto r = db.merge(cask::merge_scope::all, ec);
    BOOST_TEST((ec == cask::errc::checksum_mismatch));
    BOOST_TEST(r.segments_in == 0u);
    for (const auto& [k, v] : m) BOOST_REQUIRE(db.get(k) == std::optional<std::string>(v));
  }
  remove_index_files(d.path());
  std::vector<cask::recovery_event> events;
  {
    skip.reporter = [&](const cask::recovery_event& e) { events.push_back(e); };
    auto db = string_store::open(d.path(), skip);  // scanned: the damage is skipped
    BOOST_TEST(db.stats().recovered_skipped_records == 1u);
    BOOST_TEST(!db.contains(key_of(0)));
    events.clear();
    const auto r = db.merge(cask::merge_scope::all);
    BOOST_TEST(r.segments_in > 1u);
    BOOST_TEST(r.damaged_bytes_skipped >= cask::format::record_size(key_of(0).size(), 50));
    BOOST_TEST(r.damaged_entries_dropped == 0u);
    BOOST_TEST(!db.contains(key_of(0)));
    BOOST_TEST((contents(db) == m));
    BOOST_TEST(db.size() == m.size());
  }
  bool reported = false;
  for (const auto& e : events)
    reported = reported || (e.what == cask::recovery_event::kind::corrupt_record && e.file == seg &&
                            e.offset == cask::format::file_header_size);
  BOOST_TEST(reported);
  auto db = string_store::open(d.path(), small());  // under fail again: the damage is gone
  BOOST_TEST((contents(db) == m));
}

BOOST_AUTO_TEST_CASE(merge_with_policy_does_nothing_below_its_triggers) {
  temp_dir d("quiet");
  auto db = string_store::open(d.path(), small());
  for (int i = 0; i < 300; ++i) db.put(key_of(i), value_of(i));  // nothing dead
  BOOST_TEST(db.merge_candidates().empty());
  const auto r = db.merge();
  BOOST_TEST(r.segments_in == 0u);
}

BOOST_AUTO_TEST_CASE(a_fragmented_store_triggers_the_policy) {
  temp_dir d("trigger");
  auto db = string_store::open(d.path(), small());
  for (int round = 0; round < 4; ++round)
    for (int i = 0; i < 100; ++i) db.put(key_of(i), value_of(i + round));
  const auto picks = db.merge_candidates();
  BOOST_TEST(!picks.empty());
  const auto r = db.merge();
  BOOST_TEST(r.segments_in == picks.size());
  for (int i = 0; i < 100; ++i) BOOST_REQUIRE(db.get(key_of(i)) == value_of(i + 3));
}

BOOST_AUTO_TEST_CASE(the_default_policy_selects_by_fragmentation_size_and_budget) {
  cask::merge_options o;
  o.max_bytes = 250;
  const std::uint64_t seg = 800;  // small = 100
  using P = cask::default_merge_policy;
  // Nothing dead, no small segments: nothing.
  BOOST_TEST(P::select({{1, 500, 0}, {2, 500, 0}}, o, seg).empty());
  // One segment 70% dead triggers; candidates are those >= 40% dead, within the byte budget.
  const auto p = P::select({{1, 100, 70}, {2, 100, 45}, {3, 100, 10}, {4, 100, 90}}, o, seg);
  BOOST_TEST((p == std::vector<std::uint32_t>{1, 2}));
  // Eight small segments fold together even with nothing dead.
  std::vector<cask::merge_input> smalls;
  for (std::uint32_t i = 1; i <= 8; ++i) smalls.push_back({i, 20, 0});
  BOOST_TEST(P::select(smalls, o, seg).size() == 8u);
  smalls.pop_back();
  BOOST_TEST(P::select(smalls, o, seg).empty());
}

// ---- Bitcask #82 and its variants: a deleted key never comes back ----

BOOST_AUTO_TEST_CASE(a_key_and_its_tombstone_in_the_same_segment_are_both_dropped) {
  temp_dir d("same");
  {
    auto db = pick_store::open(d.path(), small());
    db.put("victim", "old");
    db.erase("victim");
    for (int i = 0; i < 60; ++i) db.put(key_of(i), value_of(i));  // seal the segment
    pick_policy::picks = {1};
    const auto r = db.merge();
    BOOST_TEST(r.segments_in == 1u);
    BOOST_TEST(r.tombstones_dropped == 1u);
    BOOST_TEST(!db.contains("victim"));
  }
  auto db = pick_store::open(d.path(), small());
  BOOST_TEST(!db.contains("victim"));
}

BOOST_AUTO_TEST_CASE(a_partial_merge_keeps_a_tombstone_that_shadows_an_older_segment) {
  temp_dir d("partial82");
  {
    auto db = pick_store::open(d.path(), small());
    db.put("victim", "old");  // segment 1
    for (int i = 0; i < 60; ++i) db.put(key_of(i), value_of(i));
    const auto first = db.stats().per_segment.size();
    db.erase("victim");       // a later segment
    for (int i = 60; i < 120; ++i) db.put(key_of(i), value_of(i));
    BOOST_REQUIRE(db.stats().per_segment.size() > first);
    // Merge every sealed segment but the first: the tombstone must survive.
    std::vector<std::uint32_t> later;
    for (const auto& s : db.stats().per_segment)
      if (s.id != 1 && !s.active) later.push_back(s.id);
    pick_policy::picks = later;
    const auto r = db.merge();
    BOOST_TEST(r.tombstones_dropped == 0u);
    BOOST_TEST(!db.contains("victim"));
  }
  {
    auto db = pick_store::open(d.path(), small());
    BOOST_TEST(!db.contains("victim"));  // the bug: the old value came back here
    // Now merge the first segment alone: "old" is dead and goes; the tombstone still lives elsewhere.
    pick_policy::picks = {1};
    db.merge();
    BOOST_TEST(!db.contains("victim"));
  }
  {
    auto db = pick_store::open(d.path(), small());
    BOOST_TEST(!db.contains("victim"));
    // A full merge may now drop the tombstone: nothing older survives.
    const auto r = db.merge(cask::merge_scope::all);
    BOOST_TEST(r.tombstones_dropped == 1u);
  }
  auto db = pick_store::open(d.path(), small());
  BOOST_TEST(!db.contains("victim"));
}

BOOST_AUTO_TEST_CASE(merging_the_old_segment_first_then_the_tombstone_is_safe_too) {
  temp_dir d("order82");
  {
    auto db = pick_store::open(d.path(), small());
    db.put("victim", "old");
    for (int i = 0; i < 60; ++i) db.put(key_of(i), value_of(i));
    db.erase("victim");
    for (int i = 60; i < 120; ++i) db.put(key_of(i), value_of(i));
    pick_policy::picks = {1};  // the old value is dead: dropped
    db.merge();
  }
  for (int round = 0; round < 2; ++round) {
    auto db = pick_store::open(d.path(), small());
    BOOST_TEST(!db.contains("victim"));
    db.merge(cask::merge_scope::all);
  }
  auto db = pick_store::open(d.path(), small());
  BOOST_TEST(!db.contains("victim"));
}

BOOST_AUTO_TEST_CASE(a_key_rewritten_after_its_tombstone_keeps_its_new_value) {
  temp_dir d("rewrite");
  {
    auto db = string_store::open(d.path(), small());
    db.put("k", "1");
    for (int i = 0; i < 60; ++i) db.put(key_of(i), value_of(i));
    db.erase("k");
    for (int i = 60; i < 120; ++i) db.put(key_of(i), value_of(i));
    db.put("k", "2");
    for (int i = 120; i < 180; ++i) db.put(key_of(i), value_of(i));
    db.merge(cask::merge_scope::all);
    BOOST_TEST(*db.get("k") == "2");
  }
  auto db = string_store::open(d.path(), small());
  BOOST_TEST(*db.get("k") == "2");
}

BOOST_AUTO_TEST_CASE(puts_and_erases_racing_a_merge_win) {
  for (int trial = 0; trial < 5; ++trial) {
    temp_dir d("race");
    auto db = string_store::open(d.path(), small(8192));
    model m;
    for (int i = 0; i < 400; ++i) {
      db.put(key_of(i), value_of(i));
      m[key_of(i)] = value_of(i);
    }
    for (int i = 0; i < 400; i += 2) db.put(key_of(i), value_of(i + 1000)), m[key_of(i)] = value_of(i + 1000);
    std::atomic<bool> done{false};
    std::thread merger([&] {
      while (!done.load()) db.merge(cask::merge_scope::all);
    });
    for (int i = 0; i < 400; ++i) {
      const int k = (i * 7 + trial) % 400;
      if (i % 3 == 0) {
        db.erase(key_of(k));
        m.erase(key_of(k));
      } else {
        db.put(key_of(k), value_of(k + 2000 + trial));
        m[key_of(k)] = value_of(k + 2000 + trial);
      }
    }
    done = true;
    merger.join();
    db.merge(cask::merge_scope::all);
    BOOST_REQUIRE((contents(db) == m));
    db.close();
    auto again = string_store::open(d.path(), small(8192));
    BOOST_REQUIRE((contents(again) == m));
  }
}

BOOST_AUTO_TEST_CASE(a_value_ref_survives_the_merge_that_removes_its_file) {
  temp_dir d("refmerge");
  auto db = string_store::open(d.path(), small());
  db.put("k", "kept by the view");
  for (int i = 0; i < 100; ++i) db.put(key_of(i), value_of(i));
  auto ref = db.get_ref("k");
  db.put("k", "new");
  db.merge(cask::merge_scope::all);
  BOOST_TEST(!std::filesystem::exists(d / "0000000001.cask"));
  BOOST_TEST(ref->view() == "kept by the view");
  BOOST_TEST(*db.get("k") == "new");
}

BOOST_AUTO_TEST_CASE(background_merges_run_when_the_policy_triggers) {
  temp_dir d("bg");
  cask::options o = small();
  o.merge.background = true;
  o.merge.check_interval = std::chrono::milliseconds(5);
  auto db = string_store::open(d.path(), o);
  for (int round = 0; round < 6; ++round)
    for (int i = 0; i < 100; ++i) db.put(key_of(i), value_of(i + round));
  std::uint64_t dead = ~0ull;
  for (int wait = 0; wait < 400 && dead > 0; ++wait) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    dead = 0;
    for (const auto& s : db.stats().per_segment)
      if (!s.active) dead += s.dead_bytes;
    if (db.merge_candidates().empty()) break;
  }
  BOOST_TEST(db.merge_candidates().empty());
  for (int i = 0; i < 100; ++i) BOOST_REQUIRE(db.get(key_of(i)) == value_of(i + 5));
}

// ---- crash and failure at every I/O step of a merge ----

struct faulty_traits : cask::default_traits {
  using io = cask_test::faulty_io;
};
using faulty_store = cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, faulty_traits>;

namespace {
/// A closed store with overwrites, erases and tombstones across several segments.
model build_fragmented(const std::filesystem::path& dir) {
  model m;
  auto db = string_store::open(dir, small());
  for (int round = 0; round < 3; ++round)
    for (int i = 0; i < 60; ++i) {
      if ((i + round) % 7 == 0) {
        if (db.erase(key_of(i))) m.erase(key_of(i));
      } else {
        db.put(key_of(i), value_of(i * 3 + round, 40));
        m[key_of(i)] = value_of(i * 3 + round, 40);
      }
    }
  return m;
}
}  // namespace

BOOST_AUTO_TEST_CASE(a_crash_at_every_step_of_a_merge_leaves_the_same_contents) {
  temp_dir d("crash");
  const model m = build_fragmented(d / "ref");
  long steps_total = -1;
  for (long n = 0;; ++n) {
    const auto dir = d / ("n" + std::to_string(n));
    copy_dir(d / "ref", dir);
    bool completed = false;
    {
      auto io = faulty_io();
      auto db = faulty_store::open(dir, small(), io);
      io.plan().fail_at = n;
      io.plan().armed = true;
      std::error_code ec;
      db.merge(cask::merge_scope::all, ec);
      completed = !ec && io.plan().failures.load() == 0;
      if (completed) steps_total = io.plan().steps.load();
      // The process "dies" here: the destructor's I/O fails too (crash mode).
      io.plan().crashed = true;
    }
    // Recovery, twice: the same state each time.
    for (int again = 0; again < 2; ++again) {
      auto db = string_store::open(dir, small());
      BOOST_REQUIRE_MESSAGE((contents(db) == m), "crash at step " << n << ", open " << again);
    }
    std::filesystem::remove_all(dir);
    if (completed) break;
  }
  BOOST_TEST(steps_total > 10);
  BOOST_TEST_MESSAGE("merge I/O steps: " << steps_total);
}

BOOST_AUTO_TEST_CASE(a_failure_at_every_step_of_a_merge_is_reported_and_changes_nothing) {
  temp_dir d("fail");
  const model m = build_fragmented(d / "ref");
  for (long n = 0;; ++n) {
    const auto dir = d / ("n" + std::to_string(n));
    copy_dir(d / "ref", dir);
    auto io = faulty_io();
    io.plan().crash = false;
    auto db = faulty_store::open(dir, small(), io);
    io.plan().fail_at = n;
    io.plan().armed = true;
    std::error_code ec;
    db.merge(cask::merge_scope::all, ec);
    const bool failed_once = io.plan().failures.load() > 0;
    io.plan().armed = false;  // one failure only
    if (failed_once) BOOST_REQUIRE_MESSAGE(ec, "step " << n << " failed but merge reported success");
    BOOST_REQUIRE_MESSAGE((contents(db) == m), "failure at step " << n);
    // Either the store goes on (then a retry works), or it refuses writes until reopened.
    std::error_code ec2;
    db.put("after", "x", ec2);
    if (!ec2) {
      db.merge(cask::merge_scope::all, ec2);
      BOOST_REQUIRE_MESSAGE(!ec2, "retry after failure at step " << n << ": " << ec2.message());
    } else {
      BOOST_REQUIRE((ec2 == cask::errc::store_failed));
    }
    db.close(ec2);
    auto again = string_store::open(dir, small());
    auto expect = m;
    if (again.contains("after")) expect["after"] = "x";
    BOOST_REQUIRE_MESSAGE((contents(again) == expect), "reopen after failure at step " << n);
    if (!failed_once) break;
  }
}
