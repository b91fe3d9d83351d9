// cask/hint.hpp - hint files: a compact snapshot of one segment's index entries.
//
// `<id>.hint` lists, for every record of sealed segment `<id>`, its key,
// offset, size, sequence number and flags, so that open can rebuild the keydir
// without reading the segment's values. The file is written to `<id>.hint.tmp`,
// made durable, renamed into place and the directory synced; it ends with a
// trailer whose checksum covers the whole file. Before the trailer, a
// HyperLogLog sketch of the keys lets open size the keydir by distinct keys
// before it reads any entry (detail/sketch.hpp). A hint that is missing,
// truncated, corrupt, or describes a segment of another size is ignored and
// the segment is scanned instead, which yields the same keydir
// (docs/FORMAT.md "Hint file").
//
// Thread safety: the functions are reentrant; a hint_builder is used by one thread.
#pragma once

#include <cask/detail/endian.hpp>
#include <cask/detail/sketch.hpp>
#include <cask/error.hpp>
#include <cask/format.hpp>
#include <cask/io.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace cask {

namespace hint_format {
/// Hint files have their own format version (the file header's version
/// field): 4, entries of variable size, each of a record that replaced
/// another record of its key saying which, then a sketch of the keys.
/// Versions 3 (no entry says what it replaced) and 2 (nor a sketch) are read
/// too. Version-1 hint files (fixed 21-byte entry headers) are not read:
/// their segments are scanned and their hints written again.
inline constexpr std::uint16_t version = format::hint_version;
/// The oldest version read.
inline constexpr std::uint16_t oldest_version = 2;
/// The sketch (versions 3 and 4): one byte per register, between the entries and the
/// trailer, whose field at offset 32 gives its size (0 in version 2).
inline constexpr std::size_t sketch_size = detail::key_sketch::registers;
/// An entry: two descriptor bytes, four little-endian integers of the
/// lengths the descriptors give, if bit 7 of byte 0 is set a third
/// descriptor byte and three more integers (what the record replaced), and
/// the key (docs/FORMAT.md "Hint file").
///   byte 0: record flags (bits 0-3), sequence delta length - 1 (bits 4-6), replaces (bit 7; version 4)
///   byte 1: key length's length - 1 (bits 0-1), value length's (2-3), offset's (4-5), 0 (6-7)
///   byte 2 (if replaces): the replaced record's segment id's length - 1 (bits 0-1), its
///   offset's (2-3), its size's (4-5), 0 (6-7)
inline constexpr std::size_t min_entry_size = 6;
/// The largest entry before its key: 2 + 3 (key length) + 4 + 8 + 4, and 1 + 4 + 4 + 4.
inline constexpr std::size_t max_entry_header_size = 34;
inline constexpr std::size_t trailer_size = 40;  ///< records 8, bytes 8, min seq 8, max seq 8, sketch size 4, crc 4
inline constexpr std::uint8_t flag_bits = 0x0f, replaces_bit = 0x80, reserved1 = 0xc0, reserved2 = 0xc0;
/// The oldest version whose entries may say what they replaced.
inline constexpr std::uint16_t replaces_version = 4;

/// How many bytes `v` needs (1 for 0).
constexpr unsigned bytes_for(std::uint64_t v) noexcept {
  return v == 0 ? 1u : static_cast<unsigned>((std::bit_width(v) + 7) / 8);
}
/// The low `n` bytes (1..8) of `v`.
constexpr std::uint64_t low_bytes(std::uint64_t v, unsigned n) noexcept { return v & (~std::uint64_t{0} >> (64 - 8 * n)); }

/// The fields of an entry as its descriptor bytes give them, decoded with
/// one branch on the data (whether it says what it replaced): the field
/// loads are independent of one another. Reads up to 8 bytes past each
/// field's start (inside a hint file the 40-byte trailer follows every entry).
struct raw_fields {
  std::uint8_t flags;            ///< the record's flags (descriptor byte 0, bits 0-3)
  unsigned key_len_bytes;        ///< bytes the key length takes (1..4)
  unsigned value_len_bytes;      ///< bytes the value length takes (1..4)
  unsigned seq_bytes;            ///< bytes the sequence delta takes (1..8)
  unsigned offset_bytes;         ///< bytes the record offset takes (1..4)
  std::uint64_t key_len;         ///< the key length
  std::uint64_t value_len;       ///< the value length
  std::uint64_t seq_delta;       ///< the sequence number less the trailer's lowest
  std::uint64_t offset;          ///< the record's offset in the segment
  bool replaces;                 ///< descriptor byte 0, bit 7: the fields below are present
  std::uint8_t d2;               ///< the third descriptor byte (0 if absent)
  unsigned rseg_bytes;            ///< bytes the replaced record's segment id takes (1..4; 0 if absent)
  unsigned roff_bytes;            ///< bytes its offset takes (1..4; 0 if absent)
  unsigned rsize_bytes;           ///< bytes its size takes (1..4; 0 if absent)
  std::uint64_t rseg;             ///< the replaced record's segment id (0 if absent)
  std::uint64_t roff;             ///< its offset (0 if absent)
  std::uint64_t rsize;            ///< its size (0 if absent)
  const std::byte* key;          ///< where the key starts
};
/// Decodes the descriptor bytes and fields of the entry at `p` (unchecked; see raw_fields).
[[gnu::always_inline]] inline raw_fields decode_fields(const std::byte* p) noexcept {
  raw_fields f;
  const auto d0 = std::to_integer<std::uint8_t>(p[0]), d1 = std::to_integer<std::uint8_t>(p[1]);
  f.flags = d0 & flag_bits;
  f.seq_bytes = ((d0 >> 4) & 7u) + 1;
  f.key_len_bytes = (d1 & 3u) + 1;
  f.value_len_bytes = ((d1 >> 2) & 3u) + 1;
  f.offset_bytes = ((d1 >> 4) & 3u) + 1;
  const std::byte* k = p + 2;
  const std::byte* v = k + f.key_len_bytes;
  const std::byte* q = v + f.value_len_bytes;
  const std::byte* o = q + f.seq_bytes;
  f.key_len = low_bytes(detail::load_u32(k), f.key_len_bytes);
  f.value_len = low_bytes(detail::load_u32(v), f.value_len_bytes);
  f.seq_delta = low_bytes(detail::load_u64(q), f.seq_bytes);
  f.offset = low_bytes(detail::load_u32(o), f.offset_bytes);
  const std::byte* r = o + f.offset_bytes;
  f.replaces = (d0 & replaces_bit) != 0;
  if (!f.replaces) {
    f.d2 = 0;
    f.rseg_bytes = f.roff_bytes = f.rsize_bytes = 0;
    f.rseg = f.roff = f.rsize = 0;
    f.key = r;
    return f;
  }
  f.d2 = std::to_integer<std::uint8_t>(r[0]);
  f.rseg_bytes = (f.d2 & 3u) + 1;
  f.roff_bytes = ((f.d2 >> 2) & 3u) + 1;
  f.rsize_bytes = ((f.d2 >> 4) & 3u) + 1;
  const std::byte* rs = r + 1;
  const std::byte* ro = rs + f.rseg_bytes;
  const std::byte* rz = ro + f.roff_bytes;
  f.rseg = low_bytes(detail::load_u32(rs), f.rseg_bytes);
  f.roff = low_bytes(detail::load_u32(ro), f.roff_bytes);
  f.rsize = low_bytes(detail::load_u32(rz), f.rsize_bytes);
  f.key = rz + f.rsize_bytes;
  return f;
}
}  // namespace hint_format

