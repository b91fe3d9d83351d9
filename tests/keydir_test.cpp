// hash_keydir: the map operations, growth, collisions, memory per entry, and
// lock-free readers beside a writer (run under TSan by the concurrency suite).
#define BOOST_TEST_MODULE keydir
#include <boost/test/unit_test.hpp>

#include <cask/keydir.hpp>

#include <atomic>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <vector>

using cask::hash_keydir;
using cask::location;

namespace {
// The "log" of these tests: location offset i holds key keys[i]; a match compares keys.
struct fixture {
  cask::detail::epoch_domain epoch;
  hash_keydir kd{epoch};
  std::vector<std::uint64_t> key_at;  // offset -> key

  location put_record(std::uint64_t key) {
    key_at.push_back(key);
    return {1, static_cast<std::uint32_t>(key_at.size() - 1), false};
  }
  auto match(std::uint64_t key) {
    return [this, key](location l) { return key_at[l.offset] == key; };
  }
  // A deliberately weak hash: many keys share one, so matching by key is exercised.
  static std::uint64_t weak_hash(std::uint64_t key) { return (key % 97) * 0x9E3779B97F4A7C15ull; }
  std::optional<location> find(std::uint64_t key, bool weak = false) {
    cask::detail::epoch_domain::guard g(epoch);
    return kd.find(weak ? weak_hash(key) : mix(key), match(key));
  }
  static std::uint64_t mix(std::uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
  }
};
}  // namespace

BOOST_FIXTURE_TEST_CASE(upsert_find_erase_behave_like_a_map, fixture) {
  std::map<std::uint64_t, location> model;
  std::mt19937_64 g(1);
  for (int i = 0; i < 200000; ++i) {
    const std::uint64_t key = g() % 5000;
    const int op = static_cast<int>(g() % 10);
    if (op < 7) {
      const location l = put_record(key);
      const auto old = kd.upsert(mix(key), l, match(key));
      BOOST_REQUIRE_EQUAL(old.has_value(), model.count(key) == 1);
      if (old) BOOST_REQUIRE(*old == model[key]);
      model[key] = l;
    } else {
      const auto old = kd.erase(mix(key), match(key));
      BOOST_REQUIRE_EQUAL(old.has_value(), model.count(key) == 1);
      model.erase(key);
    }
  }
  BOOST_TEST(kd.size() == model.size());
  for (std::uint64_t key = 0; key < 5000; ++key) {
    const auto f = find(key);
    BOOST_REQUIRE_EQUAL(f.has_value(), model.count(key) == 1);
    if (f) BOOST_REQUIRE(*f == model[key]);
  }
}

// A probe compares a slot's tag (eight bits of the hash) before its hash:
// entries whose hashes share the shard, the home slot and the tag bits (or
// differ in the tag bits only, 0 and 2 giving one tag) must still be told
// apart by the hash alone (match accepts any record here), through erasing,
// re-inserting and the rebuilds that growing to 1024 entries in one shard takes.
BOOST_FIXTURE_TEST_CASE(hashes_with_equal_tags_are_told_apart, fixture) {
  auto any = [](location) { return true; };
  auto hash = [](std::uint64_t t, std::uint64_t b) { return 0x5a5a000000000000ull | b << 40 | t << 8 | 0x05; };
  auto at = [](std::uint64_t t, std::uint64_t b) { return location{1, static_cast<std::uint32_t>(t * 4 + b), false}; };
  auto found = [&](std::uint64_t t, std::uint64_t b) {
    cask::detail::epoch_domain::guard g(epoch);
    return kd.find(hash(t, b), any);
  };
  for (std::uint64_t b = 0; b < 4; ++b)
    for (std::uint64_t t = 0; t < 256; ++t) BOOST_REQUIRE(!kd.upsert(hash(t, b), at(t, b), any).has_value());
  BOOST_TEST(kd.size() == 1024u);
  for (std::uint64_t b = 0; b < 4; ++b)
    for (std::uint64_t t = 0; t < 256; ++t) {
      const auto f = found(t, b);
      BOOST_REQUIRE(f.has_value());
      BOOST_REQUIRE(*f == at(t, b));
    }
  for (std::uint64_t t = 0; t < 256; t += 2) {  // every other tag's entry of b = 1, and all of b = 2
    const auto e = kd.erase(hash(t, 1), any);
    BOOST_REQUIRE(e.has_value());
    BOOST_REQUIRE(*e == at(t, 1));
  }
  for (std::uint64_t t = 0; t < 256; ++t) BOOST_REQUIRE(kd.erase(hash(t, 2), any).has_value());
  BOOST_TEST(kd.size() == 1024u - 128 - 256);
  for (std::uint64_t b = 0; b < 4; ++b)
    for (std::uint64_t t = 0; t < 256; ++t) {
      const bool gone = b == 2 || (b == 1 && t % 2 == 0);
      const auto f = found(t, b);
      BOOST_REQUIRE_EQUAL(f.has_value(), !gone);
      if (f) BOOST_REQUIRE(*f == at(t, b));
    }
  // Put back into the erased slots, at new locations.
  const std::size_t slots = kd.stats().slots;
  for (std::uint64_t t = 0; t < 256; ++t) BOOST_REQUIRE(!kd.upsert(hash(t, 2), location{2, 7, false}, any).has_value());
  BOOST_TEST(kd.size() == 1024u - 128);
  BOOST_TEST(kd.stats().slots == slots);  // the erased slots were reused
  for (std::uint64_t t = 0; t < 256; ++t) {
    BOOST_REQUIRE((found(t, 2) == location{2, 7, false}));
    BOOST_REQUIRE_EQUAL(found(t, 1).has_value(), t % 2 == 1);
    BOOST_REQUIRE(found(t, 3) == at(t, 3));
  }
  BOOST_TEST(!found(7, 4).has_value());  // same shard, home and tag as stored ones, another hash
}

