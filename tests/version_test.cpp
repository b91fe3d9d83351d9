// The version macros agree with meson.build's project(version:) and with
// conanfile.py's `version`, so a release changes all three together.
#define BOOST_TEST_MODULE version
#include <boost/test/unit_test.hpp>

#include <cask/version.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
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

/// The first capture of `re` in `text`, or "" when it does not match.
std::string first_match(const std::string& text, const std::regex& re) {
  std::smatch m;
  return std::regex_search(text, m, re) ? m[1].str() : std::string();
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
  const std::string v = first_match(build, std::regex(R"(project\s*\([^)]*?\bversion\s*:\s*'([^']*)')"));
  BOOST_TEST_REQUIRE(!v.empty(), "no project(version: '...') in meson.build");
  BOOST_TEST(v == macro_version());
}

BOOST_AUTO_TEST_CASE(conan_recipe_version_matches_the_macros) {
  // A top-level `version = "..."` attribute of the recipe class.
  const std::string recipe = read_file(root / "conanfile.py");
  const std::string v = first_match(recipe, std::regex(R"((?:^|\n)[ \t]+version\s*=\s*["']([^"']*)["'])"));
  BOOST_TEST_REQUIRE(!v.empty(), "no version = \"...\" in conanfile.py");
  BOOST_TEST(v == macro_version());
}
