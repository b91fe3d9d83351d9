// Fuzz target: the hint decoder, cask::validate_hint and
// for_each_hint_entry, as recovery calls them on a hint file image, and the
// same check in two runs (check_hint_frame, walk_hint_entries,
// join_hint_runs), as recovery reads a large hint in two threads.
//
// Input: one mode byte, then the segment size the caller passes (u32, little
// endian), then the hint file image. Mode bit 0: fix up the image's header and
// trailer checksums first, so mutations reach past them; bit 1: take the
// segment size, id and codec from the image itself, so they match.
// An accepted image must describe only records inside the segment, in bytes
// inside the image, and its entries must be exactly what hint_builder writes;
// if its key sketch is also its entries' (what log_store checks besides, with
// the hashes it computes), the whole image must be.
#include "fuzz_util.hpp"

#include <cask/checksum.hpp>
#include <cask/codec.hpp>
#include <cask/detail/endian.hpp>
#include <cask/format.hpp>
#include <cask/hash.hpp>
#include <cask/hint.hpp>

#include <algorithm>
#include <cstring>
#include <utility>
#include <memory>
#include <vector>

namespace fmt = cask::format;
using checksum = cask::crc32c;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  cask_fuzz::input in(data, size);
  const std::uint8_t mode = in.byte();
  std::uint64_t segment_bytes = in.u32();
  const auto rest = in.bytes(in.left());
  std::vector<std::byte> image(rest.size());
  if (!rest.empty()) std::memcpy(image.data(), rest.data(), rest.size());

  const std::uint32_t codec = fmt::codec_id<checksum>(cask::basic_codec::name);
  std::uint32_t segment_id = 1, codec_id = codec;
  constexpr std::size_t trailer = cask::hint_format::trailer_size;
  if (image.size() >= fmt::file_header_size + trailer) {
    if (mode & 1) {
      cask::detail::store_u32(image.data() + 28, fmt::mask(checksum::compute(image.data(), 28)));
      cask::detail::store_u32(image.data() + image.size() - 4,
                              fmt::mask(checksum::compute(image.data(), image.size() - 4)));
    }
    if (mode & 2) {
      segment_id = cask::detail::load_u32(image.data() + 20);
      codec_id = cask::detail::load_u32(image.data() + 16);
      segment_bytes = cask::detail::load_u64(image.data() + image.size() - trailer + 8);
    }
  }
  // An exactly sized copy, so AddressSanitizer catches a read past the image.
  auto owned = std::make_unique<std::byte[]>(image.size());
  if (!image.empty()) std::memcpy(owned.get(), image.data(), image.size());
  const std::span<const std::byte> file(owned.get(), image.size());

  cask::hint_summary sum;
  std::vector<std::pair<std::size_t, cask::hint_entry>> seen;  // (entry offset, entry)
  const bool valid = cask::validate_hint<checksum>(file, segment_id, codec_id, segment_bytes, sum,
                                                   [&](const cask::hint_entry& e, std::size_t at) { seen.push_back({at, e}); });
  // Read in two runs split at the entry nearest any point (as recovery reads
  // a large hint in two threads), the image validates exactly when it does in
  // one, with the same entries.
  {
    cask::hint_summary s2;
    cask::hint_frame fr;
    if (cask::check_hint_frame<checksum>(file, segment_id, codec_id, segment_bytes, s2, fr, true)) {
      const std::size_t span = static_cast<std::size_t>(fr.end - fr.entries);
      for (const std::size_t at : {std::size_t{0}, span / 3, span / 2, span - (span > 0)}) {
        const std::byte* const mid = cask::hint_entry_near(fr, at);
        if (!mid) continue;
        std::vector<std::pair<std::size_t, cask::hint_entry>> got;
        auto keep = [&](const cask::hint_entry& e, std::size_t off) { got.push_back({off, e}); };
        cask::hint_run a, b;
        const bool ok_b = cask::walk_hint_entries(fr, s2, segment_id, segment_bytes, mid, fr.end, b, keep);
        const std::size_t from_b = got.size();
        const bool ok_a = cask::walk_hint_entries(fr, s2, segment_id, segment_bytes, fr.entries, mid, a, keep);
        const bool split_valid = cask::hint_checksum_ok<checksum>(file, s2) && ok_a && ok_b && cask::join_hint_runs(s2, a, b);
        FUZZ_CHECK(split_valid == valid, "split at %zu: %s, whole: %s", at, split_valid ? "valid" : "invalid",
                   valid ? "valid" : "invalid");
        if (!valid) continue;
        std::rotate(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(from_b), got.end());  // first run first
        FUZZ_CHECK(got.size() == seen.size(), "split at %zu: %zu entries of %zu", at, got.size(), seen.size());
        for (std::size_t i = 0; i < got.size(); ++i) {
          const auto& x = got[i].second;
          const auto& y = seen[i].second;
          FUZZ_CHECK(got[i].first == seen[i].first && x.seq == y.seq && x.offset == y.offset && x.size == y.size &&
                         x.flags == y.flags && x.key.data() == y.key.data() && x.key.size() == y.key.size() &&
                         x.replaces == y.replaces,
                     "split at %zu: entry %zu differs", at, i);
        }
      }
    } else {
      FUZZ_CHECK(!valid, "the frame alone did not validate");
    }
  }
  if (!valid) return 0;

  FUZZ_CHECK(file.size() >= fmt::file_header_size + trailer, "accepted a %zu-byte image", file.size());
  FUZZ_CHECK(sum.segment_bytes == segment_bytes, "segment size");
  fmt::file_header h;
  FUZZ_CHECK(fmt::decode_file_header<checksum>(file, fmt::file_kind::hint, h) == fmt::header_status::ok &&
                 h.segment_id == segment_id && h.codec_id == codec_id && h.checksum_id == checksum::id,
             "accepted a foreign header");
  cask::hint_builder<checksum> rebuilt(segment_id, codec_id);
  cask::detail::key_sketch keys;
  std::uint64_t n = 0;
  const std::size_t sketch = sum.has_sketch ? cask::hint_format::sketch_size : 0;
  FUZZ_CHECK(sum.has_sketch == (h.version >= 3), "a version-%u hint %s a sketch", unsigned(h.version),
             sum.has_sketch ? "with" : "without");
  const std::byte* const lo = file.data();
  const std::byte* const hi = file.data() + file.size() - trailer - sketch;
  cask::for_each_hint_entry(file, [&](const cask::hint_entry& e) {
    ++n;
    FUZZ_CHECK(e.key.size() <= fmt::max_key_len && (e.key.empty() || (e.key.data() >= lo && e.key.data() + e.key.size() <= hi)),
               "entry %llu: key outside the entries", (unsigned long long)n);
    FUZZ_CHECK(e.offset >= fmt::file_header_size && std::uint64_t{e.offset} + e.size <= segment_bytes &&
                   e.size >= fmt::record_size(e.key.size(), 0),
               "entry %llu: record [%u, +%u) outside a %llu-byte segment", (unsigned long long)n, e.offset, e.size,
               (unsigned long long)segment_bytes);
    FUZZ_CHECK(e.seq >= fmt::first_sequence && (e.flags & ~fmt::known_flags) == 0, "entry %llu: seq/flags",
               (unsigned long long)n);
    FUZZ_CHECK(!e.replaces || (h.version >= cask::hint_format::replaces_version && e.replaces.segment != 0 &&
                               e.replaces.segment <= segment_id && e.replaces.size >= fmt::record_header_size &&
                               (e.replaces.segment != segment_id ||
                                std::uint64_t{e.replaces.offset} + e.replaces.size <= e.offset)),
               "entry %llu: what it replaced", (unsigned long long)n);
    fmt::record_view rv;
    rv.seq = e.seq;
    rv.flags = e.flags;
    rv.size = e.size;
    rv.key = e.key;
    const std::uint64_t key_hash = cask::default_hasher{}(e.key);
    rebuilt.add(rv, e.offset, key_hash, e.replaces);
    keys.add(key_hash);
  });
  FUZZ_CHECK(n == sum.records, "%llu entries, trailer says %llu", (unsigned long long)n, (unsigned long long)sum.records);
  // The entries are byte for byte what the builder writes for them.
  // (The builder writes the newest version: a version-2 image is rebuilt
  // with a sketch.)
  const auto again = std::move(rebuilt).finish(segment_bytes);
  const std::size_t entries = file.size() - fmt::file_header_size - trailer - sketch;
  FUZZ_CHECK(again.size() == fmt::file_header_size + entries + cask::hint_format::sketch_size + trailer,
             "rebuilt %zu bytes of %zu", again.size(), file.size());
  FUZZ_CHECK(std::memcmp(again.data() + fmt::file_header_size, file.data() + fmt::file_header_size, entries) == 0,
             "entries differ from what hint_builder writes");
  // (An older version's image differs in its header's version and so in the trailer's checksum.)
  if (sum.has_sketch && sum.sketch == keys && h.version == cask::hint_format::version)
    FUZZ_CHECK(std::memcmp(again.data(), file.data(), file.size()) == 0, "the image differs from what hint_builder writes");
  return 0;
}
