# Conan 2 recipe for cask, a header-only library.
#
#   conan create . -pr:h <profile>      # packages the headers and runs test_package/
#
# Boost comes from Conan Center by default (boost/[>=1.74 <2]). Without that
# remote, take Boost from the system with a host profile holding
#   [platform_requires]
#   boost/1.74.0
# (tests/consumers/run.sh writes such a profile). cask needs C++20.
import os
import re

from conan import ConanFile
from conan.errors import ConanException
from conan.tools.build import check_min_cppstd
from conan.tools.files import copy, load
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"


class CaskConan(ConanFile):
    name = "cask"
    # Kept equal to project(version:) in meson.build (export() checks it) and
    # to include/cask/version.hpp (tests/version_test.cpp checks both).
    version = "0.1.0"
    description = "Header-only C++20 embedded key-value store of the Bitcask design"
    license = "BSL-1.0"
    topics = ("key-value", "bitcask", "storage", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    exports_sources = "include/*", "meson.build", "meson_options.txt", "cmake/*", "LICENSE*"
    no_copy_source = True

    def export(self):
        meson_build = load(self, os.path.join(self.recipe_folder, "meson.build"))
        m = re.search(r"project\s*\([^)]*?\bversion\s*:\s*'([^']*)'", meson_build)
        if not m or m.group(1) != self.version:
            raise ConanException(
                f"conanfile.py version {self.version} differs from meson.build's {m.group(1) if m else '(none)'}")

    def layout(self):
        basic_layout(self, src_folder=".")

    def requirements(self):
        # Interprocess and CRC are header-only; cask's headers include Boost's.
        self.requires("boost/[>=1.74 <2]", transitive_headers=True)

    def package_id(self):
        self.info.clear()

    def validate(self):
        if self.settings.get_safe("compiler.cppstd"):
            check_min_cppstd(self, 20)

    def build(self):
        pass  # header-only

    def package(self):
        copy(self, "LICENSE*", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*.hpp", os.path.join(self.source_folder, "include"), os.path.join(self.package_folder, "include"))

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.set_property("cmake_file_name", "cask")
        self.cpp_info.set_property("cmake_target_name", "cask::cask")
        self.cpp_info.set_property("pkg_config_name", "cask")
        if self.settings.os in ("Linux", "FreeBSD"):
            self.cpp_info.system_libs = ["pthread"]