// Erased slots stay erased markers: an image round trip keeps them as such,
// re-inserting reuses them (the table does not grow), and purge_if() visits
// live entries only, so its count is exact.
BOOST_FIXTURE_TEST_CASE(erased_slots_are_reused_and_never_counted_as_live, fixture) {
  constexpr std::uint64_t n = 20000;
  key_at.reserve(3 * n);
  for (std::uint64_t key = 0; key < n; ++key) kd.upsert(mix(key), put_record(key), match(key));
  for (std::uint64_t key = 0; key < n; key += 2) BOOST_REQUIRE(kd.erase(mix(key), match(key)).has_value());
  BOOST_REQUIRE_EQUAL(kd.size(), n / 2);

  std::vector<std::byte> img;
  kd.save_image([&](const std::byte* p, std::size_t len) { img.insert(img.end(), p, p + len); });
  std::size_t at = 0;
  hash_keydir::image im;
  BOOST_REQUIRE(hash_keydir::load_image(
      [&](std::byte* out, std::size_t len) {
        if (img.size() - at < len) return false;
        std::memcpy(out, img.data() + at, len);
        at += len;
        return true;
      },
      img.size() * 8, [](location l) { return l.segment == 1; }, im));
  hash_keydir back(epoch);
  back.install_image(std::move(im));
  BOOST_REQUIRE_EQUAL(back.size(), n / 2);
  const std::size_t slots = back.stats().slots;

  // Re-insert the erased keys, at new locations: they go into erased slots.
  for (std::uint64_t key = 0; key < n; key += 2)
    BOOST_REQUIRE(!back.upsert(mix(key), put_record(key), match(key)).has_value());
  BOOST_TEST(back.size() == n);
  BOOST_TEST(back.stats().slots == slots);
  for (std::uint64_t key = 1; key < n; key += 2) BOOST_REQUIRE(back.erase(mix(key), match(key)).has_value());
  BOOST_TEST(back.size() == n / 2);

  // Every erased marker, from before the image and after, is passed over.
  BOOST_TEST(kd.purge_if([](location) { return true; }) == n / 2);
  BOOST_TEST(kd.size() == 0u);
  BOOST_TEST(back.purge_if([](location) { return true; }) == n / 2);
  BOOST_TEST(back.size() == 0u);
  cask::detail::epoch_domain::guard g(epoch);
  for (std::uint64_t key = 0; key < n; ++key) {
    BOOST_REQUIRE(!kd.find(mix(key), match(key)).has_value());
    BOOST_REQUIRE(!back.find(mix(key), match(key)).has_value());
  }
}

BOOST_FIXTURE_TEST_CASE(keys_with_equal_hashes_are_told_apart_by_match, fixture) {
  for (std::uint64_t key = 0; key < 3000; ++key) kd.upsert(weak_hash(key), put_record(key), match(key));
  BOOST_TEST(kd.size() == 3000u);
  for (std::uint64_t key = 0; key < 3000; ++key) {
    const auto f = find(key, true);
    BOOST_REQUIRE(f.has_value());
    BOOST_REQUIRE(key_at[f->offset] == key);
  }
  for (std::uint64_t key = 0; key < 3000; key += 2) BOOST_REQUIRE(kd.erase(weak_hash(key), match(key)));
  for (std::uint64_t key = 0; key < 3000; ++key) BOOST_REQUIRE_EQUAL(find(key, true).has_value(), key % 2 == 1);
}

