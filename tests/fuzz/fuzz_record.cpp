// Fuzz target: the record decoder. Arbitrary bytes through
// cask::format::parse_record_header / parse_record, scan_records and
// find_next_record (as recovery calls them on a segment), and the file header
// decoder. Whatever they accept must lie inside the input and re-encode to
// the same bytes; whatever they refuse must be refused for a reason the bytes
// show.
#include "fuzz_util.hpp"

#include <cask/checksum.hpp>
#include <cask/format.hpp>
#include <cask/segment.hpp>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

namespace fmt = cask::format;
using checksum = cask::crc32c;

namespace {

bool all_zero(const std::byte* p, std::size_t n) {
  return std::all_of(p, p + n, [](std::byte b) { return b == std::byte{0}; });
}

/// Checks one parse of the record at `p` (`avail` bytes); returns its status.
fmt::record_status check_record(const std::byte* p, std::size_t avail) {
  fmt::record_view h;
  const auto hs = fmt::parse_record_header(p, avail, h);
  fmt::record_view r;
  const auto rs = fmt::parse_record<checksum>(p, avail, r);
  if (hs != fmt::record_status::ok) {
    FUZZ_CHECK(rs == hs, "parse_record %d, parse_record_header %d", int(rs), int(hs));
    if (hs == fmt::record_status::zero)
      FUZZ_CHECK(all_zero(p, std::min(avail, fmt::record_header_size)), "zero status for non-zero header bytes");
    return hs;
  }
  // The header's promises: limits, flags, and spans inside the input.
  FUZZ_CHECK(h.size == fmt::record_size(h.key.size(), h.value.size()) && h.size <= avail, "size %u of %zu", h.size, avail);
  FUZZ_CHECK(h.key.data() == p + fmt::record_header_size && h.value.data() == h.key.data() + h.key.size(), "spans");
  FUZZ_CHECK(h.seq >= fmt::first_sequence && (h.flags & ~fmt::known_flags) == 0, "seq/flags");
  FUZZ_CHECK(h.key.size() <= fmt::max_key_len && h.value.size() <= fmt::max_value_len, "limits");
  FUZZ_CHECK(!h.is_tombstone() || h.value.empty(), "tombstone with a value");
  FUZZ_CHECK(rs == fmt::record_status::ok || rs == fmt::record_status::bad_checksum, "status %d", int(rs));
  if (rs == fmt::record_status::ok) {
    // A valid record is exactly what the encoder writes for its fields.
    std::vector<std::byte> re(h.size);
    fmt::encode_record_header(re.data(), h.seq, h.flags, static_cast<std::uint32_t>(h.key.size()),
                              static_cast<std::uint32_t>(h.value.size()));
    if (!h.key.empty()) std::memcpy(re.data() + fmt::record_header_size, h.key.data(), h.key.size());
    if (!h.value.empty()) std::memcpy(re.data() + fmt::record_header_size + h.key.size(), h.value.data(), h.value.size());
    fmt::seal_record<checksum>(re.data(), re.size());
    FUZZ_CHECK(std::memcmp(re.data(), p, re.size()) == 0, "a valid record does not re-encode to its bytes");
  }
  return rs;
}

/// scan_records and find_next_record over [start, size), checked against check_record.
void check_scan(const std::byte* data, std::size_t size, std::size_t start) {
  std::uint64_t expect = start;
  std::size_t records = 0;
  const auto r = cask::scan_records<checksum>(data, size, start, [&](const fmt::record_view& rv, std::uint64_t off) {
    FUZZ_CHECK(off == expect, "record at %llu, expected %llu", (unsigned long long)off, (unsigned long long)expect);
    FUZZ_CHECK(rv.key.data() >= data && rv.value.data() + rv.value.size() <= data + size, "record outside the data");
    FUZZ_CHECK(check_record(data + off, size - off) == fmt::record_status::ok, "scan accepted an invalid record");
    expect = off + rv.size;
    ++records;
  });
  FUZZ_CHECK(r.valid_end == expect && r.valid_end <= std::max<std::uint64_t>(size, start), "valid_end");
  if (r.valid_end < size) {
    const auto st = check_record(data + r.valid_end, size - r.valid_end);
    FUZZ_CHECK(st != fmt::record_status::ok && st == r.stop, "stopped at a valid record, or for another reason");
    FUZZ_CHECK(r.clean_end == all_zero(data + r.valid_end, size - r.valid_end), "clean_end");
  }
  // Resynchronization finds the first offset where a record validates.
  const std::uint64_t from = r.valid_end + 1;
  const auto next = cask::find_next_record<checksum>(data, size, from);
  if (size <= 4096) {
    std::optional<std::uint64_t> brute;
    for (std::uint64_t off = from; off + fmt::record_header_size <= size && !brute; ++off) {
      fmt::record_view rv;
      if (fmt::parse_record<checksum>(data + off, size - off, rv) == fmt::record_status::ok) brute = off;
    }
    FUZZ_CHECK(next == brute, "find_next_record disagrees with a brute-force search");
  } else if (next) {
    FUZZ_CHECK(*next >= from && check_record(data + *next, size - *next) == fmt::record_status::ok, "next");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* in, std::size_t size) {
  const auto* data = reinterpret_cast<const std::byte*>(in);
  check_record(data, size);
  check_scan(data, size, 0);

  // As a segment: a file header, then records from offset 32.
  fmt::file_header h;
  const auto hs = fmt::decode_file_header<checksum>(std::span(data, size), fmt::file_kind::segment, h);
  if (hs == fmt::header_status::ok || hs == fmt::header_status::wrong_kind) {
    std::byte re[fmt::file_header_size];
    fmt::encode_file_header<checksum>(h, re);
    FUZZ_CHECK(std::memcmp(re, data, sizeof re) == 0, "a valid file header does not re-encode to its bytes");
    FUZZ_CHECK(h.version >= 1 && h.version <= (h.kind == fmt::file_kind::hint ? fmt::hint_version : fmt::version) && (h.flags & ~fmt::known_file_flags) == 0, "header fields");
  }
  if (size < fmt::file_header_size) FUZZ_CHECK(hs == fmt::header_status::short_file, "short file status %d", int(hs));
  if (size >= fmt::file_header_size) check_scan(data, size, fmt::file_header_size);
  return 0;
}
