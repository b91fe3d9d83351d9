// examples/zero_copy.cpp - read values in place with get_ref().
//
// Usage: zero_copy [directory]   (default: a temporary directory, removed at exit)
//
// get() decodes a copy of the value; get_ref() returns a value_ref that views
// the encoded bytes where they lie, in the segment's memory mapping. The
// value_ref keeps its segment alive, so the bytes stay valid and unchanged
// while it lives, whatever the store does meanwhile.
// Exits non-zero if any check fails.
#include <cask.hpp>

#include <cstddef>
#include <filesystem>
#include <iostream>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include <unistd.h>

namespace fs = std::filesystem;

namespace {

int failures = 0;

void expect(bool ok, const char* what) {
  std::cout << (ok ? "  ok    " : "  FAIL  ") << what << '\n';
  if (!ok) ++failures;
}

}  // namespace

int main(int argc, char** argv) {
  const bool own_dir = argc < 2;
  const fs::path dir =
      own_dir ? fs::temp_directory_path() / ("cask-zero-copy-" + std::to_string(::getpid())) : fs::path(argv[1]);
  std::error_code ec;
  if (own_dir) fs::remove_all(dir, ec);
  std::cout << "store in " << dir << '\n';

  try {
    using store = cask::log_store<std::string, std::string>;
    store db = store::open(dir);
    const std::string page(1 << 20, 'x');  // a 1 MiB value
    db.put("page", page);

    // [zero_copy]
    std::optional<store::value_ref> ref = db.get_ref("page");  // copies nothing
    if (ref) {
      std::string_view text = ref->view();           // the bytes as characters
      std::span<const std::byte> raw = ref->bytes();  // the encoded bytes
      std::string copy = ref->decode();               // a decoded copy, when one is needed
      expect(text == page && raw.size() == page.size() && copy == page, "the value_ref views the stored value");
    }
    // [zero_copy]
    expect(ref.has_value(), "get_ref(\"page\") found the key");
    if (!ref) throw std::runtime_error("no value_ref");

    auto again = db.get_ref("page");
    expect(again && again->bytes().data() == ref->bytes().data(), "two value_refs point at the same mapped bytes");
    again.reset();

    // [lifetime]
    db.put("page", "overwritten");  // a new record; the old bytes stay where they are
    db.erase("page");
    db.close();
    // The value_ref still owns its segment: its bytes are unchanged.
    expect(ref->view() == page, "after overwrite, erase and close, the value_ref still reads the old value");
    // [lifetime]
    ref.reset();  // releases the segment's mapping

    store reopened = store::open(dir);
    expect(!reopened.contains("page"), "after reopening, the erase is what the store remembers");
    expect(!reopened.get_ref("missing"), "get_ref of a missing key is an empty optional");
  } catch (const std::exception& e) {
    std::cout << "  FAIL  exception: " << e.what() << '\n';
    ++failures;
  }

  if (own_dir) fs::remove_all(dir, ec);
  std::cout << (failures ? "zero_copy: FAILED\n" : "zero_copy: all checks passed\n");
  return failures ? 1 : 0;
}
