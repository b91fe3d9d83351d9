// cask/segment.hpp - segment files: naming, creation, mapping and scanning.
//
// A segment is one data file, `<id>.cask` with a 10-digit zero-padded id. The
// active segment is preallocated to its capacity and mapped read-write; the
// writer encodes each record straight into the mapping (one copy) and readers
// read the same mapping, so no read touches a system call. On sealing, the
// file is cut to its data, made durable and mapped again read-only. Sealed
// segments are never written again.
//
// Lifetime: a segment object owns its mapping and is shared (shared_ptr)
// between the segment table and any value_ref handed to a caller; the mapping
// stays valid until the last owner lets go, even after the file is removed.
#pragma once

#include <cask/format.hpp>
#include <cask/io.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cask {

/// Per-segment accounting, kept by the writer, read by stats().
///
/// One thread at a time changes the counters: the writer, under the store's
/// write lock (puts, erases, a merge's swap), or, before the segment is
/// published to other threads, recovery, a snapshot load or the merger
/// filling its output. So a change is a relaxed load and store, not a read-modify-write:
/// a locked add would wait for the writer's earlier stores (the record, the
/// keydir slot, both often cache misses) to drain, on every put.
struct segment_counters {
  ///@{
  std::atomic<std::uint64_t> live_records{0}, live_bytes{0};  ///< records the keydir points at
  ///@}
  ///@{
  std::atomic<std::uint64_t> dead_records{0}, dead_bytes{0};  ///< overwritten, erased, and tombstones
  ///@}

  /// Counts a new live record of `bytes` bytes.
  void add_live(std::uint64_t bytes) noexcept {
    bump(live_records, 1);
    bump(live_bytes, bytes);
  }
  /// Counts a new dead record (a tombstone) of `bytes` bytes.
  void add_dead(std::uint64_t bytes) noexcept {
    bump(dead_records, 1);
    bump(dead_bytes, bytes);
  }
  /// Lowest and highest sequence number of any record in the segment (the
  /// merger drops a tombstone only if no segment it keeps can hold an older
  /// record). Updated by the one thread that fills the segment.
  std::atomic<std::uint64_t> min_seq{~std::uint64_t{0}};
  std::atomic<std::uint64_t> max_seq{0};  ///< see min_seq
  /// Widens [min_seq, max_seq] to include `seq`.
  void note_seq(std::uint64_t seq) noexcept {
    if (seq < min_seq.load(std::memory_order_relaxed)) min_seq.store(seq, std::memory_order_relaxed);
    if (seq > max_seq.load(std::memory_order_relaxed)) max_seq.store(seq, std::memory_order_relaxed);
  }
  /// Copies every counter from `o` (when a segment is mapped anew).
  void copy_from(const segment_counters& o) noexcept {
    live_records.store(o.live_records.load());
    live_bytes.store(o.live_bytes.load());
    dead_records.store(o.dead_records.load());
    dead_bytes.store(o.dead_bytes.load());
    min_seq.store(o.min_seq.load());
    max_seq.store(o.max_seq.load());
  }
  /// Moves a record of `bytes` bytes from live to dead.
  void live_to_dead(std::uint64_t bytes) noexcept {
    bump(live_records, ~std::uint64_t{0});  // - 1, modulo 2^64
    bump(live_bytes, ~bytes + 1);           // - bytes
    add_dead(bytes);
  }
  /// Adds `n` (modulo 2^64) to the counter `c`, of which this thread is the
  /// only writer (see the top of this struct).
  static void bump(std::atomic<std::uint64_t>& c, std::uint64_t n) noexcept {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};

/// One segment file, open and mapped through the I/O policy `Io` (see the
/// top of this file). Shared by the segment table and value_refs.
template <class Io>
class segment {
 public:
  using file_type = typename Io::file;        ///< the I/O policy's open file
  using mapping_type = typename Io::mapping;  ///< the I/O policy's memory mapping

  /// Segment `id` at `path`, open as `f`, mapped as `m`, with `end` bytes of valid data.
  segment(std::uint32_t id, std::filesystem::path path, file_type f, mapping_type m, std::uint64_t end)
      : id_(id), path_(std::move(path)), file_(std::move(f)), map_(std::move(m)), end_(end) {}

