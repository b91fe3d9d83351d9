// cask/hint.hpp - hint files: a compact snapshot of one segment's index entries.
//
// `<id>.hint` lists, for every record of sealed segment `<id>`, its key,
// offset, size, sequence number and flags, so that open can rebuild the keydir
// without reading the segment's values. The file is written to `<id>.hint.tmp`,
// made durable, renamed into place and the directory synced; it ends with a
// trailer whose checksum covers the whole file. A hint that is missing,
// truncated, corrupt, or describes a segment of another size is ignored and
// the segment is scanned instead, which yields the same keydir
// (docs/FORMAT.md "Hint file").
//
// Thread safety: the functions are reentrant; a hint_builder is used by one thread.
#pragma once

#include <cask/detail/endian.hpp>
#include <cask/error.hpp>
#include <cask/format.hpp>
#include <cask/io.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace cask {

namespace hint_format {
/// Hint files have their own format version (the file header's version
/// field): 2, entries of variable size. Version-1 hint files (fixed 21-byte
/// entry headers) are not read: their segments are scanned and their hints
/// written again.
inline constexpr std::uint16_t version = format::hint_version;
/// The smallest entry: the flags byte and four one-byte varints.
inline constexpr std::size_t min_entry_size = 5;
/// The largest entry header: flags 1, then varints of key length (3 bytes),
/// value length (5), sequence number delta (9) and offset (5).
inline constexpr std::size_t max_entry_header_size = 23;
inline constexpr std::size_t trailer_size = 40;  ///< records 8, bytes 8, min seq 8, max seq 8, reserved 4, crc 4

/// Appends `v` as an unsigned LEB128 varint: 7 bits a byte, low bits first,
/// the high bit set on every byte but the last.
inline std::byte* put_varint(std::byte* p, std::uint64_t v) noexcept {
  while (v >= 0x80) {
    *p++ = std::byte(static_cast<std::uint8_t>(v | 0x80));
    v >>= 7;
  }
  *p++ = std::byte(static_cast<std::uint8_t>(v));
  return p;
}
/// Decodes a varint that validate_hint() accepted.
inline const std::byte* get_varint(const std::byte* p, std::uint64_t& v) noexcept {
  std::uint64_t r = 0;
  unsigned shift = 0;
  std::uint8_t b;
  do {
    b = std::to_integer<std::uint8_t>(*p++);
    r |= std::uint64_t{b & 0x7fu} << shift;
    shift += 7;
  } while (b & 0x80);
  v = r;
  return p;
}
/// Decodes a varint of at most `max` from [p, end), in its shortest form
/// only (so that an entry has one encoding). Returns nullptr for anything else.
inline const std::byte* get_varint_checked(const std::byte* p, const std::byte* end, std::uint64_t max,
                                           std::uint64_t& v) noexcept {
  std::uint64_t r = 0;
  for (unsigned shift = 0; p < end && shift < 64; shift += 7) {
    const auto b = std::to_integer<std::uint8_t>(*p++);
    const std::uint64_t bits = b & 0x7fu;
    if (shift > 0 && bits >> (64 - shift) != 0) return nullptr;  // past 64 bits
    r |= bits << shift;
    if ((b & 0x80) == 0) {
      if (b == 0 && shift > 0) return nullptr;  // a longer form than needed
      if (r > max) return nullptr;
      v = r;
      return p;
    }
  }
  return nullptr;
}
}  // namespace hint_format

/// One entry of a hint file; `key` points into the buffer it was decoded from.
struct hint_entry {
  std::uint64_t seq = 0;           ///< the record's sequence number
  std::uint32_t offset = 0;        ///< where the record starts in the segment
  std::uint32_t size = 0;          ///< the record's size in bytes
  std::uint8_t flags = 0;          ///< the record's flags
  std::span<const std::byte> key;  ///< the encoded key
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
};

/// Builds the bytes of a hint file in memory.
template <class Checksum>
class hint_builder {
 public:
  /// Starts the hint file of segment `segment_id` of a store whose codec id is `codec_id`.
  hint_builder(std::uint32_t segment_id, std::uint32_t codec_id) : segment_id_(segment_id), codec_id_(codec_id) {}

  /// Adds the entry of record `r`, found at `offset` in the segment. Call in file order.
  void add(const format::record_view& r, std::uint32_t offset) {
    // Sequence numbers are stored relative to the segment's lowest, known
    // only at the end: entries wait here with theirs in full.
    entries_.push_back({r.seq, offset, r.size, static_cast<std::uint32_t>(r.key.size()), r.flags});
    keys_.insert(keys_.end(), r.key.begin(), r.key.end());
    min_seq_ = entries_.size() == 1 ? r.seq : std::min(min_seq_, r.seq);
    max_seq_ = std::max(max_seq_, r.seq);
  }

