// cask/keydir.hpp - the in-memory index from key to the newest record.
//
// hash_keydir is the reference keydir policy. It keeps no keys in memory:
// each entry is 16 bytes, the key's full 64-bit hash and the record's
// location (segment id, offset), plus a one-byte tag (eight bits of the hash)
// in an array beside the slots, which a probe reads first. A lookup compares
// hashes where the tags match and confirms a candidate by comparing the key
// bytes stored in the log, which it reads anyway to return the value. At the
// table's load factor of 0.55 to 0.8 this is 21 to 31 bytes per key, keys
// included (DESIGN.md "Keydir").
//
// Layout: 64 shards by the hash's low bits, each an open-addressing table
// with linear probing from the home slot given by the hash's high bits
// (multiply-shift, so a table may have any size). Erased entries become
// markers, cleared when a shard is rebuilt; a shard is rebuilt at a load of
// 0.55 when live + marked entries pass 80%, so memory never exceeds 17 / 0.55
// bytes per key, and one rebuild moves 1/64 of the index.
//
// Thread safety: find() and for_each() may run in any number of threads
// concurrently with one mutating thread (upsert, erase, replace_if, purge),
// each inside a read section of the epoch_domain given at construction.
// Mutators must be serialized by the caller, except that mutators of
// different shards (shard_index()) may run concurrently, one thread per shard
// (recovery builds the keydir so). Replaced tables are freed after a grace period.
//
// The policy interface (what log_store asks of its Traits::keydir; no
// concept in concepts.hpp spells it out yet): construction from an
// epoch_domain&, and the public members below, taking `match`, a callable
// bool(location) that says whether the record at a location holds the key.
// Optional: image_layout, image, save_image(), load_image() and
// install_image(), with which log_store keeps a keydir snapshot.
#pragma once

#include <cask/detail/endian.hpp>
#include <cask/detail/epoch.hpp>

#include <atomic>
#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

namespace cask {

/// Where a record lives: segment id and byte offset in that segment's file.
/// Packed into 64 bits in the keydir; segment ids are below 2^31, and the
/// remaining bit marks a tombstone (used only while a store recovers).
struct location {
  std::uint32_t segment = 0;  ///< the segment's id
  std::uint32_t offset = 0;   ///< the record's offset in the segment's file
  bool tombstone = false;     ///< the record is a tombstone

  /// Equal when all three fields are.
  friend bool operator==(const location&, const location&) = default;

  /// The bit of pack() that holds `tombstone`.
  static constexpr std::uint64_t tombstone_bit = std::uint64_t{1} << 63;
  /// The 64-bit form kept in the keydir.
  constexpr std::uint64_t pack() const noexcept {
    return (std::uint64_t{segment} << 32) | offset | (tombstone ? tombstone_bit : 0);
  }
  /// The inverse of pack().
  static constexpr location unpack(std::uint64_t v) noexcept {
    return {static_cast<std::uint32_t>((v >> 32) & 0x7fffffffu), static_cast<std::uint32_t>(v),
            (v & tombstone_bit) != 0};
  }
};

/// The reference keydir policy: a sharded open-addressing table of 64-bit key
/// hashes and locations, holding no keys (see the top of this file).
class hash_keydir {
  static constexpr std::uint64_t empty_hash = 0, erased_hash = 1;
  static constexpr unsigned shard_bits = 6;
  static constexpr std::size_t shard_count = std::size_t{1} << shard_bits;
  static constexpr std::size_t min_capacity = 16;
  __extension__ typedef unsigned __int128 u128;  // __extension__: accepted under -Wpedantic
  /// A shard is rebuilt when live + erased slots would pass max_load, to a load of rebuild_load.
  static constexpr double max_load = 0.8, rebuild_load = 0.55, shrink_load = 0.4;
  static bool over_max(std::size_t used, std::size_t cap) noexcept { return double(used) > max_load * double(cap); }

