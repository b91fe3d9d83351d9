// cask/format.hpp - the on-disk format: constants, file headers and records.
//
// This header is the code side of docs/FORMAT.md; every constant here is
// named there, and tests/format_test.cpp pins the exact bytes. It does no I/O:
// it encodes into and decodes from byte ranges. All integers little-endian.
#pragma once

#include <cask/detail/endian.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace cask::format {

// ---- file header (FORMAT.md "File header") ----

/// First 8 bytes of every cask file. Non-ASCII first byte and CR LF SUB, as in
/// PNG, so a text-mode transfer or a truncated copy is caught at once.
inline constexpr std::array<std::byte, 8> magic = {std::byte{0x89}, std::byte{'C'},  std::byte{'A'},  std::byte{'S'},
                                                   std::byte{'K'},  std::byte{'\r'}, std::byte{'\n'}, std::byte{0x1A}};
/// The format version this library writes for segments, merge manifests and
/// keydir snapshots. It reads versions 1..version.
inline constexpr std::uint16_t version = 1;
/// The format version of hint files, counted on its own (hint.hpp): 4.
inline constexpr std::uint16_t hint_version = 4;
inline constexpr std::size_t file_header_size = 32;

enum class file_kind : std::uint16_t { segment = 1, hint = 2, merge_manifest = 3, keydir_snapshot = 4 };

/// The fields of a file header (FORMAT.md "File header").
struct file_header {
  file_kind kind = file_kind::segment;      ///< what the file holds
  std::uint16_t version = format::version;  ///< the format version it was written in
  std::uint32_t checksum_id = 0;            ///< the checksum policy's id
  std::uint32_t codec_id = 0;               ///< codec_id(Codec::name)
  std::uint32_t segment_id = 0;             ///< the segment this file is, or describes (hint)
  std::uint32_t flags = 0;                  ///< file_flags
};

/// File header flags. Bits not named here are reserved: zero in version 1,
/// and a reader refuses a file that sets one.
enum file_flags : std::uint32_t {
  /// A segment written whole by a merge and made durable before it got its
  /// name: it never has a torn tail. Recovery takes the newest segment
  /// *without* this flag as the one the writer was appending to.
  merge_output = 0x1,
};
/// The file header flags this version knows.
inline constexpr std::uint32_t known_file_flags = merge_output;

// ---- record (FORMAT.md "Record") ----

inline constexpr std::size_t record_header_size = 21;
inline constexpr std::size_t crc_offset = 0, seq_offset = 4, flags_offset = 12, key_len_offset = 13,
                             value_len_offset = 17;

/// Record flags. Bits not named here are reserved: version 1 writes them as
/// zero and refuses a record that sets one.
enum record_flags : std::uint8_t {
  tombstone = 0x01,  ///< the key was erased; value_len is 0
  // 0x02: reserved for an 8-byte expiry time after the header (format version 2)
  // 0x04, 0x08: reserved for atomic batches (begin / commit)
};
inline constexpr std::uint8_t known_flags = tombstone;

/// Sequence numbers start at 1, so an all-zero header never validates.
inline constexpr std::uint64_t first_sequence = 1;
/// Sequence numbers stay below 2^63 (at ten million writes a second, after
/// 29,000 years); a record claiming more is malformed, so a damaged or
/// hostile record cannot make the counter wrap.
inline constexpr std::uint64_t max_sequence = (std::uint64_t{1} << 63) - 1;

/// Largest key and value the format can hold; options may set smaller limits.
inline constexpr std::uint32_t max_key_len = (1u << 20);
inline constexpr std::uint32_t max_value_len = (1u << 31) - 1;
/// Offsets in a segment are 32-bit; a segment never grows past this.
inline constexpr std::uint64_t max_segment_size = (std::uint64_t{1} << 32) - 1;

/// Checksums are stored masked, as LevelDB does: a CRC computed over bytes
/// that themselves contain CRCs (a store kept inside a value) stays strong.
inline constexpr std::uint32_t mask_delta = 0xa282ead8u;
constexpr std::uint32_t mask(std::uint32_t crc) noexcept { return ((crc >> 15) | (crc << 17)) + mask_delta; }
constexpr std::uint32_t unmask(std::uint32_t m) noexcept {
  const std::uint32_t r = m - mask_delta;
  return (r >> 17) | (r << 15);
}

/// The identity of a codec as stored in headers: CRC-32C of its name.
template <class Checksum>
std::uint32_t codec_id(std::string_view name) noexcept {
  return Checksum::compute(reinterpret_cast<const std::byte*>(name.data()), name.size());
}

constexpr std::uint64_t record_size(std::uint64_t key_len, std::uint64_t value_len) noexcept {
  return record_header_size + key_len + value_len;
}

/// Writes a file header (32 bytes) at `out`.
template <class Checksum>
void encode_file_header(const file_header& h, std::byte* out) noexcept {
  using namespace cask::detail;
  for (std::size_t i = 0; i < magic.size(); ++i) out[i] = magic[i];
  store_u16(out + 8, h.version);
  store_u16(out + 10, static_cast<std::uint16_t>(h.kind));
  store_u32(out + 12, h.checksum_id);
  store_u32(out + 16, h.codec_id);
  store_u32(out + 20, h.segment_id);
  store_u32(out + 24, h.flags);
  store_u32(out + 28, mask(Checksum::compute(out, 28)));
}

enum class header_status { ok, short_file, bad_magic, bad_checksum, unsupported_version, wrong_kind };

