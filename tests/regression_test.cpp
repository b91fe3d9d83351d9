// Known failures of other storage engines, one named test each, so that cask
// never repeats them. Each test stands alone; where a component test covers
// the same ground more exhaustively it is named in a comment.
#define BOOST_TEST_MODULE regression
#include <boost/test/unit_test.hpp>
#include <boost/test/data/test_case.hpp>
#include <boost/test/data/monomorphic.hpp>

#include "faulty_io.hpp"
#include "reliability_util.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <random>

using namespace cask_test;
namespace fmt = cask::format;

namespace {

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

struct traced_traits : cask::default_traits {
  using io = faulty_io;
};
using traced_store = cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, traced_traits>;
struct traced_durable_traits : traced_traits {
  using sync = cask::sync_always;
};
using traced_durable_store =
    cask::log_store<std::string, std::string, cask::default_hasher, cask::basic_codec, traced_durable_traits>;

cask::options small(std::uint64_t seg = 4096) {
  cask::options o;
  o.max_segment_bytes = seg;
  o.merge.background = false;
  return o;
}

/// Sealed (not active) segment ids of an open store.
template <class Store>
std::vector<std::uint32_t> sealed_ids(const Store& db) {
  std::vector<std::uint32_t> v;
  for (const auto& s : db.stats().per_segment)
    if (!s.active) v.push_back(s.id);
  return v;
}

/// The records of a segment file: offset and view, in file order (scanned with checksums).
struct scanned {
  std::uint64_t offset;
  std::string key;
  bool tombstone;
  std::uint32_t size;
};
std::vector<scanned> scan_file(const std::filesystem::path& p) {
  const auto b = read_file(p);
  std::vector<scanned> out;
  cask::scan_records<cask::crc32c>(reinterpret_cast<const std::byte*>(b.data()), b.size(), fmt::file_header_size,
                                    [&](const fmt::record_view& rv, std::uint64_t off) {
                                      out.push_back({off, std::string(reinterpret_cast<const char*>(rv.key.data()), rv.key.size()),
                                                     rv.is_tombstone(), rv.size});
                                    });
  return out;
}

std::filesystem::path hint_of(const std::filesystem::path& seg) {
  return seg.parent_path() / (seg.stem().string() + ".hint");
}

struct reports {
  std::vector<cask::recovery_event> events;
  cask::options opts(cask::options o = small()) {
    o.reporter = [this](const cask::recovery_event& e) { events.push_back(e); };
    return o;
  }
  std::size_t count(cask::recovery_event::kind k) const {
    return static_cast<std::size_t>(
        std::count_if(events.begin(), events.end(), [k](const auto& e) { return e.what == k; }));
  }
};

void set_mtime(const std::filesystem::path& p, std::time_t when) {
  const timespec t[2] = {{when, 0}, {when, 0}};
  BOOST_REQUIRE_EQUAL(::utimensat(AT_FDCWD, p.c_str(), t, 0), 0);
}

}  // namespace

// ---- Bitcask ----

// Bitcask issue #82: a merge of some segments dropped a tombstone while an
// older record of its key survived in a segment outside the merge; after a
// restart the deleted value came back. (Also merge_test.cpp,
// a_partial_merge_keeps_a_tombstone_that_shadows_an_older_segment.)
BOOST_AUTO_TEST_CASE(bitcask_82_tombstone_dropped_in_partial_merge) {
  temp_dir d("r82");
  {
    auto db = pick_store::open(d.path(), small());
    db.put("victim", "old");  // segment 1
    for (int i = 0; i < 60; ++i) db.put(key_of(i), value_of(i));
    db.erase("victim");       // a later segment
    for (int i = 60; i < 120; ++i) db.put(key_of(i), value_of(i));
    const auto sealed = sealed_ids(db);
    BOOST_REQUIRE(sealed.size() >= 3u);
    BOOST_REQUIRE_EQUAL(sealed.front(), 1u);
    // Merge every sealed segment except the one holding the old value.
    pick_policy::picks.assign(sealed.begin() + 1, sealed.end());
    const auto r = db.merge();
    BOOST_TEST(r.segments_in == sealed.size() - 1);
    BOOST_TEST(r.tombstones_dropped == 0u);  // it still shadows segment 1
    BOOST_TEST(!db.contains("victim"));
  }
  for (int round = 0; round < 2; ++round) {  // the bug showed after a restart
    auto db = pick_store::open(d.path(), small());
    BOOST_REQUIRE_MESSAGE(!db.contains("victim"), "the deleted value came back, round " << round);
    BOOST_TEST(db.stats().per_segment.front().id == 1u);
  }
  {
    // Once nothing older survives outside it, a full merge may drop the tombstone.
    auto db = pick_store::open(d.path(), small());
    const auto r = db.merge(cask::merge_scope::all);
    BOOST_TEST(r.tombstones_dropped == 1u);
  }
  auto db = pick_store::open(d.path(), small());
  BOOST_TEST(!db.contains("victim"));
  for (int i = 0; i < 120; ++i) BOOST_REQUIRE(db.get(key_of(i)) == value_of(i));
}

