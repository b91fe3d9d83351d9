// Writes, reads and reopens a store through the packaged headers.
#include <cask.hpp>

#include <filesystem>
#include <iostream>
#include <string>

#include <unistd.h>

int main() {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("cask-test-package-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  bool ok = false;
  try {
    using store = cask::log_store<std::string, std::string>;
    {
      auto db = store::open(dir);
      db.put("hello", "world");
    }
    auto db = store::open(dir);
    ok = db.get("hello") == "world";
  } catch (const cask::error& e) {
    std::cerr << e.what() << '\n';
  }
  fs::remove_all(dir);
  std::cout << "cask " << cask::version_string << " test_package: " << (ok ? "ok" : "FAILED") << '\n';
  return ok ? 0 : 1;
}