/// The record of the same key that a record replaced when it was written
/// (the one the keydir named, whose key the writer compared): where it was
/// then, and its size; in the record's own segment or one of a lower id.
/// Empty (offset 0) when the record replaced none, or the writer did not
/// keep it. Recovery takes two records of one hash for one key when the
/// newer names the older so, without comparing their keys (such a location
/// never holds another record: FORMAT.md "Hint file").
struct replaced_record {
  std::uint32_t segment = 0;  ///< its segment's id
  std::uint32_t offset = 0;   ///< its offset there (0: none)
  std::uint32_t size = 0;     ///< its size in bytes
  /// Whether there is one.
  explicit operator bool() const noexcept { return offset != 0; }
  /// Equal when all three fields are.
  friend bool operator==(const replaced_record&, const replaced_record&) = default;
};

/// One entry of a hint file; `key` points into the buffer it was decoded from.
struct hint_entry {
  std::uint64_t seq = 0;           ///< the record's sequence number
  std::uint32_t offset = 0;        ///< where the record starts in the segment
  std::uint32_t size = 0;          ///< the record's size in bytes
  std::uint8_t flags = 0;          ///< the record's flags
  std::span<const std::byte> key;  ///< the encoded key
  replaced_record replaces;        ///< what the record replaced, if its entry says (version 4)
  /// Whether the record is a tombstone.
  bool is_tombstone() const noexcept { return (flags & format::tombstone) != 0; }
};