/// Decodes a file header from `in` (at least 32 bytes for ok).
template <class Checksum>
header_status decode_file_header(std::span<const std::byte> in, file_kind expected, file_header& h) noexcept {
  using namespace cask::detail;
  if (in.size() < file_header_size) return header_status::short_file;
  for (std::size_t i = 0; i < magic.size(); ++i)
    if (in[i] != magic[i]) return header_status::bad_magic;
  if (unmask(load_u32(in.data() + 28)) != Checksum::compute(in.data(), 28)) return header_status::bad_checksum;
  h.version = load_u16(in.data() + 8);
  h.kind = static_cast<file_kind>(load_u16(in.data() + 10));
  h.checksum_id = load_u32(in.data() + 12);
  h.codec_id = load_u32(in.data() + 16);
  h.segment_id = load_u32(in.data() + 20);
  h.flags = load_u32(in.data() + 24);
  const std::uint16_t newest = h.kind == file_kind::hint ? hint_version : version;
  if (h.version == 0 || h.version > newest || (h.flags & ~known_file_flags) != 0)
    return header_status::unsupported_version;
  if (h.kind != expected) return header_status::wrong_kind;
  return header_status::ok;
}

/// The checksum id that a header in `in` (at least 32 bytes, else 0) claims,
/// unverified: the header checksum is the file's checksum policy's, so a
/// reader under another policy cannot verify the header, but can still see
/// that it names another one (FORMAT.md "File header").
inline std::uint32_t claimed_checksum_id(std::span<const std::byte> in) noexcept {
  return in.size() < file_header_size ? 0 : detail::load_u32(in.data() + 12);
}

/// Writes a record header with a zero checksum; call seal_record() once the
/// key and value bytes follow it.
inline void encode_record_header(std::byte* out, std::uint64_t seq, std::uint8_t flags, std::uint32_t key_len,
                                 std::uint32_t value_len) noexcept {
  using namespace cask::detail;
  store_u32(out + crc_offset, 0);
  store_u64(out + seq_offset, seq);
  out[flags_offset] = std::byte{flags};
  store_u32(out + key_len_offset, key_len);
  store_u32(out + value_len_offset, value_len);
}

/// Computes and stores the checksum of the `size`-byte record at `rec`.
template <class Checksum>
void seal_record(std::byte* rec, std::size_t size) noexcept {
  detail::store_u32(rec + crc_offset, mask(Checksum::compute(rec + 4, size - 4)));
}

/// A decoded record; spans point into the buffer that was parsed.
struct record_view {
  std::uint64_t seq = 0;             ///< the record's sequence number (newer records have larger ones)
  std::uint8_t flags = 0;            ///< record_flags
  std::uint32_t size = 0;            ///< header + key + value bytes
  std::span<const std::byte> key;    ///< the encoded key
  std::span<const std::byte> value;  ///< the encoded value (empty for a tombstone)
  /// Whether the record erases its key.
  bool is_tombstone() const noexcept { return (flags & tombstone) != 0; }
};

enum class record_status {
  ok,
  zero,          ///< the header bytes are all zero: preallocated space, the end of the data
  truncated,     ///< fewer bytes remain than the header or its lengths need
  bad_header,    ///< a reserved flag, sequence 0, a tombstone with a value, or a length over the limit
  bad_checksum,  ///< the checksum does not match
};

/// Parses the header of the record at `p` with `avail` bytes readable, without
/// checking the checksum. Fills `r` (key and value spans included) when ok.
inline record_status parse_record_header(const std::byte* p, std::size_t avail, record_view& r) noexcept {
  using namespace cask::detail;
  if (avail < record_header_size) {
    for (std::size_t i = 0; i < avail; ++i)
      if (p[i] != std::byte{0}) return record_status::truncated;
    return record_status::zero;
  }
  const std::uint64_t seq = load_u64(p + seq_offset);
  const std::uint32_t crc = load_u32(p + crc_offset);
  const auto flags = std::to_integer<std::uint8_t>(p[flags_offset]);
  const std::uint32_t klen = load_u32(p + key_len_offset), vlen = load_u32(p + value_len_offset);
  if (seq == 0 && crc == 0 && flags == 0 && klen == 0 && vlen == 0) return record_status::zero;
  if (seq < first_sequence || seq > max_sequence || (flags & ~known_flags) != 0 || klen > max_key_len || vlen > max_value_len ||
      ((flags & tombstone) && vlen != 0))
    return record_status::bad_header;
  const std::uint64_t size = record_size(klen, vlen);
  if (size > avail) return record_status::truncated;
  r.seq = seq;
  r.flags = flags;
  r.size = static_cast<std::uint32_t>(size);
  r.key = {p + record_header_size, klen};
  r.value = {p + record_header_size + klen, vlen};
  return record_status::ok;
}

/// Checks the checksum of a record whose header parsed ok.
template <class Checksum>
bool record_checksum_ok(const std::byte* p, const record_view& r) noexcept {
  return unmask(detail::load_u32(p + crc_offset)) == Checksum::compute(p + 4, r.size - 4);
}

/// parse_record_header + record_checksum_ok.
template <class Checksum>
record_status parse_record(const std::byte* p, std::size_t avail, record_view& r) noexcept {
  const record_status s = parse_record_header(p, avail, r);
  if (s != record_status::ok) return s;
  return record_checksum_ok<Checksum>(p, r) ? record_status::ok : record_status::bad_checksum;
}

}  // namespace cask::format