// A key's put and its tombstone inside one merge (in one segment, or in two
// segments merged together): both go, and the key stays deleted; a put after
// the tombstone survives. (Also merge_test.cpp,
// a_key_and_its_tombstone_in_the_same_segment_are_both_dropped.)
BOOST_AUTO_TEST_CASE(key_and_tombstone_in_the_same_merged_segment) {
  temp_dir d("same");
  {
    auto db = pick_store::open(d.path(), small());
    db.put("one", "x");
    db.erase("one");     // same segment as its put
    db.put("again", "1");
    db.erase("again");
    db.put("again", "2");  // rewritten after its tombstone, same segment
    db.put("two", "y");
    for (int i = 0; i < 60; ++i) db.put(key_of(i), value_of(i));  // seals segment 1
    db.erase("two");     // segment 2: tombstone apart from its put, but merged with it
    for (int i = 60; i < 120; ++i) db.put(key_of(i), value_of(i));
    const auto sealed = sealed_ids(db);
    BOOST_REQUIRE(sealed.size() >= 2u);
    pick_policy::picks = {1};
    auto r = db.merge();
    BOOST_TEST(r.tombstones_dropped == 2u);  // "one" and the first "again": their puts are in the merge
    BOOST_TEST(!db.contains("one"));
    BOOST_TEST(*db.get("again") == "2");
    BOOST_TEST(!db.contains("two"));
    r = db.merge(cask::merge_scope::all);
    BOOST_TEST(r.tombstones_dropped == 1u);  // "two": nothing older survives outside the merge
  }
  for (int round = 0; round < 2; ++round) {
    auto db = pick_store::open(d.path(), small());
    BOOST_TEST(!db.contains("one"));
    BOOST_TEST(*db.get("again") == "2");
    BOOST_TEST(!db.contains("two"));
    for (int i = 0; i < 120; ++i) BOOST_REQUIRE(db.get(key_of(i)) == value_of(i));
    db.merge(cask::merge_scope::all);
  }
}

// A put or erase that lands while a merge is copying, or after it committed
// but before it installed its results, wins over the merge's copy: the merge
// must move a keydir entry only if it still points at the record it copied.
// Driven at exact points through an I/O hook (merge_test.cpp,
// puts_and_erases_racing_a_merge_win, races threads freely).
BOOST_AUTO_TEST_CASE(merge_racing_put_and_erase) {
  struct window {
    const char* name;
    io_call call;
    const char* suffix;
  };
  // While copying: the output's fdatasync, before the manifest exists.
  // Committed, not installed: the rename of an output into place.
  for (const window w : {window{"copy", call_sync, ".cask.tmp"}, window{"install", call_rename, ".cask.tmp"}}) {
    temp_dir d(std::string("race-") + w.name);
    model m;
    {
      auto db = string_store::open(d.path(), small());
      for (int i = 0; i < 80; ++i) db.put(key_of(i), value_of(i)), m[key_of(i)] = value_of(i);
      db.put("erased-then-back", "old");
      db.erase("erased-then-back");
      for (int i = 80; i < 120; ++i) db.put(key_of(i), value_of(i)), m[key_of(i)] = value_of(i);
    }
    faulty_io io;
    auto db = traced_store::open(d.path(), small(), io);  // a fresh, empty active segment: the hook's writes fit
    BOOST_REQUIRE(sealed_ids(db).size() >= 2u);
    bool fired = false;
    io.plan().hook = [&](io_call c, const std::filesystem::path& p) {
      if (fired || c != w.call || !p.string().ends_with(w.suffix)) return;
      fired = true;
      db.put(key_of(3), "newer than the merge's copy");
      db.erase(key_of(5));
      db.put("erased-then-back", "new");
      db.erase(key_of(100));
      db.put(key_of(100), "erased and rewritten");
    };
    m[key_of(3)] = "newer than the merge's copy";
    m.erase(key_of(5));
    m["erased-then-back"] = "new";
    m[key_of(100)] = "erased and rewritten";
    io.plan().armed = true;
    const auto r = db.merge(cask::merge_scope::all);
    io.plan().armed = false;
    BOOST_REQUIRE_MESSAGE(fired, w.name);
    BOOST_TEST(r.segments_in > 1u);
    BOOST_TEST((contents(db) == m), w.name);
    db.close();
    for (int round = 0; round < 2; ++round) {
      auto again = string_store::open(d.path(), small());
      BOOST_REQUIRE_MESSAGE((contents(again) == m), w.name << " reopen " << round);
      again.merge(cask::merge_scope::all);
      BOOST_REQUIRE((contents(again) == m));
    }
  }
}