/// What a hint file's trailer says about its segment.
struct hint_summary {
  std::uint64_t records = 0;        ///< records in the segment
  std::uint64_t segment_bytes = 0;  ///< the segment file's size, header included
  std::uint64_t min_seq = 0;        ///< lowest sequence number in the segment
  std::uint64_t max_seq = 0;        ///< highest sequence number in the segment
  /// The header and the trailer's checksum were valid: the figures above are
  /// the hint writer's, even if the hint does not fit the segment.
  bool trailer_valid = false;
  /// Versions 3 and 4: the sketch of the keys, as stored. validate_hint() checks its
  /// form, not that it is the entries' (it does not know the key hasher):
  /// that is the caller's to check, with the hashes it computes anyway.
  bool has_sketch = false;
  detail::key_sketch sketch;  ///< valid if has_sketch
};

/// Builds the bytes of a hint file in memory.
template <class Checksum>
class hint_builder {
 public:
  /// Starts the hint file of segment `segment_id` of a store whose codec id is `codec_id`.
  hint_builder(std::uint32_t segment_id, std::uint32_t codec_id) : segment_id_(segment_id), codec_id_(codec_id) {}

  /// Adds the entry of record `r`, found at `offset` in the segment, whose
  /// key hashes to `key_hash` under the store's key hasher (for the sketch),
  /// and which replaced `replaced` when it was written (if any). Call in file order.
  void add(const format::record_view& r, std::uint32_t offset, std::uint64_t key_hash,
           replaced_record replaced = {}) {
    sketch_.add(key_hash);
    // Sequence numbers are stored relative to the segment's lowest, known
    // only at the end: entries wait here with theirs in full.
    entries_.push_back({r.seq, offset, r.size, static_cast<std::uint32_t>(r.key.size()), r.flags, replaced});
    keys_.insert(keys_.end(), r.key.begin(), r.key.end());
    min_seq_ = entries_.size() == 1 ? r.seq : std::min(min_seq_, r.seq);
    max_seq_ = std::max(max_seq_, r.seq);
  }

  /// Appends the trailer and returns the finished file's bytes.
  std::vector<std::byte> finish(std::uint64_t segment_bytes) && {
    std::vector<std::byte> buf(format::file_header_size +
                               entries_.size() * hint_format::max_entry_header_size + keys_.size() +
                               hint_format::sketch_size + hint_format::trailer_size);
    format::file_header h;
    h.kind = format::file_kind::hint;
    h.version = hint_format::version;
    h.checksum_id = Checksum::id;
    h.codec_id = codec_id_;
    h.segment_id = segment_id_;
    format::encode_file_header<Checksum>(h, buf.data());
    std::byte* p = buf.data() + format::file_header_size;
    const std::byte* key = keys_.data();
    for (const auto& e : entries_) {
      using hint_format::bytes_for;
      const std::uint64_t vlen = e.size - format::record_size(e.key_len, 0), dseq = e.seq - min_seq_;
      const unsigned kb = bytes_for(e.key_len), vb = bytes_for(vlen), sb = bytes_for(dseq), ob = bytes_for(e.offset);
      const std::uint8_t rflag = e.replaced ? hint_format::replaces_bit : 0;
      p[0] = std::byte(static_cast<std::uint8_t>((e.flags & hint_format::flag_bits) | (sb - 1) << 4 | rflag));
      p[1] = std::byte(static_cast<std::uint8_t>((kb - 1) | (vb - 1) << 2 | (ob - 1) << 4));
      p += 2;
      auto put = [&p](std::uint64_t v, unsigned n) {
        for (unsigned i = 0; i < n; ++i) *p++ = std::byte(static_cast<std::uint8_t>(v >> (8 * i)));
      };
      put(e.key_len, kb), put(vlen, vb), put(dseq, sb), put(e.offset, ob);
      if (e.replaced) {
        const replaced_record& r = e.replaced;
        const unsigned rs = bytes_for(r.segment), ro = bytes_for(r.offset), rz = bytes_for(r.size);
        *p++ = std::byte(static_cast<std::uint8_t>((rs - 1) | (ro - 1) << 2 | (rz - 1) << 4));
        put(r.segment, rs), put(r.offset, ro), put(r.size, rz);
      }
      if (e.key_len > 0) std::memcpy(p, key, e.key_len);
      p += e.key_len;
      key += e.key_len;
    }
    sketch_.store(p);
    p += hint_format::sketch_size;
    buf.resize(static_cast<std::size_t>(p - buf.data()) + hint_format::trailer_size);
    p = buf.data() + buf.size() - hint_format::trailer_size;
    detail::store_u64(p, entries_.size());
    detail::store_u64(p + 8, segment_bytes);
    detail::store_u64(p + 16, min_seq_);
    detail::store_u64(p + 24, max_seq_);
    detail::store_u32(p + 32, hint_format::sketch_size);
    detail::store_u32(p + 36, format::mask(Checksum::compute(buf.data(), buf.size() - 4)));
    return buf;
  }