BOOST_FIXTURE_TEST_CASE(replace_if_moves_only_an_entry_still_at_the_expected_location, fixture) {
  const location a = put_record(7);
  kd.upsert(mix(7), a, match(7));
  location moved = put_record(7);  // the same key, rewritten elsewhere by a merge
  moved.segment = 9;
  BOOST_TEST(kd.replace_if(mix(7), a, moved));
  BOOST_TEST((*find(7) == moved));
  // A later put won: the stale move does nothing.
  location again = put_record(7);
  again.segment = 10;
  BOOST_TEST(!kd.replace_if(mix(7), a, again));
  BOOST_TEST((*find(7) == moved));
}

BOOST_FIXTURE_TEST_CASE(upsert_keeps_the_old_entry_when_replace_says_no, fixture) {
  const location a = put_record(5);
  kd.upsert(mix(5), a, match(5));
  const location b = put_record(5);
  const auto old = kd.upsert(mix(5), b, match(5), [](location) { return false; });
  BOOST_TEST((old && *old == a));
  BOOST_TEST((*find(5) == a));
}

BOOST_FIXTURE_TEST_CASE(purge_if_removes_tombstone_entries, fixture) {
  for (std::uint64_t key = 0; key < 1000; ++key) {
    location l = put_record(key);
    l.tombstone = key % 3 == 0;
    kd.upsert(mix(key), l, match(key));
  }
  BOOST_TEST(kd.purge_if([](location l) { return l.tombstone; }) == 334u);
  BOOST_TEST(kd.size() == 666u);
  for (std::uint64_t key = 0; key < 1000; ++key) BOOST_REQUIRE_EQUAL(find(key).has_value(), key % 3 != 0);
}

BOOST_FIXTURE_TEST_CASE(remap_shard_moves_and_removes_entries, fixture) {
  constexpr std::uint64_t n = 5000;
  for (std::uint64_t key = 0; key < n; ++key) {
    location l = put_record(key);
    l.tombstone = key % 4 == 0;
    kd.upsert(mix(key), l, match(key));
  }
  for (std::uint64_t key = 0; key < n; ++key) key_at.push_back(key);  // offset i + n holds key i too
  std::size_t removed = 0, ahead = 0;
  for (std::size_t k = 0; k < hash_keydir::shards(); ++k)
    removed += kd.remap_shard(
        k, [&](location) { ++ahead; },
        [&](location l) -> std::optional<location> {
          if (l.tombstone) return std::nullopt;
          return location{l.segment, l.offset + static_cast<std::uint32_t>(n), false};
        });
  BOOST_TEST(removed == n / 4);
  BOOST_TEST(kd.size() == n - n / 4);
  BOOST_TEST(ahead > 0u);
  for (std::uint64_t key = 0; key < n; ++key) {
    const auto l = find(key);
    BOOST_REQUIRE_EQUAL(l.has_value(), key % 4 != 0);
    if (l) BOOST_REQUIRE_EQUAL(l->offset, key + n);
  }
}

BOOST_FIXTURE_TEST_CASE(remap_shard_gives_back_what_reserve_overestimated, fixture) {
  constexpr std::uint64_t n = 20000;
  kd.reserve(10 * n);
  for (std::uint64_t key = 0; key < n; ++key) kd.upsert(mix(key), put_record(key), match(key));
  const auto before = kd.stats();
  BOOST_TEST(double(before.slots) > 10.0 * double(n));
  for (std::size_t k = 0; k < hash_keydir::shards(); ++k)
    kd.remap_shard(k, [](location) {}, [](location l) -> std::optional<location> { return l; });
  const auto after = kd.stats();
  BOOST_TEST(after.entries == n);
  // Every shard rebuilt at a load of 0.55 (within rounding), and nothing lost.
  BOOST_TEST(double(after.slots) <= double(n) / 0.55 + 2.0 * hash_keydir::shards());
  for (std::uint64_t key = 0; key < n; ++key) BOOST_REQUIRE((find(key) && *find(key) == location{1, std::uint32_t(key), false}));
  // And the table still grows as usual.
  for (std::uint64_t key = n; key < 2 * n; ++key) kd.upsert(mix(key), put_record(key), match(key));
  for (std::uint64_t key = 0; key < 2 * n; ++key) BOOST_REQUIRE(find(key).has_value());
}

