// cask/log_store.hpp - the store. Start here.
//
// cask::log_store<Key, Value, Hasher, Codec, Traits> is a Bitcask: writes
// append checksummed records to the active segment file; an in-memory keydir
// maps each key to its newest record; a read is one hash lookup plus one read
// from a memory-mapped segment. See docs/DESIGN.md for the architecture and
// docs/FORMAT.md for the bytes on disk.
//
// Thread safety: any number of threads may call the const members (get,
// get_ref, contains, size, for_each, stats) and the writing members (put,
// erase, sync) concurrently on one object; writes are serialized inside,
// reads never lock and never wait for the writer's disk I/O. close(), moving
// and destruction must not race with any other call on the same object.
//
// One writer per directory: a second log_store (in this or another process)
// opening the directory for writing fails with errc::store_locked. Any number
// of read_only stores may open it meanwhile; each sees the store as it was
// when it opened.
//
// Errors: each fallible member has a throwing form (cask::error, which names
// the file and offset where that applies) and a std::error_code& form.
// A missing key is not an error. Exceptions thrown by a user's codec while
// encoding propagate from both forms and leave the store unchanged.
#pragma once

#include <cask/checksum.hpp>
#include <cask/codec.hpp>
#include <cask/concepts.hpp>
#include <cask/error.hpp>
#include <cask/format.hpp>
#include <cask/hash.hpp>
#include <cask/hint.hpp>
#include <cask/io.hpp>
#include <cask/keydir.hpp>
#include <cask/merger.hpp>
#include <cask/options.hpp>
#include <cask/segment.hpp>
#include <cask/sync.hpp>
#include <cask/detail/task.hpp>

#include <algorithm>
#include <cstdlib>
#include <array>
#include <bit>
#include <concepts>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace cask {

/// The default component choices. Override one member by deriving:
///   struct my_traits : cask::default_traits { using sync = cask::sync_always; };
struct default_traits {
  using io = posix_io;           ///< file system (posix_io; tests plug a fault-injecting one)
  using checksum = crc32c;       ///< record checksum (hardware CRC-32C with Boost.CRC fallback)
  using sync = sync_none;        ///< durability (sync_none, sync_always, sync_interval)
  using keydir = hash_keydir;    ///< the in-memory index
  using merge_policy = default_merge_policy;  ///< which sealed segments a merge rewrites
};

/// What merge() rewrites.
enum class merge_scope {
  policy,   ///< the sealed segments the merge policy picks now (possibly none)
  all,      ///< every sealed segment
  compact,  ///< every segment: the active one is sealed first (if it holds records) and merged too
};

/// What one merge did.
struct merge_stats {
  std::size_t segments_in = 0;   ///< sealed segments rewritten (0: the merge did nothing)
  std::size_t segments_out = 0;  ///< segments written
  std::uint64_t bytes_in = 0;    ///< data bytes of the inputs
  std::uint64_t bytes_out = 0;   ///< data bytes of the outputs
  std::uint64_t records_copied = 0;             ///< live records and kept tombstones rewritten
  std::uint64_t records_dropped = 0;            ///< dead records not rewritten
  std::uint64_t tombstones_dropped = 0;         ///< tombstones no longer needed
  /// Under corruption_policy::skip: bytes of damaged records skipped (each
  /// reported to options::reporter as a corrupt_record) in segments where
  /// recovery skipped damage too, and keys whose entry named one, dropped.
  /// Other damage (under fail, or in a segment loaded from its hint file)
  /// abandons the merge instead.
  std::uint64_t damaged_bytes_skipped = 0;
  std::uint64_t damaged_entries_dropped = 0;  ///< see damaged_bytes_skipped
};

/// One segment's figures in store_stats.
struct segment_stats {
  std::uint32_t id = 0;             ///< the segment's id (its file is `<id>.cask`)
  std::uint64_t bytes = 0;          ///< data bytes, file header included
  std::uint64_t live_records = 0;   ///< records the keydir points at
  std::uint64_t live_bytes = 0;     ///< their bytes
  std::uint64_t dead_records = 0;   ///< overwritten or erased records, and tombstones
  std::uint64_t dead_bytes = 0;     ///< their bytes: what a merge would reclaim
  bool active = false;              ///< the segment the writer appends to
};

/// A snapshot of a store's figures; see log_store::stats().
struct store_stats {
  std::size_t keys = 0;                 ///< live keys
  std::size_t keydir_bytes = 0;         ///< memory held by the keydir
  double keydir_bytes_per_key = 0;      ///< keydir_bytes / keys (keys themselves are not held in memory)
  std::size_t segments = 0;             ///< segment files
  std::uint64_t data_bytes = 0;         ///< sum of segments' data bytes
  std::uint64_t live_bytes = 0;         ///< bytes of records the keydir points at
  std::uint64_t dead_bytes = 0;         ///< bytes a full merge would reclaim
  std::uint64_t recovered_torn_bytes = 0;       ///< cut from the newest segment's tail at open
  std::uint64_t recovered_skipped_records = 0;  ///< corrupt records skipped at open (corruption_policy::skip)
  std::uint64_t recovered_from_hints = 0;       ///< segments whose keydir entries came from a hint file at open
  std::uint64_t recovered_by_scan = 0;          ///< segments scanned at open (no valid hint file)
  bool recovered_from_snapshot = false;         ///< the keydir was loaded from the keydir snapshot at open
  /// Records of one key met at open that the newer one's hint entry settled
  /// by naming the older (what it replaced: FORMAT.md "Hint file"), with no
  /// key compared.
  std::uint64_t recovered_pairs_by_note = 0;
  std::vector<segment_stats> per_segment;       ///< ascending by id
};

/// An embedded key-value store of the Bitcask design in one directory; see
/// the top of this header for its thread safety and error conventions.
/// Movable, not copyable.
template <class Key, class Value, class Hasher = default_hasher, class Codec = basic_codec,
          class Traits = default_traits>
  requires codec_for<Codec, Key, Value> && key_hasher<Hasher> && checksum_policy<typename Traits::checksum> &&
           sync_policy<typename Traits::sync>
class log_store {
 public:
  // ---- the architecture, as types ----
  using key_type = Key;                               ///< the key type
  using value_type = Value;                           ///< the value type
  using hasher = Hasher;                              ///< hashes encoded keys (concept key_hasher)
  using codec = Codec;                                ///< keys and values to bytes (concept codec_for)
  using traits = Traits;                              ///< the component choices (default_traits)
  using io_type = typename Traits::io;                ///< the file system (posix_io)
  using checksum_type = typename Traits::checksum;    ///< record checksums (crc32c)
  using sync_type = typename Traits::sync;            ///< durability (sync_none, sync_always, sync_interval)
  using keydir_type = typename Traits::keydir;        ///< the in-memory index (hash_keydir)
  using segment_type = segment<io_type>;              ///< one mapped segment file
  using segment_table_type = segment_table<segment_type>;     ///< the segments readers see
  using merge_policy_type = typename Traits::merge_policy;   ///< which segments a merge rewrites

  /// A zero-copy view of a stored value: the encoded value bytes, in the
  /// segment's mapping. It owns a reference to the segment, so the bytes stay
  /// valid and unchanged until the value_ref is destroyed, whatever happens to
  /// the store meanwhile (overwrites, erases, merges that remove the file,
  /// close). Holding one keeps the segment mapped and, if it was removed, its
  /// disk space allocated. Copyable; thread-safe like a shared_ptr.
  class value_ref {
   public:
    value_ref() = default;
    /// The encoded value bytes.
    std::span<const std::byte> bytes() const noexcept { return bytes_; }
    /// The same bytes as characters (for string-like values of basic_codec, the value itself).
    std::string_view view() const noexcept {
      return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()};
    }
    /// The number of value bytes.
    std::size_t size() const noexcept { return bytes_.size(); }
    /// Decodes the value (a copy). Throws decode_error if the codec rejects the bytes.
    Value decode() const { return Codec::decode(bytes_, std::type_identity<Value>{}); }