// Bitcask trusted hint files and followed an entry past the end of a data
// file cut short by a crash. cask uses a hint only if its trailer names the
// segment's exact size and every entry lies inside the segment; otherwise it
// scans. (hint_test.cpp, a_hint_that_points_past_its_segment_or_is_stale_is_ignored,
// covers the first variant.)
BOOST_AUTO_TEST_CASE(hint_pointing_past_end_of_segment) {
  temp_dir d("hintpast");
  model m;
  auto o = small();
  o.keydir_snapshot = false;  // the hint is what is tested
  {
    auto db = string_store::open(d / "ref", o);
    for (int i = 0; i < 100; ++i) db.put(key_of(i), value_of(i, 60)), m[key_of(i)] = value_of(i, 60);
  }
  const auto seg = segment_files(d / "ref").at(0);
  const auto hint = hint_of(seg);
  BOOST_REQUIRE(std::filesystem::exists(hint));
  const auto seg_size = std::filesystem::file_size(seg);
  const auto recs = scan_file(seg);

  // (a) an entry's offset at the end of the segment; (b) a record that runs past the end.
  for (int variant = 0; variant < 2; ++variant) {
    const auto dir = d / ("v" + std::to_string(variant));
    copy_dir(d / "ref", dir);
    // The same entries, the first one changed, written again by hint_builder
    // (so every checksum holds).
    const auto original = read_file(hint);
    const std::span<const std::byte> image(reinterpret_cast<const std::byte*>(original.data()), original.size());
    cask::hint_builder<cask::crc32c> b(1, fmt::codec_id<cask::crc32c>(cask::basic_codec::name));
    bool first = true;
    cask::for_each_hint_entry(image, [&](const cask::hint_entry& e) {
      fmt::record_view rv;
      rv.seq = e.seq;
      rv.flags = e.flags;
      rv.size = e.size;
      rv.key = e.key;
      std::uint32_t at = e.offset;
      if (first && variant == 0) at = static_cast<std::uint32_t>(seg_size);
      if (first && variant == 1) rv.size = static_cast<std::uint32_t>(seg_size);
      first = false;
      b.add(rv, at, cask::default_hasher{}(rv.key));
    });
    const auto rebuilt = std::move(b).finish(seg_size);
    std::vector<char> h(rebuilt.size());
    std::memcpy(h.data(), rebuilt.data(), h.size());
    write_file(dir / hint.filename(), h);
    auto db = string_store::open(dir, o);
    BOOST_TEST(db.stats().recovered_by_scan == 1u, "variant " << variant);
    BOOST_TEST((contents(db) == m));
  }
  // (c) the segment lost its last record behind the hint's back: the hint is
  //     not followed past the new end; the size change is reported as damage
  //     (or, under corruption_policy::skip, what is left is scanned).
  {
    const auto dir = d / "shrunk";
    copy_dir(d / "ref", dir);
    std::filesystem::resize_file(dir / seg.filename(), recs.back().offset);
    std::error_code ec;
    auto failed = string_store::open(dir, small(), ec);
    if (failed) {
      BOOST_TEST(failed->stats().recovered_by_scan == 1u);
      BOOST_TEST(!failed->contains(recs.back().key));
    } else {
      BOOST_TEST((ec == cask::errc::corruption));
    }
    failed.reset();
    cask::options o = small();
    o.on_corruption = cask::corruption_policy::skip;
    auto db = string_store::open(dir, o);
    BOOST_TEST(db.stats().recovered_by_scan == 1u);
    auto expect = m;
    expect.erase(recs.back().key);  // every key was written once
    BOOST_TEST((contents(db) == expect));
  }
  // (d) the same size, but the hinted record's bytes read back as zeros: the
  //     hint is used, and the record is an error when read, never a value.
  {
    const auto dir = d / "zeroed";
    copy_dir(d / "ref", dir);
    auto b = read_file(dir / seg.filename());
    const auto& r = recs.at(recs.size() / 2);
    std::fill(b.begin() + static_cast<long>(r.offset), b.begin() + static_cast<long>(r.offset + r.size), '\0');
    write_file(dir / seg.filename(), b);
    auto db = string_store::open(dir, small());
    BOOST_TEST(db.stats().recovered_by_scan == 0u);
    std::error_code ec;
    const auto v = db.get(r.key, ec);
    BOOST_TEST(!v.has_value());
    BOOST_TEST(static_cast<bool>(ec));
    for (const auto& [k, v2] : m)
      if (k != r.key) BOOST_REQUIRE(db.get(k) == v2);
  }
}

