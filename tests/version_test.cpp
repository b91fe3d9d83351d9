// The version macros agree with meson.build's project(version:) and with
// conanfile.py's `version`, so a release changes all three together.
#define BOOST_TEST_MODULE version
#include <boost/test/unit_test.hpp>

#include <cask/version.hpp>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#ifndef CASK_SOURCE_ROOT
#error "CASK_SOURCE_ROOT must name the source directory"
#endif

namespace {

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  BOOST_TEST_REQUIRE(in.good(), "cannot read " << p);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// The quoted string after the first `key` (followed by `sep`) found after
/// `anchor`, or "" when there is none. (Plain parsing, not std::regex: GCC 12
/// warns falsely inside <regex> under the sanitizers, and tests build with -Werror.)
std::string quoted_after(const std::string& text, const std::string& anchor, const std::string& key, char sep) {
  std::size_t at = text.find(anchor);
  while (at != std::string::npos) {
    at = text.find(key, at);
    if (at == std::string::npos) return {};
    // A whole word: not the tail of another identifier.
    const bool word_start = at == 0 || !(std::isalnum(static_cast<unsigned char>(text[at - 1])) || text[at - 1] == '_');
    std::size_t i = at + key.size();
    while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
    if (word_start && i < text.size() && text[i] == sep) {
      ++i;
      while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
      if (i < text.size() && (text[i] == '\'' || text[i] == '"')) {
        const char q = text[i];
        const std::size_t end = text.find(q, i + 1);
        if (end != std::string::npos) return text.substr(i + 1, end - i - 1);
      }
    }
    at += key.size();
  }
  return {};
}

std::string macro_version() {
  return std::to_string(CASK_VERSION_MAJOR) + "." + std::to_string(CASK_VERSION_MINOR) + "." +
         std::to_string(CASK_VERSION_PATCH);
}

const std::filesystem::path root = CASK_SOURCE_ROOT;

}  // namespace

BOOST_AUTO_TEST_CASE(comparable_number_is_built_from_the_parts) {
  BOOST_TEST(CASK_VERSION == CASK_VERSION_MAJOR * 10000 + CASK_VERSION_MINOR * 100 + CASK_VERSION_PATCH);
  BOOST_TEST(CASK_VERSION_MINOR < 100);
  BOOST_TEST(CASK_VERSION_PATCH < 100);
}

BOOST_AUTO_TEST_CASE(version_string_matches_the_macros) {
  BOOST_TEST(std::string(cask::version_string) == macro_version());
}

BOOST_AUTO_TEST_CASE(meson_project_version_matches_the_macros) {
  // The version: keyword inside project(...), the first one in the file.
  const std::string build = read_file(root / "meson.build");
  const std::string v = quoted_after(build, "project(", "version", ':');
  BOOST_TEST_REQUIRE(!v.empty(), "no project(version: '...') in meson.build");
  BOOST_TEST(v == macro_version());
}

BOOST_AUTO_TEST_CASE(conan_recipe_version_matches_the_macros) {
  // A top-level `version = "..."` attribute of the recipe class.
  const std::string recipe = read_file(root / "conanfile.py");
  const std::string v = quoted_after(recipe, "class ", "version", '=');
  BOOST_TEST_REQUIRE(!v.empty(), "no version = \"...\" in conanfile.py");
  BOOST_TEST(v == macro_version());
}