   private:
    friend class log_store;
    value_ref(std::shared_ptr<const segment_type> s, std::span<const std::byte> b) : seg_(std::move(s)), bytes_(b) {}
    std::shared_ptr<const segment_type> seg_;
    std::span<const std::byte> bytes_;
  };

  // ---- opening and closing ----

  /// Opens (or, with options::create_if_missing, creates) the store in `dir`
  /// and recovers it: scans every segment, cuts a torn tail off the newest,
  /// and rebuilds the keydir. Throws cask::error (store_locked, codec_mismatch,
  /// corruption with file and offset, I/O errors, ...).
  /// Complexity: linear in the size of the segments.
  static log_store open(const std::filesystem::path& dir, const options& opts = {}, io_type io = {}) {
    std::error_code ec;
    detail::error_site site;
    auto s = open_state(dir, opts, std::move(io), ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
    return log_store(std::move(s));
  }
  /// As open(), reporting failure through `ec` (and returning nothing).
  static std::optional<log_store> open(const std::filesystem::path& dir, const options& opts, std::error_code& ec,
                                       io_type io = {}) {
    ec.clear();
    auto s = open_state(dir, opts, std::move(io), ec, nullptr);
    if (ec) return std::nullopt;
    return log_store(std::move(s));
  }

  /// Takes over `o`'s store; `o` is left closed.
  log_store(log_store&& o) noexcept = default;
  /// Closes this store (ignoring errors), then takes over `o`'s; `o` is left closed.
  log_store& operator=(log_store&& o) noexcept {
    if (this != &o) {
      std::error_code ignored;
      close(ignored);
      s_ = std::move(o.s_);
    }
    return *this;
  }
  /// Closes the store; errors are ignored (call close() to see them).
  ~log_store() {
    std::error_code ignored;
    close(ignored);
  }

  /// Seals the active segment (making it durable), stops the background
  /// flush and releases the directory lock. value_refs stay valid. Further
  /// calls fail with errc::closed. Idempotent. A store that failed
  /// (errc::store_failed: a flush, a seal or a merge failed, perhaps in a
  /// background thread) is closed all the same, and close() reports
  /// store_failed: writes since the last successful sync() may not be durable.
  void close() {
    std::error_code ec;
    detail::error_site site;
    close_impl(ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
  }
  /// As close(), reporting failure through `ec`.
  void close(std::error_code& ec) noexcept {
    ec.clear();
    close_impl(ec, nullptr);
  }

  /// Whether the store is open (not closed, not moved from).
  bool is_open() const noexcept { return s_ != nullptr; }
  /// The store's directory (empty when closed).
  std::filesystem::path path() const { return s_ ? s_->dir : std::filesystem::path{}; }

  // ---- writing ----

  /// Sets `key` to `value`: appends one record, then points the keydir at it.
  /// K and V are Key and Value, or types the codec encodes the same way
  /// (with basic_codec: std::string_view or const char* for std::string).
  /// The encoded bytes are written once, straight into the log. Under
  /// sync_always, returns once the record is durable.
  /// Throws: key_too_large, value_too_large, read_only, store_failed, closed, I/O errors.
  template <class K, class V>
    requires lookup_key_for<Codec, Key, K> && lookup_key_for<Codec, Value, V>
  void put(const K& key, const V& value) {
    std::error_code ec;
    detail::error_site site;
    put_impl(key, value, ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
  }
  /// As put(const K&, const V&), reporting failure through `ec`.
  template <class K, class V>
    requires lookup_key_for<Codec, Key, K> && lookup_key_for<Codec, Value, V>
  void put(const K& key, const V& value, std::error_code& ec) {
    ec.clear();
    put_impl(key, value, ec, nullptr);
  }

  /// Removes `key` by appending a tombstone record. Returns whether the key
  /// was present (nothing is written when it was not). A key longer than
  /// options::max_key_bytes, stored under a larger limit, is erased too.
  template <class K>
    requires lookup_key_for<Codec, Key, K>
  bool erase(const K& key) {
    std::error_code ec;
    detail::error_site site;
    const bool r = erase_impl(key, ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
    return r;
  }
  /// As erase(const K&), reporting failure through `ec`.
  template <class K>
    requires lookup_key_for<Codec, Key, K>
  bool erase(const K& key, std::error_code& ec) {
    ec.clear();
    return erase_impl(key, ec, nullptr);
  }

  /// Makes every write that returned before this call durable. After a failed
  /// flush the store refuses writes (errc::store_failed) until reopened, since
  /// the kernel may have dropped the pages it could not write.
  void sync() {
    std::error_code ec;
    detail::error_site site;
    sync_impl(ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
  }
  /// As sync(), reporting failure through `ec`.
  void sync(std::error_code& ec) {
    ec.clear();
    sync_impl(ec, nullptr);
  }

  // ---- merging ----

  /// Rewrites the live records of sealed segments into new segments and
  /// removes the old ones, reclaiming the space of overwritten and erased
  /// records. scope::policy merges what the merge policy picks now (possibly
  /// nothing); scope::all merges every sealed segment; scope::compact seals
  /// the active segment first (made durable, as at a rotation) and merges
  /// every segment, so that afterwards the files hold only live records,
  /// their hint files and an empty active segment. Reads and writes go on
  /// meanwhile: the merge holds no lock while it does I/O, and installs its
  /// results in short steps in which a concurrent put or erase wins. A crash
  /// at any point leaves a store that opens to the same contents. One merge
  /// runs at a time (a background merge, if running, is waited for).
  /// Throws: I/O errors; corruption found in an input (the merge is abandoned
  /// and nothing changes).
  merge_stats merge(merge_scope scope = merge_scope::policy) {
    std::error_code ec;
    detail::error_site site;
    auto r = merge_impl(scope, /*background=*/false, ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
    return r;
  }
  /// As merge(merge_scope), reporting failure through `ec`.
  merge_stats merge(merge_scope scope, std::error_code& ec) {
    ec.clear();
    return merge_impl(scope, false, ec, nullptr);
  }

  /// The sealed segments the merge policy would merge now (empty: none).
  std::vector<std::uint32_t> merge_candidates() const {
    if (!s_) return {};
    return select_inputs(*s_, merge_scope::policy);
  }

  // ---- reading ----

  /// The value of `key`, or nothing. Verifies the record's checksum (unless
  /// options::verify_checksums is off) and fails with checksum_mismatch naming
  /// file and offset rather than return a wrong value. Lock-free; allocates
  /// only what decoding the value allocates.
  template <class K>
    requires lookup_key_for<Codec, Key, K>
  std::optional<Value> get(const K& key) const {
    std::error_code ec;
    detail::error_site site;
    auto v = get_impl(key, ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
    return v;
  }
  /// As get(const K&), reporting failure through `ec` (and returning nothing).
  template <class K>
    requires lookup_key_for<Codec, Key, K>
  std::optional<Value> get(const K& key, std::error_code& ec) const {
    ec.clear();
    return get_impl(key, ec, nullptr);
  }

  /// The value of `key` as a zero-copy value_ref, or nothing. Costs one
  /// atomic reference-count increment more than get() and copies nothing.
  template <class K>
    requires lookup_key_for<Codec, Key, K>
  std::optional<value_ref> get_ref(const K& key) const {
    std::error_code ec;
    detail::error_site site;
    auto v = get_ref_impl(key, ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
    return v;
  }
  /// As get_ref(const K&), reporting failure through `ec` (and returning nothing).
  template <class K>
    requires lookup_key_for<Codec, Key, K>
  std::optional<value_ref> get_ref(const K& key, std::error_code& ec) const {
    ec.clear();
    return get_ref_impl(key, ec, nullptr);
  }

  /// Calls f(std::span<const std::byte> value) with the encoded value of `key`
  /// where it lies in the mapping, and returns true; returns false (without
  /// calling f) if the key is absent. The fastest read: no allocation, no
  /// reference count, no copy. The span is valid only while f runs. f runs
  /// inside a read section, so it must not write to, merge or close this
  /// store (a write may wait for read sections to end) and should be short.
  /// Verifies the checksum like get().
  template <class K, class F>
    requires lookup_key_for<Codec, Key, K> && std::invocable<F&, std::span<const std::byte>>
  bool visit(const K& key, F&& f) const {
    std::error_code ec;
    detail::error_site site;
    const bool r = visit_impl(key, f, ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
    return r;
  }
  /// As visit(const K&, F&&), reporting failure through `ec`.
  template <class K, class F>
    requires lookup_key_for<Codec, Key, K> && std::invocable<F&, std::span<const std::byte>>
  bool visit(const K& key, F&& f, std::error_code& ec) const {
    ec.clear();
    return visit_impl(key, f, ec, nullptr);
  }

  /// Whether `key` is present (its record's checksum verified like get()).
  template <class K>
    requires lookup_key_for<Codec, Key, K>
  bool contains(const K& key) const {
    std::error_code ec;
    detail::error_site site;
    const bool r = contains_impl(key, ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
    return r;
  }
  /// As contains(const K&), reporting failure through `ec`.
  template <class K>
    requires lookup_key_for<Codec, Key, K>
  bool contains(const K& key, std::error_code& ec) const {
    ec.clear();
    return contains_impl(key, ec, nullptr);
  }

  /// Number of live keys.
  std::size_t size() const noexcept { return s_ ? s_->keydir.size() : 0; }
  /// Whether the store holds no key.
  bool empty() const noexcept { return size() == 0; }

  /// Calls f(const Key&, const Value&) for every live entry, in no particular
  /// order. Weakly consistent: every key live for the whole iteration is
  /// visited once, with the value it had at some moment during the call; keys
  /// written or erased meanwhile may or may not be. f runs outside any
  /// internal lock and may read or write the store. Throws like get().
  template <class F>
  void for_each(F&& f) const {
    std::error_code ec;
    detail::error_site site;
    for_each_impl(f, ec, &site);
    if (ec) throw error(ec, site.path, site.offset);
  }
  /// As for_each(F&&), reporting failure through `ec` (the iteration stops
  /// at the first error). Exceptions f throws propagate.
  template <class F>
  void for_each(F&& f, std::error_code& ec) const {
    ec.clear();
    for_each_impl(f, ec, nullptr);
  }

  /// Figures of the keydir and the segments (a snapshot; may lag concurrent writes).
  store_stats stats() const {
    store_stats st;
    if (!s_) return st;
    const state& s = *s_;
    const auto kd = s.keydir.stats();
    st.keys = kd.entries;
    st.keydir_bytes = kd.memory_bytes;
    st.keydir_bytes_per_key = kd.entries ? double(kd.memory_bytes) / double(kd.entries) : 0.0;
    st.recovered_torn_bytes = s.torn_bytes;
    st.recovered_skipped_records = s.skipped_records;
    st.recovered_from_hints = s.segments_from_hints;
    st.recovered_by_scan = s.segments_scanned;
    st.recovered_from_snapshot = s.from_snapshot;
    st.recovered_pairs_by_note = s.pairs_by_note;
    detail::epoch_domain::guard g(s.epoch);
    const segment_table_type* tab = s.segtab.load(std::memory_order_seq_cst);
    const segment_type* active = s.active_raw.load(std::memory_order_seq_cst);
    for (const auto& seg : tab->all()) {
      segment_stats ss;
      ss.id = seg->id();
      ss.bytes = seg->end();
      const auto& c = seg->counters();
      ss.live_records = c.live_records.load(std::memory_order_relaxed);
      ss.live_bytes = c.live_bytes.load(std::memory_order_relaxed);
      ss.dead_records = c.dead_records.load(std::memory_order_relaxed);
      ss.dead_bytes = c.dead_bytes.load(std::memory_order_relaxed);
      ss.active = active && active->id() == seg->id();
      st.data_bytes += ss.bytes;
      st.live_bytes += ss.live_bytes;
      st.dead_bytes += ss.dead_bytes;
      st.per_segment.push_back(ss);
    }
    st.segments = st.per_segment.size();
    return st;
  }

 private:
  using table_ptr = std::shared_ptr<segment_table_type>;

  /// A record of the active segment that replaced another record of its
  /// key (the one the keydir named when it was written): its offset and
  /// what it replaced, kept in file order for the segment's hint file, whose
  /// entries then say so (hint.hpp replaced_record). Only a record in this
  /// segment or one of a lower id: a new segment takes an id above every
  /// segment's there is, so no id below an existing segment's is ever given
  /// again (a merge output above the active segment may go, and its id come
  /// back after a restart). At most max_replacements a segment (16 bytes
  /// each; records past that get hint entries that say nothing, and
  /// recovery compares their keys instead).
  struct replacement {
    std::uint32_t at;
    replaced_record what;
  };
  static constexpr std::size_t max_replacements = std::size_t{1} << 20;
  /// A sealed segment waiting for its hint file, and what its records replaced.
  struct queued_hint {
    std::uint32_t id;
    std::vector<replacement> replaced;
  };

  struct state {
    explicit state(io_type i) : io(std::move(i)) {}
    std::filesystem::path dir;
    options opts;
    io_type io;
    typename io_type::dir_lock lock;
    std::uint32_t codec_id = 0;

    mutable detail::epoch_domain epoch;
    keydir_type keydir{epoch};
    std::atomic<segment_table_type*> segtab{nullptr};  // readers
    table_ptr segtab_owner;                            // writer side, under write_mu

    // Writer state, under write_mu.
    std::mutex write_mu;
    std::shared_ptr<segment_type> active;
    std::atomic<const segment_type*> active_raw{nullptr};  // for stats()
    std::uint64_t tail = 0;
    std::uint64_t next_seq = format::first_sequence;
    std::uint32_t next_id = 1;
    std::atomic<std::uint64_t> written_seq{0};
    std::atomic<bool> failed{false};
    // The writer's last segment, found without records at open: it becomes
    // the new active segment in place, so that the newest writer segment is
    // never removed (a sealed one would then be taken for the writer's, and
    // damage in it for a torn tail).
    std::optional<std::uint32_t> reuse_id;
    // A read-only open's segment read from `<id>.cask.new` (settle_unnamed()); 0 for none.
    std::uint32_t unnamed_id = 0;

    // Durability, under sync_mu (lock order: write_mu before sync_mu).
    std::mutex sync_mu;
    std::condition_variable sync_cv;
    bool sync_running = false;
    std::uint64_t durable_seq = 0;
    std::uint64_t active_flushed = 0;  // bytes of the active segment known durable
    // Group commit (see sync_to): callers inside sync_to() waiting for their
    // record, how many of them the last flush covered and how long it took,
    // and whether a leader is gathering callers before its flush.
    std::condition_variable gather_cv;
    std::size_t sync_pending = 0;   // callers waiting that no flush has claimed yet
    std::uint64_t sync_claims = 0;  // leaders that claimed the pending callers
    std::size_t last_group = 0;
    std::chrono::steady_clock::duration last_flush{};
    bool gathering = false;

    // Prefaulting (options::prefault_bytes): the thread that maps the active
    // segment's pages ahead of the writer, and the range it is asked to map
    // (under prefault_mu). prefault_asked, under write_mu, is the offset of
    // the active segment up to which mapping was asked.
    std::thread prefaulter;
    std::mutex prefault_mu;
    std::condition_variable prefault_cv;
    bool prefault_stop = false;
    std::shared_ptr<segment_type> prefault_seg;
    std::uint64_t prefault_from = 0, prefault_to = 0;
    std::uint64_t prefault_asked = 0;

    // Background seal (options::background_seal): the thread that makes a
    // sealed segment durable and then names the active segment, created as
    // `<id>.cask.new` (seal_loop()), and the seal it is asked for. Under
    // seal_mu; seals_started also under write_mu (a rotation takes both).
    /// A seal for the sealing thread (rotate_in_background()).
    struct seal_job {
      std::shared_ptr<segment_type> seg;   ///< the sealed segment, still mapped writable
      std::uint64_t end = 0;               ///< its data
      std::uint64_t seq = 0;               ///< the newest record in it (and in any segment before it)
      std::vector<replacement> replaced;   ///< for its hint file
      std::shared_ptr<segment_type> next;  ///< the active segment that follows it, still unnamed
    };
    std::thread sealer;
    std::mutex seal_mu;
    std::condition_variable seal_cv;  // a job for the thread, and a seal done for those waiting
    bool seal_stop = false;
    std::optional<seal_job> seal_todo;
    std::uint64_t seals_started = 0, seals_done = 0;
    std::atomic<std::uint32_t> sealing_id{0};  // the segment being sealed, 0 for none: never merged
    std::error_code seal_ec;                   // why a seal failed (the store then refuses writes)
    std::filesystem::path seal_err_path;
    std::uint64_t seal_err_off = error::npos;

    // Background flush (sync_interval).
    std::thread flusher;
    std::mutex flusher_mu;
    std::condition_variable flusher_cv;
    bool flusher_stop = false;

    // Recovery figures.
    std::uint64_t torn_bytes = 0;
    std::uint64_t skipped_records = 0;
    // Segments in which recovery, scanning, skipped damage (corruption_policy::
    // skip): a merge may skip the same damage. Set at open, read-only after.
    std::vector<std::uint32_t> scanned_with_damage;
    std::uint64_t segments_from_hints = 0, segments_scanned = 0;
    std::uint64_t pairs_by_note = 0;  // store_stats::recovered_pairs_by_note
    bool from_snapshot = false;  // the keydir came from the keydir snapshot

    // Merging and hint writing: the maintenance thread, and merge() callers.
    std::mutex merge_mu;  // one merge at a time
    std::thread maint;
    std::mutex maint_mu;
    std::condition_variable maint_cv;
    bool maint_stop = false;
    std::vector<queued_hint> hint_queue;  // sealed segments still without a hint file
    std::atomic<bool> stopping{false};    // set by close(): abandon a running merge
    /// What the active segment's records replaced (under write_mu), for its
    /// hint file: see replacement.
    std::vector<replacement> replaced;
  };

  explicit log_store(std::unique_ptr<state> s) : s_(std::move(s)) {}

  // ---- helpers ----

  struct key_buffer {
    std::array<std::byte, 128> small;
    std::unique_ptr<std::byte[]> big;
  };
  template <class K>
  static std::span<const std::byte> key_bytes(const K& key, key_buffer& buf) {
    if constexpr (codec_with_bytes_of<Codec, K>) {
      return Codec::bytes_of(key);
    } else {
      const std::size_t n = Codec::encoded_size(key);
      std::byte* p = buf.small.data();
      if (n > buf.small.size()) {
        buf.big = std::make_unique<std::byte[]>(n);
        p = buf.big.get();
      }
      Codec::encode(key, p);
      return {p, n};
    }
  }

  static bool same_bytes(std::span<const std::byte> a, std::span<const std::byte> b) noexcept {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
  }

  static void publish_table(state& s, table_ptr t) {
    table_ptr old = std::move(s.segtab_owner);
    s.segtab_owner = std::move(t);
    s.segtab.store(s.segtab_owner.get(), std::memory_order_release);
    s.epoch.synchronize();
    // `old` is freed here; segments it alone held are unmapped.
  }

  /// A record found by a lookup, valid inside the read section that found it.
  struct found {
    const segment_table_type* tab = nullptr;
    const segment_type* seg = nullptr;
    std::uint32_t offset = 0;
    format::record_view rv;
  };

  /// Looks `kb` up; on success fills `f` and, if asked, verifies the checksum.
  /// Call inside a read section.
  static bool lookup(const state& s, std::span<const std::byte> kb, found& f, bool verify, std::error_code& ec,
                     detail::error_site* site) {
    const std::uint64_t h = Hasher{}(kb);
    const segment_type* bad_seg = nullptr;
    std::uint32_t bad_off = 0;
    errc bad_code = errc::corruption;
    // The table is loaded before the keydir entry, never after: a segment
    // appears in a published table before any entry points at it (rotation
    // and merge publish, and wait for the readers in their read sections,
    // first), and leaves the table only after no entry points at it. Loaded
    // after the entry, the table could already lack a merge's retired input
    // that the entry, read a moment before the merge moved it, still names.
    const segment_table_type* tab = s.segtab.load(std::memory_order_seq_cst);
    const auto loc = s.keydir.find(h, [&](location l) {
      const segment_type* seg = tab->find(l.segment);
      if (!seg || l.offset >= seg->capacity()) return false;
      const std::byte* p = seg->data() + l.offset;
      if (format::parse_record_header(p, seg->capacity() - l.offset, f.rv) != format::record_status::ok) {
        bad_seg = seg;
        bad_off = l.offset;
        return false;
      }
      if (!same_bytes(f.rv.key, kb)) {
        // Equal 64-bit hashes and different keys: a collision, or damaged key
        // bytes. The checksum tells, and only this rare case pays for it.
        if (!format::record_checksum_ok<checksum_type>(p, f.rv)) {
          bad_seg = seg;
          bad_off = l.offset;
          bad_code = errc::checksum_mismatch;
        }
        return false;
      }
      f.tab = tab;
      f.seg = seg;
      f.offset = l.offset;
      return true;
    });
    if (!loc) {
      if (bad_seg) detail::set_error(ec, site, make_error_code(bad_code), bad_seg->path(), bad_off);
      return false;
    }
    if (verify && !format::record_checksum_ok<checksum_type>(f.seg->data() + f.offset, f.rv)) {
      detail::set_error(ec, site, make_error_code(errc::checksum_mismatch), f.seg->path(), f.offset);
      return false;
    }
    return true;
  }

  const state* readable(std::error_code& ec) const {
    if (!s_) ec = make_error_code(errc::closed);
    return s_.get();
  }

  template <class K>
  std::optional<Value> get_impl(const K& key, std::error_code& ec, detail::error_site* site) const {
    const state* s = readable(ec);
    if (!s) return std::nullopt;
    key_buffer buf;
    const auto kb = key_bytes(key, buf);
    detail::epoch_domain::guard g(s->epoch);
    found f;
    if (!lookup(*s, kb, f, s->opts.verify_checksums, ec, site)) return std::nullopt;
    try {
      return Codec::decode(f.rv.value, std::type_identity<Value>{});
    } catch (const decode_error&) {
      detail::set_error(ec, site, make_error_code(errc::corruption), f.seg->path(), f.offset);
      return std::nullopt;
    }
  }

  template <class K>
  std::optional<value_ref> get_ref_impl(const K& key, std::error_code& ec, detail::error_site* site) const {
    const state* s = readable(ec);
    if (!s) return std::nullopt;
    key_buffer buf;
    const auto kb = key_bytes(key, buf);
    detail::epoch_domain::guard g(s->epoch);
    found f;
    if (!lookup(*s, kb, f, s->opts.verify_checksums, ec, site)) return std::nullopt;
    return value_ref(f.tab->find_shared(f.seg->id()), f.rv.value);
  }

  template <class K, class F>
  bool visit_impl(const K& key, F& f, std::error_code& ec, detail::error_site* site) const {
    const state* s = readable(ec);
    if (!s) return false;
    key_buffer buf;
    const auto kb = key_bytes(key, buf);
    detail::epoch_domain::guard g(s->epoch);
    found fd;
    if (!lookup(*s, kb, fd, s->opts.verify_checksums, ec, site)) return false;
    f(fd.rv.value);
    return true;
  }

  template <class K>
  bool contains_impl(const K& key, std::error_code& ec, detail::error_site* site) const {
    const state* s = readable(ec);
    if (!s) return false;
    key_buffer buf;
    const auto kb = key_bytes(key, buf);
    detail::epoch_domain::guard g(s->epoch);
    found f;
    return lookup(*s, kb, f, s->opts.verify_checksums, ec, site);
  }

  template <class F>
  void for_each_impl(F& fn, std::error_code& ec, detail::error_site* site) const {
    const state* s = readable(ec);
    if (!s) return;
    std::vector<location> locs;
    for (std::size_t k = 0; k < keydir_type::shards(); ++k) {
      locs.clear();
      std::shared_ptr<const segment_table_type> pin;
      {
        // The table first, then the entries (see lookup()).
        detail::epoch_domain::guard g(s->epoch);
        pin = s->segtab.load(std::memory_order_seq_cst)->shared_from_this();
        s->keydir.for_each_in_shard(k, [&](location l) { locs.push_back(l); });
      }
      for (const location& l : locs) {
        const segment_type* seg = pin->find(l.segment);
        format::record_view rv;
        const auto st = !seg || l.offset >= seg->capacity()
                            ? format::record_status::truncated
                            : format::parse_record<checksum_type>(seg->data() + l.offset, seg->capacity() - l.offset, rv);
        if (st != format::record_status::ok) {
          // As lookup() and the merger say it: a malformed record is corruption.
          detail::set_error(ec, site,
                            make_error_code(st == format::record_status::bad_checksum ? errc::checksum_mismatch
                                                                                      : errc::corruption),
                            seg ? seg->path() : std::filesystem::path{}, l.offset);
          return;
        }
        std::optional<Key> key;
        std::optional<Value> value;
        try {
          key.emplace(Codec::decode(rv.key, std::type_identity<Key>{}));
          value.emplace(Codec::decode(rv.value, std::type_identity<Value>{}));
        } catch (const decode_error&) {
          detail::set_error(ec, site, make_error_code(errc::corruption), seg->path(), l.offset);
          return;
        }
        fn(*key, *value);
      }
    }
  }

  state* writable(std::error_code& ec) {
    if (!s_) return ec = make_error_code(errc::closed), nullptr;
    if (s_->opts.read_only) return ec = make_error_code(errc::read_only), nullptr;
    if (s_->failed.load(std::memory_order_relaxed)) return ec = make_error_code(errc::store_failed), nullptr;
    return s_.get();
  }

  /// Writer-side key comparison at `l`, an entry with the hash of `kb`;
  /// reports the old record's segment and size. A damaged record there (only
  /// a trusted hint file, or damage after open, points the keydir at one) is
  /// taken for this key's: its 64-bit hash is this key's, and a put or erase
  /// must replace it, or a later read would report the damage again (or,
  /// after an erase, find the key still "present"). Sets `compared` only
  /// where the record's key bytes were this key's (not a damaged record):
  /// only such a record is noted as replaced (see replacement).
  static bool key_at(const state& s, location l, std::span<const std::byte> kb, segment_type*& seg,
                     std::uint32_t& size, bool& compared) {
    seg = s.segtab_owner->find(l.segment);
    size = 0;
    compared = false;
    if (!seg) return false;
    if (l.offset >= seg->capacity()) return true;
    const std::byte* p = seg->data() + l.offset;
    format::record_view rv;
    if (format::parse_record_header(p, seg->capacity() - l.offset, rv) != format::record_status::ok) return true;
    size = rv.size;
    if (same_bytes(rv.key, kb)) return compared = true;
    // Other key bytes: a collision, or damaged key bytes; the checksum tells.
    if (!format::record_checksum_ok<checksum_type>(p, rv)) return true;
    size = 0;
    return false;
  }

  /// Makes room for a record of `size` bytes in the active segment, sealing
  /// it and starting a new one if needed. Under write_mu.
  static bool ensure_room(state& s, std::uint64_t size, std::error_code& ec, detail::error_site* site) {
    if (s.active && s.tail + size <= s.active->capacity()) return true;
    return rotate(s, size, ec, site);
  }

  /// Seals the active segment (if there is one: a rotation whose new segment
  /// could not be created leaves none, and the next write retries) and starts
  /// a new one with room for `size` bytes. Under write_mu.
  /// Unless `queue_hint` is false (the sealed segment is about to be merged),
  /// its hint file is queued for the maintenance thread.
  static bool rotate(state& s, std::uint64_t size, std::error_code& ec, detail::error_site* site,
                     bool queue_hint = true) {
    const std::uint32_t sealed_id = s.active ? s.active->id() : 0;
    const bool had_records = s.active && s.tail > format::file_header_size;
    // One seal at a time: the one before must be done (its segment durable,
    // this one named). If it failed, the store refuses writes, as after any
    // failed flush (sync() and close() report the flush's own error).
    if (std::error_code se; !wait_sealed(s, s.seals_started, se, nullptr))
      return ec = make_error_code(errc::store_failed), false;
    if (had_records && queue_hint && s.sealer.joinable()) return rotate_in_background(s, size, ec, site);
    if (!seal_active(s, /*closing=*/false, ec, site)) return false;
    std::vector<replacement> replaced = std::move(s.replaced);
    s.replaced.clear();
    if (had_records && queue_hint) {
      // The maintenance thread writes its hint file, off the write path.
      std::lock_guard lk(s.maint_mu);
      s.hint_queue.push_back({sealed_id, std::move(replaced)});
      s.maint_cv.notify_all();
    }
    const std::uint64_t cap = std::max<std::uint64_t>(s.opts.max_segment_bytes, format::file_header_size + size);
    auto seg = create_segment(s, s.next_id, cap, ec, site);
    if (!seg) return false;
    ++s.next_id;
    install_active(s, std::move(seg));
    return true;
  }

  /// rotate() with the seal left to the sealing thread (options::
  /// background_seal): the new segment is created as `<id>.cask.new`, the
  /// full one cut to its data and published read-only, and the thread makes
  /// it durable, then names the new one (seal_loop()). Under write_mu, with
  /// no seal under way.
  static bool rotate_in_background(state& s, std::uint64_t size, std::error_code& ec, detail::error_site* site) {
    const std::uint64_t cap = std::max<std::uint64_t>(s.opts.max_segment_bytes, format::file_header_size + size);
    // First the new segment: if it cannot be created, nothing has changed.
    auto next = create_segment(s, s.next_id, cap, ec, site, /*replace=*/false, /*unnamed=*/true);
    if (!next) return false;
    ++s.next_id;
    auto seg = std::exchange(s.active, nullptr);
    s.active_raw.store(nullptr, std::memory_order_release);
    const std::uint64_t end = s.tail;
    std::error_code e;
    seg->file().truncate(end, e);
    std::shared_ptr<segment_type> sealed;
    if (!e) sealed = open_sealed(s, seg->id(), seg->path(), end, e, nullptr);
    if (e) {
      // As after a failed seal: refuse writes until reopened. (The unnamed
      // segment is dropped then: its predecessor does not end at its data.)
      s.failed.store(true, std::memory_order_relaxed);
      detail::set_error(ec, site, e, seg->path(), end);
      return false;
    }
    sealed->counters().copy_from(seg->counters());
    publish_table(s, s.segtab_owner->with(std::move(sealed)));
    {
      std::lock_guard lk(s.seal_mu);
      s.seal_todo = typename state::seal_job{std::move(seg), end, s.written_seq.load(std::memory_order_relaxed),
                                             std::exchange(s.replaced, {}), next};
      ++s.seals_started;
      s.sealing_id.store(s.seal_todo->seg->id(), std::memory_order_relaxed);
    }
    s.seal_cv.notify_all();
    install_active(s, std::move(next));
    return true;
  }

  /// Waits until the seals started up to the `n`-th are done; false, with
  /// the error of the one that failed, if one did.
  static bool wait_sealed(state& s, std::uint64_t n, std::error_code& ec, detail::error_site* site) {
    std::unique_lock lk(s.seal_mu);
    s.seal_cv.wait(lk, [&] { return s.seals_done >= n; });
    if (!s.seal_ec) return true;
    detail::set_error(ec, site, s.seal_ec, s.seal_err_path, s.seal_err_off);
    return false;
  }

  /// The sealing thread: for each seal rotate_in_background() asks for, makes
  /// the sealed segment durable (msync and fdatasync), then the next
  /// segment's header, then gives it its name and makes that durable; then
  /// queues the sealed segment's hint file. Until the name is durable, a
  /// crash leaves the next segment unnamed, and recovery keeps it only if
  /// the sealed one is complete (recover()). Stopped (close()), it finishes
  /// the seal it was asked for first.
  static void seal_loop(state& s) {
    std::unique_lock lk(s.seal_mu);
    for (;;) {
      s.seal_cv.wait(lk, [&] { return s.seal_stop || s.seal_todo; });
      if (!s.seal_todo) return;
      typename state::seal_job job = std::move(*s.seal_todo);
      s.seal_todo.reset();
      lk.unlock();
      std::error_code e;
      std::filesystem::path at = job.seg->path();
      std::uint64_t off = job.end;
      job.seg->map().flush(0, static_cast<std::size_t>(job.end), e);
      if (!e) job.seg->file().sync(e);
      if (!e) {
        at = unnamed_path(job.next->path()), off = 0;
        job.next->map().flush(0, format::file_header_size, e);
      }
      if (!e) s.io.rename(unnamed_path(job.next->path()), job.next->path(), e);
      if (!e) at = s.dir, s.io.sync_dir(s.dir, e);
      if (!e) {
        std::lock_guard sl(s.sync_mu);
        s.durable_seq = std::max(s.durable_seq, job.seq);
      } else {
        s.failed.store(true, std::memory_order_relaxed);
      }
      const std::uint32_t id = job.seg->id();
      job.seg.reset();  // (the writable mapping goes here, off the writer's path)
      job.next.reset();
      if (!e) {
        std::lock_guard ml(s.maint_mu);
        s.hint_queue.push_back({id, std::move(job.replaced)});
        s.maint_cv.notify_all();
      }
      lk.lock();
      if (e) s.seal_ec = e, s.seal_err_path = at, s.seal_err_off = off;
      ++s.seals_done;
      s.sealing_id.store(0, std::memory_order_relaxed);
      s.seal_cv.notify_all();
    }
  }

  /// Where the active segment of final path `path` lives until its
  /// predecessor's seal is durable (options::background_seal).
  static std::filesystem::path unnamed_path(const std::filesystem::path& path) { return path.string() + ".new"; }
  /// The segment id of an unnamed segment's file name (`<id>.cask.new`), if it is one.
  static std::optional<std::uint32_t> parse_unnamed_name(std::string_view name) {
    if (!name.ends_with(".new")) return std::nullopt;
    return segment_type::parse_file_name(name.substr(0, name.size() - 4));
  }
  /// Whether `name` is a segment file's, named (`<id>.cask`) or not yet.
  static bool is_segment_file(std::string_view name) {
    return segment_type::parse_file_name(name) || parse_unnamed_name(name);
  }

  static void install_active(state& s, std::shared_ptr<segment_type> seg) {
    s.active = seg;
    s.active_raw.store(seg.get(), std::memory_order_release);
    s.tail = seg->end();
    {
      std::lock_guard lk(s.sync_mu);
      s.active_flushed = 0;
    }
    s.prefault_asked = 0;
    ask_prefault(s);
    publish_table(s, s.segtab_owner->with(std::move(seg)));
  }

  /// Accounts for the record of `size` bytes with sequence `seq` just written
  /// at the tail of the active segment `seg`, and asks for more pages to be
  /// mapped ahead when the tail nears what was asked. Under write_mu.
  static void appended(state& s, segment_type& seg, std::uint64_t seq, std::uint64_t size) {
    s.next_seq = seq + 1;
    s.tail += size;
    seg.set_end(s.tail);
    seg.counters().note_seq(seq);
    s.written_seq.store(seq, std::memory_order_relaxed);
    if (s.tail + s.opts.prefault_bytes / 2 > s.prefault_asked) ask_prefault(s);
  }

  /// Whether the I/O policy's mappings can be prefaulted (posix_io's can).
  static constexpr bool can_prefault = requires(const typename io_type::mapping& m) { m.prefault(0, 0); };

  /// Asks the prefaulting thread to map the active segment's pages up to
  /// prefault_bytes past the tail (called when the tail comes within half of
  /// that of what was asked). Under write_mu. A request the thread has not
  /// taken yet is extended; one for a segment since sealed is replaced.
  static void ask_prefault(state& s) {
    if constexpr (can_prefault) {
      if (s.opts.prefault_bytes == 0) return void(s.prefault_asked = ~std::uint64_t{0});
      const std::uint64_t cap = s.active->capacity();
      const std::uint64_t from = std::max(s.prefault_asked, s.tail);
      const std::uint64_t to = std::min(cap, s.tail + s.opts.prefault_bytes);
      // Past the end, nothing more to ask: the next segment asks again.
      s.prefault_asked = to >= cap ? ~std::uint64_t{0} : to;
      if (to <= from) return;
      {
        std::lock_guard lk(s.prefault_mu);
        if (s.prefault_seg != s.active) {
          s.prefault_seg = s.active;
          s.prefault_from = from;
        }
        s.prefault_to = to;
      }
      s.prefault_cv.notify_one();
    } else {
      s.prefault_asked = ~std::uint64_t{0};
    }
  }

  /// The prefaulting thread: maps what ask_prefault() asks, 1 MiB at a time.
  static void prefault_loop(state& s)
    requires can_prefault
  {
    std::unique_lock lk(s.prefault_mu);
    for (;;) {
      s.prefault_cv.wait(lk, [&] { return s.prefault_stop || s.prefault_seg; });
      if (s.prefault_stop) return;
      const std::shared_ptr<segment_type> seg = std::move(s.prefault_seg);
      const std::uint64_t from = s.prefault_from, to = s.prefault_to;
      s.prefault_seg.reset();
      lk.unlock();
      // The segment may be sealed meanwhile: past its new end, prefault() fails and maps nothing.
      constexpr std::uint64_t chunk = std::uint64_t{1} << 20;
      for (std::uint64_t off = from; off < to; off += chunk)
        if (!seg->map().prefault(static_cast<std::size_t>(off), static_cast<std::size_t>(std::min(chunk, to - off))))
          break;
      lk.lock();
    }
  }

  /// Creates segment `id` with `capacity` bytes, preallocated, mapped
  /// read-write, with its header written, and makes its name durable.
  /// With `replace`, segment `id` exists, without records (the writer's
  /// last, empty or with its header never completed), and is rewritten; if
  /// that fails, what is left is again such a segment.
  static std::shared_ptr<segment_type> create_segment(state& s, std::uint32_t id, std::uint64_t capacity,
                                                      std::error_code& ec, detail::error_site* site,
                                                      bool replace = false, bool unnamed = false) {
    const auto path = s.dir / segment_type::file_name(id);
    // Unnamed (rotate_in_background()): created as `<id>.cask.new`, its
    // header made durable and the file named by the sealing thread.
    const auto file_path = unnamed ? unnamed_path(path) : path;
    std::error_code e;
    auto f = s.io.open(file_path, replace ? open_mode::create_always : open_mode::create_new, e);
    if (e) return detail::set_error(ec, site, e, file_path), nullptr;
    auto fail = [&](std::error_code err) {
      detail::set_error(ec, site, err, file_path);
      std::error_code ignored;
      f.close(ignored);
      if (!replace) s.io.remove(file_path, ignored);
      return nullptr;
    };
    f.allocate(capacity, e);
    if (e) return fail(e);
    auto m = s.io.map(f, static_cast<std::size_t>(capacity), /*writable=*/true, e);
    if (e) return fail(e);
    format::file_header h;
    h.kind = format::file_kind::segment;
    h.checksum_id = checksum_type::id;
    h.codec_id = s.codec_id;
    h.segment_id = id;
    format::encode_file_header<checksum_type>(h, m.data());
    if (unnamed) return std::make_shared<segment_type>(id, path, std::move(f), std::move(m), format::file_header_size);
    // The header is made durable now, with the file's name: then a segment
    // whose header is lost can only be damage, never an unsynced segment.
    m.flush(0, format::file_header_size, e);
    if (!e) s.io.sync_dir(s.dir, e);
    if (e) {
      // As after any failed flush: the kernel may have dropped dirty pages
      // (here, of the directory); refuse writes until reopened.
      s.failed.store(true, std::memory_order_relaxed);
      return fail(e);
    }
    return std::make_shared<segment_type>(id, path, std::move(f), std::move(m), format::file_header_size);
  }

  /// Cuts the active segment to its data, makes it durable, and (unless
  /// closing) replaces it in the table by a read-only mapping. An active
  /// segment without records is removed instead. Under write_mu.
  static bool seal_active(state& s, bool closing, std::error_code& ec, detail::error_site* site) {
    auto seg = s.active;
    if (!seg) return true;
    const std::uint64_t end = s.tail;
    std::error_code e;
    if (end == format::file_header_size) {
      // Nothing was written. At close, keep the segment, cut to its header:
      // the newest writer segment must never go (see state::reuse_id), and
      // the next open rewrites it as its active segment. At a rotation
      // (a record too large for an empty segment), remove it.
      if (closing) {
        seg->file().truncate(end, e);
        if (!e) seg->file().sync(e);
      } else {
        s.io.remove(seg->path(), e);
        if (!e) s.io.sync_dir(s.dir, e);
      }
      if (e) detail::set_error(ec, site, e, seg->path());
      s.active.reset();
      s.active_raw.store(nullptr, std::memory_order_release);
      if (!e && !closing) publish_table(s, s.segtab_owner->without({seg->id()}));
      return !e;
    }
    seg->map().flush(0, static_cast<std::size_t>(end), e);
    if (!e) seg->file().truncate(end, e);
    if (!e) seg->file().sync(e);
    if (e) {
      s.failed.store(true, std::memory_order_relaxed);
      detail::set_error(ec, site, e, seg->path(), end);
      return false;
    }
    {
      std::lock_guard lk(s.sync_mu);
      s.durable_seq = std::max(s.durable_seq, s.written_seq.load(std::memory_order_relaxed));
      s.active_flushed = end;
    }
    s.active.reset();
    s.active_raw.store(nullptr, std::memory_order_release);
    if (closing) return true;
    auto sealed = open_sealed(s, seg->id(), seg->path(), end, ec, site);
    if (!sealed) return false;
    sealed->counters().copy_from(seg->counters());
    publish_table(s, s.segtab_owner->with(std::move(sealed)));
    return true;
  }

  /// Opens and maps a sealed segment read-only ([0, size)).
  static std::shared_ptr<segment_type> open_sealed(state& s, std::uint32_t id, const std::filesystem::path& path,
                                                   std::uint64_t size, std::error_code& ec,
                                                   detail::error_site* site) {
    std::error_code e;
    auto f = s.io.open(path, open_mode::read, e);
    if (e) return detail::set_error(ec, site, e, path), nullptr;
    auto m = s.io.map(f, static_cast<std::size_t>(size), /*writable=*/false, e);
    if (e) return detail::set_error(ec, site, e, path), nullptr;
    return std::make_shared<segment_type>(id, path, std::move(f), std::move(m), size);
  }

  template <class K, class V>
  void put_impl(const K& key, const V& value, std::error_code& ec, detail::error_site* site) {
    state* s = writable(ec);
    if (!s) return;
    const std::size_t klen = Codec::encoded_size(key);
    const std::size_t vlen = Codec::encoded_size(value);
    if (klen > s->opts.max_key_bytes) return void(ec = make_error_code(errc::key_too_large));
    if (vlen > s->opts.max_value_bytes) return void(ec = make_error_code(errc::value_too_large));
    const std::uint64_t size = format::record_size(klen, vlen);
    // The key's hash, ahead of the lock where the codec shows the key's bytes
    // without encoding them (else from the record, once its key is encoded).
    std::uint64_t h = 0;
    if constexpr (codec_with_bytes_of<Codec, K>) h = Hasher{}(Codec::bytes_of(key));
    std::uint64_t seq;
    {
      std::lock_guard lk(s->write_mu);
      if (s->failed.load(std::memory_order_relaxed)) return void(ec = make_error_code(errc::store_failed));
      // The key's table slot is most likely a cache miss (as are the record's
      // bytes); asked for now, it loads while the record is written and summed.
      if constexpr (codec_with_bytes_of<Codec, K>) s->keydir.prefetch(h);
      if (!ensure_room(*s, size, ec, site)) return;
      segment_type& seg = *s->active;
      const auto off = static_cast<std::uint32_t>(s->tail);
      std::byte* p = seg.writable_data() + off;
      seq = s->next_seq;
      format::encode_record_header(p, seq, 0, static_cast<std::uint32_t>(klen), static_cast<std::uint32_t>(vlen));
      // A throwing codec leaves the tail where it was: the bytes are overwritten by the next record.
      Codec::encode(key, p + format::record_header_size);
      const std::span<const std::byte> kb(p + format::record_header_size, klen);
      if constexpr (!codec_with_bytes_of<Codec, K>) {
        h = Hasher{}(kb);
        s->keydir.prefetch(h);
      }
      Codec::encode(value, p + format::record_header_size + klen);
      format::seal_record<checksum_type>(p, static_cast<std::size_t>(size));
      appended(*s, seg, seq, size);

      segment_type* old_seg = nullptr;
      std::uint32_t old_size = 0;
      bool compared = false;
      const auto old = s->keydir.upsert(h, location{seg.id(), off, false},
                                        [&](location l) { return key_at(*s, l, kb, old_seg, old_size, compared); });
      seg.counters().add_live(size);
      if (old) {
        old_seg->counters().live_to_dead(old_size);
        if (compared && s->replaced.size() < max_replacements && old->segment <= seg.id())
          s->replaced.push_back({off, {old->segment, old->offset, old_size}});
      }
    }
    if constexpr (sync_type::every_write) sync_to(*s, seq, ec, site);
  }

  template <class K>
  bool erase_impl(const K& key, std::error_code& ec, detail::error_site* site) {
    state* s = writable(ec);
    if (!s) return false;
    key_buffer buf;
    const auto kb = key_bytes(key, buf);
    // (Not max_key_bytes: a key stored under a larger limit may be erased.)
    if (kb.size() > format::max_key_len) return false;  // could never have been stored
    const std::uint64_t h = Hasher{}(kb);
    const std::uint64_t size = format::record_size(kb.size(), 0);
    std::uint64_t seq;
    {
      std::lock_guard lk(s->write_mu);
      if (s->failed.load(std::memory_order_relaxed)) return ec = make_error_code(errc::store_failed), false;
      segment_type* old_seg = nullptr;
      std::uint32_t old_size = 0;
      bool compared = false;
      const auto existing =
          s->keydir.find(h, [&](location l) { return key_at(*s, l, kb, old_seg, old_size, compared); });
      if (!existing) return false;
      if (!ensure_room(*s, size, ec, site)) return false;
      segment_type& seg = *s->active;
      const auto off = static_cast<std::uint32_t>(s->tail);
      std::byte* p = seg.writable_data() + off;
      seq = s->next_seq;
      format::encode_record_header(p, seq, format::tombstone, static_cast<std::uint32_t>(kb.size()), 0);
      if (!kb.empty()) std::memcpy(p + format::record_header_size, kb.data(), kb.size());
      format::seal_record<checksum_type>(p, static_cast<std::size_t>(size));
      appended(*s, seg, seq, size);
      // The rotation above may have replaced the table; look the old segment up again.
      old_seg = s->segtab_owner->find(existing->segment);
      s->keydir.erase(h, [&](location l) { return l == *existing; });
      seg.counters().add_dead(size);
      if (old_seg) old_seg->counters().live_to_dead(old_size);
      if (compared && s->replaced.size() < max_replacements && existing->segment <= seg.id())
        s->replaced.push_back({off, {existing->segment, existing->offset, old_size}});
    }
    if constexpr (sync_type::every_write) sync_to(*s, seq, ec, site);
    return true;
  }

  void sync_impl(std::error_code& ec, detail::error_site* site) {
    if (!s_) return void(ec = make_error_code(errc::closed));
    if (s_->opts.read_only) return;
    sync_to(*s_, s_->written_seq.load(std::memory_order_relaxed), ec, site);
  }

  /// Returns once every record with sequence <= target is durable. One caller
  /// flushes at a time; the others wait and usually find their record flushed
  /// by it (group commit).
  ///
  /// A caller whose record the last flush covered returns, and typically comes
  /// back at once with its next record; without help it would miss the flush
  /// that another caller starts meanwhile, and the callers would split into
  /// two groups flushing in turn. So a leader whose last flush covered more
  /// callers than are waiting now first waits until as many are back, for at
  /// most a quarter of that flush's duration (the bound of the latency it can
  /// add). A lone writer never waits: its last group was itself.
  static void sync_to(state& s, std::uint64_t target, std::error_code& ec, detail::error_site* site) {
    std::unique_lock lk(s.sync_mu);
    if (s.durable_seq >= target) return;
    ++s.sync_pending;
    struct leave {
      state& s;
      std::uint64_t claims;
      // Unless a leader claimed this caller (and so stopped counting it), it
      // is still counted. Runs before lk unlocks: lk is held at every return.
      ~leave() {
        if (s.sync_claims == claims) --s.sync_pending;
      }
    } const left{s, s.sync_claims};
    while (s.durable_seq < target) {
      if (s.failed.load(std::memory_order_relaxed)) return void(ec = make_error_code(errc::store_failed));
      if (s.sync_running) {
        if (s.gathering && s.sync_pending >= s.last_group) s.gather_cv.notify_one();
        s.sync_cv.wait(lk);
        continue;
      }
      s.sync_running = true;
      if (s.sync_pending < s.last_group) {
        s.gathering = true;
        s.gather_cv.wait_for(lk, s.last_flush / 4, [&] { return s.sync_pending >= s.last_group; });
        s.gathering = false;
      }
      // Every pending caller put its record before it came in, so the flush
      // below covers it: claim them all.
      const std::size_t group = s.sync_pending;
      s.sync_pending = 0;
      ++s.sync_claims;
      lk.unlock();
      std::shared_ptr<segment_type> seg;
      std::uint64_t from = 0, to = 0, seq = 0, seals = 0;
      {
        // Everything up to `seq` is in [0, to) of `seg` or in segments sealed
        // before it, durable once the seals started so far are done.
        std::lock_guard wl(s.write_mu);
        seg = s.active;
        to = s.tail;
        seq = s.written_seq.load(std::memory_order_relaxed);
        seals = s.seals_started;
        std::lock_guard sl(s.sync_mu);
        from = s.active_flushed;
      }
      std::error_code e;
      const auto t0 = std::chrono::steady_clock::now();
      // (A seal's error is also in `failed`: reported below like a flush's.)
      detail::error_site seal_site;
      if (!wait_sealed(s, seals, e, &seal_site)) {
        lk.lock();
        s.sync_running = false;
        s.sync_cv.notify_all();
        detail::set_error(ec, site, e, seal_site.path, seal_site.offset);
        return;
      }
      if (seg && to > from) seg->map().flush(static_cast<std::size_t>(from), static_cast<std::size_t>(to - from), e);
      const auto took = std::chrono::steady_clock::now() - t0;
      lk.lock();
      s.sync_running = false;
      if (e) {
        s.failed.store(true, std::memory_order_relaxed);
        s.sync_cv.notify_all();
        detail::set_error(ec, site, e, seg->path(), from);
        return;
      }
      s.last_group = group;
      s.last_flush = took;
      if (seg && s.active_raw.load(std::memory_order_relaxed) == seg.get()) s.active_flushed = std::max(s.active_flushed, to);
      s.durable_seq = std::max(s.durable_seq, seq);
      s.sync_cv.notify_all();
    }
  }

  void close_impl(std::error_code& ec, detail::error_site* site) noexcept {
    if (!s_) return;
    std::unique_ptr<state> s = std::move(s_);
    s->stopping.store(true);
    stop_thread(s->flusher, s->flusher_mu, s->flusher_cv, s->flusher_stop);
    stop_thread(s->prefaulter, s->prefault_mu, s->prefault_cv, s->prefault_stop);
    // (The sealing thread finishes the seal under way first; it queues a hint file.)
    stop_thread(s->sealer, s->seal_mu, s->seal_cv, s->seal_stop);
    stop_thread(s->maint, s->maint_mu, s->maint_cv, s->maint_stop);
    if (!s->opts.read_only) {
      std::lock_guard lk(s->write_mu);
      if (!wait_sealed(*s, s->seals_started, ec, site)) return;  // (failed: nothing more is written)
      bool sealed = !s->failed.load();
      // A failed store (a flush, seal or merge failed, perhaps in a
      // background thread, which has no caller to tell) makes nothing
      // durable now: say so, since closing promises it.
      if (!sealed) detail::set_error(ec, site, make_error_code(errc::store_failed), s->dir);
      if (sealed && s->active) {
        const std::uint32_t id = s->active->id();
        const bool had_records = s->tail > format::file_header_size;
        sealed = seal_active(*s, /*closing=*/true, ec, site);
        if (sealed && had_records) s->hint_queue.push_back({id, std::move(s->replaced)});
      }
      // Hint files for every sealed segment that lacks one, so a clean restart scans nothing.
      // A hint that cannot be written costs only a scan at the next open.
      for (const queued_hint& q : s->hint_queue)
        if (auto seg = s->segtab_owner->find_shared(q.id)) write_hint(*s, *seg, q.replaced);
      s->hint_queue.clear();
      // And the keydir itself, so that it need not be rebuilt at all. Not
      // after damage was skipped at open: the next open scans and reports it again.
      if constexpr (can_snapshot)
        if (sealed && s->opts.keydir_snapshot && s->scanned_with_damage.empty()) write_snapshot(*s);
    }
    // Segments are unmapped as their last owner (this state or a value_ref) goes.
  }

  static void stop_thread(std::thread& t, std::mutex& mu, std::condition_variable& cv, bool& stop) noexcept {
    if (!t.joinable()) return;
    {
      std::lock_guard lk(mu);
      stop = true;
    }
    cv.notify_all();
    t.join();
  }

  // ---- hint files ----

  /// Writes the hint file of a sealed segment (scanning it, so every entry
  /// comes from a record whose checksum was verified). Returns success.
  static bool write_hint(state& s, const segment_type& seg, std::span<const replacement> replaced = {}) {
    hint_builder<checksum_type> b(seg.id(), s.codec_id);
    const std::uint64_t end = seg.end();
    std::size_t next = 0;  // in `replaced`, in file order as the records
    const scan_result r = scan_records<checksum_type>(
        seg.data(), end, format::file_header_size, [&](const format::record_view& rv, std::uint64_t off) {
          while (next < replaced.size() && replaced[next].at < off) ++next;
          const bool known = next < replaced.size() && replaced[next].at == off;
          b.add(rv, static_cast<std::uint32_t>(off), Hasher{}(rv.key), known ? replaced[next].what : replaced_record{});
        });
    if (r.valid_end != end) return false;  // damage: let recovery scan and report it
    const auto bytes = std::move(b).finish(end);
    std::error_code e;
    write_file_atomically(s.io, s.dir, hint_file_name(seg.id()), std::span<const std::byte>(bytes), e);
    return !e;
  }

  // ---- the keydir snapshot (FORMAT.md "Keydir snapshot") ----

  static constexpr bool can_snapshot = requires { keydir_type::image_layout; typename keydir_type::image; };
  static constexpr std::string_view snapshot_name = "KEYDIR";
  static constexpr std::size_t snapshot_fixed_size = format::file_header_size + 24;
  static constexpr std::size_t snapshot_segment_size = 64;
  static constexpr std::size_t snapshot_trailer_size = 16;

  /// Tells one Hasher from another: the hashes of fixed keys of several
  /// lengths. The keydir holds hashes, so it is loaded only by the same hasher.
  static std::uint64_t hasher_fingerprint() noexcept {
    static constexpr char text[] = "cask keydir snapshot: whose hashes are these?";
    const auto* b = reinterpret_cast<const std::byte*>(text);
    std::uint64_t f = 0;
    for (const std::size_t n : {0u, 3u, 8u, 16u, 45u})
      f = (f ^ static_cast<std::uint64_t>(Hasher{}(std::span<const std::byte>(b, n)))) * 0x9e3779b97f4a7c15ull;
    return f;
  }

  /// Writes KEYDIR (at close, with no other thread running): to KEYDIR.tmp,
  /// then renamed. Not synced: the file only saves time, a trailer checksum
  /// covers all of it, and open trusts it only when every segment file
  /// matches it. A snapshot that cannot be written costs only a rebuild.
  static void write_snapshot(state& s) noexcept {
    const auto tmp = s.dir / (std::string(snapshot_name) + ".tmp");
    std::error_code e;
    try {
      auto f = s.io.open(tmp, open_mode::create_always, e);
      if (e) return;
      std::vector<std::byte> buf;
      buf.reserve(std::size_t{1} << 20);
      std::uint64_t off = 0;
      std::uint32_t crc = 0;
      auto flush = [&] {
        if (e || buf.empty()) return;
        crc = checksum_type::extend(crc, buf.data(), buf.size());
        f.write_at(buf.data(), buf.size(), off, e);
        off += buf.size();
        buf.clear();
      };
      auto out = [&](const std::byte* p, std::size_t n) {
        buf.insert(buf.end(), p, p + n);
        if (buf.size() >= (std::size_t{1} << 20)) flush();
      };
      const auto& segs = s.segtab_owner->all();
      std::byte fixed[snapshot_fixed_size]{};
      format::file_header h;
      h.kind = format::file_kind::keydir_snapshot;
      h.checksum_id = checksum_type::id;
      h.codec_id = s.codec_id;
      format::encode_file_header<checksum_type>(h, fixed);
      detail::store_u32(fixed + 32, keydir_type::image_layout);
      detail::store_u32(fixed + 36, static_cast<std::uint32_t>(segs.size()));
      detail::store_u64(fixed + 40, hasher_fingerprint());
      detail::store_u64(fixed + 48, s.next_seq - 1);
      out(fixed, sizeof fixed);
      for (const auto& seg : segs) {
        std::byte rec[snapshot_segment_size]{};
        const auto& c = seg->counters();
        detail::store_u32(rec, seg->id());
        detail::store_u64(rec + 8, seg->end());
        detail::store_u64(rec + 16, c.live_records.load());
        detail::store_u64(rec + 24, c.live_bytes.load());
        detail::store_u64(rec + 32, c.dead_records.load());
        detail::store_u64(rec + 40, c.dead_bytes.load());
        detail::store_u64(rec + 48, c.min_seq.load());
        detail::store_u64(rec + 56, c.max_seq.load());
        out(rec, sizeof rec);
      }
      s.keydir.save_image(out);
      flush();
      std::byte trailer[snapshot_trailer_size]{};
      detail::store_u64(trailer, off);
      detail::store_u32(trailer + 8, format::mask(crc));
      if (!e) f.write_at(trailer, sizeof trailer, off, e);
      std::error_code close_ec;
      f.close(close_ec);
      if (!e) e = close_ec;
      if (!e) s.io.rename(tmp, s.dir / snapshot_name, e);
    } catch (...) {
      e = make_error_code(errc::store_failed);
    }
    if (e) {
      std::error_code ignored;
      s.io.remove(tmp, ignored);
    }
  }

  /// Loads KEYDIR if it validates and describes exactly the segment files
  /// `ids` (ascending): their sizes, their headers. Fills `segs` (mapped,
  /// with their counters) and `max_seq`, and installs the keydir. Returns
  /// false, with everything as it was, if the snapshot is missing or is not
  /// used for any reason (then reported as bad_snapshot).
  static bool load_snapshot(state& s, const std::vector<std::uint32_t>& ids,
                            std::vector<std::shared_ptr<segment_type>>& segs, std::uint64_t& max_seq) {
    const auto path = s.dir / snapshot_name;
    std::error_code e;
    auto f = s.io.open(path, open_mode::read, e);
    if (e) return false;
    std::string why;
    std::uint64_t at = 0;
    auto reject = [&](std::uint64_t off, std::string text) {
      at = off;
      why = std::move(text);
      return false;
    };
    auto body = [&]() -> bool {
      const std::uint64_t size = f.size(e);
      if (e) return reject(0, "cannot be read: " + e.message());
      if (size < snapshot_fixed_size + snapshot_trailer_size) return reject(0, "shorter than its header and trailer");
      std::byte trailer[snapshot_trailer_size];
      read_exact(f, trailer, sizeof trailer, size - sizeof trailer, e);
      if (e) return reject(size - sizeof trailer, "cannot be read: " + e.message());
      const std::uint64_t body_size = size - snapshot_trailer_size;
      if (detail::load_u32(trailer + 12) != 0) return reject(size - 4, "reserved trailer bytes are not zero");
      if (detail::load_u64(trailer) != body_size)
        return reject(body_size, "its trailer gives a length of " + std::to_string(detail::load_u64(trailer)) +
                                     " bytes; the file holds " + std::to_string(body_size));
      // Sequential reads through a 1 MiB buffer, checksummed as they come.
      constexpr std::size_t buf_size = std::size_t{1} << 20;
      const std::unique_ptr<std::byte[]> buf(new std::byte[buf_size]);
      std::size_t have = 0, used = 0;
      std::uint64_t next = 0;
      std::uint32_t crc = 0;
      auto in = [&](std::byte* out, std::size_t n) {
        while (n > 0) {
          if (used == have) {
            if (next == body_size) return false;
            have = static_cast<std::size_t>(std::min<std::uint64_t>(buf_size, body_size - next));
            read_exact(f, buf.get(), have, next, e);
            if (e) return false;
            crc = checksum_type::extend(crc, buf.get(), have);
            next += have;
            used = 0;
          }
          const std::size_t k = std::min(n, have - used);
          std::memcpy(out, buf.get() + used, k);
          out += k, used += k, n -= k;
        }
        return true;
      };
      std::byte fixed[snapshot_fixed_size];
      if (!in(fixed, sizeof fixed)) return reject(0, "cannot be read");
      format::file_header h;
      if (format::decode_file_header<checksum_type>(std::span(fixed), format::file_kind::keydir_snapshot, h) !=
          format::header_status::ok)
        return reject(0, "its file header does not validate");
      if (h.codec_id != s.codec_id || h.checksum_id != checksum_type::id)
        return reject(12, "written with another codec or checksum");
      if (h.segment_id != 0) return reject(20, "its header names a segment");
      if (detail::load_u32(fixed + 32) != keydir_type::image_layout) return reject(32, "written by another keydir");
      if (detail::load_u64(fixed + 40) != hasher_fingerprint()) return reject(40, "written with another hasher");
      const std::uint32_t count = detail::load_u32(fixed + 36);
      if (count != ids.size())
        return reject(36, "it lists " + std::to_string(count) + " segments; the directory holds " +
                              std::to_string(ids.size()));
      const std::uint64_t seq = detail::load_u64(fixed + 48);
      std::vector<std::shared_ptr<segment_type>> found;
      for (std::uint32_t i = 0; i < count; ++i) {
        const std::uint64_t rec_at = snapshot_fixed_size + std::uint64_t{i} * snapshot_segment_size;
        std::byte rec[snapshot_segment_size];
        if (!in(rec, sizeof rec)) return reject(rec_at, "cannot be read");
        const std::uint32_t id = detail::load_u32(rec);
        const std::uint64_t seg_size = detail::load_u64(rec + 8);
        if (detail::load_u32(rec + 4) != 0) return reject(rec_at + 4, "reserved bytes are not zero");
        const auto seg_path = s.dir / segment_type::file_name(id);
        if (id != ids[i]) return reject(rec_at, "it lists segment " + segment_type::file_name(id) + "; the directory holds " +
                                                    segment_type::file_name(ids[i]));
        auto sf = s.io.open(seg_path, open_mode::read, e);
        const std::uint64_t actual = e ? 0 : sf.size(e);
        if (e) return reject(rec_at, segment_type::file_name(id) + " cannot be read: " + e.message());
        if (actual != seg_size || seg_size < format::file_header_size || seg_size > format::max_segment_size)
          return reject(rec_at, segment_type::file_name(id) + " is " + std::to_string(actual) +
                                    " bytes; the snapshot says " + std::to_string(seg_size));
        auto m = s.io.map(sf, static_cast<std::size_t>(seg_size), false, e);
        if (e) return reject(rec_at, segment_type::file_name(id) + " cannot be mapped: " + e.message());
        format::file_header sh;
        if (format::decode_file_header<checksum_type>(std::span(m.data(), format::file_header_size),
                                                      format::file_kind::segment, sh) != format::header_status::ok ||
            sh.codec_id != s.codec_id || sh.checksum_id != checksum_type::id || sh.segment_id != id)
          return reject(rec_at, segment_type::file_name(id) + ": its header does not match");
        auto seg = std::make_shared<segment_type>(id, seg_path, std::move(sf), std::move(m), seg_size);
        auto& c = seg->counters();
        c.live_records.store(detail::load_u64(rec + 16));
        c.live_bytes.store(detail::load_u64(rec + 24));
        c.dead_records.store(detail::load_u64(rec + 32));
        c.dead_bytes.store(detail::load_u64(rec + 40));
        c.min_seq.store(detail::load_u64(rec + 48));
        c.max_seq.store(detail::load_u64(rec + 56));
        if (c.max_seq.load() > seq || c.live_bytes.load() + c.dead_bytes.load() > seg_size)
          return reject(rec_at, segment_type::file_name(id) + ": its counts do not add up");
        found.push_back(std::move(seg));
      }
      typename keydir_type::image im;
      const bool image_ok = keydir_type::load_image(in, size * 8, [&](location l) {
        const auto it = std::lower_bound(ids.begin(), ids.end(), l.segment);
        if (it == ids.end() || *it != l.segment) return false;
        const std::uint64_t seg_size = found[static_cast<std::size_t>(it - ids.begin())]->end();
        return l.offset >= format::file_header_size && l.offset + format::record_header_size <= seg_size;
      }, im);
      if (e) return reject(next, "cannot be read: " + e.message());
      if (!image_ok) return reject(snapshot_fixed_size + std::uint64_t{count} * snapshot_segment_size,
                                   "its keydir tables are not consistent");
      if (used != have || next != body_size) return reject(next - (have - used), "bytes follow the keydir tables");
      if (format::mask(crc) != detail::load_u32(trailer + 8)) return reject(body_size, "checksum mismatch");
      s.keydir.install_image(std::move(im));
      segs = std::move(found);
      max_seq = seq;
      return true;
    };
    bool ok = false;
    try {
      ok = body();
    } catch (const std::bad_alloc&) {
      ok = reject(0, "not enough memory to load it");
    }
    if (!ok) report(s, recovery_event::kind::bad_snapshot, path, at, 0, why + "; rebuilding the keydir instead");
    return ok;
  }

  /// The maintenance thread: hint files for newly sealed segments, and
  /// background merges when the policy says so.
  static void maintenance(state& s) {
    for (;;) {
      std::vector<queued_hint> todo;
      {
        std::unique_lock lk(s.maint_mu);
        s.maint_cv.wait_for(lk, s.opts.merge.check_interval, [&] { return s.maint_stop || !s.hint_queue.empty(); });
        if (s.maint_stop) return;
        todo.swap(s.hint_queue);
      }
      for (std::size_t i = 0; i < todo.size(); ++i) {
        std::shared_ptr<segment_type> seg;
        {
          std::lock_guard wl(s.write_mu);
          seg = s.segtab_owner->find_shared(todo[i].id);
        }
        if (s.stopping.load()) {
          // close() writes what is left.
          std::lock_guard lk(s.maint_mu);
          s.hint_queue.insert(s.hint_queue.end(), std::make_move_iterator(todo.begin() + static_cast<long>(i)),
                              std::make_move_iterator(todo.end()));
          return;
        }
        if (seg && !seg->writable()) write_hint(s, *seg, todo[i].replaced);
      }
      if (s.opts.merge.background && !s.stopping.load() && !s.failed.load()) {
        std::error_code ignored;  // a failed background merge changes nothing; merge() reports errors
        run_merge(s, merge_scope::policy, /*background=*/true, ignored, nullptr);
      }
    }
  }

  // ---- merging ----

  static std::vector<std::uint32_t> select_inputs(const state& s, merge_scope scope) {
    std::vector<merge_input> sealed;
    {
      detail::epoch_domain::guard g(s.epoch);
      const segment_table_type* tab = s.segtab.load(std::memory_order_seq_cst);
      const std::uint32_t sealing = s.sealing_id.load(std::memory_order_relaxed);
      for (const auto& seg : tab->all()) {
        if (seg->writable() || seg->id() == sealing) continue;  // the active segment, or one not yet durable
        sealed.push_back({seg->id(), seg->end(), seg->counters().dead_bytes.load(std::memory_order_relaxed)});
      }
    }
    if (scope == merge_scope::policy)
      return merge_policy_type::select(sealed, s.opts.merge, s.opts.max_segment_bytes);
    std::vector<std::uint32_t> all;
    for (const auto& m : sealed) all.push_back(m.id);
    return all;
  }

  merge_stats merge_impl(merge_scope scope, bool background, std::error_code& ec, detail::error_site* site) {
    state* s = writable(ec);
    if (!s) return {};
    return run_merge(*s, scope, background, ec, site);
  }

  /// One merge output segment being written.
  struct merge_output {
    merge_output(std::uint32_t i, std::uint32_t codec) : id(i), hint(i, codec) {}
    std::uint32_t id;
    std::filesystem::path tmp, path;
    typename io_type::file file;
    std::uint64_t size = 0, written = 0, dead_bytes = 0, dead_records = 0;
    std::uint64_t min_seq = ~std::uint64_t{0}, max_seq = 0;
    hint_builder<checksum_type> hint;
    std::shared_ptr<segment_type> seg;
  };

  static merge_stats run_merge(state& s, merge_scope scope, bool background, std::error_code& ec,
                               detail::error_site* site) {
    merge_stats st;
    std::unique_lock ml(s.merge_mu, std::defer_lock);
    if (background) {
      if (!ml.try_lock()) return st;
    } else {
      ml.lock();
    }
    if (!background) {
      // A merge asked for takes every sealed segment its scope names: one
      // being sealed in the background is waited for (a background merge
      // leaves it to its next round).
      std::uint64_t started = 0;
      {
        std::lock_guard wl(s.write_mu);
        started = s.seals_started;
      }
      if (!wait_sealed(s, started, ec, site)) return st;
    }
    if (scope == merge_scope::compact) {
      std::lock_guard wl(s.write_mu);
      if (s.failed.load(std::memory_order_relaxed)) return ec = make_error_code(errc::store_failed), st;
      if (s.active && s.tail > format::file_header_size && !rotate(s, 0, ec, site, /*queue_hint=*/false)) return st;
    }
    auto picked = select_inputs(s, scope);
    std::sort(picked.begin(), picked.end());
    if (picked.empty()) return st;

    // Pin the inputs (sealed segments only, whatever a policy returned), and
    // find the lowest sequence number any segment that stays may hold: a
    // tombstone newer than that shadows nothing that stays.
    std::vector<std::shared_ptr<segment_type>> inputs;
    std::vector<std::uint32_t> ids;
    std::uint64_t min_seq_kept = ~std::uint64_t{0};
    {
      std::lock_guard wl(s.write_mu);
      // (A segment still being sealed is never an input: its successor is
      // named only once it is durable, which recovery relies on.)
      const std::uint32_t sealing = s.sealing_id.load(std::memory_order_relaxed);
      for (const auto& seg : s.segtab_owner->all()) {
        if (!seg->writable() && seg->id() != sealing && std::binary_search(picked.begin(), picked.end(), seg->id())) {
          inputs.push_back(seg);
          ids.push_back(seg->id());
        } else {
          min_seq_kept = std::min(min_seq_kept, seg->counters().min_seq.load());
        }
      }
    }
    if (inputs.empty()) return st;

    struct move {
      std::uint64_t hash;
      location from, to;
      std::uint32_t size;
    };
    std::vector<move> moves;
    std::vector<std::unique_ptr<merge_output>> outs;
    std::vector<std::byte> buf;
    buf.reserve(std::size_t{1} << 20);
    std::error_code e;
    std::filesystem::path err_path;
    std::uint64_t err_off = error::npos;

    auto abandon = [&] {
      for (auto& o : outs) {
        std::error_code ignored;
        o->file.close(ignored);
        s.io.remove(o->tmp, ignored);
      }
      if (e) detail::set_error(ec, site, e, err_path, err_off);
      return st;
    };
    auto flush = [&](merge_output& o) {
      if (buf.empty() || e) return;
      o.file.write_at(buf.data(), buf.size(), o.written, e);
      if (e) err_path = o.tmp;
      o.written += buf.size();
      buf.clear();
    };
    auto start_output = [&]() -> merge_output* {
      std::uint32_t id;
      {
        std::lock_guard wl(s.write_mu);
        id = s.next_id++;
      }
      auto o = std::make_unique<merge_output>(id, s.codec_id);
      o->path = s.dir / segment_type::file_name(id);
      o->tmp = s.dir / (segment_type::file_name(id) + ".tmp");
      o->file = s.io.open(o->tmp, open_mode::create_always, e);
      if (e) {
        err_path = o->tmp;
        return nullptr;
      }
      format::file_header h;
      h.checksum_id = checksum_type::id;
      h.codec_id = s.codec_id;
      h.segment_id = id;
      h.flags = format::merge_output;
      buf.resize(format::file_header_size);
      format::encode_file_header<checksum_type>(h, buf.data());
      o->size = format::file_header_size;
      outs.push_back(std::move(o));
      return outs.back().get();
    };
    auto finish_output = [&](merge_output& o) {
      flush(o);
      if (!e) o.file.sync(e);
      if (e && err_path.empty()) err_path = o.tmp;
    };

    // 1. Copy the live records (and the tombstones still needed) into new segments.
    merge_output* out = nullptr;
    bool skipped_damage = false;
    for (const auto& in : inputs) {
      const std::uint64_t end = in->end();
      st.bytes_in += end;
      std::uint64_t last_seq = 0;
      for (std::uint64_t off = format::file_header_size; off < end;) {
        if (s.stopping.load()) return abandon();
        format::record_view rv;
        const auto rs =
            format::parse_record<checksum_type>(in->data() + off, static_cast<std::size_t>(end - off), rv);
        if (rs != format::record_status::ok) {
          // Damage is skipped only where recovery scanned the segment and
          // skipped damage too: the keydir then names nothing in what is
          // skipped, and what the merge drops, the store already did not show.
          // Elsewhere (a segment loaded from a hint file, whose entries were
          // never checked against the records) a skip could drop intact
          // records and tombstones the store relies on: the merge refuses.
          if (s.opts.on_corruption == corruption_policy::fail ||
              std::find(s.scanned_with_damage.begin(), s.scanned_with_damage.end(), in->id()) ==
                  s.scanned_with_damage.end()) {
            e = make_error_code(rs == format::record_status::bad_checksum ? errc::checksum_mismatch
                                                                         : errc::corruption);
            err_path = in->path();
            err_off = off;
            return abandon();
          }
          // As recovery did: resume where valid records chain to the end (see
          // find_resync_point).
          format::file_header h;
          const bool writer_segment =
              format::decode_file_header<checksum_type>(std::span(in->data(), format::file_header_size),
                                                        format::file_kind::segment, h) ==
                  format::header_status::ok &&
              (h.flags & format::merge_output) == 0;
          const auto next = find_resync_point<checksum_type>(in->data(), end, off + 1, last_seq, writer_segment);
          const std::uint64_t resume = next ? *next : end;
          report(s, recovery_event::kind::corrupt_record, in->path(), off, resume - off,
                 std::string(status_text(rs)) + "; skipped by a merge (corruption_policy::skip)");
          st.damaged_bytes_skipped += resume - off;
          skipped_damage = true;
          off = resume;
          continue;
        }
        last_seq = std::max(last_seq, rv.seq);
        const std::uint64_t h = Hasher{}(rv.key);
        const location here{in->id(), static_cast<std::uint32_t>(off), false};
        bool keep;
        {
          detail::epoch_domain::guard g(s.epoch);
          if (rv.is_tombstone()) {
            // Keep a tombstone while the key is absent and an older record of
            // it may survive in a segment this merge does not rewrite
            // (Bitcask issue #82: dropping it would bring the value back).
            found f;
            std::error_code ignored;
            const bool present = lookup(s, rv.key, f, false, ignored, nullptr);
            keep = !present && min_seq_kept < rv.seq;
            if (!keep) ++st.tombstones_dropped;
          } else {
            keep = s.keydir.find(h, [&](location l) { return l == here; }).has_value();
            if (!keep) ++st.records_dropped;
          }
        }
        if (keep) {
          if (!out || (out->size + rv.size > s.opts.max_segment_bytes && out->size > format::file_header_size)) {
            if (out) finish_output(*out);
            if (e || !(out = start_output())) return abandon();
          }
          buf.insert(buf.end(), in->data() + off, in->data() + off + rv.size);
          const auto at = static_cast<std::uint32_t>(out->size);
          out->hint.add(rv, at, h);
          out->min_seq = std::min(out->min_seq, rv.seq);
          out->max_seq = std::max(out->max_seq, rv.seq);
          if (rv.is_tombstone()) {
            out->dead_bytes += rv.size;
            ++out->dead_records;
          } else {
            moves.push_back({h, here, location{out->id, at, false}, rv.size});
          }
          out->size += rv.size;
          ++st.records_copied;
          if (buf.size() >= (std::size_t{1} << 20)) flush(*out);
          if (e) return abandon();
        }
        off += rv.size;
      }
    }
    if (out) finish_output(*out);
    if (e) return abandon();

    // Records this merge dropped were superseded by newer ones that may not be
    // durable yet (sync_none): make them durable first, or a power loss after
    // the commit would lose both the old record and its replacement.
    sync_to(s, s.written_seq.load(std::memory_order_relaxed), e, nullptr);
    if (e) {
      err_path = s.dir;
      return abandon();
    }

    // 2. Commit: the manifest's atomic appearance. From here on recovery
    //    finishes the merge, so any failure leaves the store failed until reopened.
    merge_manifest m;
    m.inputs = ids;
    for (const auto& o : outs) m.outputs.push_back(o->id);
    const std::string manifest_name = merge_manifest::file_name(outs.empty() ? ids.front() : outs.front()->id);
    {
      const auto bytes = m.template encode<checksum_type>(s.codec_id);
      write_file_atomically(s.io, s.dir, manifest_name, std::span<const std::byte>(bytes), e);
      if (e) {
        // Not committed. Should the rename have happened, recovery finds a
        // manifest whose outputs are gone and discards it.
        std::error_code ignored;
        s.io.remove(s.dir / manifest_name, ignored);
        err_path = s.dir / manifest_name;
        return abandon();
      }
    }
    auto fail_committed = [&](const std::filesystem::path& p) {
      s.failed.store(true);
      detail::set_error(ec, site, e, p);
      return st;
    };
    for (auto& o : outs) {
      o->file.close(e);
      if (!e) s.io.rename(o->tmp, o->path, e);
      if (e) return fail_committed(o->tmp);
    }
    s.io.sync_dir(s.dir, e);
    if (e) return fail_committed(s.dir);

    // 3. Make the outputs readable, then point the keydir at them.
    for (auto& o : outs) {
      o->seg = open_sealed(s, o->id, o->path, o->size, e, nullptr);
      if (!o->seg) return fail_committed(o->path);
      auto& c = o->seg->counters();
      c.dead_bytes.store(o->dead_bytes);
      c.dead_records.store(o->dead_records);
      c.min_seq.store(o->min_seq);
      c.max_seq.store(o->max_seq);
      st.bytes_out += o->size;
    }
    st.segments_in = inputs.size();
    st.segments_out = outs.size();
    {
      std::lock_guard wl(s.write_mu);
      auto t = s.segtab_owner;
      for (auto& o : outs) t = t->with(o->seg);
      publish_table(s, std::move(t));
    }
    constexpr std::size_t chunk = 4096;  // keys installed per hold of the writer's lock
    for (std::size_t i = 0; i < moves.size(); i += chunk) {
      std::lock_guard wl(s.write_mu);
      for (std::size_t j = i; j < std::min(moves.size(), i + chunk); ++j) {
        const move& mv = moves[j];
        segment_type* to = s.segtab_owner->find(mv.to.segment);
        if (s.keydir.replace_if(mv.hash, mv.from, mv.to)) {
          to->counters().add_live(mv.size);
        } else {
          to->counters().add_dead(mv.size);  // a put or erase won meanwhile
        }
      }
    }

    // 4. Retire the inputs: out of the table, then (after readers are done) off the disk.
    {
      std::lock_guard wl(s.write_mu);
      if (skipped_damage) {
        // Entries still naming an input name records this merge skipped
        // (every other one was moved, or replaced by a put or erase); there
        // should be none, as recovery skipped the same records: drop any.
        auto sorted = ids;
        std::sort(sorted.begin(), sorted.end());
        st.damaged_entries_dropped = s.keydir.purge_if([&](location l) {
          return std::binary_search(sorted.begin(), sorted.end(), l.segment);
        });
      }
      publish_table(s, s.segtab_owner->without(ids));
    }
    // Past this point the merge has taken effect; a failed step is still
    // reported, and what it left behind is cleaned up by the next open.
    // The store refuses writes and merges until reopened: a later merge of
    // these outputs while the manifest still names them would leave recovery
    // a manifest it takes for uncommitted, beside inputs still on disk.
    auto report_late = [&](std::error_code err, const std::filesystem::path& p) {
      s.failed.store(true);
      detail::set_error(ec, site, err, p);
      return st;
    };
    for (const auto& in : inputs) {
      s.io.remove(in->path(), e);
      // Keep the manifest: the next open removes the rest of the inputs.
      if (e && e != std::errc::no_such_file_or_directory) return report_late(e, in->path());
      e.clear();
      std::error_code rm;
      s.io.remove(s.dir / hint_file_name(in->id()), rm);  // may not exist; an orphan goes at the next open
      if (rm && rm != std::errc::no_such_file_or_directory) return report_late(rm, s.dir / hint_file_name(in->id()));
    }
    inputs.clear();
    s.io.sync_dir(s.dir, e);
    if (!e) s.io.remove(s.dir / manifest_name, e);
    if (!e) s.io.sync_dir(s.dir, e);
    if (e) return report_late(e, s.dir);

    // 5. Hint files for the outputs (without one, the next open scans the segment).
    for (auto& o : outs) {
      const auto bytes = std::move(o->hint).finish(o->size);
      write_file_atomically(s.io, s.dir, hint_file_name(o->id), std::span<const std::byte>(bytes), e);
      if (e) {
        // Harmless: without its hint the segment is scanned at the next open.
        detail::set_error(ec, site, e, s.dir / hint_file_name(o->id));
        return st;
      }
    }
    return st;
  }

  // ---- recovery ----

  static std::unique_ptr<state> open_state(const std::filesystem::path& dir, const options& opts, io_type io,
                                           std::error_code& ec, detail::error_site* site) {
    auto s = std::make_unique<state>(std::move(io));
    s->dir = dir;
    s->opts = opts;
    s->codec_id = format::codec_id<checksum_type>(std::string_view(Codec::name));
    if (opts.max_segment_bytes < 4096 || opts.sync_interval.count() < 0 || opts.max_segment_bytes > format::max_segment_size ||
        opts.max_key_bytes > format::max_key_len || opts.max_value_bytes > format::max_value_len ||
        (sync_type::background && opts.sync_interval.count() <= 0)) {
      ec = make_error_code(errc::invalid_argument);
      return nullptr;
    }
    std::error_code e;
    if (!s->io.exists(dir)) {
      if (!opts.create_if_missing || opts.read_only) {
        detail::set_error(ec, site, make_error_code(errc::not_found), dir);
        return nullptr;
      }
      // The directories made, deepest first: each one's name is durable only
      // once its parent is synced, and with it every write under it.
      std::vector<std::filesystem::path> made;
      std::filesystem::path p = dir.lexically_normal();
      if (!p.has_filename()) p = p.parent_path();
      for (; !p.empty() && !s->io.exists(p); p = p.parent_path()) {
        made.push_back(p);
        if (p == p.root_path()) break;  // a file system (a test's) without even a root
      }
      s->io.create_directories(dir, e);
      for (const auto& d : made) {
        if (e) break;
        s->io.sync_dir(d.has_parent_path() ? d.parent_path() : std::filesystem::path("."), e);
      }
      if (e) return detail::set_error(ec, site, e, dir), nullptr;
    }
    if (!opts.read_only) {
      s->lock = s->io.lock(dir, e);
      if (e) return detail::set_error(ec, site, e, dir), nullptr;
    }
    // A read-only open can race a writer's merge removing files: list again then.
    for (int attempt = 0;; ++attempt) {
      e.clear();
      detail::error_site rsite;
      if (recover(*s, e, &rsite)) break;
      if (!(opts.read_only && e == std::errc::no_such_file_or_directory && attempt < 8)) {
        detail::set_error(ec, site, e, rsite.path, rsite.offset);
        return nullptr;
      }
      s = reset_for_retry(std::move(s));
    }
    if (!opts.read_only) {
      const bool reuse = s->reuse_id.has_value();
      auto seg = create_segment(*s, reuse ? *s->reuse_id : s->next_id, opts.max_segment_bytes, ec, site, reuse);
      if (!seg) return nullptr;
      if (!reuse) ++s->next_id;
      install_active(*s, std::move(seg));
    }
    if (!opts.read_only && !start_threads(*s, ec, site)) return nullptr;
    return s;
  }

  /// Starts a writer's background threads: maintenance, prefaulting (if
  /// asked for), the sync_interval flusher (if the sync policy has one). If
  /// the system refuses one (std::thread throws std::system_error: a process
  /// or thread limit), stops those started and reports the error, naming the
  /// directory (anything else std::thread throws is rethrown, once they are
  /// stopped). What the open did stays as a crash would leave it (its empty
  /// active segment, which the next open reuses; no keydir snapshot).
  static bool start_threads(state& s, std::error_code& ec, detail::error_site* site) {
    const auto stop_started = [&s]() noexcept {
      // As close() stops them: `stopping` ends a hint write or merge under way.
      s.stopping.store(true);
      stop_thread(s.flusher, s.flusher_mu, s.flusher_cv, s.flusher_stop);
      stop_thread(s.prefaulter, s.prefault_mu, s.prefault_cv, s.prefault_stop);
      stop_thread(s.sealer, s.seal_mu, s.seal_cv, s.seal_stop);
      stop_thread(s.maint, s.maint_mu, s.maint_cv, s.maint_stop);
    };
    state* raw = &s;
    try {
      raw->maint = std::thread([raw] { maintenance(*raw); });
      // (Under sync_always every put waits for its segment's name anyway.)
      if (!sync_type::every_write && s.opts.background_seal) raw->sealer = std::thread([raw] { seal_loop(*raw); });
      if constexpr (can_prefault)
        if (s.opts.prefault_bytes > 0) raw->prefaulter = std::thread([raw] { prefault_loop(*raw); });
      if constexpr (sync_type::background) {
        raw->flusher = std::thread([raw] {
          std::unique_lock lk(raw->flusher_mu);
          while (!raw->flusher_stop) {
            raw->flusher_cv.wait_for(lk, raw->opts.sync_interval);
            if (raw->flusher_stop) break;
            lk.unlock();
            std::error_code ignored;  // a failure sets `failed`, which writers report
            sync_to(*raw, raw->written_seq.load(std::memory_order_relaxed), ignored, nullptr);
            lk.lock();
          }
        });
      }
    } catch (const std::system_error& e) {
      stop_started();
      detail::set_error(ec, site, e.code(), s.dir);
      return false;
    } catch (...) {
      stop_started();
      throw;
    }
    return true;
  }

  static std::unique_ptr<state> reset_for_retry(std::unique_ptr<state> old) {
    auto s = std::make_unique<state>(std::move(old->io));
    s->dir = old->dir;
    s->opts = old->opts;
    s->codec_id = old->codec_id;
    return s;
  }

  static void report(const state& s, recovery_event::kind k, const std::filesystem::path& f, std::uint64_t off,
                     std::uint64_t bytes, std::string detail) {
    if (s.opts.reporter) s.opts.reporter(recovery_event{k, f, off, bytes, std::move(detail)});
  }

  static const char* status_text(format::record_status st) {
    switch (st) {
      case format::record_status::ok: return "ok";
      case format::record_status::zero: return "zero bytes where a record should be";
      case format::record_status::truncated: return "record runs past the end of the data";
      case format::record_status::bad_header: return "malformed record header";
      case format::record_status::bad_checksum: return "checksum mismatch";
    }
    return "?";
  }

  /// Finishes or discards merges interrupted by a crash, going by their
  /// manifests; fills `skip` with the segment ids to leave out (read-only:
  /// inputs of a committed merge whose outputs are all in place, or outputs
  /// of one whose are not). Returns false, with the error in `ec` and `site`,
  /// if a manifest cannot be read or a committed merge cannot be finished:
  /// going on could bring back what the merge dropped (a key whose tombstone
  /// was in a removed input), so the open fails and changes nothing more.
  static bool settle_merges(state& s, const std::vector<std::string>& names, std::vector<std::uint32_t>& skip,
                            std::error_code& ec, detail::error_site* site) {
    const bool rw = !s.opts.read_only;
    auto fail = [&](std::error_code e, const std::filesystem::path& p, std::uint64_t off = error::npos) {
      detail::set_error(ec, site, e, p, off);
      return false;
    };
    for (const auto& n : names) {
      if (n.size() != 16 || !n.ends_with(".merge")) continue;
      const auto path = s.dir / n;
      std::vector<std::byte> bytes;
      merge_manifest m;
      std::error_code e;
      if (!read_file(s.io, path, bytes, e)) {
        if (e) return fail(e, path);
        continue;  // gone since the listing (a read-only open racing the writer)
      }
      if (!m.template decode<checksum_type>(bytes, s.codec_id)) {
        // One of another codec or checksum is the store's, not damage: the
        // store is refused, as its segments are, and nothing is removed. A
        // header that fails its checksum and claims another checksum id
        // cannot be told from one damaged there, but the segments can: one
        // written under another checksum (under_other_checksum()) decides.
        format::file_header h;
        const auto hs = format::decode_file_header<checksum_type>(bytes, format::file_kind::merge_manifest, h);
        bool other = hs == format::header_status::ok && (h.codec_id != s.codec_id || h.checksum_id != checksum_type::id);
        if (hs == format::header_status::bad_checksum && format::claimed_checksum_id(bytes) != checksum_type::id)
          for (const auto& sn : names) {
            if (!segment_type::parse_file_name(sn)) continue;
            other = written_under_other_checksum(s, s.dir / sn, e);
            if (e) return fail(e, s.dir / sn);
            if (other) break;
          }
        if (other) return fail(make_error_code(errc::codec_mismatch), path, 0);
        // Manifests are written whole and synced before their rename: a
        // manifest that does not decode is damage, and whether its merge
        // committed is unknown.
        if (s.opts.on_corruption == corruption_policy::fail) {
          report(s, recovery_event::kind::corrupt_record, path, 0, bytes.size(), "merge manifest does not validate");
          return fail(make_error_code(errc::corruption), path, 0);
        }
        report(s, recovery_event::kind::corrupt_record, path, 0, bytes.size(),
               rw ? "merge manifest does not validate; discarded" : "merge manifest does not validate; ignored");
        if (!rw) continue;
        s.io.remove(path, e);
        if (!e) s.io.sync_dir(s.dir, e);
        if (e) return fail(e, path);
        continue;
      }
      bool complete = true;
      for (const auto id : m.outputs) {
        const auto out = s.dir / segment_type::file_name(id);
        if (!s.io.exists(out) && !s.io.exists(out.string() + ".tmp")) complete = false;
      }
      if (!rw) {
        bool in_place = complete;
        for (const auto id : m.outputs) in_place = in_place && s.io.exists(s.dir / segment_type::file_name(id));
        if (in_place)
          skip.insert(skip.end(), m.inputs.begin(), m.inputs.end());
        else
          skip.insert(skip.end(), m.outputs.begin(), m.outputs.end());
        continue;
      }
      if (complete) {
        // Committed: put the outputs in place and remove the inputs.
        for (const auto id : m.outputs) {
          const auto out = s.dir / segment_type::file_name(id);
          if (!s.io.exists(out)) s.io.rename(out.string() + ".tmp", out, e);
          if (e) return fail(e, out.string() + ".tmp");
        }
        s.io.sync_dir(s.dir, e);  // the outputs' names before any input goes
        if (e) return fail(e, s.dir);
        for (const auto id : m.inputs) {
          for (const auto& p : {s.dir / segment_type::file_name(id), s.dir / hint_file_name(id)}) {
            s.io.remove(p, e);
            if (e && e != std::errc::no_such_file_or_directory) return fail(e, p);
            e.clear();
          }
        }
        s.io.sync_dir(s.dir, e);
        if (e) return fail(e, s.dir);
        report(s, recovery_event::kind::finished_merge, path, 0, 0, "completed an interrupted merge");
      } else {
        report(s, recovery_event::kind::finished_merge, path, 0, 0, "discarded an uncommitted merge manifest");
      }
      s.io.remove(path, e);
      if (!e) s.io.sync_dir(s.dir, e);
      if (e) return fail(e, path);
    }
    return true;
  }

  /// How many keys the keydir is sized for: the sketch's estimate of its
  /// distinct keys, and every record counted without a sketch. The sketches
  /// read ahead of validation may be damaged: the estimate is capped by the
  /// records they stand for (which their trailers give, within what their
  /// files' sizes allow), so a damaged hint costs time, never a table of any
  /// size.
  static std::size_t keys_expected(const detail::key_sketch& keys, std::size_t sketched_records,
                                   std::size_t unsketched) noexcept {
    return static_cast<std::size_t>(std::min(keys.estimate(), static_cast<double>(sketched_records))) + unsketched;
  }

  /// The records of one keydir shard in a batch of segments, ordered by the
  /// hash's top `bits` bits, which order the home slots of a shard's table:
  /// a counting sort of `lists` (the shard's refs of each segment of the
  /// batch, in segment order, two lists a segment: prepared::refs and
  /// prepared::later) into `buf`, each ref marked with its segment's index
  /// in the batch (its list's index / 2). Stable: within a bucket, records of an earlier segment come
  /// first and a segment's are in file order. A bucket holds 2 to 4 records
  /// on average (1024 buckets at least, 2^16 at most), so that records of one
  /// key (one hash) are a few places apart. Sets `bits` (0: not sorted, too
  /// few records to leave the cache).
  template <class Ref>
  static void sort_by_hash(std::span<const std::vector<Ref>* const> lists, std::vector<Ref>& buf,
                           std::vector<std::uint32_t>& counts, unsigned& bits) {
    std::size_t n = 0;
    for (const auto* l : lists) n += l->size();
    buf.resize(n);
    bits = 0;
    if (n < 64) {  // few enough to stay in the cache as they are
      std::size_t at = 0;
      for (std::size_t b = 0; b < lists.size(); ++b)
        for (Ref r : *lists[b]) r.seg = static_cast<std::uint16_t>(b / 2), buf[at++] = r;
      return;
    }
    bits = std::clamp(static_cast<unsigned>(std::bit_width(n)), 12u, 18u) - 2;
    counts.assign((std::size_t{1} << bits) + 1, 0);
    for (const auto* l : lists)
      for (const Ref& r : *l) ++counts[(r.hash >> (64 - bits)) + 1];
    for (std::size_t b = 1; b < counts.size(); ++b) counts[b] += counts[b - 1];
    for (std::size_t b = 0; b < lists.size(); ++b)
      for (Ref r : *lists[b]) r.seg = static_cast<std::uint16_t>(b / 2), buf[counts[r.hash >> (64 - bits)]++] = r;
  }

  /// Where a hinted segment's records have their hint entries, for recovery:
  /// two records of a key are compared by their entries (the hint file's
  /// checksum covers them), while the keydir holds the records' offsets. The
  /// segment is cut into buckets of 2^shift bytes (about a record each); a
  /// bucket gives the entry of the first record that starts in it or later,
  /// from which a record's entry is a few entries on (entries are in file
  /// order, validate_hint() checks).
  struct hint_directory {
    std::unique_ptr<std::uint32_t[]> first;  // by bucket: offset in the hint file of that entry
    std::size_t buckets = 0;
    unsigned shift = 0;
    std::uint64_t min_seq = 0;  // the hint's base for sequence numbers
    /// The bytes a compare reads from the start of an entry (or, in a
    /// scanned segment, of a record: its header and key), on average, at
    /// most 64: the span recovery prefetches, one or two cache lines.
    std::uint32_t span = 64;
    /// `span` for `bytes` bytes of `count` entries (or record headers and keys).
    void set_span(std::uint64_t bytes, std::uint64_t count) noexcept {
      span = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(bytes / std::max<std::uint64_t>(count, 1), 1, 64));
    }

    /// Buckets for a segment of `bytes` bytes holding about `records` records.
    void size_for(std::uint64_t bytes, std::uint64_t records) {
      const std::uint64_t span = bytes - format::file_header_size;
      const std::uint64_t avg = span / std::max<std::uint64_t>(records, 1);
      // About one record starts in a bucket, never two of the average size.
      const unsigned log2_avg = avg > 0 ? static_cast<unsigned>(std::bit_width(avg)) - 1 : 0;
      shift = std::clamp(log2_avg, 5u, 31u);
      buckets = static_cast<std::size_t>(span >> shift) + 2;  // the last one past every record
      first.reset(new std::uint32_t[buckets]);  // (every bucket is written: by add and finish, or by add_at, add_later and join)
      filled = 0;
    }
    std::size_t bucket(std::uint32_t record) const noexcept {
      return static_cast<std::size_t>((record - format::file_header_size) >> shift);
    }
    /// Called for each entry, in file order.
    void add(std::uint32_t record, std::uint32_t entry) noexcept { add_at(filled, record, entry); }
    /// add() with the cursor (`filled`) kept by the caller: the first of two
    /// runs of entries read side by side (add_later(), join()), so that the
    /// directory itself is only read while they run.
    void add_at(std::size_t& cursor, std::uint32_t record, std::uint32_t entry) noexcept {
      for (const std::size_t b = bucket(record); cursor <= b; ++cursor) first[cursor] = entry;
    }
    /// Forgets what add() wrote (a hint read in halves that did not validate).
    void restart() noexcept { filled = 0; }
    void finish(std::uint32_t entries_end) noexcept {
      for (; filled < buckets; ++filled) first[filled] = entries_end;
    }
    /// add() for the second of two runs of entries read side by side, whose
    /// first record is at `start`, with a cursor of its own (`filled`, 0
    /// before its first entry): it leaves the buckets up to and including
    /// that record's to the first run (add(), of records before `start`)
    /// and to join(), so the two runs write apart.
    void add_later(std::size_t& cursor, std::uint32_t start, std::uint32_t record, std::uint32_t entry) noexcept {
      if (cursor == 0) cursor = bucket(start) + 1;
      for (const std::size_t b = bucket(record); cursor <= b; ++cursor) first[cursor] = entry;
    }
    /// Once both runs are read, with the first run's cursor (add_at()) and
    /// the second's (add_later()): the buckets between the first run's last
    /// record and the second's first (at `start`, its entry at `entry`), then
    /// on from the second run's cursor.
    void join(std::size_t first_cursor, std::size_t cursor, std::uint32_t start, std::uint32_t entry) noexcept {
      filled = first_cursor;
      for (const std::size_t b = bucket(start); filled <= b; ++filled) first[filled] = entry;
      filled = std::max(filled, cursor);
    }
    /// Whether the buckets written so far are those add() alone writes for
    /// the entries from `entries` to `end` of the hint image at `begin`
    /// (a check of join() under CASK_CHECK_INVARIANTS, as the tests build).
    bool built_as_one_walk(const std::byte* begin, const std::byte* entries, const std::byte* end) const noexcept {
      std::size_t f = 0;
      for (const std::byte* p = entries; p < end;) {
        const auto at = static_cast<std::uint32_t>(p - begin);
        hint_entry e;
        p = decode_hint_entry(p, 0, e);
        for (const std::size_t b = bucket(e.offset); f <= b; ++f)
          if (first[f] != at) return false;
      }
      return f == filled;
    }
    /// The bucket's word for the record at `record`.
    const std::uint32_t* word(std::uint32_t record) const noexcept { return &first[bucket(record)]; }
    /// The first entry to look at for the record at `record`.
    const std::byte* start(const std::byte* hint, std::uint32_t record) const noexcept {
      return hint + first[bucket(record)];
    }
    /// The entry of the record at `record`, one of those add() was given.
    /// (The walk stops at the entries' end, which it reaches only if
    /// `record` were none of them.)
    hint_entry entry(const std::byte* hint, std::uint32_t record) const noexcept {
      hint_entry e;
      const std::byte* const end = hint + first[buckets - 1];
      for (const std::byte* p = start(hint, record); p < end;) {
        p = decode_hint_entry(p, min_seq, e);
        if (e.offset >= record) break;
      }
      return e;
    }

   private:
    std::size_t filled = 0;
  };

  /// Recovery applies each segment's records to the keydir in this many
  /// threads, each owning a share of the keydir's shards.
  static constexpr std::size_t recovery_parts = 2;
  /// Recovery applies the records of at most this many consecutive segments
  /// together (options::recovery_batch_records): a record's segment in its
  /// batch is 16 bits.
  static constexpr std::size_t batch_max_segments = 0xffff;

  /// A segment made ready for the keydir, off the main thread: mapped, its
  /// header checked, and its entries read from its hint file or by a scan,
  /// with their key hashes computed.
  struct prepared {
    std::uint32_t id = 0;
    bool newest = false;
    std::filesystem::path path;
    std::shared_ptr<segment_type> seg;
    std::uint64_t size = 0;  // file size
    std::uint64_t end = 0;   // end of the valid data
    /// One record, as the keydir needs it: its key's hash, its offset in
    /// the segment, and its flags; for comparing it with another record of
    /// its key without a search, where it is described; and what it
    /// replaced when written, if its hint entry says (hint.hpp
    /// replaced_record), which spares the comparison.
    struct ref {
      std::uint64_t hash;           ///< of the record's key
      std::uint64_t replaced;       ///< location{segment, offset}.pack() of the record it replaced; 0 for none
      std::uint32_t where;          ///< the record's offset
      std::uint32_t entry;          ///< the offset of its hint entry in the hint file; in a scanned segment, `where`
      std::uint32_t replaced_size;  ///< the size of the record it replaced
      std::uint8_t flags;           ///< the record's
      std::uint16_t seg;            ///< while applied: the index of its segment in its batch (sort_by_hash())
    };
    static_assert(sizeof(ref) == 32);
    /// The records in file order, by keydir shard: refs[k] holds those of shard k.
    std::vector<ref> refs[keydir_type::shards()];
    /// When two threads read a large hint's entries (prepare()), the records
    /// of the second part of them, by shard; refs holds the first part's.
    /// In file order after those of refs[k].
    std::vector<ref> later[keydir_type::shards()];
    /// How many records refs and later hold.
    std::size_t records() const noexcept {
      std::size_t n = 0;
      for (std::size_t k = 0; k < keydir_type::shards(); ++k) n += refs[k].size() + later[k].size();
      return n;
    }
    /// The refs refs and later have room for.
    std::size_t ref_capacity() const noexcept {
      std::size_t n = 0;
      for (std::size_t k = 0; k < keydir_type::shards(); ++k) n += refs[k].capacity() + later[k].capacity();
      return n;
    }
    /// The records' count and bytes, and of those the tombstones', by part
    /// of the shards (shard k is in part k % recovery_parts): what the
    /// segment's live and dead counts start from, so that applying a record
    /// whose key is new reads nothing but its ref.
    struct totals {
      std::uint64_t records = 0;       ///< records of the part
      std::uint64_t bytes = 0;         ///< their bytes
      std::uint64_t tomb_records = 0;  ///< of those, tombstones
      std::uint64_t tomb_bytes = 0;    ///< and their bytes
    } part_totals[recovery_parts];
    std::uint64_t min_seq = ~std::uint64_t{0}, max_seq = 0;  // of the records
    void add(std::uint64_t h, std::uint32_t where, std::uint32_t entry, std::uint8_t flags, std::uint64_t size,
             std::uint64_t seq, replaced_record replaced = {}) {
      const std::size_t k = keydir_type::shard_index(h);
      const std::uint64_t rl = replaced ? location{replaced.segment, replaced.offset, false}.pack() : 0;
      refs[k].push_back({h, rl, where, entry, replaced.size, flags, 0});
      sketch.add(h);
      totals& t = part_totals[k % recovery_parts];
      ++t.records, t.bytes += size;
      if (flags & format::tombstone) ++t.tomb_records, t.tomb_bytes += size;
      min_seq = std::min(min_seq, seq);
      max_seq = std::max(max_seq, seq);
    }
    /// add() for the entry at `at` of this segment's hint.
    void add_entry(const hint_entry& he, std::size_t at) {
      add(Hasher{}(he.key), he.offset, static_cast<std::uint32_t>(at), he.flags, he.size, he.seq, he.replaces);
    }
    /// Takes the records that `t` holds in refs as the second part (later) of this one's.
    void take_later(prepared&& t) {
      for (std::size_t k = 0; k < keydir_type::shards(); ++k) later[k] = std::move(t.refs[k]);
      sketch.merge(t.sketch);
      for (std::size_t i = 0; i < recovery_parts; ++i) {
        totals& a = part_totals[i];
        const totals& b = t.part_totals[i];
        a.records += b.records, a.bytes += b.bytes, a.tomb_records += b.tomb_records, a.tomb_bytes += b.tomb_bytes;
      }
      min_seq = std::min(min_seq, t.min_seq);
      max_seq = std::max(max_seq, t.max_seq);
    }
    void clear_records() {
      for (auto& r : refs) r = {};
      for (auto& r : later) r = {};
      sketch = {};
      for (auto& t : part_totals) t = {};
      min_seq = ~std::uint64_t{0}, max_seq = 0;
    }
    /// From a hint file: the file, mapped (recover() keeps it mapped until the
    /// keydir is final), and where to find a record's entry in it.
    typename io_type::mapping hint;
    hint_directory dir;
    // Of the records' keys, from their hashes. (In a cache line of its own:
    // the reader of a hint's second half reads `dir` while the first half's
    // writes this.)
    alignas(64) detail::key_sketch sketch;
    bool from_hint = false;
    bool rewrite_hint = false;       // from a hint whose sketch is not its entries'
    bool partial = false;         // a newest segment whose header never became valid
    std::vector<recovery_event> events;
    std::uint64_t torn_bytes = 0, skipped = 0;
    std::error_code ec;
    std::uint64_t err_off = error::npos;
  };

  /// Reads a large hint (options::hint_split_bytes) into `p` as
  /// validate_hint() would, in two threads:
  /// this one checks the frame, finds the entry nearest the middle, starts a
  /// thread on the entries from there on and checks the file's checksum and
  /// the first half meanwhile. Returns whether the hint validated; if not,
  /// `p` holds no records, its directory nothing, `out` nothing, and the
  /// caller reads the hint again in one thread (which fills `out` for the
  /// report).
  static bool read_hint_halves(const state& s, prepared& p, std::span<const std::byte> image, std::uint32_t id,
                               std::uint64_t size, hint_summary& out) {
    hint_frame fr;
    if (!check_hint_frame<checksum_type>(image, id, s.codec_id, size, out, fr, true)) return false;
    const std::byte* const mid = hint_entry_near(fr, static_cast<std::size_t>(fr.end - fr.entries) / 2);
    if (!mid) return false;
    const auto start = static_cast<std::uint32_t>(hint_format::decode_fields(mid).offset);  // (checked by the walk)
    const auto mid_at = static_cast<std::uint32_t>(mid - fr.begin);
    prepared second;
    for (std::size_t k = 0; k < keydir_type::shards(); ++k) {
      // Room for half each (the caller's reserve was for all). Untouched, it costs nothing.
      const std::size_t half = p.refs[k].capacity() / 2 + 16;
      p.refs[k] = {};
      p.refs[k].reserve(half);
      second.refs[k].reserve(half);
    }
    std::size_t cursor = 0, first_cursor = 0;
    hint_run a, b;
    bool ok = false;
    {
      detail::task<bool> other(true, [&] {
        return walk_hint_entries(fr, out, id, size, mid, fr.end, b, [&](const hint_entry& he, std::size_t at) {
          second.add_entry(he, at);
          p.dir.add_later(cursor, start, he.offset, static_cast<std::uint32_t>(at));
        });
      });
      ok = hint_checksum_ok<checksum_type>(image, out) &&
           walk_hint_entries(fr, out, id, size, fr.entries, mid, a, [&](const hint_entry& he, std::size_t at) {
             p.add_entry(he, at);
             // (A record from `start` on is in a hint that does not validate:
             // its bucket is the other thread's.)
             if (he.offset < start) p.dir.add_at(first_cursor, he.offset, static_cast<std::uint32_t>(at));
           });
      ok = other.get() && ok;
    }
    if (!ok || !join_hint_runs(out, a, b)) {
      p.clear_records();
      p.dir.restart();
      out = {};
      return false;
    }
    p.dir.join(first_cursor, cursor, start, mid_at);
#ifdef CASK_CHECK_INVARIANTS
    // (A second walk of the whole hint: tests only.)
    if (!p.dir.built_as_one_walk(fr.begin, fr.entries, fr.end)) std::abort();
#endif
    p.take_later(std::move(second));
    return true;
  }

  /// Whether the segment bytes [0, size) (at least a header; zeros from
  /// zero_from on) were written under another checksum policy. That policy
  /// sums the header too, so this one cannot verify it: a header that fails
  /// its checksum, claims another checksum id, and lies over data in which no
  /// record validates under this policy is that, not a header a crash tore
  /// (FORMAT.md "File header"). Damage to the id field alone leaves the
  /// records valid; an empty segment holds nothing to lose.
  static bool under_other_checksum(const std::byte* data, std::uint64_t size, std::uint64_t zero_from) {
    const std::span<const std::byte> bytes(data, static_cast<std::size_t>(size));
    format::file_header h;
    return format::decode_file_header<checksum_type>(bytes, format::file_kind::segment, h) ==
               format::header_status::bad_checksum &&
           format::claimed_checksum_id(bytes) != checksum_type::id &&
           cask::nonzero_end(data, format::file_header_size, std::max<std::uint64_t>(zero_from, format::file_header_size)) >
               format::file_header_size &&
           !find_next_record<checksum_type>(data, size, format::file_header_size, zero_from);
  }

  static prepared prepare(const state& s, std::uint32_t id, bool newest, bool parallel) {
    prepared p;
    p.id = id;
    p.newest = newest;
    p.path = s.dir / segment_type::file_name(id);
    if (id == s.unnamed_id) p.path = unnamed_path(p.path);  // (read-only: see settle_unnamed())
    const auto& path = p.path;
    auto fail = [&](std::error_code e, std::uint64_t off = error::npos) {
      p.ec = e;
      p.err_off = off;
      return std::move(p);
    };
    std::error_code e;
    auto f = s.io.open(path, open_mode::read, e);
    if (e) return fail(e);
    p.size = f.size(e);
    if (e) return fail(e);
    const std::uint64_t size = p.size;
    if (size < format::file_header_size) {
      // A segment whose header never became durable can only be the newest
      // (segments are created one at a time, the previous one durable first).
      if (!newest) return fail(make_error_code(errc::corruption), 0);
      p.partial = true;
      p.events.push_back({recovery_event::kind::removed_partial, path, 0, size, "segment shorter than its header"});
      return p;
    }
    auto m = s.io.map(f, static_cast<std::size_t>(size), false, e);
    if (e) return fail(e);
    // The newest segment is preallocated: most of it is zeros after its data.
    // Where the file system can tell, everything from zero_from on lies in a
    // hole or unwritten space and reads as zero, so the checks for a clean or
    // torn tail below need not read it (faulting in page after page of zeros
    // was most of an open after a crash).
    std::uint64_t zero_from = size;
    if constexpr (requires(const typename io_type::file& x) { x.data_end(std::uint64_t{}); })
      if (newest) zero_from = f.data_end(size);
    format::file_header h;
    const auto hs = format::decode_file_header<checksum_type>(std::span(m.data(), static_cast<std::size_t>(size)),
                                                              format::file_kind::segment, h);
    if (hs != format::header_status::ok) {
      // Never rewritten as a torn header below (nor, read-only, opened empty).
      if (under_other_checksum(m.data(), size, zero_from)) return fail(make_error_code(errc::codec_mismatch), 0);
      // The newest segment's header may be torn if the machine crashed as the
      // segment was created; then no record in it can validate either.
      if (newest && (hs == format::header_status::bad_checksum || hs == format::header_status::bad_magic) &&
          !find_next_record<checksum_type>(m.data(), size, format::file_header_size, zero_from)) {
        p.partial = true;
        p.events.push_back({recovery_event::kind::removed_partial, path, 0, size, "segment header never completed"});
        return p;
      }
      errc code = errc::corruption;
      if (hs == format::header_status::bad_magic) code = errc::bad_magic;
      if (hs == format::header_status::unsupported_version) code = errc::unsupported_version;
      return fail(make_error_code(code), 0);
    }
    if (h.codec_id != s.codec_id || h.checksum_id != checksum_type::id) return fail(make_error_code(errc::codec_mismatch), 0);
    if (h.segment_id != id) return fail(make_error_code(errc::corruption), 20);
    p.seg = std::make_shared<segment_type>(id, path, std::move(f), std::move(m), size);
    const std::byte* data = p.seg->data();

    // A valid hint file spares reading the values. It is mapped, not copied.
    hint_summary hs_sum;
    const auto hint_path = s.dir / hint_file_name(id);
    bool have_hint = false;
    std::span<const std::byte> image;
    {
      std::error_code he;  // a hint that cannot be read costs only time: scan
      auto hf = s.io.open(hint_path, open_mode::read, he);
      const std::uint64_t hsize = he ? 0 : hf.size(he);
      if (!he && hsize > 0 && hsize <= SIZE_MAX) {
        p.hint = s.io.map(hf, static_cast<std::size_t>(hsize), false, he);
        if (!he) image = {p.hint.data(), p.hint.size()};
      }
      have_hint = !he && hsize == image.size();
    }
    if (have_hint) {
      // As many refs as the trailer says (else as many as could fit).
      std::size_t expect = static_cast<std::size_t>(
          std::min<std::uint64_t>(image.size() / hint_format::min_entry_size, size / format::record_header_size));
      if (image.size() >= hint_format::trailer_size)
        expect = static_cast<std::size_t>(
            std::min<std::uint64_t>(expect, detail::load_u64(image.data() + image.size() - hint_format::trailer_size)));
      // (Reserved pages that are never touched cost nothing.)
      const std::size_t per = expect / keydir_type::shards();
      for (auto& r : p.refs) r.reserve(per + per / 8 + 16);
      p.dir.size_for(size, expect);
      // (Entry offsets are kept in 32 bits. A valid hint is smaller than its
      // segment, each entry smaller than its record: the check is defensive.)
      const bool valid =
          image.size() <= UINT32_MAX &&
          ((parallel && image.size() >= s.opts.hint_split_bytes && read_hint_halves(s, p, image, id, size, hs_sum)) ||
           validate_hint<checksum_type>(image, id, s.codec_id, size, hs_sum, [&](const hint_entry& he, std::size_t at) {
             p.add_entry(he, at);
             p.dir.add(he.offset, static_cast<std::uint32_t>(at));
           }));
      if (valid) {
        p.from_hint = true;
        // (The entries end where the sketch, if any, and the trailer begin.)
        const std::size_t entries_end =
            image.size() - hint_format::trailer_size - (hs_sum.has_sketch ? hint_format::sketch_size : 0);
        p.dir.finish(static_cast<std::uint32_t>(entries_end));
        p.dir.set_span(entries_end - format::file_header_size, hs_sum.records);
        p.dir.min_seq = hs_sum.min_seq;
        p.end = size;
        // The sketch should be its entries' under this store's hasher
        // (validate_hint() cannot tell: it does not know the hasher). One
        // that is not was written under another hasher (or wrongly): the
        // checksummed entries are used all the same, since the sketch only
        // sizes memory, and the hint is written again.
        p.rewrite_hint = hs_sum.has_sketch && !(hs_sum.sketch == p.sketch);
        return p;
      }
      if (!(hs_sum.trailer_valid && hs_sum.segment_bytes != size))
        p.events.push_back({recovery_event::kind::bad_hint, hint_path, 0, image.size(),
                            "hint file does not validate; scanning the segment instead"});
    }
    p.hint = {};
    p.dir = {};
    p.clear_records();
    if (hs_sum.trailer_valid && hs_sum.segment_bytes != size) {
      // Sealed segments never change size, and a hint is written only for a
      // sealed segment: the segment was cut or extended since.
      const std::uint64_t at = std::min<std::uint64_t>(size, hs_sum.segment_bytes);
      const std::string why = "segment is " + std::to_string(size) + " bytes; its hint file says " +
                              std::to_string(hs_sum.segment_bytes);
      if (s.opts.on_corruption == corruption_policy::fail) {
        p.events.push_back({recovery_event::kind::corrupt_record, path, at, 0, why});
        return fail(make_error_code(errc::corruption), at);
      }
      ++p.skipped;
      p.events.push_back({recovery_event::kind::corrupt_record, path, at,
                          hs_sum.segment_bytes > size ? hs_sum.segment_bytes - size : size - hs_sum.segment_bytes,
                          why + "; scanning what is there"});
    }

    std::uint64_t last_seq = 0, records = 0, key_bytes = 0;
    auto add = [&](const format::record_view& rv, std::uint64_t off) {
      p.add(Hasher{}(rv.key), static_cast<std::uint32_t>(off), static_cast<std::uint32_t>(off), rv.flags, rv.size,
            rv.seq);
      last_seq = std::max(last_seq, rv.seq);
      ++records, key_bytes += rv.key.size();
    };

    std::uint64_t start = format::file_header_size;
    for (;;) {
      const scan_result r = scan_records<checksum_type>(data, size, start, add, zero_from);
      if (r.valid_end == size || (r.stop == format::record_status::zero && r.clean_end && newest)) {
        p.end = r.valid_end;
        break;
      }
      if (newest) {
        // A torn tail: whatever follows the last valid record was never
        // acknowledged as durable (records are durable only in order).
        const auto next = find_next_record<checksum_type>(data, size, r.valid_end + 1, zero_from);
        const std::uint64_t nonzero_end =
            cask::nonzero_end(data, r.valid_end, std::max(r.valid_end, zero_from));  // zero_from <= size
        std::string why = std::string("torn tail: ") + status_text(r.stop);
        if (next) why += "; records that validate follow at offset " + std::to_string(*next) +
                         " (unsynced writes reordered by the page cache, or damage)";
        if (s.opts.read_only) why += " (read-only: not cut)";
        p.torn_bytes += nonzero_end - r.valid_end;
        p.events.push_back({recovery_event::kind::torn_tail, path, r.valid_end, nonzero_end - r.valid_end, why});
        p.end = r.valid_end;
        break;
      }
      // Damage inside a sealed segment, which was durable before the next one began.
      const errc code = r.stop == format::record_status::bad_checksum ? errc::checksum_mismatch : errc::corruption;
      if (s.opts.on_corruption == corruption_policy::fail) {
        p.events.push_back({recovery_event::kind::corrupt_record, path, r.valid_end, 0, status_text(r.stop)});
        return fail(make_error_code(code), r.valid_end);
      }
      const bool writer_segment = (h.flags & format::merge_output) == 0;
      const auto next = find_resync_point<checksum_type>(data, size, r.valid_end + 1, last_seq, writer_segment);
      const std::uint64_t resume = next ? *next : size;
      ++p.skipped;
      p.events.push_back({recovery_event::kind::corrupt_record, path, r.valid_end, resume - r.valid_end,
                          std::string(status_text(r.stop)) + "; skipped"});
      if (!next) {
        p.end = size;
        break;
      }
      start = resume;
    }
    p.dir.set_span(records * format::record_header_size + key_bytes, records);
    return p;
  }

  /// A segment file's header, if it has a valid one: its id, and whether a
  /// merge wrote it. Read errors are returned; `size`, if given, receives
  /// the file's size.
  static std::optional<format::file_header> read_segment_header(state& s, const std::filesystem::path& path,
                                                                std::error_code& e, std::uint64_t* size = nullptr) {
    std::byte hb[format::file_header_size];
    auto f = s.io.open(path, open_mode::read, e);
    const std::uint64_t bytes = e ? 0 : f.size(e);
    if (size) *size = bytes;
    if (e || bytes < sizeof hb) return std::nullopt;
    read_exact(f, hb, sizeof hb, 0, e);
    format::file_header h;
    if (e || format::decode_file_header<checksum_type>(std::span(hb), format::file_kind::segment, h) !=
                 format::header_status::ok)
      return std::nullopt;
    return h;
  }

  /// Whether the segment at `path` holds valid records from its header to
  /// the very end of the file: a segment sealed in the background that
  /// became durable (it was cut to its data before its flush began).
  static bool ends_at_its_data(state& s, const std::filesystem::path& path, std::error_code& e) {
    const auto w = map_to_read(s, path, e);
    if (!w) return false;
    const scan_result r = scan_records<checksum_type>(w->m.data(), w->size, format::file_header_size,
                                                      [](const format::record_view&, std::uint64_t) {});
    return r.valid_end == w->size;
  }

  /// A whole segment file mapped to be read, for the checks above and below.
  struct mapped_whole {
    typename io_type::file f;     ///< the file
    typename io_type::mapping m;  ///< all of it
    std::uint64_t size;           ///< its size
  };
  /// The file at `path` mapped whole; nothing if it is shorter than a file
  /// header, or if it cannot be read (`e` says why).
  static std::optional<mapped_whole> map_to_read(state& s, const std::filesystem::path& path, std::error_code& e) {
    auto f = s.io.open(path, open_mode::read, e);
    const std::uint64_t size = e ? 0 : f.size(e);
    if (e || size < format::file_header_size || size > SIZE_MAX) return std::nullopt;
    auto m = s.io.map(f, static_cast<std::size_t>(size), false, e);
    if (e) return std::nullopt;
    return mapped_whole{std::move(f), std::move(m), size};
  }

  /// Whether the segment file at `path` was written under another checksum
  /// policy (under_other_checksum()). Read errors are returned.
  static bool written_under_other_checksum(state& s, const std::filesystem::path& path, std::error_code& e) {
    const auto w = map_to_read(s, path, e);
    if (!w) return false;
    std::uint64_t zero_from = w->size;  // (a preallocated segment: see prepare())
    if constexpr (requires(const typename io_type::file& x) { x.data_end(std::uint64_t{}); }) zero_from = w->f.data_end(w->size);
    return under_other_checksum(w->m.data(), w->size, zero_from);
  }

  /// Settles segments the writer started under a temporary name
  /// (`<id>.cask.new`, options::background_seal) while it sealed the one
  /// before in the background: the writer names one only once its
  /// predecessor (the newest named writer segment) is durable. After a
  /// crash, it is kept if that predecessor ends exactly at its data, every
  /// record valid: then it was complete (a process crash leaves it so, and
  /// so does a power loss after its flush), and the writes in the unnamed
  /// one follow it. Otherwise the predecessor's unsynced tail was lost: it
  /// is cut as the newest segment, and the unnamed one, whose writes came
  /// after what was lost and were never synced, is dropped, so the writes
  /// that survive are a prefix. A writer names a kept one (and removes a
  /// dropped one); a read-only open reads a kept one where it lies (a
  /// writer naming it meanwhile makes the open list again) and leaves the
  /// directory as it is. `ids` gains a kept one.
  static bool settle_unnamed(state& s, std::vector<std::uint32_t>& ids, const std::vector<std::uint32_t>& unnamed,
                             std::error_code& ec, detail::error_site* site) {
    const bool rw = !s.opts.read_only;
    // The newest writer segment (merge outputs may have higher ids).
    std::optional<std::uint32_t> newest;
    for (auto it = ids.rbegin(); it != ids.rend() && !newest; ++it) {
      std::error_code e;
      const auto path = s.dir / segment_type::file_name(*it);
      const auto h = read_segment_header(s, path, e);
      if (e) return detail::set_error(ec, site, e, path, 0), false;
      if (!h || (h->flags & format::merge_output) == 0) newest = *it;
    }
    // At most one is unnamed at a time, above every named writer segment:
    // any other is a leftover, dropped.
    const std::uint32_t top = *std::max_element(unnamed.begin(), unnamed.end());
    for (const std::uint32_t id : unnamed) {
      const auto final_path = s.dir / segment_type::file_name(id);
      const auto from = unnamed_path(final_path);
      bool keep = false;
      std::string why = "segment started while the previous one was sealed in the background; ";
      if (id == top && newest && id > *newest && std::find(ids.begin(), ids.end(), id) == ids.end()) {
        // Its own header must be whole too: it was made durable only with
        // the name, and a power loss may keep later pages without it.
        // (A read-only open that races the writer's rename gets ENOENT, and lists again.)
        std::error_code e;
        const auto own = read_segment_header(s, from, e);
        // One written under another checksum policy (as the whole store then
        // is: prepare() refuses it) is refused before anything is dropped.
        if (!e && !own && written_under_other_checksum(s, from, e))
          return detail::set_error(ec, site, make_error_code(errc::codec_mismatch), from, 0), false;
        if (e) return detail::set_error(ec, site, e, from, 0), false;
        keep = own && own->segment_id == id && (own->flags & format::merge_output) == 0 &&
               ends_at_its_data(s, s.dir / segment_type::file_name(*newest), e);
        if (e) return detail::set_error(ec, site, e, s.dir / segment_type::file_name(*newest), 0), false;
        if (!keep)
          why += "that one (or this one's header) did not become durable, so its writes, never synced, are dropped";
      } else {
        why += "a leftover";
      }
      if (keep) {
        if (rw) {
          // The sealing thread's work, finished: the sealed segment and this
          // one's header durable (after a process crash they may be in the
          // page cache only, and the sealed one is never synced again), then
          // the name.
          std::filesystem::path at = s.dir / segment_type::file_name(*newest);
          std::error_code e;
          for (const auto& p : {at, from}) {
            at = p;
            auto f = s.io.open(p, open_mode::read_write, e);
            if (!e) f.sync(e);
            if (e) break;
          }
          if (!e) at = from, s.io.rename(from, final_path, e);
          if (!e) at = s.dir, s.io.sync_dir(s.dir, e);
          if (e) return detail::set_error(ec, site, e, at, 0), false;
        } else {
          s.unnamed_id = id;
        }
        ids.insert(std::upper_bound(ids.begin(), ids.end(), id), id);
      } else if (rw) {
        std::error_code e;
        s.io.remove(from, e);
        if (!e) s.io.sync_dir(s.dir, e);
        if (e) return detail::set_error(ec, site, e, from, 0), false;
        report(s, recovery_event::kind::removed_temp, from, 0, 0, why);
      }
    }
    return true;
  }

  /// The names in the store's directory, for recover(). A read-only open
  /// lists it again until two listings in a row name the same segment files
  /// (`<id>.cask`, `<id>.cask.new`; at most 8 more times, then the last one
  /// is taken): a writer's rename of `<id>.cask.new` (seal_loop()) that
  /// crosses a listing may leave both names out of it (readdir() need not
  /// return a name added or removed after opendir(); on Linux a listing that
  /// takes several getdents64() calls can miss both), which would drop the
  /// writes in that segment. The segment is renamed once, so the next
  /// listing holds it, and the two differ. A writer's open lists once: it
  /// holds the lock, and nothing else renames.
  static std::vector<std::string> list_store(state& s, std::error_code& e) {
    auto names = s.io.list(s.dir, e);
    if (!s.opts.read_only) return names;
    auto segment_files = [](std::vector<std::string> v) {
      std::erase_if(v, [](const std::string& n) { return !is_segment_file(n); });
      std::sort(v.begin(), v.end());
      return v;
    };
    for (int attempt = 0; !e && attempt < 8; ++attempt) {
      auto again = s.io.list(s.dir, e);
      if (e) break;
      const bool same = segment_files(names) == segment_files(again);
      names = std::move(again);
      if (same) break;
    }
    return names;
  }

  /// Rebuilds the keydir from every segment, in id order: helper threads
  /// prepare segments up to two ahead while the main thread (with a second
  /// one) applies the batch of segments prepared before them. Cuts a torn
  /// tail off the newest segment (unless read-only).
  static bool recover(state& s, std::error_code& ec, detail::error_site* site) {
    const bool rw = !s.opts.read_only;
    std::error_code le;
    auto names = list_store(s, le);
    if (le) return detail::set_error(ec, site, le, s.dir), false;
    // Whether a store is here, from this first listing: an open refused for
    // it changes nothing (no merge finished, no leftover removed). A
    // directory without segment files holds none (a writer's open makes one
    // before it returns), and one is created only if asked for.
    const bool has_store = std::any_of(names.begin(), names.end(), [](const std::string& n) { return is_segment_file(n); });
    if (has_store && s.opts.error_if_exists)
      return detail::set_error(ec, site, make_error_code(errc::already_exists), s.dir), false;
    if (!has_store && !s.opts.create_if_missing)
      return detail::set_error(ec, site, make_error_code(errc::not_found), s.dir), false;
    std::vector<std::uint32_t> skip;
    if (!settle_merges(s, names, skip, ec, site)) return false;
    if (rw) names = s.io.list(s.dir, le);
    if (le) return detail::set_error(ec, site, le, s.dir), false;
    std::vector<std::uint32_t> ids;
    std::vector<std::uint32_t> hinted;
    std::vector<std::uint32_t> unnamed;  // `<id>.cask.new`: see settle_unnamed()
    for (const auto& n : names) {
      if (auto id = segment_type::parse_file_name(n)) {
        if (std::find(skip.begin(), skip.end(), *id) == skip.end()) ids.push_back(*id);
      } else if (auto uid = parse_unnamed_name(n)) {
        unnamed.push_back(*uid);
      } else if (rw && n.size() > 4 && n.ends_with(".tmp")) {
        std::error_code ignored;
        s.io.remove(s.dir / n, ignored);
        report(s, recovery_event::kind::removed_temp, s.dir / n, 0, 0, "leftover temporary file removed");
      } else if (n.size() == 15 && n.ends_with(".hint")) {
        std::uint32_t id = 0;
        if (std::from_chars(n.data(), n.data() + 10, id).ec == std::errc()) hinted.push_back(id);
      }
    }
    std::sort(ids.begin(), ids.end());
    if (!unnamed.empty() && !settle_unnamed(s, ids, unnamed, ec, site)) return false;
    if (rw) {
      // A hint without its segment is a leftover of a merge's removal.
      for (const auto id : hinted)
        if (!std::binary_search(ids.begin(), ids.end(), id)) {
          std::error_code ignored;
          s.io.remove(s.dir / hint_file_name(id), ignored);
        }
    }

    // Recovered segments in id order, and beside each its mapped hint file if
    // its entries came from one: two records of a key are told apart by the
    // keys and sequence numbers in the hint files (checksummed as a whole),
    // never by reading the segments.
    std::vector<std::shared_ptr<segment_type>> segs;
    std::vector<typename io_type::mapping> hints;  // hints[i]: of segs[i], or empty
    std::vector<hint_directory> dirs;              // dirs[i]: where hints[i] has a record's entry
    std::uint64_t max_seq = 0;
    auto index_of = [&](std::uint32_t id) -> std::size_t {
      auto it = std::lower_bound(segs.begin(), segs.end(), id,
                                 [](const auto& p, std::uint32_t v) { return p->id() < v; });
      return it != segs.end() && (*it)->id() == id ? std::size_t(it - segs.begin()) : SIZE_MAX;
    };
    /// What describes the record at `where` of segs[i], or where its search
    /// starts: its hint entry, or the record itself in a scanned segment.
    auto bytes_at = [&](std::size_t i, std::uint32_t where) {
      const std::byte* h = hints[i].data();
      return h ? dirs[i].start(h, where) : segs[i]->data() + where;
    };
    /// A record of a scanned segment as recovery compares it: what its
    /// header (checked by the scan) says.
    auto record_at = [&](std::size_t i, std::uint32_t where) {
      const std::byte* e = segs[i]->data() + where;
      format::record_view o;
      (void)format::parse_record_header(e, static_cast<std::size_t>(segs[i]->capacity() - where), o);
      return hint_entry{o.seq, where, o.size, o.flags, o.key, {}};
    };
    /// A record as recovery compares it, from where it lies: its hint entry
    /// (found through the directory) or, in a scanned segment, the record.
    auto indexed_at = [&](std::size_t i, std::uint32_t where) {
      if (const std::byte* h = hints[i].data()) return dirs[i].entry(h, where);
      return record_at(i, where);
    };
    /// The same, from a ref's `entry` (no search).
    auto entry_at = [&](std::size_t i, std::uint32_t entry) {
      if (const std::byte* h = hints[i].data()) {
        hint_entry e;
        (void)decode_hint_entry(h + entry, dirs[i].min_seq, e);
        return e;
      }
      return record_at(i, entry);
    };
    /// The count changes one applying thread makes to one segment; a thread
    /// keeps one per segment so far, added to their atomic counters after
    /// the segment is applied.
    struct tally {
      std::uint64_t live_n = 0, live_b = 0, dead_n = 0, dead_b = 0;
    };

    // The segment the writer was appending to: the newest one not written by
    // a merge (merge outputs take ids above the active segment's). Only it
    // may have a torn tail or an unfinished header.
    std::uint32_t last_active = 0;
    // And how many keys to expect, so that the keydir is sized once, for the
    // keys it will hold rather than the records it reads (a key written
    // twice is two records, one entry): the union of the hint files' key
    // sketches estimates the distinct keys of their segments before any is
    // read; a hint without one (version 2) counts its records. As each
    // segment is prepared, the sketch of what it holds joins the union.
    detail::key_sketch keys;
    std::vector<std::size_t> unsketched(ids.size());  // records of a hint with no sketch, by segment index
    std::vector<bool> sketched(ids.size());           // the segment's hint sketch is in `keys`
    std::size_t unsketched_total = 0, sketched_records = 0, reserved = 0;
    bool any_tombstone = false;
    std::uint64_t total_bytes = 0;  // of the segment files
    for (std::size_t idx = 0; idx < ids.size(); ++idx) {
      const std::uint32_t id = ids[idx];
      std::error_code he;
      {
        auto hf = s.io.open(s.dir / hint_file_name(id), open_mode::read, he);
        const std::uint64_t hsize = he ? 0 : hf.size(he);
        detail::key_sketch sk;
        std::uint64_t records = 0;
        if (!he && read_hint_sizing(hf, hsize, records, sk)) {
          keys.merge(sk);
          sketched[idx] = true;
          sketched_records += static_cast<std::size_t>(records);
        } else {
          unsketched_total += unsketched[idx] = static_cast<std::size_t>(records);
        }
        he.clear();
      }
      // A header that cannot be read fails the open: taking a merge output
      // for the writer's segment would treat the real one as sealed.
      auto seg_path = s.dir / segment_type::file_name(id);
      if (id == s.unnamed_id) seg_path = unnamed_path(seg_path);
      std::uint64_t seg_bytes = 0;
      const auto h = read_segment_header(s, seg_path, he, &seg_bytes);
      if (he) return detail::set_error(ec, site, he, seg_path, 0), false;
      total_bytes += seg_bytes;
      if (!h || (h->flags & format::merge_output) == 0) last_active = id;
    }

    // After a clean close, the keydir snapshot spares all of what follows.
    // A writer removes it either way: once it writes, the snapshot is stale
    // (and the directory sync that makes its new active segment durable
    // makes the removal durable too).
    if constexpr (can_snapshot) {
      const bool loaded = s.opts.keydir_snapshot && load_snapshot(s, ids, segs, max_seq);
      if (rw) {
        std::error_code re;
        s.io.remove(s.dir / snapshot_name, re);
        if (re && re != std::errc::no_such_file_or_directory)
          return detail::set_error(ec, site, re, s.dir / snapshot_name), false;
      }
      if (loaded) {
        s.from_snapshot = true;
        for (std::size_t i = 0; i < segs.size(); ++i) {
          const std::uint32_t id = segs[i]->id();
          if (rw && id == last_active && segs[i]->end() == format::file_header_size) {
            // No records: rewritten as the new active segment, as below.
            s.reuse_id = id;
            segs.erase(segs.begin() + static_cast<std::ptrdiff_t>(i--));
          } else if (rw && std::find(hinted.begin(), hinted.end(), id) == hinted.end()) {
            s.hint_queue.push_back({id, {}});
          }
        }
        finish_recovery(s, std::move(segs), max_seq, ids);
        return true;
      }
    }

    // A small store is recovered in this thread alone: starting threads
    // would cost more than they save (and more than the whole open).
    const bool parallel = total_bytes >= s.opts.parallel_recovery_bytes;
    // Segments are prepared up to two ahead of the one applied: while the
    // first is prepared, this thread would otherwise leave a core idle.
    std::deque<detail::task<prepared>> ahead;  // (its elements never move)
    std::size_t launched = 0;
    auto launch = [&] {
      if (launched < ids.size()) {
        ahead.emplace_back(parallel, [&s, parallel, id = ids[launched], newest = ids[launched] == last_active] {
          return prepare(s, id, newest, parallel);
        });
        ++launched;
      }
    };
    launch();
    if (parallel) launch();
    // The tables are allocated (their pages faulted in) while the first
    // segments are prepared.
    reserved = keys_expected(keys, sketched_records, unsketched_total);
    s.keydir.reserve(reserved);
    // Prepared segments wait in a batch, and a batch's records are applied to
    // the keydir together: each shard's table is swept front to back once per
    // batch, not once per segment (a segment's records touch a line of the
    // table here and there across the whole of it, and a large table is far
    // bigger than the cache: eleven 128 MiB segments of 10 M keys swept the
    // 230 MB table eleven times). Records are applied in the order of their
    // home slots, whatever segment holds them; the sequence numbers, not the
    // order, decide which record of a key is the newest.
    std::vector<prepared> batch;
    std::size_t batch_refs = 0;
    auto apply_batch = [&]() -> bool {
      const std::size_t first = segs.size() - batch.size();  // batch[b]'s segment is segs[first + b]
      const bool fresh = s.keydir.size() == 0;                // no record of an earlier batch to meet
      std::uint64_t by_note_in[recovery_parts] = {};          // pairs settled by a note, by part
      // Each part of the records goes to its own shards of the keydir, so the
      // parts are applied in parallel; they read the segment table and the
      // hint images, which stay as they are meanwhile.
      auto apply_part = [&](std::size_t part) {
        std::vector<tally> w(segs.size());
        // Every record starts out live, tombstones dead; records found older
        // than their key's entry are moved to dead below.
        for (std::size_t b = 0; b < batch.size(); ++b) {
          const auto& pt = batch[b].part_totals[part];
          tally& t = w[first + b];
          t.live_n += pt.records - pt.tomb_records, t.live_b += pt.bytes - pt.tomb_bytes;
          t.dead_n += pt.tomb_records, t.dead_b += pt.tomb_bytes;
        }
        std::vector<typename prepared::ref> refs;
        std::vector<std::uint32_t> counts;
        std::vector<const std::vector<typename prepared::ref>*> lists(2 * batch.size());
        // Records applied so far, and of those, ones whose hash the keydir had.
        std::size_t applied = 0, met = 0;
        std::uint64_t noted = 0;  // pairs settled by a note (to by_note_in at the end)
        for (std::size_t k = part; k < keydir_type::shards(); k += recovery_parts) {
          // The shard's records in the order of their home slots (the hash's
          // high bits), so that the table is filled front to back, not at
          // random: a record whose key is new costs no cache miss.
          for (std::size_t b = 0; b < batch.size(); ++b) lists[2 * b] = &batch[b].refs[k], lists[2 * b + 1] = &batch[b].later[k];
          unsigned bits = 0;
          sort_by_hash<typename prepared::ref>(lists, refs, counts, bits);
          const std::size_t count = refs.size();
          // Two records of one hash are of one key, the later one newer,
          // without a look at either key, when the later one's entry says it
          // replaced the other (ref::replaced): the writer compared their
          // keys then, and such a location never holds another record
          // (DESIGN.md "Recovery"). (The other record, in the keydir or a
          // few refs back, is in a segment of a lower id or earlier in this
          // one, and a note names nothing later: it never names x.)
          auto same_place = [](location l, std::uint64_t packed) {
            return packed != 0 && location{l.segment, l.offset, false}.pack() == packed;
          };
          // Otherwise their entries are compared, prefetched in stages: the
          // table slot `far` records ahead (in order, but a large table's
          // slots lie far apart); `mid` ahead, the record's own hint entry
          // (its ref says where; in a scanned segment, the record) and,
          // for the entry it may replace, the directory word that says where
          // that entry is, or the entry itself if the other record is in
          // this batch (its ref is a few places back); and `near` ahead, an
          // entry found through the directory. An entry's average span (one
          // or two cache lines: a hint entry of a 16-byte key is 27 bytes, a
          // record's header and key 37).
          constexpr std::size_t near = 16, mid = 36, far = 64;
          static_assert(near < mid && mid < far);
          struct hit {
            std::size_t index = SIZE_MAX;  // of the entry's segment, SIZE_MAX for none
            std::uint32_t offset = 0;
            std::size_t other = SIZE_MAX;  // the other record's place in refs, if in this batch
          };
          hit hits[far];  // by record modulo far, from `mid` ahead to the record itself
          // (Inlined: GCC takes a function that only prefetches for one with
          // no effect, and drops the calls.)
          auto prefetch_at = [&](std::size_t i, std::uint32_t entry) __attribute__((always_inline)) {
            const std::byte* e = hints[i].data() ? hints[i].data() + entry : segs[i]->data() + entry;
            __builtin_prefetch(e);
            __builtin_prefetch(e + dirs[i].span - 1);
          };
          auto prefetch_start = [&](std::size_t i, std::uint32_t where) __attribute__((always_inline)) {
            if (hints[i].data()) {
              __builtin_prefetch(dirs[i].word(where));
            } else {
              __builtin_prefetch(segs[i]->data() + where);
              __builtin_prefetch(segs[i]->data() + where + dirs[i].span - 1);
            }
          };
          auto look_mid = [&](std::size_t j) __attribute__((always_inline)) {
            hit& h = hits[j % far];
            const auto& x = refs[j];
            h.index = SIZE_MAX;
            h.other = SIZE_MAX;
            // (The first batch meets only its own records: no probe.)
            if (!fresh)
              (void)s.keydir.find(x.hash, [&](location l) {
                h.index = index_of(l.segment);
                h.offset = l.offset;
                return true;
              });
            // A key written twice in this batch: its other record is a few
            // places before it, in its bucket of the order (sort_by_hash()),
            // and not yet in the keydir. (At most 8 places back: a hasher
            // that puts many keys in one bucket costs no more.)
            const std::uint64_t bucket = bits ? x.hash >> (64 - bits) : 0;
            for (std::size_t b = 1; h.index == SIZE_MAX && b <= std::min<std::size_t>(j, 8); ++b) {
              const auto& o = refs[j - b];
              if (bits && o.hash >> (64 - bits) != bucket) break;
              if (o.hash == x.hash) h.index = first + o.seg, h.offset = o.where, h.other = j - b;
            }
            if (h.index == SIZE_MAX) return;
            if (same_place(location{segs[h.index]->id(), h.offset, false}, x.replaced)) {
              h.index = SIZE_MAX;  // settled by x's note: nothing to compare
              return;
            }
            prefetch_at(first + x.seg, x.entry);
            if (h.other != SIZE_MAX) prefetch_at(h.index, refs[h.other].entry);
            else prefetch_start(h.index, h.offset);
          };
          auto look_near = [&](std::size_t j) __attribute__((always_inline)) {
            // (An entry replaced since look_mid() only makes a prefetch useless.)
            if (const hit& h = hits[j % far]; h.index != SIZE_MAX && h.other == SIZE_MAX) {
              const std::byte* e = bytes_at(h.index, h.offset);
              __builtin_prefetch(e);
              __builtin_prefetch(e + dirs[h.index].span - 1);
            }
          };
          // Looking a record up ahead costs a probe of the table for every
          // record, worth it only where keys meet often: in a batch whose
          // keys are new (one of keys written once), this thread stops once
          // the batch's first 1024 records of its shards have shown so (a key
          // met after that waits for its two entries).
          const bool ahead = applied < 1024 || met * 32 > applied;
          const std::size_t look = ahead ? count : 0;
          for (std::size_t j = 0; j < std::min(count, far); ++j) s.keydir.prefetch(refs[j].hash);
          for (std::size_t j = 0; j < std::min(look, mid); ++j) look_mid(j);
          for (std::size_t j = 0; j < std::min(look, near); ++j) look_near(j);
          applied += count;
          for (std::size_t j = 0; j < count; ++j) {
            if (j + far < count) s.keydir.prefetch(refs[j + far].hash);
            if (j + mid < look) look_mid(j + mid);
            if (j + near < look) look_near(j + near);
            const auto& x = refs[j];
            const std::size_t xi = first + x.seg;
            const bool tomb = (x.flags & format::tombstone) != 0;
            // The other record look_mid() found, if it is in this batch.
            // (Without look-ahead, none is.)
            const hit none;
            const hit& seen = j < look ? hits[j % far] : none;
            bool by_note = false;  // x's note names the record met: x is newer, no entry read
            std::size_t old_index = SIZE_MAX;
            std::uint32_t old_size = 0;  // of the record met, once matched
            hint_entry o, r;
            bool have_r = false;
            const auto old = s.keydir.upsert(
                x.hash, location{batch[x.seg].id, x.where, tomb},
                [&](location l) {
                  old_index = index_of(l.segment);
                  if (old_index == SIZE_MAX) return false;
                  const bool in_batch = seen.other != SIZE_MAX && seen.index == old_index && seen.offset == l.offset;
                  if (same_place(l, x.replaced)) {
                    by_note = true, old_size = x.replaced_size;
                    return true;
                  }
                  o = in_batch ? entry_at(old_index, refs[seen.other].entry) : indexed_at(old_index, l.offset);
                  if (!have_r) r = entry_at(xi, x.entry), have_r = true;
                  return same_bytes(o.key, r.key);
                },
                [&](location) { return by_note || r.seq > o.seq; });
            if (!old) continue;  // a new key: counted live (or, a tombstone, dead) already
            ++met;
            noted += by_note;
            if (!by_note) old_size = o.size;
            if (by_note || r.seq > o.seq) {
              if (!old->tombstone) {
                tally& ot = w[old_index];
                --ot.live_n, ot.live_b -= old_size, ++ot.dead_n, ot.dead_b += old_size;
              }
            } else if (!tomb) {
              tally& xt = w[xi];
              --xt.live_n, xt.live_b -= r.size, ++xt.dead_n, xt.dead_b += r.size;
            }
          }
        }
        by_note_in[part] = noted;
        return w;
      };
      std::vector<tally> parts[recovery_parts];
      {
        std::optional<detail::task<std::vector<tally>>> others[recovery_parts - 1];
        for (std::size_t k = 1; k < recovery_parts; ++k) {
          bool any = false;
          for (const prepared& q : batch) any = any || q.part_totals[k].records > 0;
          if (any) others[k - 1].emplace(parallel, [&apply_part, k] { return apply_part(k); });
        }
        parts[0] = apply_part(0);
        for (std::size_t k = 1; k < recovery_parts; ++k)
          if (others[k - 1]) parts[k] = others[k - 1]->get();
      }
      for (const std::uint64_t n : by_note_in) s.pairs_by_note += n;
      for (const auto& w : parts) {
        for (std::size_t i = 0; i < w.size(); ++i) {
          const tally& t = w[i];
          auto& c = segs[i]->counters();
          if (t.live_n | t.live_b) c.live_records.fetch_add(t.live_n), c.live_bytes.fetch_add(t.live_b);
          if (t.dead_n | t.dead_b) c.dead_records.fetch_add(t.dead_n), c.dead_bytes.fetch_add(t.dead_b);
        }
      }
      for (prepared& q : batch) {
        const std::size_t i = index_of(q.id);
        const auto seg = segs[i];
        const std::size_t n = q.records();
        for (const auto& pt : q.part_totals) any_tombstone = any_tombstone || pt.tomb_records > 0;
        if (n > 0) {
          seg->counters().note_seq(q.min_seq);
          seg->counters().note_seq(q.max_seq);
          max_seq = std::max(max_seq, q.max_seq);
        }
        seg->set_end(q.end);
        if (q.newest && rw && q.end == format::file_header_size) {
          // No records: rather than keep an empty sealed segment, rewrite it as
          // the new active segment (see reuse_id).
          const auto at = static_cast<std::ptrdiff_t>(i);
          segs.erase(segs.begin() + at);
          hints.erase(hints.begin() + at);
          dirs.erase(dirs.begin() + at);
          s.reuse_id = q.id;
          continue;
        }
        if (q.newest && rw) {
          // It is a sealed segment from now on: made durable as a seal makes
          // one (after a process crash its records may be in the page cache
          // only, and nothing would sync it later), its tail cut first if it
          // did not validate, and then mapped at its new size.
          std::error_code e;
          auto wf = s.io.open(q.path, open_mode::read_write, e);
          if (!e && q.end != q.size) wf.truncate(q.end, e);
          if (!e) wf.sync(e);
          if (e) return detail::set_error(ec, site, e, q.path, q.end), false;
          if (q.end == q.size) continue;
          auto sealed = open_sealed(s, q.id, q.path, q.end, ec, site);
          if (!sealed) return false;
          sealed->counters().copy_from(seg->counters());
          segs[i] = sealed;
        }
      }
      batch.clear();  // (and with it the last references to a segment rewritten as the active one)
      batch_refs = 0;
      return true;
    };
    for (std::size_t idx = 0; idx < ids.size(); ++idx) {
      prepared p = ahead.front().get();
      ahead.pop_front();
      launch();
      unsketched_total -= unsketched[idx];
      for (const auto& ev : p.events) report(s, ev.what, ev.file, ev.offset, ev.bytes, ev.detail);
      if (p.ec) {
        ahead.clear();  // waits for the prepares still running (one not given a thread never runs)
        detail::set_error(ec, site, p.ec, p.path, p.err_off);
        return false;
      }
      if (p.partial) {
        // Rewritten as the new active segment (see reuse_id), never removed.
        if (rw) s.reuse_id = p.id;
        continue;
      }
      s.torn_bytes += p.torn_bytes;
      s.skipped_records += p.skipped;
      if (p.skipped > 0 && !p.from_hint) s.scanned_with_damage.push_back(p.id);
      ++(p.from_hint ? s.segments_from_hints : s.segments_scanned);
      if ((!p.from_hint || p.rewrite_hint) && rw && !(p.newest && p.end == format::file_header_size)) {
        // A hint written again keeps what its entries say the records replaced.
        std::vector<replacement> replaced;
        if (p.rewrite_hint)
          for_each_hint_entry({p.hint.data(), p.hint.size()}, [&](const hint_entry& e) {
            if (e.replaces) replaced.push_back({e.offset, e.replaces});
          });
        s.hint_queue.push_back({p.id, std::move(replaced)});
      }
      segs.push_back(p.seg);
      hints.push_back(std::move(p.hint));
      dirs.push_back(std::move(p.dir));
      const std::size_t n = p.records();
      keys.merge(p.sketch);
      if (!sketched[idx]) sketched_records += n;
      if (const std::size_t want = keys_expected(keys, sketched_records, unsketched_total); want > reserved) {
        reserved = want;
        s.keydir.reserve(reserved);
      }
      // What the segment holds while it waits, in refs: the lists' capacity
      // (reserved from the trailer's count, at least 16 per shard) and the
      // rest of `prepared`, so that many small segments cannot pile up.
      batch_refs += p.ref_capacity();
      batch_refs += sizeof(prepared) / sizeof(typename prepared::ref) + 1;
      batch.push_back(std::move(p));
      if (batch_refs >= s.opts.recovery_batch_records || batch.size() == batch_max_segments)
        if (!apply_batch()) return false;
    }
    if (!batch.empty() && !apply_batch()) return false;
    // Tombstones were kept only to order records across segments: they go,
    // and a table sized for many more keys than it holds (from hints without
    // a sketch) is rebuilt smaller (see remap_shard()). Each part of the
    // shards in its own thread, as above.
    if (any_tombstone || s.keydir.size() < reserved * 3 / 4) {
      auto remap_part = [&](std::size_t part) {
        for (std::size_t k = part; k < keydir_type::shards(); k += recovery_parts)
          s.keydir.remap_shard(
              k, [](location) {},
              [](location l) -> std::optional<location> {
                if (l.tombstone) return std::nullopt;
                return l;
              });
      };
      std::optional<detail::task<void>> others[recovery_parts - 1];
      for (std::size_t k = 1; k < recovery_parts; ++k) others[k - 1].emplace(parallel, [&remap_part, k] { remap_part(k); });
      remap_part(0);
      for (auto& t : others) t->get();
    }
    finish_recovery(s, std::move(segs), max_seq, ids);
    return true;
  }

  /// What every recovery ends with: the sequence numbers, the next segment
  /// id, and the segment table readers see.
  static void finish_recovery(state& s, std::vector<std::shared_ptr<segment_type>> segs, std::uint64_t max_seq,
                              const std::vector<std::uint32_t>& ids) {
    s.next_seq = max_seq + 1;
    s.written_seq.store(max_seq, std::memory_order_relaxed);
    s.durable_seq = max_seq;
    s.next_id = ids.empty() ? 1 : ids.back() + 1;
    s.segtab_owner = std::make_shared<segment_table_type>(std::move(segs));
    s.segtab.store(s.segtab_owner.get(), std::memory_order_release);
  }

  std::unique_ptr<state> s_;
};

}  // namespace cask
