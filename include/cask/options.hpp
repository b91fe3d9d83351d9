// cask/options.hpp - run-time options of a store.
//
// Compile-time choices (codec, hasher, I/O, checksum, sync and keydir
// policies) are template parameters of log_store; everything that can change
// from one open to the next is here. Each field gives its default and its
// trade-off.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace cask {

/// What recovery does with a record that fails its checksum inside data that
/// was already sealed (a torn tail of the newest segment is always cut).
enum class corruption_policy {
  fail,  ///< refuse to open, with errc::corruption naming file and offset (default: nothing is silently lost)
  skip,  ///< report the record, skip to the next valid one, and open; a merge then skips it too
};

/// One thing recovery noticed, given to options::reporter.
struct recovery_event {
  /// What recovery noticed.
  enum class kind {
    torn_tail,        ///< the newest segment's tail did not validate and was cut off
    corrupt_record,   ///< a record in a sealed segment failed validation (skipped under corruption_policy::skip)
    removed_partial,  ///< a newest segment whose header was never completed was discarded (rewritten as the active segment)
    removed_temp,     ///< a leftover temporary file was removed
    finished_merge,   ///< a merge interrupted by a crash was completed (or its uncommitted manifest discarded)
    bad_hint,         ///< a hint file did not validate and was ignored; its segment was scanned instead
    bad_snapshot,     ///< the keydir snapshot did not validate or did not match the segments, and was ignored
  };
  kind what;                   ///< what happened
  std::filesystem::path file;  ///< the file it happened in
  std::uint64_t offset = 0;  ///< where the problem starts
  std::uint64_t bytes = 0;   ///< bytes cut or skipped
  std::string detail;        ///< human-readable explanation
};

/// When and what the merger rewrites. A sealed segment's fragmentation is
/// dead bytes / data bytes; dead bytes are overwritten or erased records and
/// tombstones. See merger.hpp for how these combine.
struct merge_options {
  /// Merge in a background thread when the policy triggers. Default true.
  /// Off: merges happen only when merge() is called.
  bool background = true;
  /// How often the background thread consults the policy. Default 1 s.
  std::chrono::milliseconds check_interval{1000};

  /// A merge starts when some sealed segment is at least this fragmented.
  /// Default 0.6: lower reclaims space sooner at the cost of more rewriting.
  double trigger_fragmentation = 0.6;
  /// ...or holds at least this many dead bytes. Default 512 MiB.
  std::uint64_t trigger_dead_bytes = std::uint64_t{512} << 20;
  /// ...or the whole store is at least this fragmented. Default 0.5: bounds
  /// disk use at about twice the live data.
  double trigger_store_fragmentation = 0.5;

  /// Once triggered, every sealed segment at least this fragmented is merged.
  /// Default 0.4.
  double candidate_fragmentation = 0.4;
  /// ...and every one with at least this many dead bytes. Default 128 MiB.
  std::uint64_t candidate_dead_bytes = std::uint64_t{128} << 20;

  /// Sealed segments smaller than this are "small" (default 0: one eighth of
  /// max_segment_bytes). Small segments, from frequent reopening or tiny
  /// limits, are folded together: a merge triggers when at least
  /// small_segment_count of them exist, and every small segment is merged.
  std::uint64_t small_segment_bytes = 0;
  /// How many small segments trigger folding them together. Default 8.
  std::size_t small_segment_count = 8;

  /// At most this many input bytes per merge (default 1 GiB), oldest
  /// segments first, so one merge's I/O and temporary disk use stay bounded.
  std::uint64_t max_bytes = std::uint64_t{1} << 30;
};

/// Run-time options of a store, given to log_store::open(). Override
/// members one at a time: `cask::options o; o.read_only = true;`.
struct options {
  /// Size at which the active segment is sealed and a new one started.
  /// Default 128 MiB. Each segment is preallocated to this size, so smaller
  /// wastes less space on a nearly empty store; larger means fewer files and
  /// larger merges. At most 4 GiB - 1; a single record larger than this gets
  /// a segment of its own.
  std::uint64_t max_segment_bytes = std::uint64_t{128} << 20;

  /// How far ahead of the writer a background thread maps the active
  /// segment's pages writable (see posix_io::mapping::prefault), so that the
  /// writer does not take a page fault every 4 KiB it appends (2 to 7 us
  /// each on a virtual machine: up to a fifth of the time of 100-byte
  /// puts; see docs/DESIGN.md for what it gains). Default 8 MiB;
  /// 0: no such thread, the writer takes its own page faults. Pages mapped
  /// ahead are zeros, dirty in the page cache until written back or cut off
  /// when the segment is sealed.
  std::uint64_t prefault_bytes = std::uint64_t{8} << 20;

