// tests/fuzz/make_seeds.cpp - writes the seed corpora of the fuzz targets
// (tests/fuzz/corpus/<target>/) from real stores: records and segments for
// `record`, hint files for `hint`, and whole directory images (clean, crashed
// with a preallocated or torn tail, mid-merge, damaged) for `recovery`.
// Deterministic: the same build writes the same files.
//
//   ninja -C <build> tests/fuzz/make_seeds && <build>/tests/fuzz/make_seeds tests/fuzz/corpus
#include <cask.hpp>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace fs = std::filesystem;
namespace fmt = cask::format;
using store = cask::log_store<std::string, std::string>;
using blob = std::vector<char>;

namespace {

fs::path out_root;
fs::path work;
int seeds = 0;

blob read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
void write_file(const fs::path& p, const blob& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(b.data(), static_cast<std::streamsize>(b.size()));
}
void seed(const std::string& target, const std::string& name, const blob& b) {
  fs::create_directories(out_root / target);
  write_file(out_root / target / name, b);
  ++seeds;
}

cask::options small() {
  cask::options o;
  o.max_segment_bytes = 4096;
  o.merge.background = false;
  return o;
}
std::string value(unsigned i, std::size_t len) {
  std::string v(len, 'a');
  for (std::size_t j = 0; j < len; ++j) v[j] = static_cast<char>('a' + (i * 7 + j * 3) % 26);
  return v;
}
/// Puts, overwrites and erases over k0..k11.
void workload(store& db, unsigned seed, int n) {
  std::mt19937 g(seed);
  for (int i = 0; i < n; ++i) {
    const std::string k = "k" + std::to_string(g() % 12);
    if (g() % 4 == 0)
      db.erase(k);
    else
      db.put(k, value(g(), g() % 40));
  }
}

using image = std::vector<std::pair<std::string, blob>>;  // file name, bytes

image snapshot(const fs::path& dir) {
  image im;
  for (const auto& e : fs::directory_iterator(dir))
    // The recovery target's framing has no kind for the keydir snapshot
    // (it would become a stray file), and its reopens write real ones.
    if (e.path().filename() != "LOCK" && e.path().filename() != "KEYDIR")
      im.push_back({e.path().filename().string(), read_file(e.path())});
  std::sort(im.begin(), im.end());
  return im;
}

/// The recovery target's framing of an image (fuzz_recovery.cpp) and operations.
blob frame(const image& im, std::uint8_t mode, const blob& ops) {
  blob b{static_cast<char>(mode)};
  for (const auto& [name, bytes] : im) {
    int kind = 5;
    if (name.ends_with(".cask.tmp")) kind = 3;
    else if (name.ends_with(".hint.tmp")) kind = 4;
    else if (name.ends_with(".cask")) kind = 0;
    else if (name.ends_with(".hint")) kind = 1;
    else if (name.ends_with(".merge")) kind = 2;
    const unsigned id = kind == 5 ? 0 : static_cast<unsigned>(std::stoul(name.substr(0, 10)));
    const std::size_t len = std::min<std::size_t>(bytes.size(), 0xFFFF);
    b.push_back(static_cast<char>(kind));
    b.push_back(static_cast<char>(id));
    b.push_back(static_cast<char>(len & 0xFF));
    b.push_back(static_cast<char>(len >> 8));
    b.insert(b.end(), bytes.begin(), bytes.begin() + static_cast<long>(len));
  }
  b.push_back(7);  // end of files
  b.insert(b.end(), ops.begin(), ops.end());
  return b;
}
blob ops(unsigned seed, int n) {
  std::mt19937 g(seed);
  blob b;
  for (int i = 0; i < n; ++i) {
    const int op = static_cast<int>(g() % 8);
    b.push_back(static_cast<char>(op));
    b.push_back(static_cast<char>(g() % 12));
    if (op <= 1) b.push_back(static_cast<char>(g() % 40));
  }
  return b;
}

fs::path fresh(const std::string& name) {
  const auto d = work / name;
  fs::remove_all(d);
  return d;
}

void recovery_seed(const std::string& name, const image& im, unsigned op_seed) {
  seed("recovery", name, frame(im, 0, ops(op_seed, 24)));
  seed("recovery", name + "-fix", frame(im, 1, ops(op_seed + 1, 12)));
}

image with(image im, const std::string& name, blob b) {
  for (auto& [n, bytes] : im)
    if (n == name) {
      bytes = std::move(b);
      return im;
    }
  im.push_back({name, std::move(b)});
  std::sort(im.begin(), im.end());
  return im;
}
const blob& file(const image& im, const std::string& name) {
  for (const auto& [n, b] : im)
    if (n == name) return b;
  throw std::runtime_error("no " + name);
}

void make_recovery_and_hint_seeds() {
  // Nothing at all, and a store that was never written.
  recovery_seed("empty", {}, 1);
  {
    const auto d = fresh("one");
    {
      auto db = store::open(d, small());
      workload(db, 2, 20);
    }
    recovery_seed("one-session", snapshot(d), 2);
  }
  // Several sessions, a merge, sealed segments and their hints; and the same
  // store crashed with its active segment open (preallocated, zero tail, no hint).
  const auto d = fresh("multi");
  image before_merge, crashed, torn;
  {
    { auto db = store::open(d, small()); workload(db, 3, 30); }
    { auto db = store::open(d, small()); workload(db, 4, 30); }
    before_merge = snapshot(d);
    {
      auto db = store::open(d, small());
      workload(db, 5, 10);
      db.merge(cask::merge_scope::all);
      workload(db, 6, 10);
    }
    { auto db = store::open(d, small()); workload(db, 7, 80); }  // rotates: a sealed segment's hint from the background
    auto db = store::open(d, small());
    workload(db, 8, 15);
    crashed = snapshot(d);
  }
  const image clean = snapshot(d);
  recovery_seed("multi-clean", clean, 3);
  recovery_seed("multi-crashed", crashed, 4);
  std::string newest;
  for (const auto& [n, b] : crashed)
    if (n.ends_with(".cask") && b.size() == 4096) newest = n;
  if (!newest.empty()) {
    // A torn tail: half a record of garbage after the last one.
    blob b = file(crashed, newest);
    std::size_t end = b.size();
    while (end > 0 && b[end - 1] == 0) --end;
    for (std::size_t i = end; i < end + 30 && i < b.size(); ++i) b[i] = static_cast<char>(0x5A + i);
    recovery_seed("multi-torn", with(crashed, newest, b), 5);
  }
  // Damage in a sealed segment, with its hint (read-time detection) and without (skip).
  for (const auto& [n, b] : clean)
    if (n.ends_with(".cask") && b.size() > 200) {
      blob x = b;
      x[100] = static_cast<char>(x[100] ^ 0x10);
      const image damaged = with(clean, n, x);
      recovery_seed("sealed-damage-hinted", damaged, 6);
      image unhinted;
      for (const auto& f : damaged)
        if (f.first != n.substr(0, 10) + ".hint") unhinted.push_back(f);
      recovery_seed("sealed-damage", unhinted, 7);
      break;
    }
  // Leftovers: temporary files, a hint without its segment, a stray file.
  {
    image im = clean;
    im.push_back({"0000000099.cask.tmp", blob(100, 'x')});
    for (const auto& [n, b] : clean)
      if (n.ends_with(".hint")) {
        im.push_back({"0000000098.hint", b});
        break;
      }
    im.push_back({"0000000001.hint.tmp", blob(10, 'y')});
    im.push_back({"stray0", blob(3, 'z')});
    std::sort(im.begin(), im.end());
    recovery_seed("leftovers", im, 8);
  }
  // A committed merge interrupted before its outputs were renamed: the
  // inputs, the outputs as .cask.tmp, and the manifest.
  {
    const auto m = work / "merging";
    fs::remove_all(m);
    fs::create_directories(m);
    for (const auto& [n, b] : before_merge) write_file(m / n, b);
    std::vector<std::uint32_t> inputs;
    for (const auto& [n, b] : before_merge)
      if (n.ends_with(".cask")) inputs.push_back(static_cast<std::uint32_t>(std::stoul(n.substr(0, 10))));
    {
      auto db = store::open(m, small());
      db.merge(cask::merge_scope::all);
    }
    const image after = snapshot(m);
    image im = before_merge;
    cask::merge_manifest man;
    man.inputs = inputs;
    for (const auto& [n, b] : after) {
      if (!n.ends_with(".cask")) continue;
      const auto id = static_cast<std::uint32_t>(std::stoul(n.substr(0, 10)));
      if (std::find(inputs.begin(), inputs.end(), id) != inputs.end()) continue;
      fmt::file_header h;
      const auto* p = reinterpret_cast<const std::byte*>(b.data());
      if (fmt::decode_file_header<cask::crc32c>(std::span(p, b.size()), fmt::file_kind::segment, h) !=
              fmt::header_status::ok ||
          !(h.flags & fmt::merge_output))
        continue;
      man.outputs.push_back(id);
      im.push_back({n + ".tmp", b});
    }
    if (!man.outputs.empty()) {
      const auto mb = man.encode<cask::crc32c>(fmt::codec_id<cask::crc32c>(cask::basic_codec::name));
      im.push_back({cask::merge_manifest::file_name(man.outputs.front()),
                    blob(reinterpret_cast<const char*>(mb.data()), reinterpret_cast<const char*>(mb.data()) + mb.size())});
      std::sort(im.begin(), im.end());
      recovery_seed("merge-committed", im, 9);
      // An output missing: the manifest was not committed after all.
      image partial;
      for (const auto& f : im)
        if (f.first != std::string(cask::segment<cask::posix_io>::file_name(man.outputs.front())) + ".tmp")
          partial.push_back(f);
      recovery_seed("merge-uncommitted", partial, 10);
    }
  }

  // Hint seeds: [mode][segment size u32][hint image], from every hint of the clean store.
  int h = 0;
  for (const auto& [n, b] : clean) {
    if (!n.ends_with(".hint")) continue;
    const auto& seg = file(clean, n.substr(0, 10) + ".cask");
    const auto sz = static_cast<std::uint32_t>(seg.size());
    for (std::uint8_t mode : {0, 1, 2, 3}) {
      blob x{static_cast<char>(mode), static_cast<char>(sz & 0xFF), static_cast<char>((sz >> 8) & 0xFF),
             static_cast<char>((sz >> 16) & 0xFF), static_cast<char>(sz >> 24)};
      x.insert(x.end(), b.begin(), b.end());
      seed("hint", "hint" + std::to_string(h) + "-mode" + std::to_string(mode), x);
    }
    if (h == 0) {
      // The same hint in version 2 (no sketch, trailer field 0), which is still read.
      blob v2(b.begin(), b.end() - static_cast<std::ptrdiff_t>(cask::hint_format::sketch_size + cask::hint_format::trailer_size));
      v2.insert(v2.end(), b.end() - static_cast<std::ptrdiff_t>(cask::hint_format::trailer_size), b.end());
      auto* p = reinterpret_cast<std::byte*>(v2.data());
      cask::detail::store_u16(p + 8, 2);
      cask::detail::store_u32(p + 28, fmt::mask(cask::crc32c::compute(p, 28)));
      cask::detail::store_u32(p + v2.size() - 8, 0);
      cask::detail::store_u32(p + v2.size() - 4, fmt::mask(cask::crc32c::compute(p, v2.size() - 4)));
      blob x{3, static_cast<char>(sz & 0xFF), static_cast<char>((sz >> 8) & 0xFF), static_cast<char>((sz >> 16) & 0xFF),
             static_cast<char>(sz >> 24)};
      x.insert(x.end(), v2.begin(), v2.end());
      seed("hint", "hint0-version2", x);
    }
    if (++h == 4) break;
  }

  // Record seeds: whole segments, the first record of each, a tombstone.
  int r = 0;
  for (const auto& [n, b] : clean) {
    if (!n.ends_with(".cask")) continue;
    seed("record", "segment" + std::to_string(r), b);
    const auto* p = reinterpret_cast<const std::byte*>(b.data());
    fmt::record_view rv;
    if (b.size() > fmt::file_header_size &&
        fmt::parse_record<cask::crc32c>(p + fmt::file_header_size, b.size() - fmt::file_header_size, rv) ==
            fmt::record_status::ok)
      seed("record", "record" + std::to_string(r),
           blob(b.begin() + fmt::file_header_size, b.begin() + static_cast<long>(fmt::file_header_size + rv.size)));
    if (++r == 4) break;
  }
  if (!newest.empty()) seed("record", "preallocated", file(crashed, newest));
  {
    blob t(fmt::record_size(2, 0));
    auto* p = reinterpret_cast<std::byte*>(t.data());
    fmt::encode_record_header(p, 7, fmt::tombstone, 2, 0);
    std::memcpy(p + fmt::record_header_size, "k1", 2);
    fmt::seal_record<cask::crc32c>(p, t.size());
    seed("record", "tombstone", t);
    seed("record", "zeros", blob(64, 0));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " <corpus directory>\n";
    return 2;
  }
  out_root = argv[1];
  work = fs::temp_directory_path() / ("cask-seeds-" + std::to_string(::getpid()));
  fs::remove_all(work);
  fs::create_directories(work);
  make_recovery_and_hint_seeds();
  fs::remove_all(work);
  std::cout << seeds << " seeds written to " << out_root << "\n";
  return 0;
}