// Bitcask's hint path (and some LSM engines' index blocks) loaded entries
// without checking the records they point to. cask does not re-check hinted
// records at open, nor those a keydir snapshot points at; it checks every
// record's checksum when it is read, copied by a merge, or iterated.
// (hint_test.cpp, damage_in_a_hinted_segment_is_caught_when_the_record_is_read.)
BOOST_DATA_TEST_CASE(records_loaded_without_checksum_are_never_returned_unverified, boost::unit_test::data::make({false, true}),
                     snapshot) {
  temp_dir d("unverified");
  model m;
  auto o = small();
  o.keydir_snapshot = snapshot;
  {
    auto db = string_store::open(d.path(), o);
    for (int i = 0; i < 100; ++i) db.put(key_of(i), value_of(i, 60)), m[key_of(i)] = value_of(i, 60);
  }
  const auto seg = segment_files(d.path()).at(0);
  const auto recs = scan_file(seg);
  BOOST_REQUIRE(recs.size() > 10u);
  // Damage: a value byte of one record, the value-length field of another, a key byte of a third.
  auto b = read_file(seg);
  const auto& val_hit = recs[2];
  const auto& len_hit = recs[5];
  const auto& key_hit = recs[8];
  b[val_hit.offset + fmt::record_header_size + val_hit.key.size() + 3] ^= 0x20;
  b[len_hit.offset + fmt::value_len_offset] ^= 0x01;
  b[key_hit.offset + fmt::record_header_size + 4] ^= 0x01;
  write_file(seg, b);

  auto db = string_store::open(d.path(), o);
  if (snapshot)
    BOOST_REQUIRE(db.stats().recovered_from_snapshot);  // the index came from the snapshot, unverified
  else
    BOOST_REQUIRE(db.stats().recovered_from_hints >= 1u);  // or from the hint, unverified
  BOOST_REQUIRE(db.stats().recovered_by_scan == 0u);
  for (const auto* r : {&val_hit, &len_hit}) {
    std::error_code ec;
    BOOST_TEST(!db.get(r->key, ec).has_value());
    BOOST_TEST((ec == cask::errc::checksum_mismatch), r->key << ": " << ec.message());
    BOOST_TEST(!db.get_ref(r->key, ec).has_value());
    BOOST_TEST(static_cast<bool>(ec));
    BOOST_TEST(!db.contains(r->key, ec));
    BOOST_TEST(static_cast<bool>(ec));
    BOOST_CHECK_THROW((void)db.get(r->key), cask::error);
  }
  {
    // A damaged key reads as an error or as absent, never as another key's value.
    std::error_code ec;
    const auto v = db.get(key_hit.key, ec);
    BOOST_TEST(!v.has_value());
  }
  // Iteration and merging check every record too.
  BOOST_CHECK_THROW(db.for_each([](const std::string&, const std::string&) {}), cask::error);
  std::error_code ec;
  BOOST_TEST(db.merge(cask::merge_scope::all, ec).segments_in == 0u);
  BOOST_TEST((ec == cask::errc::checksum_mismatch));
  // Every undamaged record still reads back.
  for (const auto& r : recs)
    if (r.key != val_hit.key && r.key != len_hit.key && r.key != key_hit.key) BOOST_REQUIRE(db.get(r.key) == m[r.key]);
}

// Bitcask used file timestamps (and some engines use the wall clock to order
// writes or pick the newest file); a clock step or a copied directory then
// reorders history. cask orders records by sequence number only: scrambling
// the files' modification times changes nothing.
BOOST_AUTO_TEST_CASE(correctness_independent_of_wall_clock) {
  temp_dir d("clock");
  model m;
  auto session = [&](int s) {
    auto db = string_store::open(d.path(), small());
    for (int i = 0; i < 80; ++i) {
      const std::string k = key_of(i % 40);
      if ((i + s) % 9 == 0) {
        if (db.erase(k)) m.erase(k);
      } else {
        db.put(k, value_of(i * 10 + s, 50));
        m[k] = value_of(i * 10 + s, 50);
      }
    }
  };
  auto scramble = [&](unsigned seed) {
    std::mt19937 g(seed);
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(d.path())) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    // Newer files get older times, then some random jumps far into the past and the future.
    const std::time_t now = std::time(nullptr);
    for (std::size_t i = 0; i < files.size(); ++i) {
      std::time_t t = now - static_cast<std::time_t>(i) * 86400;
      if (g() % 3 == 0) t = static_cast<std::time_t>(g() % 1000);              // 1970
      if (g() % 3 == 0) t = now + static_cast<std::time_t>(g() % 10) * 31536000;  // years ahead
      set_mtime(files[i], t);
    }
  };
  for (int s = 0; s < 4; ++s) {
    session(s);
    scramble(static_cast<unsigned>(s));
    auto db = string_store::open(d.path(), small());
    BOOST_REQUIRE_MESSAGE((contents(db) == m), "after session " << s);
  }
  // Without hints (every segment scanned), after a merge, and after both.
  remove_index_files(d.path());
  scramble(10);
  {
    auto db = string_store::open(d.path(), small());
    BOOST_TEST(db.stats().recovered_from_hints == 0u);
    BOOST_REQUIRE((contents(db) == m));
    db.merge(cask::merge_scope::all);
    BOOST_REQUIRE((contents(db) == m));
  }
  scramble(11);
  auto db = string_store::open(d.path(), small());
  BOOST_REQUIRE((contents(db) == m));
}

