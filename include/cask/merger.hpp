// cask/merger.hpp - which segments a merge rewrites, and the merge manifest.
//
// A merge rewrites the live records of some sealed segments into new
// segments and removes the old ones (log_store::merge, DESIGN.md "Merge").
// This header holds the parts that stand alone:
//
//  - default_merge_policy: the reference merge policy (concept
//    cask::merge_policy): given per-segment figures of the sealed segments and
//    merge_options, the ids to merge now (empty: no merge).
//  - the manifest: the file whose atomic appearance commits a merge, listing
//    its inputs and outputs, so recovery can finish an interrupted merge
//    (docs/FORMAT.md "Merge manifest").
#pragma once

#include <cask/detail/endian.hpp>
#include <cask/format.hpp>
#include <cask/options.hpp>

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

namespace cask {

/// Per-segment figures the merge policy decides on.
struct merge_input {
  std::uint32_t id = 0;          ///< the segment's id
  std::uint64_t bytes = 0;       ///< data bytes (file size)
  std::uint64_t dead_bytes = 0;  ///< overwritten, erased, tombstones
};

/// The reference merge policy: triggers on fragmentation, dead bytes and
/// small segments, then picks candidates oldest first within a byte budget
/// (merge_options documents each knob).
struct default_merge_policy {
  /// The sealed segments to merge now, ascending by id; empty when no trigger
  /// fires. `max_segment_bytes` sizes "small" when o.small_segment_bytes is 0.
  static std::vector<std::uint32_t> select(const std::vector<merge_input>& sealed, const merge_options& o,
                                           std::uint64_t max_segment_bytes) {
    const std::uint64_t small = o.small_segment_bytes ? o.small_segment_bytes : max_segment_bytes / 8;
    auto frag = [](const merge_input& s) { return s.bytes ? double(s.dead_bytes) / double(s.bytes) : 0.0; };
    std::uint64_t total = 0, dead = 0;
    std::size_t smalls = 0;
    bool trigger = false;
    for (const auto& s : sealed) {
      total += s.bytes;
      dead += s.dead_bytes;
      if (s.bytes < small) ++smalls;
      if (s.dead_bytes > 0 && (frag(s) >= o.trigger_fragmentation || s.dead_bytes >= o.trigger_dead_bytes))
        trigger = true;
    }
    if (total && dead > 0 && double(dead) / double(total) >= o.trigger_store_fragmentation) trigger = true;
    const bool fold_small = smalls >= o.small_segment_count && smalls >= 2;
    if (!trigger && !fold_small) return {};
    std::vector<std::uint32_t> picks;
    std::uint64_t budget = 0;
    for (const auto& s : sealed) {
      const bool fragmented =
          trigger && s.dead_bytes > 0 && (frag(s) >= o.candidate_fragmentation || s.dead_bytes >= o.candidate_dead_bytes);
      const bool is_small = fold_small && s.bytes < small;
      if (!fragmented && !is_small) continue;
      if (!picks.empty() && budget + s.bytes > o.max_bytes) break;
      picks.push_back(s.id);
      budget += s.bytes;
    }
    // Rewriting a lone segment that has nothing dead in it reclaims nothing.
    if (picks.size() == 1) {
      for (const auto& s : sealed)
        if (s.id == picks[0] && s.dead_bytes == 0) return {};
    }
    return picks;
  }
};

/// The manifest of a committed merge: which segments it replaced by which.
struct merge_manifest {
  std::vector<std::uint32_t> inputs;   ///< segments the merge replaces
  std::vector<std::uint32_t> outputs;  ///< segments it wrote

  /// "0000000042.merge", named after the first output.
  static std::string file_name(std::uint32_t first_output) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%010u.merge", first_output);
    return buf;
  }

  /// The manifest file's bytes, for a store whose codec id is `codec_id`.
  template <class Checksum>
  std::vector<std::byte> encode(std::uint32_t codec_id) const {
    std::vector<std::byte> b(format::file_header_size + 8 + 4 * (inputs.size() + outputs.size()) + 4);
    format::file_header h;
    h.kind = format::file_kind::merge_manifest;
    h.checksum_id = Checksum::id;
    h.codec_id = codec_id;
    h.segment_id = outputs.empty() ? 0 : outputs.front();
    format::encode_file_header<Checksum>(h, b.data());
    std::byte* p = b.data() + format::file_header_size;
    detail::store_u32(p, static_cast<std::uint32_t>(inputs.size()));
    p += 4;
    for (auto id : inputs) detail::store_u32(p, id), p += 4;
    detail::store_u32(p, static_cast<std::uint32_t>(outputs.size()));
    p += 4;
    for (auto id : outputs) detail::store_u32(p, id), p += 4;
    detail::store_u32(p, format::mask(Checksum::compute(b.data(), b.size() - 4)));
    return b;
  }

  /// Decodes a manifest; false if it is malformed (then it was never committed:
  /// the rename that commits it is atomic, so a committed one is whole).
  template <class Checksum>
  bool decode(std::span<const std::byte> b, std::uint32_t codec_id) {
    format::file_header h;
    if (format::decode_file_header<Checksum>(b, format::file_kind::merge_manifest, h) != format::header_status::ok ||
        h.codec_id != codec_id || b.size() < format::file_header_size + 12)
      return false;
    if (format::unmask(detail::load_u32(b.data() + b.size() - 4)) != Checksum::compute(b.data(), b.size() - 4))
      return false;
    const std::byte* p = b.data() + format::file_header_size;
    const std::byte* end = b.data() + b.size() - 4;
    auto read_list = [&](std::vector<std::uint32_t>& v) {
      if (end - p < 4) return false;
      const std::uint32_t n = detail::load_u32(p);
      p += 4;
      if (static_cast<std::size_t>(end - p) < std::size_t{n} * 4) return false;
      v.resize(n);
      for (auto& id : v) id = detail::load_u32(p), p += 4;
      return true;
    };
    return read_list(inputs) && read_list(outputs) && p == end;
  }
};

}  // namespace cask
