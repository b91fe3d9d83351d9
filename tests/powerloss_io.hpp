// tests/powerloss_io.hpp - an I/O policy that keeps the whole file system in
// memory and simulates power loss.
//
// The policy has the interface of cask::posix_io (include/cask/io.hpp). Every
// file is an inode with two states: its *volatile* contents (what reads and
// mappings see, like the page cache) and its *durable* contents (what would be
// on the medium). What becomes durable, and when:
//
//   - file data and size: at file::sync() (fdatasync: the whole file, data
//     written through mappings included), and at mapping::flush(off, len) for
//     the 4 KiB pages covering [off, off + len) (msync; the size as well, as
//     fdatasync of a range persists the metadata needed to read it back).
//   - allocate() extends with zeros and truncate() sets the size: durable at
//     the file's next sync or flush.
//   - create, rename and unlink change the directory at once, and become
//     durable at sync_dir() of that directory. Directories themselves are
//     created durable (create_directories).
//
// A flush, sync or crash while another thread stores into a mapping of the
// file sees each byte stored meanwhile, or not: a page may hold a mix of old
// and new bytes. What was stored before the call (ordered by the store's own
// locks) it sees. (Mappings and the simulator see the same memory through
// two views; see powerloss_detail::buffer. Linux: memfd_create.)
//
// A crash (crash(), or an armed step) builds the disk image a power loss may
// leave, from a loss_model and a seed:
//
//   drop_unsynced    every file has exactly its durable contents and size.
//   random_pages     each 4 KiB page that differs from its durable contents is,
//                    at random: new (the volatile bytes), old (the durable
//                    bytes, zero past the durable size), zeroed, garbage, or
//                    torn (512-byte sectors new or old at random). Zero and
//                    garbage replace only the bytes written since the last
//                    sync (the range from the first to the last byte that
//                    differs): like SQLite's "powersafe overwrite", a torn
//                    write never damages bytes it did not write. An unsynced
//                    size is the durable one, the volatile one, or a page
//                    boundary in between.
//   rollback_*       as the above, and each directory keeps its durable names
//                    plus a random prefix (possibly none, possibly all) of the
//                    creates, renames and unlinks done since its last
//                    sync_dir(): a journal commits them in order.
//
// kill_process() is not a power loss: every file keeps what was written to it
// and every name stays (the kernel's page cache outlives a killed process),
// while what is durable stays as it was; a later crash() starts from there.
//
// Without rollback the directories keep every operation (a journal that
// committed everything). The image depends only on the file system's state,
// the model and the seed, so every failure replays from (seed, step).
//
// After a crash the image *is* the disk, all of it durable. Objects from
// before it (stores, files, mappings, and copies of the policy made before
// it) are dead: every call through them fails with EIO and changes nothing,
// and a write through an old mapping lands in a buffer no file uses. A
// store reopened with the policy object the test holds sees the image.
//
// Copies: the object a test constructs follows the current disk. A copy (as
// log_store::open() makes one) belongs to the disk as it is when copied, and
// dies at the next crash; a move keeps what the source belonged to.
//
// Steps: every call that changes the disk (creating a file, write_at,
// allocate, truncate, sync, flush, rename, remove, sync_dir,
// create_directories) is one step, counted from arm(). arm(n, model, seed)
// crashes at step n: the n-th call fails (EIO) without taking effect, the
// disk becomes the crash image, and everything after it fails.
//
// Determinism: the store writes hint files from a background thread. Inside
// a `foreground` guard (held by the test thread around each store call)
// mutating calls from any other thread wait until the guard ends, so the
// steps of a store call and of background work never interleave.
//
// Locks: lock() takes an in-memory flag per directory (cleared by a crash,
// as a reboot drops fcntl locks); no LOCK file is created.
#pragma once

#include <cask/error.hpp>
#include <cask/io.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace cask_test {

/// What a simulated power loss keeps; see the top of this file.
enum class loss_model {
  drop_unsynced,    ///< (a) durable contents only
  random_pages,     ///< (b) each unsynced page new, old, zero, garbage or torn
  rollback_drop,    ///< (c) + (a): unsynced directory operations rolled back (a random suffix of them)
  rollback_random,  ///< (c) + (b)
};
/// Every loss model, for loops.
inline constexpr loss_model all_loss_models[] = {loss_model::drop_unsynced, loss_model::random_pages,
                                                 loss_model::rollback_drop, loss_model::rollback_random};