  struct slot {
    std::atomic<std::uint64_t> hash{empty_hash};
    std::atomic<std::uint64_t> loc{0};
  };
  /// A slot's tag, one byte beside it in an array of their own: 0 for an
  /// empty slot, 1 for an erased one, else eight bits of the entry's hash
  /// (not those that pick the shard or the home slot), so a probe walks the
  /// tags, 64 to a cache line, and loads a slot only where its tag matches.
  /// A table of a million keys has about 1.5 MB of tags, which stay in the
  /// cache where its 24 MB of slots cannot: a lookup of a key the store does
  /// not hold seldom touches a slot at all.
  static constexpr std::uint8_t empty_tag = 0, erased_tag = 1;
  static_assert(sizeof(slot) == 16 && sizeof(std::atomic<std::uint8_t>) == 1, "17 bytes a slot (stats(), DESIGN.md)");
  static std::uint8_t tag_of(std::uint64_t h) noexcept {
    const auto t = static_cast<std::uint8_t>(h >> 8);
    return t < 2 ? static_cast<std::uint8_t>(t + 2) : t;
  }
  struct table {
    // (Value-initialized: every tag starts out empty.)
    explicit table(std::size_t c) : cap(c), slots(new slot[c]), tags(new std::atomic<std::uint8_t>[c]()) {}
    std::size_t capacity() const noexcept { return cap; }
    /// The home slot: the hash's high bits scaled to [0, cap).
    std::size_t home(std::uint64_t h) const noexcept {
      return static_cast<std::size_t>((static_cast<u128>(h) * cap) >> 64);
    }
    std::size_t next(std::size_t i) const noexcept { return i + 1 == cap ? 0 : i + 1; }
    /// Makes slot i hold the entry (h, loc): the location first, then the
    /// hash, then the tag that makes the slot visible to a probe.
    void publish(std::size_t i, std::uint64_t h, std::uint64_t loc) noexcept {
      slots[i].loc.store(loc, std::memory_order_release);
      slots[i].hash.store(h, std::memory_order_release);
      tags[i].store(tag_of(h), std::memory_order_release);
    }
    /// Marks slot i erased (a probe goes on past it).
    void erase(std::size_t i) noexcept {
      slots[i].hash.store(erased_hash, std::memory_order_release);
      tags[i].store(erased_tag, std::memory_order_release);
    }
    std::size_t cap;
    std::unique_ptr<slot[]> slots;
    std::unique_ptr<std::atomic<std::uint8_t>[]> tags;
  };
  struct alignas(64) shard {
    std::atomic<table*> t{nullptr};
    // Live entries: written by the shard's writer only (a plain load and
    // store, no read-modify-write), read by size() in any thread. Each shard
    // counts its own, in its own cache line, so that recovery's threads, each
    // filling its own shards, never contend for one counter.
    std::atomic<std::size_t> live{0};
    std::size_t used = 0;  // live + erased markers; writer-owned
    std::size_t live_count() const noexcept { return live.load(std::memory_order_relaxed); }
    void set_live(std::size_t n) noexcept { live.store(n, std::memory_order_relaxed); }
  };

 public:
  /// Thread-safe counts for stats().
  struct stats_type {
    std::size_t entries = 0;       ///< live keys
    std::size_t memory_bytes = 0;  ///< bytes held by the tables
    std::size_t slots = 0;         ///< table slots (entries / slots = load factor)
  };

  /// An empty keydir whose retired tables are reclaimed through `epoch`.
  explicit hash_keydir(detail::epoch_domain& epoch) : epoch_(epoch) {
    for (auto& s : shards_) s.t.store(new table(min_capacity), std::memory_order_relaxed);
  }
  hash_keydir(const hash_keydir&) = delete;
  hash_keydir& operator=(const hash_keydir&) = delete;
  ~hash_keydir() {
    for (auto& s : shards_) delete s.t.load(std::memory_order_relaxed);
  }

