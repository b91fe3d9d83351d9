# Builds and runs a small program against the packaged cask, with Meson
# through Conan's MesonToolchain and PkgConfigDeps (run by `conan create`).
import os

from conan import ConanFile
from conan.tools.build import can_run
from conan.tools.meson import Meson


class CaskTestConan(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "PkgConfigDeps", "MesonToolchain"
    test_type = "explicit"

    def requirements(self):
        self.requires(self.tested_reference_str)

    def layout(self):
        # test_package/build/ (ignored by git), whatever the build type.
        self.folders.build = "build"
        self.folders.generators = os.path.join("build", "conan")
        self.cpp.build.bindirs = ["."]

    def build(self):
        meson = Meson(self)
        meson.configure()
        meson.build()

    def test(self):
        if can_run(self):
            self.run(os.path.join(self.cpp.build.bindir, "test_package"), env="conanrun")