 private:
  struct pending {
    std::uint64_t seq;
    std::uint32_t offset, size, key_len;
    std::uint8_t flags;
    replaced_record replaced;
  };
  std::uint32_t segment_id_, codec_id_;
  std::vector<pending> entries_;
  std::vector<std::byte> keys_;
  std::uint64_t min_seq_ = 0, max_seq_ = 0;
  detail::key_sketch sketch_;
};

/// "0000000042.hint" for id 42.
inline std::string hint_file_name(std::uint32_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%010u.hint", id);
  return buf;
}

/// Decodes the entry at `p` of a hint image that validate_hint() accepted,
/// whose trailer gives `min_seq`; returns where the next entry starts.
inline const std::byte* decode_hint_entry(const std::byte* p, std::uint64_t min_seq, hint_entry& e) noexcept {
  const hint_format::raw_fields f = hint_format::decode_fields(p);
  e.flags = f.flags;
  e.seq = min_seq + f.seq_delta;
  e.offset = static_cast<std::uint32_t>(f.offset);
  e.size = static_cast<std::uint32_t>(format::record_size(f.key_len, f.value_len));
  e.key = {f.key, static_cast<std::size_t>(f.key_len)};
  e.replaces = {static_cast<std::uint32_t>(f.rseg), static_cast<std::uint32_t>(f.roff), static_cast<std::uint32_t>(f.rsize)};
  return f.key + f.key_len;
}

/// A hint image's frame, as check_hint_frame() found it: where its entries
/// begin and end, and its format version.
struct hint_frame {
  const std::byte* begin = nullptr;    ///< the image's first byte
  const std::byte* entries = nullptr;  ///< the first entry
  const std::byte* end = nullptr;      ///< where the entries end (the sketch or the trailer begins)
  std::uint16_t version = 0;           ///< the hint format version of the file header
};

/// What walk_hint_entries() found in a run of consecutive entries.
struct hint_run {
  std::uint64_t n = 0;                   ///< entries
  std::uint64_t lo = ~std::uint64_t{0};  ///< lowest sequence number
  std::uint64_t hi = 0;                  ///< highest sequence number
  std::uint64_t first_record = 0;        ///< the first entry's record offset (if n > 0)
  std::uint64_t record_end = 0;          ///< where the last entry's record ends (if n > 0)
};

/// Whether the trailer's checksum is the file's (checked by
/// check_hint_frame() unless deferred); sets out.trailer_valid if so.
template <class Checksum>
bool hint_checksum_ok(std::span<const std::byte> file, hint_summary& out) {
  if (file.size() < hint_format::trailer_size) return false;
  const std::byte* const trailer = file.data() + file.size() - hint_format::trailer_size;
  out.trailer_valid = format::unmask(detail::load_u32(trailer + 36)) == Checksum::compute(file.data(), file.size() - 4);
  return out.trailer_valid;
}