  /// Seal in the background: when the active segment is full, the writer
  /// goes on at once in a new segment, created as `<id>.cask.new`, while a
  /// thread of the store makes the full one durable (about 70 ms for 128 MiB
  /// of 4 KiB values; more than half of the time of such a fill when the
  /// writer waited) and then gives the new segment its name. Until it is
  /// named, the new segment's records are not part of the store on disk:
  /// recovery after a power loss keeps them only if the sealed segment
  /// proved complete, and otherwise cuts the sealed segment at its first
  /// damaged record and drops the new one, so the writes that survive are
  /// always a prefix of those made (a process crash loses nothing either
  /// way). sync() and close() wait for the seal. Default true; false: the
  /// writer seals the segment itself, as under sync_always (where every
  /// put is durable when it returns, so sealing waits anyway).
  bool background_seal = true;

  /// Write the keydir to the file KEYDIR at a clean close, and load it at
  /// open when it matches the segment files exactly (same ids, same sizes),
  /// instead of rebuilding the keydir from hint files and scans. Default
  /// true. A writer removes the file as it opens, so a crash never leaves a
  /// snapshot of an older state that matches; a snapshot that does not
  /// validate is ignored (recovery_event::kind::bad_snapshot). See
  /// docs/FORMAT.md "Keydir snapshot" and docs/DESIGN.md "Data flow".
  bool keydir_snapshot = true;

  /// Open recovers the keydir with helper threads (one preparing the next
  /// segment, a second applying records, docs/DESIGN.md "Data flow") when
  /// the segment files hold at least this many bytes in all, and in the
  /// opening thread alone below it, where starting threads would cost more
  /// than they save. Default 1 MiB; 0: always with threads.
  std::uint64_t parallel_recovery_bytes = std::uint64_t{1} << 20;

  /// With helper threads (parallel_recovery_bytes), open reads a hint file
  /// of at least this many bytes in two threads, each checking and decoding
  /// half of its entries. Default 4 MiB (a hint of about 150,000 keys);
  /// 0: every hint with an entry that starts past the middle of its
  /// entries (any of two entries or more but one whose first entry covers the middle).
  std::uint64_t hint_split_bytes = std::uint64_t{4} << 20;

  /// Open applies the records of consecutive segments to the keydir in
  /// batches, each in one pass over the keydir's tables (docs/DESIGN.md "Data
  /// flow"). A batch closes once what its segments hold while they wait,
  /// counted in 32-byte records (each segment's record lists as reserved,
  /// and about 4 KiB besides), reaches this, or at 65535 segments; the
  /// segment that reaches it is in the batch. So this bounds what open holds
  /// beside the keydir; fewer passes are faster where the keydir is larger
  /// than the cache. Default 2^22 (about 128 MiB, plus one segment's). 0: a
  /// batch per segment.
  std::size_t recovery_batch_records = std::size_t{1} << 22;

  /// Period of the background flush under sync_interval. Default 1 s: a crash
  /// of the machine (not of the process) loses at most about this much.
  std::chrono::milliseconds sync_interval{1000};

  /// Create the directory and an empty store when none exists (a directory
  /// without segment files holds none). Default true. False: such an open
  /// fails with errc::not_found (a writer's leaves only the LOCK file).
  bool create_if_missing = true;
  /// Refuse to open a directory that already holds a store
  /// (errc::already_exists). Default false. A refused open, for this or for
  /// create_if_missing, changes nothing in the directory.
  bool error_if_exists = false;
  /// Open without the writer lock: reads only, a snapshot of the store as it
  /// was at open; works while another process writes. Default false.
  bool read_only = false;

  /// Verify each record's checksum on every read. Default true: a wrong value
  /// is never returned. Switching it off saves about 20 ns per 100-byte read
  /// and trusts the medium.
  bool verify_checksums = true;

  /// See corruption_policy. Default fail.
  corruption_policy on_corruption = corruption_policy::fail;
  /// Called for every recovery_event during open (may be empty), and for each
  /// damaged record a merge skips (corruption_policy::skip, in a segment whose
  /// damage recovery skipped at open) (from the
  /// thread running the merge: the background thread, or merge()'s caller).
  /// Default none.
  std::function<void(const recovery_event&)> reporter;

  /// Largest encoded key accepted by put. Default 64 KiB; at most 1 MiB.
  std::uint32_t max_key_bytes = 64u << 10;
  /// Merging (compaction); see merge_options.
  merge_options merge;

  /// Largest encoded value accepted by put. Default 256 MiB; at most 2 GiB - 1.
  std::uint32_t max_value_bytes = 256u << 20;
};

}  // namespace cask