  /// The location of the entry with hash `h` for which match(location) holds.
  /// Reader side: call inside a read section.
  template <class Match>
  std::optional<location> find(std::uint64_t h, Match&& match) const {
    h = normalize(h);
    const table* t = shard_of(h).t.load(std::memory_order_seq_cst);
    const std::uint8_t want = tag_of(h);
    for (std::size_t i = t->home(h);; i = t->next(i)) {
      const std::uint8_t tag = t->tags[i].load(std::memory_order_seq_cst);
      if (tag == empty_tag) return std::nullopt;
      if (tag != want) continue;
      // (The tag was stored after the hash: the hash loaded is the one the
      // tag stands for or a later one, erased, of another key, or of this
      // key put back, whose location is then at least as new.)
      if (t->slots[i].hash.load(std::memory_order_seq_cst) == h) {
        const location l = location::unpack(t->slots[i].loc.load(std::memory_order_seq_cst));
        if (match(l)) return l;
      }
    }
  }

  /// Inserts or updates the entry for a key. If an entry matches and
  /// replace(old) is true, it is set to `loc`; if none matches, `loc` is
  /// inserted. Returns the old location when one matched (whether or not it
  /// was replaced). Writer side.
  template <class Match, class Replace>
  std::optional<location> upsert(std::uint64_t h, location loc, Match&& match, Replace&& replace) {
    h = normalize(h);
    shard& s = shard_of(h);
    table* t = s.t.load(std::memory_order_relaxed);
    std::size_t free_slot = SIZE_MAX;
    std::size_t i = t->home(h);
    const std::uint8_t want = tag_of(h);
    for (;; i = t->next(i)) {
      const std::uint8_t tag = t->tags[i].load(std::memory_order_relaxed);
      if (tag == empty_tag) break;
      if (tag == erased_tag) {
        if (free_slot == SIZE_MAX) free_slot = i;
      } else if (tag == want && t->slots[i].hash.load(std::memory_order_relaxed) == h) {
        const location old = location::unpack(t->slots[i].loc.load(std::memory_order_relaxed));
        if (match(old)) {
          if (replace(old)) t->slots[i].loc.store(loc.pack(), std::memory_order_release);
          return old;
        }
      }
    }
    if (free_slot == SIZE_MAX) {
      if (over_max(s.used + 1, t->capacity())) {
        rebuild(s, s.live_count() + 1);
        t = s.t.load(std::memory_order_relaxed);
        for (free_slot = t->home(h); t->tags[free_slot].load(std::memory_order_relaxed) != empty_tag;
             free_slot = t->next(free_slot)) {
        }
      } else {
        free_slot = i;
      }
      ++s.used;
    }
    t->publish(free_slot, h, loc.pack());
    s.set_live(s.live_count() + 1);
    return std::nullopt;
  }

  /// upsert() that always replaces.
  template <class Match>
  std::optional<location> upsert(std::uint64_t h, location loc, Match&& match) {
    return upsert(h, loc, std::forward<Match>(match), [](location) { return true; });
  }

  /// Removes the entry that matches; returns its location. Writer side.
  template <class Match>
  std::optional<location> erase(std::uint64_t h, Match&& match) {
    h = normalize(h);
    shard& s = shard_of(h);
    table* t = s.t.load(std::memory_order_relaxed);
    const std::uint8_t want = tag_of(h);
    for (std::size_t i = t->home(h);; i = t->next(i)) {
      const std::uint8_t tag = t->tags[i].load(std::memory_order_relaxed);
      if (tag == empty_tag) return std::nullopt;
      if (tag == want && t->slots[i].hash.load(std::memory_order_relaxed) == h) {
        const location old = location::unpack(t->slots[i].loc.load(std::memory_order_relaxed));
        if (match(old)) {
          t->erase(i);
          s.set_live(s.live_count() - 1);
          return old;
        }
      }
    }
  }