  /// The segment's id (its file name's number).
  std::uint32_t id() const noexcept { return id_; }
  /// The segment's file.
  const std::filesystem::path& path() const noexcept { return path_; }
  /// The mapped bytes: [0, capacity()). Only [0, end()) holds records.
  const std::byte* data() const noexcept { return map_.data(); }
  /// data(), for the writer of the active segment.
  std::byte* writable_data() noexcept { return map_.data(); }
  /// The size of the mapping.
  std::size_t capacity() const noexcept { return map_.size(); }
  /// Whether the mapping is writable (the active segment).
  bool writable() const noexcept { return map_.writable(); }
  /// Bytes of valid data, header included.
  std::uint64_t end() const noexcept { return end_.load(std::memory_order_acquire); }
  /// Publishes a new end() after appending (release; end() acquires).
  void set_end(std::uint64_t e) noexcept { end_.store(e, std::memory_order_release); }

  /// The open file.
  file_type& file() noexcept { return file_; }
  /// The mapping.
  mapping_type& map() noexcept { return map_; }
  ///@{
  /// The segment's live and dead record counts.
  segment_counters& counters() noexcept { return counters_; }
  const segment_counters& counters() const noexcept { return counters_; }
  ///@}

  /// "0000000042.cask" for id 42.
  static std::string file_name(std::uint32_t id) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%010u.cask", id);
    return buf;
  }
  /// The id in a segment file name, or nothing for any other name.
  static std::optional<std::uint32_t> parse_file_name(std::string_view name) {
    constexpr std::string_view ext = ".cask";
    if (name.size() != 10 + ext.size() || name.substr(10) != ext) return std::nullopt;
    std::uint32_t id = 0;
    auto [p, ec] = std::from_chars(name.data(), name.data() + 10, id);
    if (ec != std::errc() || p != name.data() + 10) return std::nullopt;
    return id;
  }

 private:
  std::uint32_t id_;
  std::filesystem::path path_;
  file_type file_;
  mapping_type map_;
  std::atomic<std::uint64_t> end_;
  segment_counters counters_;
};

/// An immutable snapshot of the store's segments, indexed by id, published to
/// readers through an atomic pointer and replaced (copy, modify, publish,
/// grace period) when a segment is added, sealed or removed.
template <class Seg>
class segment_table : public std::enable_shared_from_this<segment_table<Seg>> {
 public:
  segment_table() = default;
  /// A table of `segs`, ascending by id.
  explicit segment_table(std::vector<std::shared_ptr<Seg>> segs) { assign(std::move(segs)); }

  /// The segment with this id, or nullptr.
  Seg* find(std::uint32_t id) const noexcept {
    if (id < base_ || id - base_ >= index_.size() || !index_[id - base_]) return nullptr;
    return index_[id - base_]->get();
  }
  /// As find(), sharing ownership.
  std::shared_ptr<Seg> find_shared(std::uint32_t id) const noexcept {
    if (id < base_ || id - base_ >= index_.size() || !index_[id - base_]) return nullptr;
    return *index_[id - base_];
  }
  /// All segments, ascending by id.
  const std::vector<std::shared_ptr<Seg>>& all() const noexcept { return segs_; }

  /// A copy with `s` added, or replacing the segment with the same id.
  std::shared_ptr<segment_table> with(std::shared_ptr<Seg> s) const {
    std::vector<std::shared_ptr<Seg>> v;
    bool replaced = false;
    for (const auto& p : segs_) {
      if (p->id() == s->id()) {
        v.push_back(s);
        replaced = true;
      } else {
        v.push_back(p);
      }
    }
    if (!replaced) v.push_back(std::move(s));
    return std::make_shared<segment_table>(std::move(v));
  }
  /// A copy without the segments whose ids are in `ids`.
  std::shared_ptr<segment_table> without(const std::vector<std::uint32_t>& ids) const {
    std::vector<std::shared_ptr<Seg>> v;
    for (const auto& p : segs_)
      if (std::find(ids.begin(), ids.end(), p->id()) == ids.end()) v.push_back(p);
    return std::make_shared<segment_table>(std::move(v));
  }

 private:
  void assign(std::vector<std::shared_ptr<Seg>> segs) {
    std::sort(segs.begin(), segs.end(), [](const auto& a, const auto& b) { return a->id() < b->id(); });
    segs_ = std::move(segs);
    index_.clear();
    if (segs_.empty()) return;
    base_ = segs_.front()->id();
    index_.assign(segs_.back()->id() - base_ + 1, nullptr);
    for (const auto& p : segs_) index_[p->id() - base_] = &p;
  }

  std::vector<std::shared_ptr<Seg>> segs_;
  std::vector<const std::shared_ptr<Seg>*> index_;  // into segs_, which never changes
  std::uint32_t base_ = 0;
};