// ---- LevelDB ----

// LevelDB once started writing a new log file before the old one was synced,
// so a crash could keep later records and lose earlier ones. cask makes a
// segment durable before the next one becomes part of the store: sealing it
// itself (msync, cut to its data, fdatasync) before it creates the next one
// or, sealing in the background (options::background_seal), cutting it and
// creating the next one as `<id>.cask.new`, which the sealing thread renames
// only after the msync and fdatasync (recovery keeps an unnamed one only if
// its predecessor proved complete: recovery_test.cpp). A seal that fails
// leaves no next segment named and the store refusing writes.
BOOST_AUTO_TEST_CASE(leveldb_old_log_synced_before_next_is_used) {
  scratch_dir d("oldlog");
  for (const bool background : {false, true}) {
    faulty_io io;
    io.plan().tracing = true;
    auto o = small();
    o.background_seal = background;
    auto db = traced_store::open(d / (background ? "trace_background" : "trace"), o, io);
    for (int i = 0; i < 200; ++i) db.put(key_of(i), value_of(i));
    db.sync();  // (waits for the last seal)
    io.plan().tracing = false;
    const auto trace = io.plan().trace();
    auto index_of = [&](io_call c, const std::string& name, std::size_t from = 0) {
      for (std::size_t i = from; i < trace.size(); ++i)
        if (trace[i].call == c && trace[i].path.filename() == name) return i;
      return trace.size();
    };
    std::size_t rotations = 0;
    for (std::uint32_t id = 1;; ++id) {
      const auto name = cask::segment<cask::posix_io>::file_name(id);
      const auto next_name = cask::segment<cask::posix_io>::file_name(id + 1);
      // Where the next segment becomes part of the store: its creation
      // under its name, or its rename to it.
      const auto next = background ? index_of(call_rename, next_name + ".new") : index_of(call_create, next_name);
      if (next == trace.size()) break;
      // (A segment created unnamed keeps that name in the trace.)
      const auto own = background && id > 1 ? name + ".new" : name;
      const auto created = index_of(call_create, own);
      if (background) {
        // Cut to its data, then msync and fdatasync; the next one's header
        // made durable, renamed, and the directory synced after that.
        const auto cut = index_of(call_truncate, own, created);
        const auto flushed = index_of(call_flush, own, cut);
        const auto synced = index_of(call_sync, own, flushed);
        const auto header = index_of(call_flush, next_name + ".new", synced);
        const auto dir_synced = index_of(call_sync_dir, "trace_background", next);
        BOOST_REQUIRE_MESSAGE(created < cut && cut < flushed && flushed < synced && synced < header && header < next &&
                                  dir_synced < trace.size(),
                              "segment " << id << ": create " << created << ", truncate " << cut << ", msync "
                                         << flushed << ", fdatasync " << synced << ", next's header msync " << header
                                         << ", next renamed " << next << ", directory synced " << dir_synced);
      } else {
        const auto flushed = index_of(call_flush, name, created);
        const auto cut = index_of(call_truncate, name, flushed);
        const auto synced = index_of(call_sync, name, cut);
        BOOST_REQUIRE_MESSAGE(created < flushed && flushed < cut && cut < synced && synced < next,
                              "segment " << id << ": create " << created << ", msync " << flushed << ", truncate "
                                         << cut << ", fdatasync " << synced << ", next created " << next);
      }
      ++rotations;
    }
    BOOST_TEST(rotations >= 4u, (background ? "in the background: " : "") << rotations << " rotations");
  }
  // The seal's fdatasync fails: the next segment never appears under its
  // name, a put fails (the one that sealed or, sealing in the background, a
  // later one), and the store refuses writes until reopened.
  model m;
  {
    faulty_io io;
    auto db = traced_store::open(d / "fail", small(), io);
    io.plan().crash = false;
    io.plan().calls = call_sync;
    io.plan().filter = [](io_call, const std::filesystem::path& p) { return p.extension() == ".cask"; };
    io.plan().fail_at = 0;
    io.plan().armed = true;
    std::error_code ec;
    int i = 0;
    for (; i < 200; ++i) {
      db.put(key_of(i), value_of(i), ec);
      if (ec) break;
      m[key_of(i)] = value_of(i);
    }
    BOOST_REQUIRE(ec);
    BOOST_TEST(io.plan().failures.load() == 1);
    BOOST_TEST(!std::filesystem::exists(d / "fail" / "0000000002.cask"));
    db.put("after", "x", ec);
    BOOST_TEST((ec == cask::errc::store_failed));
    BOOST_TEST(!db.erase(key_of(0), ec));
    BOOST_TEST((ec == cask::errc::store_failed));
  }
  auto db = string_store::open(d / "fail", small());
  auto got = contents(db);
  BOOST_TEST(got.size() >= m.size());  // the failed put may or may not be there
  for (const auto& [k, v] : m) BOOST_REQUIRE(got[k] == v);
}