BOOST_FIXTURE_TEST_CASE(different_shards_may_be_written_concurrently, fixture) {
  // Recovery builds the keydir in two threads, each owning the shards of one
  // parity; under TSan this checks that they share nothing unsynchronized.
  constexpr std::uint64_t n = 40000;
  for (std::uint64_t key = 0; key < n; ++key) key_at.push_back(key);
  auto writer = [&](std::size_t parity) {
    for (std::uint64_t key = 0; key < n; ++key) {
      const std::uint64_t h = mix(key);
      if (hash_keydir::shard_index(h) % 2 != parity) continue;
      kd.upsert(h, location{1, std::uint32_t(key), false}, match(key));
      if (key % 7 == 0) kd.erase(h, match(key));
    }
  };
  std::thread other(writer, 1);
  writer(0);
  other.join();
  std::size_t expect = 0;
  for (std::uint64_t key = 0; key < n; ++key) {
    expect += key % 7 != 0;
    BOOST_REQUIRE_EQUAL(find(key).has_value(), key % 7 != 0);
  }
  BOOST_TEST(kd.size() == expect);
}

BOOST_FIXTURE_TEST_CASE(memory_per_entry_stays_below_31_bytes_at_every_size, fixture) {
  // 16-byte slots and their 1-byte tags at a load between 0.55 and 0.8: at most
  // 17 / 0.55 = 30.9 bytes per key, whatever the size (power-of-two tables
  // would reach 34 right after doubling).
  key_at.reserve(1'000'000);
  std::uint64_t key = 0;
  for (std::uint64_t n : {2'000ull, 10'000ull, 65'536ull, 100'000ull, 333'333ull, 524'288ull, 1'000'000ull}) {
    for (; key < n; ++key) kd.upsert(mix(key), put_record(key), match(key));
    const auto st = kd.stats();
    BOOST_REQUIRE_EQUAL(st.entries, n);
    const double per_key = double(st.memory_bytes) / double(st.entries);
    BOOST_TEST_MESSAGE("keydir bytes per key at " << n << " keys: " << per_key);
    // The keydir object itself (its shard headers) is counted too: a fixed
    // size that matters at a few thousand keys only.
    BOOST_TEST(per_key <= 17.0 / 0.55 + double(sizeof(hash_keydir)) / double(n), "at " << n << " keys");
    BOOST_TEST(per_key >= 17.0 / 0.8, "at " << n << " keys");
  }
}

BOOST_FIXTURE_TEST_CASE(location_packing_round_trips, fixture) {
  for (location l : {location{0, 0, false}, location{0x7fffffffu, 0xffffffffu, true}, location{5, 77, false}})
    BOOST_TEST((location::unpack(l.pack()) == l));
}

BOOST_FIXTURE_TEST_CASE(readers_see_every_stable_key_while_a_writer_churns_and_grows, fixture) {
  // Keys 0..999 stay put; keys from 1e6 up are inserted and erased meanwhile,
  // which grows and rebuilds tables under the readers' feet.
  key_at.reserve(2'000'000);
  for (std::uint64_t key = 0; key < 1000; ++key) kd.upsert(mix(key), put_record(key), match(key));
  std::atomic<bool> stop{false};
  std::atomic<long> misses{0}, reads{0};
  auto reader = [&] {
    std::mt19937_64 g(std::hash<std::thread::id>{}(std::this_thread::get_id()));
    while (!stop.load(std::memory_order_relaxed)) {
      const std::uint64_t key = g() % 1000;
      cask::detail::epoch_domain::guard guard(epoch);
      // key_at is only appended below its reserved capacity, so reading an index published before is safe.
      const auto f = kd.find(mix(key), [&](location l) { return l.offset == key; });
      if (!f) misses.fetch_add(1);
      reads.fetch_add(1, std::memory_order_relaxed);
    }
  };
  std::thread r1(reader), r2(reader);
  for (std::uint64_t round = 0; round < 20; ++round) {
    std::vector<std::uint64_t> added;
    for (std::uint64_t i = 0; i < 5000; ++i) {
      const std::uint64_t key = 1'000'000 + round * 5000 + i;
      kd.upsert(mix(key), location{2, static_cast<std::uint32_t>(key), false},
                [&](location l) { return l.offset == key; });
      added.push_back(key);
    }
    for (std::uint64_t key : added) kd.erase(mix(key), [&](location l) { return l.offset == key; });
  }
  stop = true;
  r1.join();
  r2.join();
  BOOST_TEST(misses.load() == 0);
  BOOST_TEST(reads.load() > 0);
  BOOST_TEST(kd.size() == 1000u);
}