  /// Sets the entry with hash `h` at location `expected` to `desired`, if it is
  /// still there (a newer put or an erase wins). Used by the merger to move
  /// entries; no key comparison is needed since a location names one record.
  /// Returns whether it replaced. Writer side.
  bool replace_if(std::uint64_t h, location expected, location desired) {
    h = normalize(h);
    table* t = shard_of(h).t.load(std::memory_order_relaxed);
    const std::uint64_t want = expected.pack();
    const std::uint8_t want_tag = tag_of(h);
    for (std::size_t i = t->home(h);; i = t->next(i)) {
      const std::uint8_t tag = t->tags[i].load(std::memory_order_relaxed);
      if (tag == empty_tag) return false;
      if (tag == want_tag && t->slots[i].hash.load(std::memory_order_relaxed) == h &&
          t->slots[i].loc.load(std::memory_order_relaxed) == want) {
        t->slots[i].loc.store(desired.pack(), std::memory_order_release);
        return true;
      }
    }
  }

  /// Removes every entry whose location satisfies pred. Writer side.
  template <class Pred>
  std::size_t purge_if(Pred&& pred) {
    std::size_t removed = 0;
    for (shard& s : shards_) {
      table* t = s.t.load(std::memory_order_relaxed);
      for (std::size_t i = 0; i < t->capacity(); ++i) {
        if (t->tags[i].load(std::memory_order_relaxed) < 2) continue;
        if (pred(location::unpack(t->slots[i].loc.load(std::memory_order_relaxed)))) {
          t->erase(i);
          s.set_live(s.live_count() - 1);
          ++removed;
        }
      }
    }
    return removed;
  }

  /// Replaces the location l of every live entry of shard `k` by f(l), or
  /// removes the entry when f(l) is std::nullopt; returns the number removed.
  /// Before f(l), ahead(l2) is called for an entry a few slots further on, so
  /// that the memory f reads can be prefetched. If the shard's load is below
  /// 0.4, the entries go to a new table at a load of 0.55 instead: recovery
  /// drops its tombstones this way, and gives back what it reserved for keys
  /// that did not come. Writer side, for shard k (see shard_index()).
  template <class Ahead, class F>
  std::size_t remap_shard(std::size_t k, Ahead&& ahead, F&& f) {
    constexpr std::size_t distance = 32;
    shard& s = shards_[k];
    table* t = s.t.load(std::memory_order_relaxed);
    const std::size_t cap = t->capacity();
    table* nt = nullptr;
    std::size_t live = s.live_count();
    if (cap > min_capacity && double(live) < shrink_load * double(cap))
      nt = new table(std::max(min_capacity, static_cast<std::size_t>(double(live) / rebuild_load) + 1));
    std::size_t removed = 0;
    for (std::size_t i = 0; i < cap; ++i) {
      if (i + distance < cap && t->slots[i + distance].hash.load(std::memory_order_relaxed) >= 2)
        ahead(location::unpack(t->slots[i + distance].loc.load(std::memory_order_relaxed)));
      const std::uint64_t hv = t->slots[i].hash.load(std::memory_order_relaxed);
      if (hv < 2) continue;
      const std::optional<location> to = f(location::unpack(t->slots[i].loc.load(std::memory_order_relaxed)));
      if (!to) {
        if (!nt) t->erase(i);
        --live;
        ++removed;
      } else if (nt) {
        place(*nt, hv, to->pack());
      } else {
        t->slots[i].loc.store(to->pack(), std::memory_order_release);
      }
    }
    if (nt)
      install(s, nt, live);
    else
      s.set_live(live);
    return removed;
  }

  /// The shard that holds entries of hash `h`. Writers may mutate entries of
  /// different shards concurrently, one thread per shard (recovery builds the
  /// shards in parallel); mutations within a shard must be serialized.
  static std::size_t shard_index(std::uint64_t h) noexcept { return normalize(h) & (shard_count - 1); }

  /// Calls f(location) for every live entry of shard `k` (0 <= k < shards()).
  /// Reader side: call inside a read section; f must not enter the writer.
  template <class F>
  void for_each_in_shard(std::size_t k, F&& f) const {
    const table* t = shards_[k].t.load(std::memory_order_seq_cst);
    for (std::size_t i = 0; i < t->capacity(); ++i) {
      const std::uint64_t hv = t->slots[i].hash.load(std::memory_order_seq_cst);
      if (hv < 2) continue;
      f(location::unpack(t->slots[i].loc.load(std::memory_order_seq_cst)));
    }
  }
  /// The number of shards (see for_each_in_shard()).
  static constexpr std::size_t shards() noexcept { return shard_count; }

