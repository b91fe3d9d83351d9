// tests/fuzz/replay_main.cpp - main() of a fuzz target built without
// libFuzzer: runs every file named on the command line, or every file in a
// directory named there (a corpus), through LLVMFuzzerTestOneInput. A defect
// aborts, so the test fails; tests/meson.build runs each seed corpus this way.
#include "fuzz_util.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <vector>

int main(int argc, char** argv) {
  std::vector<std::filesystem::path> files;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path p = argv[i];
    if (std::filesystem::is_directory(p)) {
      for (const auto& e : std::filesystem::directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
    } else {
      files.push_back(p);
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    std::cerr << "usage: " << argv[0] << " <input file or corpus directory>...\n";
    return 2;
  }
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    if (!in) {
      std::cerr << "cannot read " << f << "\n";
      return 2;
    }
    const std::vector<char> b{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    std::cerr << "replay " << f.filename().string() << " (" << b.size() << " bytes)\n";
    // An exactly sized heap copy, so that AddressSanitizer sees any read past the input.
    std::vector<std::uint8_t> data(b.begin(), b.end());
    auto owned = std::make_unique<std::uint8_t[]>(data.size());
    std::copy(data.begin(), data.end(), owned.get());
    LLVMFuzzerTestOneInput(owned.get(), data.size());
  }
  std::cerr << files.size() << " inputs replayed\n";
  return 0;
}