/// The first half of validate_hint(): the header (kind, hint format version,
/// codec, checksum, segment id, no flags), the trailer's checksum over the
/// file unless `defer_checksum` (then hint_checksum_ok() is the caller's to
/// call, and out.trailer_valid stays false), the trailer's segment size and
/// sequence range, and in versions 3 and 4 the sketch's form. Fills `fr`.
template <class Checksum>
bool check_hint_frame(std::span<const std::byte> file, std::uint32_t segment_id, std::uint32_t codec_id,
                      std::uint64_t segment_bytes, hint_summary& out, hint_frame& fr, bool defer_checksum = false) {
  using namespace cask::detail;
  format::file_header h;
  if (format::decode_file_header<Checksum>(file, format::file_kind::hint, h) != format::header_status::ok) return false;
  if (h.version < hint_format::oldest_version || h.version > hint_format::version || h.segment_id != segment_id ||
      h.codec_id != codec_id || h.checksum_id != Checksum::id || h.flags != 0)  // the merge flag is a segment's
    return false;
  const std::size_t sketch_bytes = h.version >= 3 ? hint_format::sketch_size : 0;
  if (file.size() < format::file_header_size + sketch_bytes + hint_format::trailer_size) return false;
  const std::byte* const trailer = file.data() + file.size() - hint_format::trailer_size;
  if (!defer_checksum && !hint_checksum_ok<Checksum>(file, out)) return false;
  out.records = load_u64(trailer);
  out.segment_bytes = load_u64(trailer + 8);
  out.min_seq = load_u64(trailer + 16);
  out.max_seq = load_u64(trailer + 24);
  if (out.segment_bytes != segment_bytes) return false;
  // The entries end where the sketch (versions 3 and 4) or the trailer begins.
  const std::byte* const t = trailer - sketch_bytes;
  if (load_u32(trailer + 32) != sketch_bytes) return false;
  if (sketch_bytes > 0) {
    if (!out.sketch.load({t, sketch_bytes})) return false;
    out.has_sketch = true;
  }
  if (out.min_seq > out.max_seq || out.max_seq > format::max_sequence) return false;
  fr = {file.data(), file.data() + format::file_header_size, t, h.version};
  return true;
}

/// Walks the entries of the frame `fr` from `from` (an entry's start) to `to`
/// (the start of the entry after the run's last, or fr.end) and checks each:
/// well formed (reserved bits zero, each number in its shortest form, within
/// the format's limits), of a record inside a segment of `segment_bytes` bytes,
/// after the record of the entry before in the run (file order), inside the
/// trailer's sequence range (`out`); the run must end exactly at `to`. Calls
/// on_entry(const hint_entry&, std::size_t entry_offset) for each entry as
/// it is checked. Returns false at the first fault (leaving `run` as it
/// was). join_hint_runs() checks what lies across runs.
template <class OnEntry>
bool walk_hint_entries(const hint_frame& fr, const hint_summary& out, std::uint32_t segment_id,
                       std::uint64_t segment_bytes, const std::byte* from, const std::byte* to, hint_run& run,
                       OnEntry&& on_entry) {
  const std::byte* const t = fr.end;
  // (Counted in locals, stored once at the end: two threads walk the two
  // runs of one hint, and their hint_runs may share a cache line.)
  std::uint64_t record_end = format::file_header_size, n = 0, lo = ~std::uint64_t{0}, hi = 0, first_record = 0;
  const std::byte* p = from;
  while (p < to) {
    const std::byte* const at = p;
    // Both descriptor bytes and every field start before the trailer ends,
    // so decode_fields() reads inside the file; then each field must end
    // before the entries do, in its shortest form, within its limits.
    if (t - p < static_cast<std::ptrdiff_t>(hint_format::min_entry_size)) return false;
    if (((std::to_integer<std::uint8_t>(p[0]) & hint_format::replaces_bit) != 0 &&
         fr.version < hint_format::replaces_version) ||
        (std::to_integer<std::uint8_t>(p[1]) & hint_format::reserved1) != 0)
      return false;
    const hint_format::raw_fields f = hint_format::decode_fields(p);
    using hint_format::bytes_for;
    if (f.key > t || static_cast<std::uint64_t>(t - f.key) < f.key_len) return false;
    if (bytes_for(f.key_len) != f.key_len_bytes || bytes_for(f.value_len) != f.value_len_bytes ||
        bytes_for(f.seq_delta) != f.seq_bytes || bytes_for(f.offset) != f.offset_bytes)
      return false;
    // What the record replaced: a record (at or after the file header, of a
    // record's size at least) of a segment of a lower id (not 0), or of this
    // segment, ending at or before this one starts.
    if (f.replaces &&
        ((f.d2 & hint_format::reserved2) != 0 || bytes_for(f.rseg) != f.rseg_bytes ||
         bytes_for(f.roff) != f.roff_bytes || bytes_for(f.rsize) != f.rsize_bytes || f.rseg == 0 ||
         f.rseg > segment_id || f.roff < format::file_header_size || f.rsize < format::record_header_size ||
         (f.rseg == segment_id && f.roff + f.rsize > f.offset)))
      return false;
    if ((f.flags & ~format::known_flags) != 0 || f.key_len > format::max_key_len || f.value_len > format::max_value_len ||
        f.seq_delta > out.max_seq - out.min_seq || ((f.flags & format::tombstone) && f.value_len != 0))
      return false;
    const std::uint64_t seq = out.min_seq + f.seq_delta, rsize = format::record_size(f.key_len, f.value_len);
    if (seq < format::first_sequence) return false;
    if (f.offset < record_end || f.offset + rsize > segment_bytes) return false;
    if (n == 0) first_record = f.offset;
    record_end = f.offset + rsize;
    lo = std::min(lo, seq);
    hi = std::max(hi, seq);
    on_entry(hint_entry{seq, static_cast<std::uint32_t>(f.offset), static_cast<std::uint32_t>(rsize), f.flags,
                        {f.key, static_cast<std::size_t>(f.key_len)},
                        {static_cast<std::uint32_t>(f.rseg), static_cast<std::uint32_t>(f.roff),
                         static_cast<std::uint32_t>(f.rsize)}},
             static_cast<std::size_t>(at - fr.begin));
    p = f.key + f.key_len;
    ++n;
  }
  run = {n, lo, hi, first_record, record_end};
  return p == to;
}