/// The model's name, for messages.
inline const char* to_string(loss_model m) {
  switch (m) {
    case loss_model::drop_unsynced: return "drop_unsynced";
    case loss_model::random_pages: return "random_pages";
    case loss_model::rollback_drop: return "rollback_drop";
    case loss_model::rollback_random: return "rollback_random";
  }
  return "?";
}

/// A whole disk: directory -> file name -> bytes. What a crash leaves, and
/// what install() puts back.
using disk_image = std::map<std::filesystem::path, std::map<std::string, std::vector<std::byte>>>;

namespace powerloss_detail {

inline constexpr std::size_t page = 4096;
inline constexpr std::size_t sector = 512;

/// A file's volatile bytes (its page cache); never reallocated while a
/// mapping shares it. `bytes` is the simulator's view, through which
/// everything in this file reads and writes. A file that is mapped has its
/// bytes in a memfd (Linux) mapped twice, and its mappings get the other
/// view, `user`.
///
/// Why two views: a store's writers store into a mapping with plain stores
/// while another of its threads flushes (msync) or a crash copies the same
/// pages. Against a real file the kernel's read of a page is no C++ access,
/// so the concurrent store is no data race; a plain read of the same object
/// here would be one (undefined behaviour, and ThreadSanitizer reports it),
/// and so would relaxed atomic loads, the store's stores not being atomic.
/// Through a view of its own the simulator reads as the kernel does: bytes
/// stored meanwhile may or may not be seen, and a page copied while being
/// written holds a mix of its old and new bytes, as it may after a real
/// msync. Bytes stored before the call that reads them (ordered by the
/// store's own locks) are seen. (A file never mapped keeps its bytes on the
/// heap, where AddressSanitizer watches them.)
struct buffer {
  /// `cap` zero bytes; with the `user` view if `mappable`.
  buffer(std::size_t cap, bool mappable) : capacity(cap) {
    if (!mappable || cap == 0) {
      heap_ = std::make_unique<std::byte[]>(cap);  // value-initialized: zeros
      bytes = heap_.get();
      return;
    }
    capacity = (cap + page - 1) / page * page;
    std::tie(bytes, user) = take(capacity);
  }
  ~buffer() {
    if (user) give(capacity, bytes, user);
  }
  buffer(const buffer&) = delete;
  buffer& operator=(const buffer&) = delete;

  std::size_t capacity;
  std::byte* bytes = nullptr;  // the simulator's view
  std::byte* user = nullptr;   // the mappings' view, if mappable

 private:
  using views = std::pair<std::byte*, std::byte*>;  // (bytes, user)
  // Views of freed buffers, by capacity, for reuse: a memfd, two mappings
  // and their page faults cost more than the rest of a small store's crash
  // cycle (without the pool the powerloss tests took 1.5 to 2 times the CPU
  // time). Never unmapped; never destroyed, so that a buffer may outlive
  // static destruction.
  struct pool {
    std::mutex mu;
    std::multimap<std::size_t, views> free;
  };
  static pool& the_pool() {
    static pool* const p = new pool;
    return *p;
  }
  static views take(std::size_t capacity) {
    {
      pool& p = the_pool();
      std::unique_lock g(p.mu);
      if (auto it = p.free.find(capacity); it != p.free.end()) {
        const views v = it->second;
        p.free.erase(it);
        g.unlock();
        std::memset(v.first, 0, capacity);
        return v;
      }
    }
    const int fd = ::memfd_create("powerloss_io", MFD_CLOEXEC);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(capacity)) != 0) fail(fd);  // zeros
    const views v{view(fd, capacity), view(fd, capacity)};
    ::close(fd);  // (the mappings keep the memory)
    return v;
  }
  static void give(std::size_t capacity, std::byte* b, std::byte* u) {
    pool& p = the_pool();
    std::lock_guard g(p.mu);
    p.free.emplace(capacity, views{b, u});
  }
  static std::byte* view(int fd, std::size_t capacity) {
    void* p = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    if (p == MAP_FAILED) fail(fd);
    return static_cast<std::byte*>(p);
  }
  [[noreturn]] static void fail(int fd) {
    std::perror("powerloss_io: a mapped file's buffer");
    if (fd >= 0) ::close(fd);
    std::abort();
  }
  std::unique_ptr<std::byte[]> heap_;  // the bytes, if not mappable
};

