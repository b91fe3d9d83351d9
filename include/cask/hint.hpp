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
inline constexpr std::size_t entry_header_size = 21;  ///< seq 8, offset 4, size 4, flags 1, key length 4
inline constexpr std::size_t trailer_size = 40;       ///< records 8, bytes 8, min seq 8, max seq 8, reserved 4, crc 4
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
  hint_builder(std::uint32_t segment_id, std::uint32_t codec_id) : buf_(format::file_header_size) {
    format::file_header h;
    h.kind = format::file_kind::hint;
    h.checksum_id = Checksum::id;
    h.codec_id = codec_id;
    h.segment_id = segment_id;
    format::encode_file_header<Checksum>(h, buf_.data());
  }

  /// Adds the entry of record `r`, found at `offset` in the segment. Call in file order.
  void add(const format::record_view& r, std::uint32_t offset) {
    const std::size_t at = buf_.size();
    buf_.resize(at + hint_format::entry_header_size + r.key.size());
    std::byte* p = buf_.data() + at;
    detail::store_u64(p, r.seq);
    detail::store_u32(p + 8, offset);
    detail::store_u32(p + 12, r.size);
    p[16] = std::byte{r.flags};
    detail::store_u32(p + 17, static_cast<std::uint32_t>(r.key.size()));
    if (!r.key.empty()) std::memcpy(p + hint_format::entry_header_size, r.key.data(), r.key.size());
    ++records_;
    min_seq_ = records_ == 1 ? r.seq : std::min(min_seq_, r.seq);
    max_seq_ = std::max(max_seq_, r.seq);
  }

  /// Appends the trailer and returns the finished file's bytes.
  std::vector<std::byte> finish(std::uint64_t segment_bytes) && {
    const std::size_t at = buf_.size();
    buf_.resize(at + hint_format::trailer_size);
    std::byte* p = buf_.data() + at;
    detail::store_u64(p, records_);
    detail::store_u64(p + 8, segment_bytes);
    detail::store_u64(p + 16, min_seq_);
    detail::store_u64(p + 24, max_seq_);
    detail::store_u32(p + 32, 0);
    detail::store_u32(p + 36, format::mask(Checksum::compute(buf_.data(), buf_.size() - 4)));
    return std::move(buf_);
  }

 private:
  std::vector<std::byte> buf_;
  std::uint64_t records_ = 0, min_seq_ = 0, max_seq_ = 0;
};

/// "0000000042.hint" for id 42.
inline std::string hint_file_name(std::uint32_t id) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%010u.hint", id);
  return buf;
}

/// Checks a whole hint file image: header (kind, codec, checksum, segment id),
/// trailer checksum, and that every entry lies inside a segment of
/// `segment_bytes` bytes and the entries end exactly at the trailer. Returns
/// false for anything else, in which case the segment must be scanned.
///
/// Calls on_entry(const hint_entry&) for each entry as it is checked, so that
/// a caller can decode the file in the same pass; if the result is false, the
/// entries passed so far must be discarded.
template <class Checksum, class OnEntry>
bool validate_hint(std::span<const std::byte> file, std::uint32_t segment_id, std::uint32_t codec_id,
                   std::uint64_t segment_bytes, hint_summary& out, OnEntry&& on_entry) {
  using namespace cask::detail;
  format::file_header h;
  if (format::decode_file_header<Checksum>(file, format::file_kind::hint, h) != format::header_status::ok) return false;
  if (h.segment_id != segment_id || h.codec_id != codec_id || h.checksum_id != Checksum::id) return false;
  if (file.size() < format::file_header_size + hint_format::trailer_size) return false;
  const std::byte* t = file.data() + file.size() - hint_format::trailer_size;
  if (format::unmask(load_u32(t + 36)) != Checksum::compute(file.data(), file.size() - 4)) return false;
  out.trailer_valid = true;
  out.records = load_u64(t);
  out.segment_bytes = load_u64(t + 8);
  out.min_seq = load_u64(t + 16);
  out.max_seq = load_u64(t + 24);
  if (out.segment_bytes != segment_bytes) return false;
  // Walk the entries once: each must describe a record inside the segment.
  std::uint64_t n = 0;
  std::size_t off = format::file_header_size;
  const std::size_t end = file.size() - hint_format::trailer_size;
  while (off < end) {
    if (end - off < hint_format::entry_header_size) return false;
    const std::byte* p = file.data() + off;
    const std::uint64_t seq = load_u64(p);
    const std::uint32_t roff = load_u32(p + 8), rsize = load_u32(p + 12), klen = load_u32(p + 17);
    const auto flags = std::to_integer<std::uint8_t>(p[16]);
    if (klen > format::max_key_len || end - off - hint_format::entry_header_size < klen) return false;
    if (seq < format::first_sequence || seq > format::max_sequence || (flags & ~format::known_flags) != 0)
      return false;
    if (roff < format::file_header_size || std::uint64_t{roff} + rsize > segment_bytes ||
        rsize < format::record_size(klen, 0))
      return false;
    on_entry(hint_entry{seq, roff, rsize, flags, {p + hint_format::entry_header_size, klen}});
    off += hint_format::entry_header_size + klen;
    ++n;
  }
  return n == out.records;
}

/// validate_hint() without a per-entry callback.
template <class Checksum>
bool validate_hint(std::span<const std::byte> file, std::uint32_t segment_id, std::uint32_t codec_id,
                   std::uint64_t segment_bytes, hint_summary& out) {
  return validate_hint<Checksum>(file, segment_id, codec_id, segment_bytes, out, [](const hint_entry&) {});
}

/// The entry that starts at `p`, inside a hint image that validate_hint() accepted.
inline hint_entry hint_entry_at(const std::byte* p) noexcept {
  using namespace cask::detail;
  hint_entry e;
  e.seq = load_u64(p);
  e.offset = load_u32(p + 8);
  e.size = load_u32(p + 12);
  e.flags = std::to_integer<std::uint8_t>(p[16]);
  e.key = {p + hint_format::entry_header_size, load_u32(p + 17)};
  return e;
}

/// Calls f(const hint_entry&) for each entry of a hint image that validate_hint() accepted.
template <class F>
void for_each_hint_entry(std::span<const std::byte> file, F&& f) {
  std::size_t off = format::file_header_size;
  const std::size_t end = file.size() - hint_format::trailer_size;
  while (off < end) {
    const hint_entry e = hint_entry_at(file.data() + off);
    f(e);
    off += hint_format::entry_header_size + e.key.size();
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