// LevelDB and many others once created files without syncing their directory,
// so a power loss could lose the new file's name with all it held. Under
// sync_always, a new segment's name is made durable (fsync of the directory)
// before any record in it is acknowledged; merge outputs and hint files are
// renamed into place and the directory synced before the operation returns.
BOOST_AUTO_TEST_CASE(missing_directory_fsync) {
  scratch_dir d("dirsync");
  const auto dir = d / "store";
  faulty_io io;
  io.plan().tracing = true;
  std::vector<std::size_t> acks;  // trace length when each put returned
  {
    auto db = traced_durable_store::open(dir, small(), io);
    for (int i = 0; i < 150; ++i) {
      db.put(key_of(i % 50), value_of(i));
      acks.push_back(io.plan().trace().size());
    }
    const std::size_t before_merge = io.plan().trace().size();
    db.merge(cask::merge_scope::all);
    acks.push_back(io.plan().trace().size());
    db.close();  // joins the thread that writes hint files
    const auto trace = io.plan().trace();
    auto synced_between = [&](std::size_t from, std::size_t to) {
      for (std::size_t i = from; i < to; ++i)
        if (trace[i].call == call_sync_dir && trace[i].path == dir && !trace[i].failed) return true;
      return false;
    };
    std::size_t created = 0;
    for (std::size_t i = 0; i < trace.size(); ++i) {
      const auto& c = trace[i];
      const bool new_name = (c.call == call_create && c.path.extension() == ".cask") ||
                            (c.call == call_rename && c.path.extension() == ".tmp");
      if (!new_name) continue;
      ++created;
      const auto ack = std::upper_bound(acks.begin(), acks.end(), i);
      const std::size_t by = ack == acks.end() ? trace.size() : *ack;
      // The keydir snapshot is never synced: open trusts it only when it
      // matches every segment file (FORMAT.md "Keydir snapshot").
      if (c.path.filename() == "KEYDIR.tmp") continue;
      // Hints are written off the write path; they need their sync before they are used, not before an ack.
      if (c.path.string().find(".hint") != std::string::npos) {
        BOOST_TEST(synced_between(i + 1, trace.size()), c.path);
        continue;
      }
      BOOST_REQUIRE_MESSAGE(synced_between(i + 1, by), call_name(c.call) << " " << c.path << " at call " << i
                                                                    << ": no directory fsync before the next ack");
    }
    BOOST_TEST(created >= 5u);
    // Every acknowledged put under sync_always was preceded by a flush of its record.
    for (std::size_t a = 0; a + 1 < acks.size() && acks[a + 1] <= before_merge; ++a) {
      bool flushed = false;
      for (std::size_t i = acks[a]; i < acks[a + 1]; ++i)
        flushed = flushed || ((trace[i].call == call_flush || trace[i].call == call_sync) && !trace[i].failed &&
                              trace[i].path.extension() == ".cask");
      BOOST_REQUIRE_MESSAGE(flushed, "put " << a + 1 << " acknowledged without a flush");
    }
  }
}