struct inode {
  std::uint64_t id = 0;
  std::shared_ptr<buffer> buf;
  std::uint64_t size = 0;          // volatile size
  std::vector<std::byte> durable;  // durable contents; its size is the durable size
};
using inode_ptr = std::shared_ptr<inode>;
using names = std::map<std::string, inode_ptr>;

/// One directory operation not yet made durable.
struct dir_op {
  enum kind { link, rename, unlink } what;
  std::string name, to;
  inode_ptr node;  // link: the new file
  void apply(names& n) const {
    switch (what) {
      case link: n[name] = node; break;
      case rename: {
        auto it = n.find(name);
        if (it == n.end()) break;
        auto moved = it->second;
        n.erase(it);
        n[to] = std::move(moved);
        break;
      }
      case unlink: n.erase(name); break;
    }
  }
};

struct directory {
  names live;                  // what list() and open() see
  names durable;               // as of the last sync_dir()
  std::vector<dir_op> pending;  // since then, in order
};

/// The shared state of the simulated disk.
struct fs_state {
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::filesystem::path, directory> dirs;
  std::uint64_t generation = 0;  // bumped by every crash and install
  std::uint64_t next_inode = 1;
  std::uint64_t changes = 0;     // bumped by every step, crash and guard change

  // Steps and the armed crash.
  long steps = 0;
  long crash_at = -1;
  loss_model model = loss_model::drop_unsynced;
  std::uint64_t seed = 0;
  bool fired = false;
  long fired_at = -1;

  // Foreground guard.
  std::thread::id owner;
  bool busy = false;

  // Directory locks: directory -> token of the holder.
  std::map<std::filesystem::path, std::uint64_t> locks;
  std::uint64_t next_token = 1;

  // ---- helpers, under mu ----

  static std::filesystem::path norm(const std::filesystem::path& p) {
    auto n = p.lexically_normal();
    if (!n.has_filename() && n.has_parent_path() && n != n.root_path()) n = n.parent_path();
    return n;
  }
  directory* dir_of(const std::filesystem::path& p) {
    auto it = dirs.find(norm(p).parent_path());
    return it == dirs.end() ? nullptr : &it->second;
  }
  static std::string name_of(const std::filesystem::path& p) { return norm(p).filename().string(); }

  inode_ptr new_inode() {
    auto n = std::make_shared<inode>();
    n->id = next_inode++;
    n->buf = std::make_shared<buffer>(0, false);
    return n;
  }

  /// Makes room for `n` bytes without moving a buffer a mapping shares.
  static void reserve(inode& node, std::uint64_t n) {
    if (n <= node.buf->capacity) return;
    if (node.buf.use_count() > 1) {
      std::fprintf(stderr, "powerloss_io: a mapped file grew past its mapping (inode %llu)\n",
                   static_cast<unsigned long long>(node.id));
      std::abort();
    }
    const std::size_t cap = std::max<std::size_t>({static_cast<std::size_t>(n), 2 * node.buf->capacity, page});
    auto b = std::make_shared<buffer>(cap, false);
    if (node.size) std::memcpy(b->bytes, node.buf->bytes, static_cast<std::size_t>(node.size));
    node.buf = std::move(b);
  }
  /// Moves the file's bytes to a mappable buffer (see buffer), before its first mapping.
  static void make_mappable(inode& node) {
    if (node.buf->user) return;
    auto b = std::make_shared<buffer>(node.buf->capacity, true);  // room as before
    if (node.size) std::memcpy(b->bytes, node.buf->bytes, static_cast<std::size_t>(node.size));
    node.buf = std::move(b);
  }
  /// Sets the volatile size; new bytes read as zeros.
  static void resize(inode& node, std::uint64_t n) {
    if (n > node.size) {
      reserve(node, n);
      std::memset(node.buf->bytes + node.size, 0, static_cast<std::size_t>(n - node.size));
    } else if (n < node.size) {
      std::memset(node.buf->bytes + n, 0, static_cast<std::size_t>(node.size - n));
    }
    node.size = n;
  }

  bool alive(std::uint64_t gen) const { return gen == follow || gen == generation; }
  static constexpr std::uint64_t follow = ~std::uint64_t{0};