  /// Appends the trailer and returns the finished file's bytes.
  std::vector<std::byte> finish(std::uint64_t segment_bytes) && {
    std::vector<std::byte> buf(format::file_header_size +
                               entries_.size() * hint_format::max_entry_header_size + keys_.size() +
                               hint_format::trailer_size);
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
      *p++ = std::byte{e.flags};
      p = hint_format::put_varint(p, e.key_len);
      p = hint_format::put_varint(p, e.size - format::record_size(e.key_len, 0));
      p = hint_format::put_varint(p, e.seq - min_seq_);
      p = hint_format::put_varint(p, e.offset);
      if (e.key_len > 0) std::memcpy(p, key, e.key_len);
      p += e.key_len;
      key += e.key_len;
    }
    buf.resize(static_cast<std::size_t>(p - buf.data()) + hint_format::trailer_size);
    p = buf.data() + buf.size() - hint_format::trailer_size;
    detail::store_u64(p, entries_.size());
    detail::store_u64(p + 8, segment_bytes);
    detail::store_u64(p + 16, min_seq_);
    detail::store_u64(p + 24, max_seq_);
    detail::store_u32(p + 32, 0);
    detail::store_u32(p + 36, format::mask(Checksum::compute(buf.data(), buf.size() - 4)));
    return buf;
  }

 private:
  struct pending {
    std::uint64_t seq;
    std::uint32_t offset, size, key_len;
    std::uint8_t flags;
  };
  std::uint32_t segment_id_, codec_id_;
  std::vector<pending> entries_;
  std::vector<std::byte> keys_;
  std::uint64_t min_seq_ = 0, max_seq_ = 0;
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
  std::uint64_t klen, vlen, dseq, off;
  e.flags = std::to_integer<std::uint8_t>(*p++);
  p = hint_format::get_varint(p, klen);
  p = hint_format::get_varint(p, vlen);
  p = hint_format::get_varint(p, dseq);
  p = hint_format::get_varint(p, off);
  e.seq = min_seq + dseq;
  e.offset = static_cast<std::uint32_t>(off);
  e.size = static_cast<std::uint32_t>(format::record_size(klen, vlen));
  e.key = {p, static_cast<std::size_t>(klen)};
  return p + klen;
}

/// The entry that starts at `p`, inside a hint image that validate_hint()
/// accepted, whose trailer gives `min_seq`.
inline hint_entry hint_entry_at(const std::byte* p, std::uint64_t min_seq) noexcept {
  hint_entry e;
  (void)decode_hint_entry(p, min_seq, e);
  return e;
}

/// Checks a whole hint file image: header (kind, hint format version, codec,
/// checksum, segment id), trailer checksum, that every entry is well formed
/// (each number in its shortest form, within the format's limits) and lies
/// inside a segment of `segment_bytes` bytes, that the entries end exactly at
/// the trailer, and that the trailer's counts and sequence range are the
/// entries'. Returns false for anything else, in which case the segment must
/// be scanned.
///
/// Calls on_entry(const hint_entry&, std::size_t entry_offset) for each entry
/// as it is checked, so that a caller can decode the file in the same pass; if
/// the result is false, the entries passed so far must be discarded.
template <class Checksum, class OnEntry>
bool validate_hint(std::span<const std::byte> file, std::uint32_t segment_id, std::uint32_t codec_id,
                   std::uint64_t segment_bytes, hint_summary& out, OnEntry&& on_entry) {
  using namespace cask::detail;
  format::file_header h;
  if (format::decode_file_header<Checksum>(file, format::file_kind::hint, h) != format::header_status::ok) return false;
  if (h.version != hint_format::version || h.segment_id != segment_id || h.codec_id != codec_id ||
      h.checksum_id != Checksum::id)
    return false;
  if (file.size() < format::file_header_size + hint_format::trailer_size) return false;
  const std::byte* t = file.data() + file.size() - hint_format::trailer_size;
  if (format::unmask(load_u32(t + 36)) != Checksum::compute(file.data(), file.size() - 4)) return false;
  out.trailer_valid = true;
  out.records = load_u64(t);
  out.segment_bytes = load_u64(t + 8);
  out.min_seq = load_u64(t + 16);
  out.max_seq = load_u64(t + 24);
  if (out.segment_bytes != segment_bytes) return false;
  if (out.min_seq > out.max_seq || out.max_seq > format::max_sequence) return false;
  // Walk the entries once: each must describe a record inside the segment.
  std::uint64_t n = 0, lo = ~std::uint64_t{0}, hi = 0;
  const std::byte* const begin = file.data();
  const std::byte* p = begin + format::file_header_size;
  while (p < t) {
    const std::byte* const at = p;
    const auto flags = std::to_integer<std::uint8_t>(*p++);
    std::uint64_t klen = 0, vlen = 0, dseq = 0, roff = 0;
    if ((flags & ~format::known_flags) != 0 ||
        !(p = hint_format::get_varint_checked(p, t, format::max_key_len, klen)) ||
        !(p = hint_format::get_varint_checked(p, t, format::max_value_len, vlen)) ||
        !(p = hint_format::get_varint_checked(p, t, out.max_seq - out.min_seq, dseq)) ||
        !(p = hint_format::get_varint_checked(p, t, format::max_segment_size, roff)) ||
        static_cast<std::uint64_t>(t - p) < klen)
      return false;
    const std::uint64_t seq = out.min_seq + dseq, rsize = format::record_size(klen, vlen);
    if (seq < format::first_sequence || ((flags & format::tombstone) && vlen != 0)) return false;
    if (roff < format::file_header_size || roff + rsize > segment_bytes) return false;
    lo = std::min(lo, seq);
    hi = std::max(hi, seq);
    on_entry(hint_entry{seq, static_cast<std::uint32_t>(roff), static_cast<std::uint32_t>(rsize), flags,
                        {p, static_cast<std::size_t>(klen)}},
             static_cast<std::size_t>(at - begin));
    p += klen;
    ++n;
  }
  if (n == 0) return out.records == 0 && out.min_seq == 0 && out.max_seq == 0;
  return n == out.records && lo == out.min_seq && hi == out.max_seq;
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
  const std::byte* const t = file.data() + file.size() - hint_format::trailer_size;
  const std::uint64_t min_seq = detail::load_u64(t + 16);
  const std::byte* p = file.data() + format::file_header_size;
  while (p < t) {
    hint_entry e;
    p = decode_hint_entry(p, min_seq, e);
    f(e);
  }
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