/// The start of the first entry at or past `at` bytes into the entries of
/// `fr`, found by walking their lengths from the first (no other check), so
/// that two threads may walk the halves of a large hint; nullptr if there is
/// none before the entries end or the lengths lead outside them (the file
/// does not validate then).
inline const std::byte* hint_entry_near(const hint_frame& fr, std::size_t at) noexcept {
  const std::byte* p = fr.entries;
  const std::byte* const t = fr.end;
  if (static_cast<std::size_t>(t - p) <= at) return nullptr;
  const std::byte* const goal = p + at;
  while (p < goal) {
    if (t - p < static_cast<std::ptrdiff_t>(hint_format::min_entry_size)) return nullptr;
    const hint_format::raw_fields f = hint_format::decode_fields(p);
    if (f.key > t || static_cast<std::uint64_t>(t - f.key) < f.key_len) return nullptr;
    p = f.key + f.key_len;
  }
  return p < t ? p : nullptr;
}

/// The second half of validate_hint() for runs `a` and `b`, walked from the
/// first entry to the second run's start and on to the entries' end: the
/// second run's first record lies past the first run's last, and together
/// they hold the trailer's count of entries and span its sequence range.
/// (Either run may be empty; an empty `b` is {}.)
inline bool join_hint_runs(const hint_summary& out, const hint_run& a, const hint_run& b = {}) noexcept {
  if (a.n > 0 && b.n > 0 && b.first_record < a.record_end) return false;
  const std::uint64_t n = a.n + b.n;
  if (n == 0) return out.records == 0 && out.min_seq == 0 && out.max_seq == 0;
  return n == out.records && std::min(a.lo, b.lo) == out.min_seq && std::max(a.hi, b.hi) == out.max_seq;
}

/// Checks a whole hint file image: check_hint_frame(), then every entry
/// (walk_hint_entries() over them all, join_hint_runs()). Returns false for
/// anything else, in which case the segment must be scanned.
///
/// Calls on_entry(const hint_entry&, std::size_t entry_offset) for each entry
/// as it is checked, so that a caller can decode the file in the same pass; if
/// the result is false, the entries passed so far must be discarded.
template <class Checksum, class OnEntry>
bool validate_hint(std::span<const std::byte> file, std::uint32_t segment_id, std::uint32_t codec_id,
                   std::uint64_t segment_bytes, hint_summary& out, OnEntry&& on_entry) {
  hint_frame fr;
  if (!check_hint_frame<Checksum>(file, segment_id, codec_id, segment_bytes, out, fr)) return false;
  hint_run run;
  return walk_hint_entries(fr, out, segment_id, segment_bytes, fr.entries, fr.end, run, on_entry) &&
         join_hint_runs(out, run);
}

/// validate_hint() without a per-entry callback.
template <class Checksum>
bool validate_hint(std::span<const std::byte> file, std::uint32_t segment_id, std::uint32_t codec_id,
                   std::uint64_t segment_bytes, hint_summary& out) {
  return validate_hint<Checksum>(file, segment_id, codec_id, segment_bytes, out,
                                 [](const hint_entry&, std::size_t) {});
}