  /// Counts one mutating call by an object of generation `gen`. False (and
  /// `ec` set) if the call must fail: a dead object, or the armed crash.
  bool step(std::unique_lock<std::mutex>& lk, std::uint64_t gen, std::error_code& ec) {
    if (busy && std::this_thread::get_id() != owner)
      cv.wait(lk, [&] { return !busy || !alive(gen); });
    if (!alive(gen)) return ec = std::error_code(EIO, std::system_category()), false;
    const long n = steps++;
    ++changes;
    cv.notify_all();
    if (n == crash_at) {
      fired = true;
      fired_at = n;
      crash_at = -1;
      install(build(model, mix(seed, static_cast<std::uint64_t>(n))));
      return ec = std::error_code(EIO, std::system_category()), false;
    }
    return true;
  }

  static std::uint64_t mix(std::uint64_t a, std::uint64_t b) {
    std::uint64_t x = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull + (a << 6) + (a >> 2));
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    return x;
  }

  /// The bytes a crash leaves of one file.
  static std::vector<std::byte> survive(const inode& node, bool random, std::mt19937_64& rng) {
    if (!random) return node.durable;
    // The page cache at the instant of the power loss, read once: other
    // threads of the store may still be storing into it (see buffer).
    const std::vector<std::byte> vol(node.buf->bytes, node.buf->bytes + node.size);
    const std::vector<std::byte>& dur = node.durable;
    const std::uint64_t vsize = node.size, dsize = dur.size();
    std::uint64_t size = dsize;
    if (vsize != dsize) {
      const std::uint64_t lo = std::min(vsize, dsize), hi = std::max(vsize, dsize);
      switch (rng() % 3) {
        case 0: size = dsize; break;
        case 1: size = vsize; break;
        default: {
          const std::uint64_t first = (lo + page - 1) / page, last = hi / page;  // page boundaries in [lo, hi]
          size = first <= last ? (first + rng() % (last - first + 1)) * page : hi;
          size = std::clamp(size, lo, hi);
        }
      }
    }
    std::vector<std::byte> out(static_cast<std::size_t>(size));
    auto old_at = [&](std::uint64_t i) { return i < dsize ? dur[static_cast<std::size_t>(i)] : std::byte{0}; };
    auto new_at = [&](std::uint64_t i) { return i < vsize ? vol[static_cast<std::size_t>(i)] : std::byte{0}; };
    for (std::uint64_t p0 = 0; p0 < size; p0 += page) {
      const std::uint64_t p1 = std::min<std::uint64_t>(p0 + page, size);
      std::uint64_t first = p1, last = p0;
      for (std::uint64_t i = p0; i < p1; ++i)
        if (old_at(i) != new_at(i)) {
          if (first == p1) first = i;
          last = i + 1;
        }
      if (first == p1) {
        for (std::uint64_t i = p0; i < p1; ++i) out[i] = old_at(i);
        continue;
      }
      const unsigned choice = static_cast<unsigned>(rng() % 6);
      for (std::uint64_t i = p0; i < p1; ++i) out[i] = old_at(i);
      switch (choice) {
        case 0:
        case 1:  // the write reached the medium
          for (std::uint64_t i = p0; i < p1; ++i) out[i] = new_at(i);
          break;
        case 2:  // it did not
          break;
        case 3:  // the written range reads as zeros
          for (std::uint64_t i = first; i < last; ++i) out[i] = std::byte{0};
          break;
        case 4:  // ... as garbage
          for (std::uint64_t i = first; i < last; ++i) out[i] = static_cast<std::byte>(rng() & 0xFF);
          break;
        default:  // torn: each sector new or old
          for (std::uint64_t s0 = p0; s0 < p1; s0 += sector)
            if (rng() % 2)
              for (std::uint64_t i = s0; i < std::min<std::uint64_t>(s0 + sector, p1); ++i) out[i] = new_at(i);
      }
    }
    return out;
  }

  /// The disk image a crash leaves (see the top of the file).
  disk_image build(loss_model m, std::uint64_t s) const {
    std::mt19937_64 rng(s);
    const bool random = m == loss_model::random_pages || m == loss_model::rollback_random;
    const bool rollback = m == loss_model::rollback_drop || m == loss_model::rollback_random;
    disk_image img;
    std::map<std::uint64_t, std::vector<std::byte>> done;  // per inode: one image, whatever its names
    for (const auto& [path, d] : dirs) {
      names n = d.live;
      if (rollback) {
        n = d.durable;
        const std::size_t keep = static_cast<std::size_t>(rng() % (d.pending.size() + 1));
        for (std::size_t i = 0; i < keep; ++i) d.pending[i].apply(n);
      }
      auto& out = img[path];
      for (const auto& [name, node] : n) {
        auto it = done.find(node->id);
        if (it == done.end()) it = done.emplace(node->id, survive(*node, random, rng)).first;
        out[name] = it->second;
      }
    }
    return img;
  }

  /// Makes `img` the disk, all of it durable; kills every older object.
  void install(const disk_image& img) {
    dirs.clear();
    for (const auto& [path, files] : img) {
      auto& d = dirs[path];
      for (const auto& [name, bytes] : files) {
        auto node = new_inode();
        resize(*node, bytes.size());
        if (!bytes.empty()) std::memcpy(node->buf->bytes, bytes.data(), bytes.size());
        node->durable = bytes;
        d.live[name] = node;
      }
      d.durable = d.live;
    }
    ++generation;
    ++changes;
    locks.clear();
    cv.notify_all();
  }
};

}  // namespace powerloss_detail

