// examples/threads.cpp - several reader threads and one writer on one store.
//
// Usage: threads [directory]   (default: a temporary directory, removed at exit)
//
// A log_store is shared by reference between threads: writes (put, erase,
// sync) are serialized inside it, reads (get, get_ref, contains, ...) never
// lock and never wait for the writer. Here one writer rewrites every key
// several times, each value naming its key and its round, while readers check
// that every value they see is a whole value of that key and that, for each
// key, the rounds they see never go backwards.
// Exits non-zero if any check fails.
#include <cask.hpp>

#include <atomic>
#include <cstddef>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace fs = std::filesystem;

namespace {

constexpr int keys = 1000;
constexpr int rounds = 20;
constexpr int readers = 4;

std::string key_of(int k) { return "key-" + std::to_string(k); }
// A value that says which key and round wrote it, padded to vary in size.
std::string value_of(int k, int round) {
  return key_of(k) + "/round-" + std::to_string(round) + "/" + std::string(static_cast<std::size_t>(k % 97), '.');
}
// The round encoded in a value of key k, or -1 if the value is not one of k's.
int round_of(int k, const std::string& v) {
  for (int r = 0; r < rounds; ++r)
    if (v == value_of(k, r)) return r;
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  const bool own_dir = argc < 2;
  const fs::path dir =
      own_dir ? fs::temp_directory_path() / ("cask-threads-" + std::to_string(::getpid())) : fs::path(argv[1]);
  std::error_code ec;
  if (own_dir) fs::remove_all(dir, ec);
  std::cout << "store in " << dir << '\n';

  int failures = 0;
  try {
    // [threads]
    using store = cask::log_store<std::string, std::string>;
    store db = store::open(dir);
    std::atomic<bool> writing{true};
    std::atomic<long> reads{0}, bad_values{0}, went_back{0}, errors{0};

    std::vector<std::jthread> threads;
    for (int t = 0; t < readers; ++t) {
      threads.emplace_back([&, t] {
        std::vector<int> last_round(keys, -1);  // per key, the newest round this reader saw
        try {
          // Visit every key in a stride; after the writer stops, finish the cycle.
          for (int k = t; writing.load() || k != t; k = (k + 7) % keys) {
            std::optional<std::string> v = db.get(key_of(k));  // lock-free
            reads.fetch_add(1, std::memory_order_relaxed);
            if (!v) continue;  // not written yet
            const int r = round_of(k, *v);
            if (r < 0) ++bad_values;
            else if (r < last_round[static_cast<std::size_t>(k)]) ++went_back;
            else last_round[static_cast<std::size_t>(k)] = r;
          }
        } catch (const std::exception& e) {
          std::cerr << "reader " << t << ": " << e.what() << '\n';
          ++errors;
        }
      });
    }
    try {
      for (int r = 0; r < rounds; ++r)
        for (int k = 0; k < keys; ++k) db.put(key_of(k), value_of(k, r));  // the one writer: this thread
    } catch (...) {
      writing = false;  // let the readers finish before the exception unwinds them
      throw;
    }
    writing = false;
    threads.clear();  // joins the readers
    // [threads]

    auto expect = [&](bool ok, const std::string& what) {
      std::cout << (ok ? "  ok    " : "  FAIL  ") << what << '\n';
      if (!ok) ++failures;
    };
    std::cout << "  " << readers << " readers made " << reads.load() << " reads while " << keys * rounds
              << " puts ran\n";
    expect(errors == 0, "no reader failed (" + std::to_string(errors) + " did)");
    expect(bad_values == 0, "every value read was a whole value of its key (" + std::to_string(bad_values) + " bad)");
    expect(went_back == 0, "no reader saw a key's round go backwards (" + std::to_string(went_back) + " times)");
    int final_ok = 0;
    for (int k = 0; k < keys; ++k) final_ok += db.get(key_of(k)) == value_of(k, rounds - 1);
    expect(final_ok == keys, "after the writer finished, every key holds its last round");
    expect(db.size() == keys, "the store holds " + std::to_string(keys) + " keys");
  } catch (const std::exception& e) {
    std::cout << "  FAIL  exception: " << e.what() << '\n';
    ++failures;
  }

  if (own_dir) fs::remove_all(dir, ec);
  std::cout << (failures ? "threads: FAILED\n" : "threads: all checks passed\n");
  return failures ? 1 : 0;
}