// A crash leaves garbage (never-written pages, a half-written record, stale
// bytes) after the last complete record of the newest segment. LevelDB and
// RocksDB had bugs both ways: reading past garbage into stale records, and
// refusing to open. cask cuts the tail at the first record that does not
// validate, reports it, and never resurrects a valid-looking stale record
// found after the garbage. (recovery_test.cpp, torn_tail_is_cut_at_every_byte_offset,
// cuts at every offset.)
BOOST_AUTO_TEST_CASE(garbage_tail) {
  scratch_dir d("garbage");
  model m;
  {
    // A crash image: the writer dies with its segment active (preallocated,
    // zeros after the data, no hint file).
    faulty_io io;
    auto db = traced_store::open(d / "ref", small(64 << 10), io);
    db.put("stale", "deleted before the crash");
    for (int i = 0; i < 20; ++i) db.put(key_of(i), value_of(i)), m[key_of(i)] = value_of(i);
    db.erase("stale");
    io.plan().crashed = true;
  }
  const auto seg = segment_files(d / "ref").at(0);
  BOOST_REQUIRE(!std::filesystem::exists(hint_of(seg)));
  const auto bytes = read_file(seg);
  const auto recs = scan_file(seg);
  const std::uint64_t data_end = recs.back().offset + recs.back().size;
  BOOST_REQUIRE(bytes.size() > data_end + 4096);
  std::mt19937 g(7);
  for (int variant = 0; variant < 3; ++variant) {
    const auto dir = d / ("v" + std::to_string(variant));
    copy_dir(d / "ref", dir);
    auto b = bytes;
    std::uint64_t at = data_end;
    for (int i = 0; i < 300; ++i) b[at++] = static_cast<char>(1 + g() % 255);
    if (variant == 1) {
      // After the garbage, a stale copy of the first record ("stale" -> its old value), checksum intact.
      std::copy(bytes.begin() + static_cast<long>(recs[0].offset),
                bytes.begin() + static_cast<long>(recs[0].offset + recs[0].size), b.begin() + static_cast<long>(at));
      at += recs[0].size;
    }
    if (variant == 2) {
      for (; at < b.size(); ++at) b[at] = static_cast<char>(1 + g() % 255);  // garbage to the end, no zeros
    }
    write_file(dir / seg.filename(), b);
    reports r;
    {
      auto db = string_store::open(dir, r.opts(small(64 << 10)));
      BOOST_REQUIRE_MESSAGE((contents(db) == m), "variant " << variant);
      BOOST_TEST(!db.contains("stale"));
      BOOST_REQUIRE_EQUAL(r.count(cask::recovery_event::kind::torn_tail), 1u);
      BOOST_TEST(r.events.at(0).file == dir / seg.filename());
      BOOST_TEST(r.events.at(0).offset == data_end);
      BOOST_TEST(r.events.at(0).bytes == at - data_end);
      if (variant == 1) BOOST_TEST(r.events.at(0).detail.find("validate") != std::string::npos);
      db.put("after", "garbage");
    }
    BOOST_TEST(std::filesystem::file_size(dir / seg.filename()) == data_end);
    reports r2;
    auto db = string_store::open(dir, r2.opts(small(64 << 10)));
    auto expect = m;
    expect["after"] = "garbage";
    BOOST_TEST((contents(db) == expect));
    BOOST_TEST(r2.events.empty());
  }
  // Garbage after the data of a sealed segment is damage, not a tail: it is reported, not cut.
  {
    const auto dir = d / "sealed";
    copy_dir(d / "ref", dir);
    { string_store::open(dir, small(64 << 10)).put("newer", "segment"); }  // cuts the tail, seals segment 1
    BOOST_REQUIRE_EQUAL(std::filesystem::file_size(dir / seg.filename()), data_end);
    auto b = read_file(dir / seg.filename());
    b.insert(b.end(), 100, '\x5a');
    write_file(dir / seg.filename(), b);
    std::error_code ec;
    BOOST_TEST(!string_store::open(dir, small(64 << 10), ec).has_value());
    BOOST_TEST((ec == cask::errc::corruption || ec == cask::errc::checksum_mismatch));
    try {
      (void)string_store::open(dir, small(64 << 10));
      BOOST_FAIL("expected an exception");
    } catch (const cask::error& e) {
      BOOST_TEST(e.path() == dir / seg.filename());
      BOOST_TEST(e.offset() == data_end);
    }
  }
}

// The zeros after the newest segment's data are preallocated space. Where the
// file system reports them as a hole (posix_io::file::data_end), recovery does
// not read them; a byte or a valid record written far into that space must
// still be found, reported and cut, as garbage_tail checks for bytes next to
// the data. Each image is made by a crash, not copied: a copy fills the holes.
BOOST_AUTO_TEST_CASE(garbage_far_into_a_preallocated_tail) {
  scratch_dir d("holes");
  constexpr std::uint64_t seg_bytes = 1 << 20, far = 768 << 10;
  model m;
  for (int i = 0; i < 20; ++i) m[key_of(i)] = value_of(i);
  for (int variant = 0; variant < 3; ++variant) {
    const auto dir = d / ("v" + std::to_string(variant));
    {
      faulty_io io;
      auto o = small(seg_bytes);
      o.prefault_bytes = 0;  // nothing mapped ahead: the tail stays unwritten
      auto db = traced_store::open(dir, o, io);
      for (const auto& [k, v] : m) db.put(k, v);
      io.plan().crashed = true;
    }
    const auto seg = segment_files(dir).at(0);
    BOOST_REQUIRE(!std::filesystem::exists(hint_of(seg)));
    BOOST_REQUIRE_EQUAL(std::filesystem::file_size(seg), seg_bytes);
    const auto recs = scan_file(seg);
    BOOST_REQUIRE_EQUAL(recs.size(), m.size());
    const std::uint64_t data_end = recs.back().offset + recs.back().size;
    std::uint64_t nonzero_end = data_end;
    {
      std::error_code ec;
      auto f = cask::posix_io{}.open(seg, cask::open_mode::read_write, ec);
      BOOST_REQUIRE(!ec);
      if (variant == 1) {
        const std::byte b{0x5a};
        f.write_at(&b, 1, far, ec);
        nonzero_end = far + 1;
      }
      if (variant == 2) {
        // A stale copy of the first record, checksum intact.
        const auto bytes = read_file(seg);
        f.write_at(reinterpret_cast<const std::byte*>(bytes.data()) + recs[0].offset, recs[0].size, far, ec);
        nonzero_end = far + recs[0].size;
      }
      BOOST_REQUIRE(!ec);
      // What data_end() must hold on any file system: nothing nonzero past it.
      const std::uint64_t de = f.data_end(seg_bytes);
      BOOST_TEST(de >= nonzero_end);
      BOOST_TEST(de <= seg_bytes);
      if (variant == 0) BOOST_TEST_MESSAGE("data_end " << de << " of " << seg_bytes << " (holes reported: " << (de < seg_bytes) << ")");
    }
    reports r;
    {
      auto db = string_store::open(dir, r.opts(small(seg_bytes)));
      BOOST_REQUIRE_MESSAGE((contents(db) == m), "variant " << variant);
      if (variant == 0) {
        BOOST_TEST(r.events.empty());
      } else {
        BOOST_REQUIRE_EQUAL(r.count(cask::recovery_event::kind::torn_tail), 1u);
        BOOST_TEST(r.events.at(0).file == seg);
        BOOST_TEST(r.events.at(0).offset == data_end);
        BOOST_TEST(r.events.at(0).bytes == nonzero_end - data_end);
        if (variant == 2) BOOST_TEST(r.events.at(0).detail.find("follow at offset " + std::to_string(far)) != std::string::npos);
      }
    }
    BOOST_TEST(std::filesystem::file_size(seg) == data_end);
    reports r2;
    auto db = string_store::open(dir, r2.opts(small(seg_bytes)));
    BOOST_TEST((contents(db) == m));
    BOOST_TEST(r2.events.empty());
  }
}