/// The I/O policy; see the top of this file.
class powerloss_io {
  using fs_state = powerloss_detail::fs_state;
  using inode_ptr = powerloss_detail::inode_ptr;

 public:
  /// A fresh, empty disk. This object follows the disk across crashes.
  powerloss_io() : fs_(std::make_shared<fs_state>()), gen_(fs_state::follow) {}
  /// A handle on the same disk, belonging to the disk as it is now.
  powerloss_io(const powerloss_io& o) : fs_(o.fs_), gen_(0) {
    std::lock_guard g(fs_->mu);
    gen_ = fs_->generation;
  }
  powerloss_io& operator=(const powerloss_io& o) {
    if (this != &o) {
      fs_ = o.fs_;
      std::lock_guard g(fs_->mu);
      gen_ = fs_->generation;
    }
    return *this;
  }
  powerloss_io(powerloss_io&&) noexcept = default;             ///< keeps the source's generation
  powerloss_io& operator=(powerloss_io&&) noexcept = default;  ///< keeps the source's generation

  /// An open file (see posix_io::file).
  class file {
   public:
    file() = default;
    bool is_open() const noexcept { return node_ != nullptr; }
    const std::filesystem::path& path() const noexcept { return path_; }

    std::uint64_t size(std::error_code& ec) const {
      std::lock_guard g(fs_->mu);
      if (!fs_->alive(gen_)) return ec = eio(), 0;
      return node_->size;
    }
    void allocate(std::uint64_t len, std::error_code& ec) {
      std::unique_lock lk(fs_->mu);
      if (!writable_check(ec) || !fs_->step(lk, gen_, ec)) return;
      if (len > node_->size) fs_state::resize(*node_, len);
    }
    void truncate(std::uint64_t len, std::error_code& ec) {
      std::unique_lock lk(fs_->mu);
      if (!writable_check(ec) || !fs_->step(lk, gen_, ec)) return;
      fs_state::resize(*node_, len);
    }
    void write_at(const std::byte* p, std::size_t n, std::uint64_t off, std::error_code& ec) {
      std::unique_lock lk(fs_->mu);
      if (!writable_check(ec) || !fs_->step(lk, gen_, ec)) return;
      if (off + n > node_->size) fs_state::resize(*node_, off + n);
      if (n) std::memcpy(node_->buf->bytes + off, p, n);
    }
    std::size_t read_at(std::byte* p, std::size_t n, std::uint64_t off, std::error_code& ec) const {
      std::lock_guard g(fs_->mu);
      if (!fs_->alive(gen_)) return ec = eio(), 0;
      if (off >= node_->size) return 0;
      const std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(n, node_->size - off));
      if (k) std::memcpy(p, node_->buf->bytes + off, k);
      return k;
    }
    /// fdatasync: the whole file, with what was written through mappings.
    void sync(std::error_code& ec) {
      std::unique_lock lk(fs_->mu);
      if (!fs_->step(lk, gen_, ec)) return;
      const std::byte* b = node_->buf->bytes;
      node_->durable.assign(b, b + node_->size);
    }
    void close(std::error_code&) { node_.reset(); }