  /// Grows the tables ahead of inserting about `n` keys (recovery). Writer side.
  void reserve(std::size_t n) {
    for (shard& s : shards_) {
      const std::size_t per = n / shard_count + 1;
      if (over_max(per, s.t.load(std::memory_order_relaxed)->capacity())) rebuild(s, per);
    }
  }

  /// Hints that an operation on hash `h` follows soon (recovery batches its inserts).
  void prefetch(std::uint64_t h) const noexcept {
    h = normalize(h);
    const table* t = shard_of(h).t.load(std::memory_order_relaxed);
    const std::size_t i = t->home(h);
    __builtin_prefetch(&t->tags[i]);
    __builtin_prefetch(&t->slots[i]);
  }

  // ---- images (log_store's keydir snapshot, FORMAT.md "Keydir snapshot") ----

  /// The layout of save_image(); an image of another layout is never loaded.
  static constexpr std::uint32_t image_layout = 2;

  /// Tables read by load_image(), not yet in use; install_image() puts them in place.
  class image {
    friend class hash_keydir;
    std::array<std::unique_ptr<table>, shard_count> tables;
    std::array<std::size_t, shard_count> live{}, used{};
  };

  /// Slots per block of an image: each block is an occupancy bitmap, then
  /// the occupied slots of the block.
  static constexpr std::size_t image_block = 4096;

  /// Writes the tables as they are, by out(const std::byte*, std::size_t):
  /// for each shard its capacity, live and used counts (three u64); then
  /// each shard's slots in blocks of image_block: a bitmap of the block's
  /// occupied (live or erased) slots, one bit per slot, in u64 words, then
  /// every occupied slot of the block as two u64, the hash (1: erased) and
  /// the packed location. Empty slots take one bit. Little-endian. Writer
  /// side, with no mutator running.
  template <class Out>
  void save_image(Out&& out) const {
    std::array<std::byte, 24 * shard_count> head;
    for (std::size_t k = 0; k < shard_count; ++k) {
      const shard& s = shards_[k];
      detail::store_u64(head.data() + 24 * k, s.t.load(std::memory_order_relaxed)->capacity());
      detail::store_u64(head.data() + 24 * k + 8, s.live_count());
      detail::store_u64(head.data() + 24 * k + 16, s.used);
    }
    out(head.data(), head.size());
    std::array<std::byte, image_block / 8> bits;
    auto buf = std::make_unique<std::byte[]>(image_block * 16);
    for (const shard& s : shards_) {
      const table* t = s.t.load(std::memory_order_relaxed);
      for (std::size_t i = 0; i < t->capacity(); i += image_block) {
        const std::size_t n = std::min(image_block, t->capacity() - i);
        std::size_t m = 0;
        for (std::size_t w = 0; w < (n + 63) / 64; ++w) {
          std::uint64_t word = 0;
          for (std::size_t j = 64 * w; j < std::min(n, 64 * w + 64); ++j) {
            const std::uint64_t h = t->slots[i + j].hash.load(std::memory_order_relaxed);
            if (h == empty_hash) continue;
            word |= std::uint64_t{1} << (j % 64);
            detail::store_u64(buf.get() + 16 * m, h);
            detail::store_u64(buf.get() + 16 * m + 8, t->slots[i + j].loc.load(std::memory_order_relaxed));
            ++m;
          }
          detail::store_u64(bits.data() + 8 * w, word);
        }
        out(bits.data(), 8 * ((n + 63) / 64));
        if (m > 0) out(buf.get(), 16 * m);
      }
    }
  }

