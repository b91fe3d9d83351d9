# The consumer as a Conan 2 project: cask from the local cache (after
# `conan create` of cask), built with Meson through MesonToolchain and
# PkgConfigDeps, then run. tests/consumers/run.sh calls `conan build` on it.
import os

from conan import ConanFile
from conan.tools.meson import Meson


class CaskConsumerConan(ConanFile):
    settings = "os", "arch", "compiler", "build_type"
    generators = "PkgConfigDeps", "MesonToolchain"

    def requirements(self):
        self.requires("cask/[>=0.1.0 <1]")

    def layout(self):
        self.folders.build = "build-conan"
        self.folders.generators = os.path.join("build-conan", "conan")

    def build(self):
        meson = Meson(self)
        meson.configure()
        meson.build()
        self.run(os.path.join(self.build_folder, "consumer"), env="conanrun")