/// Whether [p, p + n) is all zero bytes; compares eight bytes at a time
/// (a crashed active segment has up to its whole preallocation to check).
inline bool all_zero(const std::byte* p, std::uint64_t n) noexcept {
  std::uint64_t i = 0;
  for (; i < n && (reinterpret_cast<std::uintptr_t>(p + i) & 7) != 0; ++i)
    if (p[i] != std::byte{0}) return false;
  for (; i + 64 <= n; i += 64) {
    std::uint64_t acc = 0;
    for (int w = 0; w < 8; ++w) {
      std::uint64_t v;
      std::memcpy(&v, p + i + 8 * w, 8);
      acc |= v;
    }
    if (acc) return false;
  }
  for (; i < n; ++i)
    if (p[i] != std::byte{0}) return false;
  return true;
}

/// One past the last non-zero byte in [p + from, p + to), or `from` if all are zero.
inline std::uint64_t nonzero_end(const std::byte* p, std::uint64_t from, std::uint64_t to) noexcept {
  std::uint64_t end = to;
  while (end - from >= 4096 && all_zero(p + end - 4096, 4096)) end -= 4096;
  while (end > from && p[end - 1] == std::byte{0}) --end;
  return end;
}

/// What scan_records() found.
struct scan_result {
  std::uint64_t valid_end = 0;  ///< offset just past the last record that validated in sequence
  format::record_status stop = format::record_status::zero;  ///< why the scan stopped at valid_end
  bool clean_end = true;        ///< everything from valid_end to the end of the data is zero
};

/// Calls on_record(const record_view&, offset) for each valid record of a
/// segment's data [header, size), in order, and stops at the first record that
/// does not validate (or at zeros: preallocated space). Reports where and why.
/// Bytes from `zero_from` on are known to be zero (a hole, see
/// posix_io::file::data_end) and are not read to tell whether the end is clean.
template <class Checksum, class F>
scan_result scan_records(const std::byte* data, std::uint64_t size, std::uint64_t start, F&& on_record,
                         std::uint64_t zero_from = UINT64_MAX) {
  scan_result r;
  std::uint64_t off = start;
  while (off < size) {
    format::record_view rv;
    const auto st = format::parse_record<Checksum>(data + off, static_cast<std::size_t>(size - off), rv);
    if (st != format::record_status::ok) {
      r.stop = st;
      break;
    }
    on_record(rv, off);
    off += rv.size;
  }
  r.valid_end = off;
  r.clean_end = all_zero(data + off, std::max(off, std::min(size, zero_from)) - off);
  return r;
}

/// The offset of the next record at or after `from` that validates, or
/// nothing. Bytes from `zero_from` on are known to be zero, and a record of
/// zeros never validates, so no record is looked for there.
template <class Checksum>
std::optional<std::uint64_t> find_next_record(const std::byte* data, std::uint64_t size, std::uint64_t from,
                                              std::uint64_t zero_from = UINT64_MAX) {
  for (std::uint64_t off = from; off + format::record_header_size <= size && off < zero_from; ++off) {
    format::record_view rv;
    if (format::parse_record<Checksum>(data + off, static_cast<std::size_t>(size - off), rv) ==
        format::record_status::ok)
      return off;
  }
  return std::nullopt;
}

/// Where to resume scanning a sealed segment of `size` bytes after damage at
/// `from` (corruption_policy::skip): the first offset from which records
/// validate one after another to exactly the end of the segment, with
/// sequence numbers above `after_seq` and increasing (when `increasing`: a
/// writer's segment; a merge's output keeps its inputs' order). A record that
/// a value happens to contain (a store kept inside a store, or a hostile
/// value) does not chain to the end, so it is never taken for a real one.
template <class Checksum>
std::optional<std::uint64_t> find_resync_point(const std::byte* data, std::uint64_t size, std::uint64_t from,
                                               std::uint64_t after_seq, bool increasing) {
  for (std::uint64_t off = from; off + format::record_header_size <= size; ++off) {
    std::uint64_t at = off, last = after_seq;
    bool chained = true;
    while (at < size) {
      format::record_view rv;
      if (format::parse_record<Checksum>(data + at, static_cast<std::size_t>(size - at), rv) !=
              format::record_status::ok ||
          (increasing && rv.seq <= last)) {
        chained = false;
        break;
      }
      last = rv.seq;
      at += rv.size;
    }
    if (chained && at == size && at > off) return off;
  }
  return std::nullopt;
}

}  // namespace cask