   private:
    friend class powerloss_io;
    bool writable_check(std::error_code& ec) const {
      if (!writable_) return ec = std::error_code(EBADF, std::system_category()), false;
      return true;
    }
    std::shared_ptr<fs_state> fs_;
    inode_ptr node_;
    std::filesystem::path path_;
    std::uint64_t gen_ = 0;
    bool writable_ = false;
  };

  /// A mapping of [0, size) of a file: the file's volatile bytes themselves
  /// (their `user` view), shared with every other mapping and read of the file.
  class mapping {
   public:
    mapping() = default;
    std::byte* data() const noexcept { return data_; }
    std::size_t size() const noexcept { return size_; }
    bool writable() const noexcept { return writable_; }
    /// msync: the pages covering [off, off + len), and the file's size.
    void flush(std::size_t off, std::size_t len, std::error_code& ec) {
      if (len == 0) return;
      std::unique_lock lk(fs_->mu);
      if (!fs_->step(lk, gen_, ec)) return;
      auto& n = *node_;
      const std::uint64_t start = off / powerloss_detail::page * powerloss_detail::page;
      const std::uint64_t end = std::min<std::uint64_t>(
          (std::uint64_t{off} + len + powerloss_detail::page - 1) / powerloss_detail::page * powerloss_detail::page,
          n.size);
      n.durable.resize(static_cast<std::size_t>(n.size));
      if (end > start)
        std::memcpy(n.durable.data() + start, n.buf->bytes + start, static_cast<std::size_t>(end - start));
    }

   private:
    friend class powerloss_io;
    std::shared_ptr<fs_state> fs_;
    inode_ptr node_;
    std::shared_ptr<powerloss_detail::buffer> buf_;
    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    bool writable_ = false;
    std::uint64_t gen_ = 0;
  };

  /// A directory lock (an in-memory flag), released on destruction.
  class dir_lock {
   public:
    dir_lock() = default;
    bool held() const noexcept { return static_cast<bool>(entry_); }

   private:
    friend class powerloss_io;
    std::shared_ptr<void> entry_;
  };

  file open(const std::filesystem::path& p, cask::open_mode m, std::error_code& ec) const {
    std::unique_lock lk(fs_->mu);
    if (!fs_->alive(gen_)) return ec = eio(), file{};
    const bool create = m == cask::open_mode::create_new || m == cask::open_mode::create_always;
    if (create && !fs_->step(lk, gen_, ec)) return file{};
    auto* d = fs_->dir_of(p);  // looked up after step(), which may wait
    if (!d) return ec = std::error_code(ENOENT, std::system_category()), file{};
    const std::string name = fs_state::name_of(p);
    auto it = d->live.find(name);
    file f;
    f.fs_ = fs_;
    f.path_ = p;
    f.gen_ = gen_;
    f.writable_ = m != cask::open_mode::read;
    if (it != d->live.end()) {
      if (m == cask::open_mode::create_new) return ec = std::error_code(EEXIST, std::system_category()), file{};
      f.node_ = it->second;
      if (m == cask::open_mode::create_always) fs_state::resize(*f.node_, 0);  // O_TRUNC: durable at the next sync
      return f;
    }
    if (!create) return ec = std::error_code(ENOENT, std::system_category()), file{};
    f.node_ = fs_->new_inode();
    d->live[name] = f.node_;
    d->pending.push_back({powerloss_detail::dir_op::link, name, {}, f.node_});
    return f;
  }

  mapping map(const file& f, std::size_t size, bool writable, std::error_code& ec) const {
    std::lock_guard g(fs_->mu);
    mapping m;
    if (!f.is_open() || !fs_->alive(f.gen_)) return ec = eio(), m;
    if (size == 0 || size > f.node_->size) return ec = std::error_code(EINVAL, std::system_category()), m;
    if (writable && !f.writable_) return ec = std::error_code(EACCES, std::system_category()), m;
    m.fs_ = fs_;
    m.node_ = f.node_;
    fs_state::make_mappable(*f.node_);  // (a heap buffer, if it is one, no mapping shares)
    m.buf_ = f.node_->buf;
    m.data_ = m.buf_->user;
    m.size_ = size;
    m.writable_ = writable;
    m.gen_ = f.gen_;
    return m;
  }

  void sync_dir(const std::filesystem::path& dir, std::error_code& ec) const {
    std::unique_lock lk(fs_->mu);
    if (!fs_->step(lk, gen_, ec)) return;
    auto it = fs_->dirs.find(fs_state::norm(dir));
    if (it == fs_->dirs.end()) {
      // A directory outside the model (the parent of a new store):
      // directories are created durable here, so there is nothing to commit.
      return;
    }
    it->second.durable = it->second.live;
    it->second.pending.clear();
  }
  void rename(const std::filesystem::path& from, const std::filesystem::path& to, std::error_code& ec) const {
    std::unique_lock lk(fs_->mu);
    if (!fs_->step(lk, gen_, ec)) return;
    auto* d = fs_->dir_of(from);
    if (!d || !d->live.count(fs_state::name_of(from)))
      return void(ec = std::error_code(ENOENT, std::system_category()));
    if (fs_state::norm(from).parent_path() != fs_state::norm(to).parent_path())
      return void(ec = std::error_code(EXDEV, std::system_category()));
    powerloss_detail::dir_op op{powerloss_detail::dir_op::rename, fs_state::name_of(from), fs_state::name_of(to), {}};
    op.apply(d->live);
    d->pending.push_back(std::move(op));
  }
  void remove(const std::filesystem::path& p, std::error_code& ec) const {
    std::unique_lock lk(fs_->mu);
    if (!fs_->step(lk, gen_, ec)) return;
    auto* d = fs_->dir_of(p);
    if (!d || !d->live.count(fs_state::name_of(p))) return void(ec = std::error_code(ENOENT, std::system_category()));
    powerloss_detail::dir_op op{powerloss_detail::dir_op::unlink, fs_state::name_of(p), {}, {}};
    op.apply(d->live);
    d->pending.push_back(std::move(op));
  }
  bool create_directories(const std::filesystem::path& dir, std::error_code& ec) const {
    std::unique_lock lk(fs_->mu);
    if (!fs_->step(lk, gen_, ec)) return false;
    return fs_->dirs.try_emplace(fs_state::norm(dir)).second;
  }
  bool exists(const std::filesystem::path& p) const {
    std::lock_guard g(fs_->mu);
    if (!fs_->alive(gen_)) return false;
    if (fs_->dirs.count(fs_state::norm(p))) return true;
    auto* d = fs_->dir_of(p);
    return d && d->live.count(fs_state::name_of(p));
  }
  std::vector<std::string> list(const std::filesystem::path& dir, std::error_code& ec) const {
    std::lock_guard g(fs_->mu);
    std::vector<std::string> out;
    if (!fs_->alive(gen_)) return ec = eio(), out;
    auto it = fs_->dirs.find(fs_state::norm(dir));
    if (it == fs_->dirs.end()) return ec = std::error_code(ENOENT, std::system_category()), out;
    for (const auto& [name, node] : it->second.live) out.push_back(name);
    return out;
  }
  dir_lock lock(const std::filesystem::path& dir, std::error_code& ec) const {
    std::lock_guard g(fs_->mu);
    dir_lock out;
    if (!fs_->alive(gen_)) return ec = eio(), out;
    const auto d = fs_state::norm(dir);
    if (!fs_->dirs.count(d)) return ec = std::error_code(ENOENT, std::system_category()), out;
    if (fs_->locks.count(d)) return ec = cask::make_error_code(cask::errc::store_locked), out;
    const std::uint64_t token = fs_->next_token++;
    fs_->locks[d] = token;
    out.entry_ = std::shared_ptr<void>(nullptr, [fs = fs_, d, token](void*) {
      std::lock_guard g2(fs->mu);
      auto it = fs->locks.find(d);
      if (it != fs->locks.end() && it->second == token) fs->locks.erase(it);
    });
    return out;
  }

  // ---- test controls (any object of the disk; not subject to crashes) ----

  /// Counts steps from 0 again and crashes at step `n` (-1: never) with `model`
  /// and an image seed derived from (`seed`, n).
  void arm(long n, loss_model model, std::uint64_t seed) const {
    std::lock_guard g(fs_->mu);
    fs_->steps = 0;
    fs_->crash_at = n;
    fs_->model = model;
    fs_->seed = seed;
    fs_->fired = false;
    fs_->fired_at = -1;
  }
  /// Counts steps from 0 again, with no crash armed.
  void count_steps() const { arm(-1, loss_model::drop_unsynced, 0); }

  /// Kills the process, not the machine: objects from before it are dead
  /// (as after crash()), and the disk is as it was, each file's contents
  /// and durable contents, and each directory's names, kept apart as they
  /// were (the page cache survives; nothing more becomes durable).
  void kill_process() const {
    std::lock_guard g(fs_->mu);
    fs_->crash_at = -1;
    std::map<std::uint64_t, powerloss_detail::inode_ptr> copies;  // one new inode for each old one
    auto copy = [&](const powerloss_detail::inode_ptr& node) {
      auto& c = copies[node->id];
      if (!c) {
        c = fs_->new_inode();
        fs_state::resize(*c, node->size);
        if (node->size) std::memcpy(c->buf->bytes, node->buf->bytes, static_cast<std::size_t>(node->size));
        c->durable = node->durable;
      }
      return c;
    };
    for (auto& [path, d] : fs_->dirs) {
      powerloss_detail::names live, durable;
      for (const auto& [name, node] : d.live) live[name] = copy(node);
      for (const auto& [name, node] : d.durable) durable[name] = copy(node);
      d.live = std::move(live);
      d.durable = std::move(durable);
      for (auto& op : d.pending)
        if (op.node) op.node = copy(op.node);
    }
    ++fs_->generation;
    ++fs_->changes;
    fs_->locks.clear();
    fs_->cv.notify_all();
  }
  /// Mutating calls since arm() or count_steps().
  long steps() const {
    std::lock_guard g(fs_->mu);
    return fs_->steps;
  }
  /// Whether the armed crash happened.
  bool crashed() const {
    std::lock_guard g(fs_->mu);
    return fs_->fired;
  }
  /// Crashes now; returns the image that is now the disk.
  disk_image crash(loss_model model, std::uint64_t seed) const {
    std::lock_guard g(fs_->mu);
    fs_->crash_at = -1;
    auto img = fs_->build(model, seed);
    fs_->install(img);
    return img;
  }
  /// The disk as a clean shutdown would leave it (the volatile state), without crashing.
  disk_image snapshot() const {
    std::lock_guard g(fs_->mu);
    disk_image img;
    for (const auto& [path, d] : fs_->dirs) {
      auto& out = img[path];
      for (const auto& [name, node] : d.live) out[name].assign(node->buf->bytes, node->buf->bytes + node->size);
    }
    return img;
  }
  /// Makes `img` the disk (all durable), as after a crash.
  void install(const disk_image& img) const {
    std::lock_guard g(fs_->mu);
    fs_->crash_at = -1;
    fs_->install(img);
  }
  /// The current (volatile) contents of file `p`, or nothing.
  std::optional<std::vector<std::byte>> contents(const std::filesystem::path& p) const {
    std::lock_guard g(fs_->mu);
    auto* d = fs_->dir_of(p);
    if (!d) return std::nullopt;
    auto it = d->live.find(fs_state::name_of(p));
    if (it == d->live.end()) return std::nullopt;
    const std::byte* b = it->second->buf->bytes;
    return std::vector<std::byte>(b, b + it->second->size);
  }
  /// Whether `dir` has creates, renames or unlinks not yet made durable.
  bool dir_pending(const std::filesystem::path& dir) const {
    std::lock_guard g(fs_->mu);
    auto it = fs_->dirs.find(fs_state::norm(dir));
    return it != fs_->dirs.end() && !it->second.pending.empty();
  }
  /// A counter that moves on every step, crash and guard change.
  std::uint64_t changes() const {
    std::lock_guard g(fs_->mu);
    return fs_->changes;
  }
  /// Waits until changes() differs from `seen` (updating it) or `timeout` passes.
  void wait_change(std::uint64_t& seen, std::chrono::milliseconds timeout) const {
    std::unique_lock lk(fs_->mu);
    fs_->cv.wait_for(lk, timeout, [&] { return fs_->changes != seen; });
    seen = fs_->changes;
  }

  /// Held by the test thread around each store call: while it lives, mutating
  /// calls from other threads wait (see the top of this file).
  class foreground {
   public:
    explicit foreground(const powerloss_io& io) : fs_(io.fs_) {
      std::lock_guard g(fs_->mu);
      fs_->owner = std::this_thread::get_id();
      fs_->busy = true;
    }
    ~foreground() {
      std::lock_guard g(fs_->mu);
      fs_->busy = false;
      ++fs_->changes;
      fs_->cv.notify_all();
    }
    foreground(const foreground&) = delete;
    foreground& operator=(const foreground&) = delete;

   private:
    std::shared_ptr<fs_state> fs_;
  };

 private:
  static std::error_code eio() { return {EIO, std::system_category()}; }
  std::shared_ptr<fs_state> fs_;
  std::uint64_t gen_;
};

}  // namespace cask_test