  /// Reads what save_image() wrote by in(std::byte*, std::size_t) -> bool
  /// (false: the bytes ran out) into `im`. Returns false, and leaves no
  /// tables in `im`, unless the bytes are a consistent set of tables: at
  /// most `max_slots` slots in all, every shard's counts true to its slots
  /// and below the maximum load, no bit set past a shard's capacity, every
  /// entry in its own shard, reachable from its home slot, and at a
  /// location for which valid(location) holds.
  template <class In, class Valid>
  static bool load_image(In&& in, std::uint64_t max_slots, Valid&& valid, image& im) {
    im = image{};
    std::array<std::byte, 24 * shard_count> head;
    if (!in(head.data(), head.size())) return false;
    std::uint64_t total = 0;
    std::array<std::size_t, shard_count> caps{};
    for (std::size_t k = 0; k < shard_count; ++k) {
      const std::uint64_t cap = detail::load_u64(head.data() + 24 * k);
      const std::uint64_t live = detail::load_u64(head.data() + 24 * k + 8);
      const std::uint64_t used = detail::load_u64(head.data() + 24 * k + 16);
      if (cap < min_capacity || cap > max_slots || live > used || over_max(static_cast<std::size_t>(used), static_cast<std::size_t>(cap)))
        return false;
      total += cap;
      if (total > max_slots) return false;
      caps[k] = static_cast<std::size_t>(cap);
      im.live[k] = static_cast<std::size_t>(live);
      im.used[k] = static_cast<std::size_t>(used);
    }
    std::array<std::byte, image_block / 8> bits;
    auto buf = std::make_unique<std::byte[]>(image_block * 16);
    bool ok = true;
    for (std::size_t k = 0; k < shard_count && ok; ++k) {
      auto t = std::make_unique<table>(caps[k]);
      std::size_t live = 0, erased = 0;
      // Every entry must be found from its home slot: no empty slot may lie
      // between. Slots are read in order, so this needs the last empty slot
      // seen and, for entries whose probe wrapped past the end, the lowest
      // home of theirs (no empty slot may follow it).
      std::size_t last_empty = SIZE_MAX, wrapped_home = SIZE_MAX;
      for (std::size_t i = 0; i < caps[k] && ok; i += image_block) {
        const std::size_t n = std::min(image_block, caps[k] - i);
        const std::size_t words = (n + 63) / 64;
        if (!in(bits.data(), 8 * words)) {
          ok = false;
          break;
        }
        std::size_t m = 0;
        for (std::size_t w = 0; w < words; ++w)
          m += static_cast<std::size_t>(std::popcount(detail::load_u64(bits.data() + 8 * w)));
        if (live + erased + m > im.used[k] || (m > 0 && !in(buf.get(), 16 * m))) {
          ok = false;
          break;
        }
        const std::byte* e = buf.get();
        for (std::size_t w = 0; w < words && ok; ++w) {
          const std::uint64_t word = detail::load_u64(bits.data() + 8 * w);
          const std::size_t valid_bits = std::min<std::size_t>(64, n - 64 * w);
          const std::uint64_t in_range = valid_bits == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << valid_bits) - 1;
          if ((word & ~in_range) != 0) {
            ok = false;
            break;
          }
          const std::size_t base = i + 64 * w;
          for (std::uint64_t rest = word; rest != 0; rest &= rest - 1) {
            const unsigned b = static_cast<unsigned>(std::countr_zero(rest));
            const std::uint64_t empties_below = ~word & ((std::uint64_t{1} << b) - 1);
            if (empties_below != 0) last_empty = base + 63 - static_cast<std::size_t>(std::countl_zero(empties_below));
            const std::uint64_t h = detail::load_u64(e);
            const std::uint64_t l = detail::load_u64(e + 8);
            e += 16;
            if (h == erased_hash) {
              ++erased;
            } else {
              ++live;
              const std::size_t home = t->home(h);
              if (home <= base + b) {
                ok = ok && (last_empty == SIZE_MAX || last_empty < home);
              } else {
                ok = ok && last_empty == SIZE_MAX;
                wrapped_home = std::min(wrapped_home, home);
              }
              ok = ok && h != empty_hash && (h & (shard_count - 1)) == k && (l & location::tombstone_bit) == 0 &&
                   valid(location::unpack(l));
            }
            t->slots[base + b].hash.store(h, std::memory_order_relaxed);
            t->slots[base + b].loc.store(l, std::memory_order_relaxed);
            t->tags[base + b].store(h == erased_hash ? erased_tag : tag_of(h), std::memory_order_relaxed);
          }
          const std::uint64_t empties = ~word & in_range;
          if (empties != 0) last_empty = base + 63 - static_cast<std::size_t>(std::countl_zero(empties));
        }
      }
      if (live != im.live[k] || live + erased != im.used[k]) ok = false;
      if (wrapped_home != SIZE_MAX && last_empty != SIZE_MAX && last_empty >= wrapped_home) ok = false;
      if (ok) im.tables[k] = std::move(t);
    }
    if (!ok) im = image{};
    return ok;
  }