/// Calls f(const hint_entry&) for each entry of a hint image that validate_hint() accepted.
template <class F>
void for_each_hint_entry(std::span<const std::byte> file, F&& f) {
  const std::byte* const trailer = file.data() + file.size() - hint_format::trailer_size;
  const std::uint64_t min_seq = detail::load_u64(trailer + 16);
  const std::byte* const t = trailer - detail::load_u32(trailer + 32);
  const std::byte* p = file.data() + format::file_header_size;
  while (p < t) {
    hint_entry e;
    p = decode_hint_entry(p, min_seq, e);
    f(e);
  }
}

/// What open reads of a hint file before it loads any, to size the keydir:
/// the trailer's record count and, in versions 3 and 4, the sketch of the keys.
/// Only the sketch's form is checked (a damaged hint is refused when it is
/// validated, and then costs only time). Returns whether `sketch` was read;
/// `records` is set either way if the trailer could be read (else 0).
template <class File>
bool read_hint_sizing(const File& f, std::uint64_t file_size, std::uint64_t& records, detail::key_sketch& sketch) {
  records = 0;
  constexpr std::size_t n = hint_format::sketch_size + hint_format::trailer_size;
  std::byte tail[n];
  if (file_size < format::file_header_size + hint_format::trailer_size) return false;
  const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(n, file_size - format::file_header_size));
  std::error_code ec;
  std::size_t got = 0;
  while (got < want) {
    const std::size_t r = f.read_at(tail + n - want + got, want - got, file_size - want + got, ec);
    if (ec || r == 0) return false;
    got += r;
  }
  const std::byte* const trailer = tail + hint_format::sketch_size;
  const bool sketched = want == n && detail::load_u32(trailer + 32) == hint_format::sketch_size &&
                        sketch.load({tail, hint_format::sketch_size});
  // (No more entries than the file can hold.)
  const std::uint64_t room =
      file_size - format::file_header_size - hint_format::trailer_size - (sketched ? hint_format::sketch_size : 0);
  records = std::min<std::uint64_t>(detail::load_u64(trailer), room / hint_format::min_entry_size);
  return sketched;
}

/// Writes `bytes` to `dir/name` atomically and durably: a temporary file,
/// fdatasync, rename, fsync of the directory.
template <class Io>
void write_file_atomically(const Io& io, const std::filesystem::path& dir, const std::string& name,
                           std::span<const std::byte> bytes, std::error_code& ec) {
  const auto tmp = dir / (name + ".tmp");
  auto f = io.open(tmp, open_mode::create_always, ec);
  if (ec) return;
  f.write_at(bytes.data(), bytes.size(), 0, ec);
  if (!ec) f.sync(ec);
  std::error_code close_ec;
  f.close(close_ec);
  if (!ec) ec = close_ec;
  if (!ec) io.rename(tmp, dir / name, ec);
  if (!ec) io.sync_dir(dir, ec);
  if (ec) {
    std::error_code ignored;
    io.remove(tmp, ignored);
  }
}

/// Reads exactly `n` bytes at `off` of the open file `f` into `out`, going on
/// after a short read. A file that ends first is std::errc::io_error.
template <class File>
void read_exact(const File& f, std::byte* out, std::size_t n, std::uint64_t off, std::error_code& ec) {
  for (std::size_t done = 0; done < n;) {
    const std::size_t got = f.read_at(out + done, n - done, off + done, ec);
    if (ec) return;
    if (got == 0) return void(ec = std::make_error_code(std::errc::io_error));
    done += got;
  }
}

/// Reads the whole file `p` into `out` through the I/O policy, sequentially,
/// going on after a short read. Returns true on success. Returns false with
/// `ec` clear if the file does not exist, and false with `ec` set on any
/// other error (a file that ends before its size was read is std::errc::io_error).
template <class Io>
bool read_file(const Io& io, const std::filesystem::path& p, std::vector<std::byte>& out, std::error_code& ec) {
  ec.clear();
  auto f = io.open(p, open_mode::read, ec);
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) ec.clear();
    return false;
  }
  const std::uint64_t size = f.size(ec);
  if (ec) return false;
  out.resize(static_cast<std::size_t>(size));
  read_exact(f, out.data(), out.size(), 0, ec);
  return !ec;
}

}  // namespace cask
