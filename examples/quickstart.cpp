// examples/quickstart.cpp - open a store, write, read, erase, reopen.
//
// Usage: quickstart [directory]
//   directory  where to create the store; it must be new or empty, and is
//              kept afterwards. Default: a fresh temporary directory, removed
//              at exit.
// Prints each step and exits non-zero if any result is not as expected.
#include <cask.hpp>

#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <system_error>

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
      own_dir ? fs::temp_directory_path() / ("cask-quickstart-" + std::to_string(::getpid())) : fs::path(argv[1]);
  std::error_code ec;
  if (own_dir) fs::remove_all(dir, ec);
  if (!own_dir && fs::exists(dir) && !fs::is_empty(dir)) {
    std::cerr << "quickstart: " << dir << " is not empty; give a new or empty directory\n";
    return 2;
  }
  std::cout << "store in " << dir << '\n';

  try {
    // [quickstart]
    using store = cask::log_store<std::string, std::string>;
    {
      store db = store::open(dir);  // creates the directory and an empty store
      db.put("apple", "red");
      db.put("banana", "yellow");
      db.put("apple", "green");  // overwrites: the newest record wins

      std::optional<std::string> apple = db.get("apple");
      expect(apple == "green", "get(\"apple\") is \"green\"");
      expect(db.erase("banana"), "erase(\"banana\") found the key");
      expect(!db.contains("banana"), "\"banana\" is gone");
      expect(!db.get("cherry"), "a missing key is an empty optional, not an error");
      db.close();  // optional: the destructor closes too, but ignores errors
    }
    {
      store db = store::open(dir);  // recovery rebuilds the index from the log
      expect(db.get("apple") == "green", "after reopening, \"apple\" is still \"green\"");
      expect(!db.contains("banana"), "after reopening, \"banana\" is still gone");
      expect(db.size() == 1, "after reopening, the store holds one key");
    }
    // [quickstart]
  } catch (const cask::error& e) {
    std::cout << "  FAIL  cask::error: " << e.what() << '\n';
    ++failures;
  }

  if (own_dir) fs::remove_all(dir, ec);
  std::cout << (failures ? "quickstart: FAILED\n" : "quickstart: all checks passed\n");
  return failures ? 1 : 0;
}