  /// Puts the tables of `im` (from a load_image() that succeeded) in place
  /// of this keydir's, which must be empty and unseen by readers (recovery).
  void install_image(image&& im) {
    for (std::size_t k = 0; k < shard_count; ++k) {
      shard& s = shards_[k];
      delete s.t.exchange(im.tables[k].release(), std::memory_order_release);
      s.set_live(im.live[k]);
      s.used = im.used[k];
    }
  }

  /// Live entries. Thread-safe; sums the shards' counts, so a size() taken
  /// while the writer works may be off by the operations in flight.
  std::size_t size() const noexcept {
    std::size_t n = 0;
    for (const shard& s : shards_) n += s.live_count();
    return n;
  }

  /// Entry count and memory. Thread-safe (a snapshot that may lag the writer).
  stats_type stats() const {
    detail::epoch_domain::guard g(epoch_);
    stats_type st;
    st.entries = size();
    for (const shard& s : shards_) st.slots += s.t.load(std::memory_order_seq_cst)->capacity();
    st.memory_bytes = st.slots * (sizeof(slot) + 1) + sizeof(*this);
    return st;
  }

 private:
  static std::uint64_t normalize(std::uint64_t h) noexcept { return h < 2 ? h + 2 : h; }
  shard& shard_of(std::uint64_t h) noexcept { return shards_[h & (shard_count - 1)]; }
  const shard& shard_of(std::uint64_t h) const noexcept { return shards_[h & (shard_count - 1)]; }

  /// Copies the live entries of `s` into a new table sized for `need` keys at
  /// a load of rebuild_load, publishes it, and frees the old one after a grace period.
  void rebuild(shard& s, std::size_t need) {
    table* old = s.t.load(std::memory_order_relaxed);
    const std::size_t cap = std::max(min_capacity, static_cast<std::size_t>(double(need) / rebuild_load) + 1);
    auto* nt = new table(cap);
    std::size_t moved = 0;
    for (std::size_t i = 0; i < old->capacity(); ++i) {
      const std::uint64_t hv = old->slots[i].hash.load(std::memory_order_relaxed);
      if (hv < 2) continue;
      place(*nt, hv, old->slots[i].loc.load(std::memory_order_relaxed));
      ++moved;
    }
    install(s, nt, moved);
  }

  /// Puts an entry into a table no reader sees yet.
  static void place(table& t, std::uint64_t h, std::uint64_t loc) noexcept {
    std::size_t j = t.home(h);
    while (t.tags[j].load(std::memory_order_relaxed) != empty_tag) j = t.next(j);
    t.slots[j].loc.store(loc, std::memory_order_relaxed);
    t.slots[j].hash.store(h, std::memory_order_relaxed);
    t.tags[j].store(tag_of(h), std::memory_order_relaxed);
  }

  /// Publishes `nt`, holding `live` entries, as shard `s`'s table, and frees
  /// the old one after a grace period.
  void install(shard& s, table* nt, std::size_t live) {
    table* old = s.t.load(std::memory_order_relaxed);
    s.t.store(nt, std::memory_order_release);
    s.used = live;
    s.set_live(live);
    epoch_.synchronize();
    delete old;
  }

  detail::epoch_domain& epoch_;
  shard shards_[shard_count];
};

}  // namespace cask