// Images (the keydir snapshot): what save_image() writes, load_image() reads
// back as the same tables; bytes that are not a consistent set of tables are
// refused even when whoever wrote them computed a valid checksum.
BOOST_AUTO_TEST_CASE(an_image_loads_back_as_the_same_keydir_and_an_inconsistent_one_is_refused) {
  cask::detail::epoch_domain epoch;
  hash_keydir k(epoch);
  std::map<std::uint64_t, location> want;
  std::mt19937_64 rng(7);
  for (std::uint32_t i = 0; i < 5000; ++i) {
    const std::uint64_t h = rng() | (std::uint64_t{1} << 63);  // never the empty or erased marker
    const location l{1 + i % 3, 32 + i, false};
    k.upsert(h, l, [](location) { return false; });
    want[h] = l;
  }
  for (int i = 0; i < 300; ++i) {  // erased markers too
    auto it = want.begin();
    std::advance(it, static_cast<long>(rng() % want.size()));
    const location l = it->second;
    k.erase(it->first, [&](location x) { return x == l; });
    want.erase(it);
  }
  std::vector<std::byte> img;
  k.save_image([&](const std::byte* p, std::size_t n) { img.insert(img.end(), p, p + n); });
  auto load = [&](const std::vector<std::byte>& bytes, hash_keydir::image& im) {
    std::size_t at = 0;
    return hash_keydir::load_image(
        [&](std::byte* out, std::size_t n) {
          if (bytes.size() - at < n) return false;
          std::memcpy(out, bytes.data() + at, n);
          at += n;
          return true;
        },
        bytes.size() * 8, [](location l) { return l.segment >= 1 && l.segment <= 3; }, im) &&
           at == bytes.size();
  };
  hash_keydir::image im;
  BOOST_REQUIRE(load(img, im));
  hash_keydir back(epoch);
  back.install_image(std::move(im));
  BOOST_TEST(back.size() == want.size());
  for (const auto& entry : want) {
    const location l = entry.second;  // a copy: clang 14 cannot capture a structured binding
    BOOST_REQUIRE((back.find(entry.first, [&](location x) { return x == l; }) == std::optional(l)));
  }
  BOOST_TEST(back.stats().slots == k.stats().slots);

  // Images as tables again (FORMAT.md "Keydir snapshot"), so that a test can
  // change a slot and write the image back; this decoder is written from
  // the documented layout, not from the keydir's code.
  struct shard_image {
    std::uint64_t cap = 0, live = 0, used = 0;
    std::vector<std::pair<std::uint64_t, std::uint64_t>> slots;  // (hash, location); hash 0: empty
  };
  constexpr std::size_t block = 4096;
  auto decode = [&](const std::vector<std::byte>& b) {
    std::vector<shard_image> out(hash_keydir::shards());
    std::size_t at = 0;
    for (auto& sh : out) {
      sh.cap = cask::detail::load_u64(b.data() + at);
      sh.live = cask::detail::load_u64(b.data() + at + 8);
      sh.used = cask::detail::load_u64(b.data() + at + 16);
      sh.slots.assign(static_cast<std::size_t>(sh.cap), {0, 0});
      at += 24;
    }
    for (auto& sh : out)
      for (std::size_t i = 0; i < sh.cap; i += block) {
        const std::size_t n = std::min<std::size_t>(block, static_cast<std::size_t>(sh.cap) - i);
        const std::size_t bits_at = at;
        at += 8 * ((n + 63) / 64);
        for (std::size_t j = 0; j < n; ++j)
          if ((cask::detail::load_u64(b.data() + bits_at + 8 * (j / 64)) >> (j % 64)) & 1) {
            sh.slots[i + j] = {cask::detail::load_u64(b.data() + at), cask::detail::load_u64(b.data() + at + 8)};
            at += 16;
          }
      }
    BOOST_REQUIRE(at == b.size());
    return out;
  };
  auto encode = [&](const std::vector<shard_image>& shards) {
    std::vector<std::byte> b;
    auto put = [&](std::uint64_t v) {
      b.resize(b.size() + 8);
      cask::detail::store_u64(b.data() + b.size() - 8, v);
    };
    for (const auto& sh : shards) put(sh.cap), put(sh.live), put(sh.used);
    for (const auto& sh : shards)
      for (std::size_t i = 0; i < sh.cap; i += block) {
        const std::size_t n = std::min<std::size_t>(block, static_cast<std::size_t>(sh.cap) - i);
        for (std::size_t w = 0; w < (n + 63) / 64; ++w) {
          std::uint64_t word = 0;
          for (std::size_t j = 64 * w; j < std::min(n, 64 * w + 64); ++j)
            if (sh.slots[i + j].first != 0) word |= std::uint64_t{1} << (j % 64);
          put(word);
        }
        for (std::size_t j = 0; j < n; ++j)
          if (sh.slots[i + j].first != 0) put(sh.slots[i + j].first), put(sh.slots[i + j].second);
      }
    return b;
  };
  const auto tables = decode(img);
  BOOST_TEST((encode(tables) == img));  // the documented layout is the one written
  std::size_t empties = 0;
  for (const auto& [h, l] : tables[0].slots) empties += h == 0;
  BOOST_TEST(img.size() < 24 * hash_keydir::shards() + 16 * (want.size() + 300) + back.stats().slots / 8 + 8 * 64 * 64);
  BOOST_TEST(empties > 0u);

  // The first live entry of shard 0, and what to do to it.
  std::size_t live_at = SIZE_MAX;
  for (std::size_t i = 0; i < tables[0].slots.size(); ++i)
    if (tables[0].slots[i].first >= 2) {
      live_at = i;
      break;
    }
  BOOST_REQUIRE(live_at != SIZE_MAX);
  auto expect_refused = [&](const std::vector<std::byte>& b, const char* what) {
    hash_keydir::image x;
    BOOST_TEST(!load(b, x), what);
  };
  auto refused = [&](const char* what, auto&& change) {  // a change to the tables
    auto t = tables;
    change(t, t[0].slots[live_at]);
    expect_refused(encode(t), what);
  };
  auto refused_bytes = [&](const char* what, auto&& change) {  // a change to the bytes
    auto b = img;
    change(b);
    expect_refused(b, what);
  };
  refused("a live count one off", [&](auto& t, auto&) { ++t[0].live; });
  refused("a table full", [&](auto& t, auto&) { t[0].used = t[0].cap; });
  refused("an entry in another shard", [&](auto&, auto& e) { e.first ^= 1; });
  refused("an entry at an invalid location", [&](auto&, auto& e) { e.second = location{9, 40, false}.pack(); });
  refused("a tombstone", [&](auto&, auto& e) { e.second |= location::tombstone_bit; });
  refused("an entry cut off from its home slot", [&](auto& t, auto& e) {
    // Move the entry to the slot after the next empty one of its shard.
    auto& slots = t[0].slots;
    std::size_t i = live_at;
    while (i < slots.size() && slots[i].first != 0) ++i;
    BOOST_REQUIRE(i + 1 < slots.size());
    std::size_t dst = i + 1;
    while (dst < slots.size() && slots[dst].first != 0) ++dst;
    BOOST_REQUIRE(dst < slots.size());
    slots[dst] = e;
    e = {0, 0};
  });
  refused_bytes("a capacity past the bytes", [&](auto& b) { cask::detail::store_u64(b.data(), b.size() * 8 + 1); });
  refused_bytes("an occupied bit past a shard's capacity", [&](auto& b) {
    // Shard 0's capacity is below one block: its bitmap's last word has unused bits.
    BOOST_REQUIRE(tables[0].cap % 64 != 0);
    const std::size_t last_word = 24 * hash_keydir::shards() + 8 * ((tables[0].cap + 63) / 64 - 1);
    cask::detail::store_u64(b.data() + last_word, cask::detail::load_u64(b.data() + last_word) | (std::uint64_t{1} << 63));
  });
  refused_bytes("an entry missing", [&](auto& b) {
    // Clear the bit of shard 0's first occupied slot: one entry too few, the rest shifted.
    const std::size_t w = 24 * hash_keydir::shards() + 8 * (live_at / 64);
    cask::detail::store_u64(b.data() + w, cask::detail::load_u64(b.data() + w) & ~(std::uint64_t{1} << (live_at % 64)));
  });
  // erase, not resize: GCC 12 at -O1 under ASan reports a false -Wstringop-overflow on resize.
  refused_bytes("bytes missing", [&](auto& b) { b.erase(b.end() - 16, b.end()); });
}