// LevelDB once appended new records after a torn tail without cutting it, so
// the next recovery stopped at the garbage and lost everything written since.
// cask cuts the tail (durably) and writes into a new segment; records written
// after a recovery survive the next crash, cycle after cycle.
BOOST_AUTO_TEST_CASE(appending_after_torn_tail) {
  scratch_dir d("append");
  const auto dir = d / "store";
  model m;
  for (int cycle = 0; cycle < 4; ++cycle) {
    {
      // Write, then "crash": no seal, no close; the records stay in the page
      // cache and the active segment keeps its preallocated zeros.
      faulty_io io;
      auto db = traced_store::open(dir, small(64 << 10), io);
      BOOST_REQUIRE_MESSAGE((contents(db) == m), "cycle " << cycle);
      for (int i = 0; i < 30; ++i) {
        // Appended piece by piece: GCC 12 at -O3 warns falsely (-Wrestrict) on "c" + std::to_string(...).
        std::string k = "c";
        k += std::to_string(cycle);
        k += '-';
        k += key_of(i);
        db.put(k, value_of(i + 100u * static_cast<unsigned>(cycle)));
        m[k] = value_of(i + 100u * static_cast<unsigned>(cycle));
      }
      db.put("torn", "x");  // the record the crash tears
      io.plan().crashed = true;
    }
    // Tear the last record: half of it remains, then the preallocated zeros.
    const auto segs = segment_files(dir);
    const auto newest = segs.back();
    const auto recs = scan_file(newest);
    BOOST_REQUIRE(!recs.empty());
    BOOST_REQUIRE_EQUAL(recs.back().key, "torn");
    auto b = read_file(newest);
    const auto at = recs.back().offset;
    std::fill(b.begin() + static_cast<long>(at + recs.back().size / 2), b.end(), '\0');
    write_file(newest, b);
    reports r;
    {
      auto db = string_store::open(dir, r.opts(small(64 << 10)));
      BOOST_REQUIRE_MESSAGE((contents(db) == m), "recovery of cycle " << cycle);
      BOOST_REQUIRE_EQUAL(r.count(cask::recovery_event::kind::torn_tail), 1u);
      BOOST_TEST(r.events.at(0).offset == at);
      // The cut is on disk before anything new is written.
      BOOST_TEST(std::filesystem::file_size(newest) == at);
    }
  }
  reports r;
  auto db = string_store::open(dir, r.opts(small(64 << 10)));
  BOOST_TEST((contents(db) == m));
  BOOST_TEST(r.events.empty());
}

// Regression: a store created by open() (create_if_missing) made its
// directory with mkdir but never fsynced the parent directory, so after a
// power loss the whole store directory - and every write acknowledged under
// sync_always - could be gone (the "missing directory fsync" of the ALICE
// study, one level up). Now the parent is synced before open returns.
BOOST_AUTO_TEST_CASE(a_new_store_directory_is_synced_in_its_parent) {
  scratch_dir d("parent");
  const auto dir = d / "new-store";
  faulty_io io;
  io.plan().tracing = true;
  {
    auto db = traced_durable_store::open(dir, small(), io);
    db.put("k", "acknowledged under sync_always");
  }
  bool made = false, parent_synced = false;
  for (const auto& c : io.plan().trace()) {
    made = made || (c.call == call_mkdir && c.path == dir);
    parent_synced = parent_synced || (made && c.call == call_sync_dir && c.path == d.path());
  }
  BOOST_TEST(made);
  BOOST_TEST(parent_synced);
}
