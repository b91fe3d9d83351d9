// cask/version.hpp - the library version.
//
// Kept in step with `project(version:)` in meson.build and `version` in
// conanfile.py; tests/version_test.cpp checks that all three agree.
#pragma once

#define CASK_VERSION_MAJOR 0
#define CASK_VERSION_MINOR 1
#define CASK_VERSION_PATCH 0

/// One comparable number: major * 10000 + minor * 100 + patch.
#define CASK_VERSION (CASK_VERSION_MAJOR * 10000 + CASK_VERSION_MINOR * 100 + CASK_VERSION_PATCH)

namespace cask {
/// The version as a string, "major.minor.patch".
inline constexpr const char* version_string = "0.1.0";
}  // namespace cask
