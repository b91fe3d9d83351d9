#!/usr/bin/env bash
# tests/consumers/run.sh - builds and runs the consumer project in app/ every
# way a user can take cask, and checks the API reference builds:
#
#   consumer meson-subproject  cask linked into app/subprojects/, found through cask.wrap's [provide]
#   consumer pkg-config        cask installed by `meson install` to a temporary prefix, found by its cask.pc
#   consumer cmake             the same installed tree, through find_package(cask CONFIG) and cask::cask
#   consumer conan             `conan create` of conanfile.py (which runs test_package/), then
#                              `conan build` of app/ against the package in the local cache
#   docs doxygen               `ninja docs`: Doxygen with docs/Doxyfile, warnings are errors
#
# Prints one line per way, "<what> <way>: PASS|FAIL", and exits non-zero if any
# failed (a failure's log tail goes to stderr). Installs what it needs when
# missing: Debian packages (g++ meson ninja-build pkg-config cmake doxygen
# libboost-dev) with apt-get when root, and Conan 2 with pip into a virtual
# environment. Conan runs with its own CONAN_HOME under the work directory and
# no remote: Boost comes from the system through a profile's [platform_requires].
#
# Usage: tests/consumers/run.sh [work-dir]   (default: a new temporary directory, removed
#                                             on success unless CASK_KEEP_WORK=1)
# Environment: CASK_CONAN_VENV  where to create the Conan virtual environment when
#                               conan 2 is not on PATH (default ~/.cache/cask-conan-venv).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
app="$root/tests/consumers/app"
if [[ $# -ge 1 ]]; then
  work=$1
  mkdir -p "$work"
  keep=1
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/cask-consumers.XXXXXX")
  keep=${CASK_KEEP_WORK:-0}
fi
work=$(cd "$work" && pwd)
logs="$work/logs"
mkdir -p "$logs"

say() { printf '%s\n' "$*" >&2; }

# ---- tools ----

need_pkgs=()
for pair in g++:g++ meson:meson ninja:ninja-build pkg-config:pkg-config cmake:cmake doxygen:doxygen; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
done
[[ -f /usr/include/boost/version.hpp ]] || need_pkgs+=(libboost-dev)
if [[ ${#need_pkgs[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    say "run.sh: missing ${need_pkgs[*]}; install them (apt-get install ${need_pkgs[*]}) or run as root"
    exit 2
  fi
  say "run.sh: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update && apt-get install -y --no-install-recommends "${need_pkgs[@]}"; } >"$logs/apt.log" 2>&1 || {
    tail -n 30 "$logs/apt.log" >&2
    say "run.sh: apt-get failed"
    exit 2
  }
fi

conan=conan
if ! conan --version 2>/dev/null | grep -q 'version 2\.'; then
  venv=${CASK_CONAN_VENV:-${HOME:-/root}/.cache/cask-conan-venv}
  if ! "$venv/bin/conan" --version 2>/dev/null | grep -q 'version 2\.'; then
    say "run.sh: installing Conan 2 with pip into $venv"
    if ! python3 -m venv "$venv" >"$logs/venv.log" 2>&1; then
      # Debian's python3 needs python3-venv for ensurepip.
      if [[ $(id -u) -eq 0 ]]; then
        { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv; } \
          >>"$logs/venv.log" 2>&1
      fi
      rm -rf "$venv"
      python3 -m venv "$venv" >>"$logs/venv.log" 2>&1 || { tail -n 20 "$logs/venv.log" >&2; exit 2; }
    fi
    "$venv/bin/python" -m pip install --quiet 'conan>=2,<3' >>"$logs/venv.log" 2>&1 ||
      { tail -n 20 "$logs/venv.log" >&2; say "run.sh: pip install conan failed"; exit 2; }
  fi
  conan="$venv/bin/conan"
fi

# Debian's Boost version (BOOST_VERSION 107400 -> 1.74.0), for Conan's [platform_requires].
boost_version=$(awk '/#define BOOST_VERSION /{v=$3; printf "%d.%d.%d", v/100000, v/100%1000, v%100}' \
  /usr/include/boost/version.hpp)

# ---- the ways ----

prefix="$work/prefix"  # where cask is installed, for the pkg-config and CMake ways
failed=0

# run_way <label> <function>: runs the function with its output in logs/<label>.log.
run_way() {
  local label=$1 fn=$2 log="$logs/${1// /-}.log" rc
  # Not inside `if`: there bash would ignore the subshell's set -e.
  (set -e; "$fn") >"$log" 2>&1
  rc=$?
  if [[ $rc -eq 0 ]]; then
    echo "$label: PASS"
  else
    echo "$label: FAIL"
    say "---- $label: last lines of $log ----"
    tail -n 40 "$log" >&2
    failed=1
  fi
}

# A fresh copy of the consumer project at $work/<name>.
copy_app() {
  rm -rf "${work:?}/$1"
  cp -r "$app" "$work/$1"
  rm -rf "$work/$1/build-conan"
}

way_subproject() {
  copy_app subproject
  ln -s "$root" "$work/subproject/subprojects/cask"
  meson setup "$work/subproject/build" "$work/subproject" --force-fallback-for=cask | tee "$work/subproject.setup"
  grep -q '^Executing subproject cask' "$work/subproject.setup"
  grep -q '^Dependency cask found: YES' "$work/subproject.setup"
  meson compile -C "$work/subproject/build"
  "$work/subproject/build/consumer"
}

install_cask() {
  rm -rf "$prefix" "$work/cask-build"
  meson setup "$work/cask-build" "$root" --prefix="$prefix" -Dtests=false -Dexamples=false
  meson install -C "$work/cask-build"
}

way_pkgconfig() {
  install_cask
  local pc
  pc=$(find "$prefix" -name cask.pc)
  test -n "$pc"
  export PKG_CONFIG_PATH
  PKG_CONFIG_PATH=$(dirname "$pc")
  test "$(pkg-config --variable=prefix cask)" = "$prefix"
  copy_app pkgconfig
  meson setup "$work/pkgconfig/build" "$work/pkgconfig" --wrap-mode=nofallback | tee "$work/pkgconfig.setup"
  grep -q 'Run-time dependency cask found: YES' "$work/pkgconfig.setup"
  meson compile -C "$work/pkgconfig/build"
  "$work/pkgconfig/build/consumer"
}

way_cmake() {
  test -d "$prefix/include/cask" || install_cask
  copy_app cmake
  cmake -S "$work/cmake" -B "$work/cmake/build" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release
  local found
  found=$(sed -n 's/^cask_DIR:PATH=//p' "$work/cmake/build/CMakeCache.txt")
  echo "cask_DIR = $found"
  case $found in "$prefix"/*) ;; *) echo "find_package(cask) did not use the installed tree"; exit 1 ;; esac
  cmake --build "$work/cmake/build"
  "$work/cmake/build/consumer"
}

way_conan() {
  export CONAN_HOME="$work/conan-home"
  rm -rf "$CONAN_HOME"
  "$conan" profile detect
  cat >"$CONAN_HOME/profiles/cask" <<EOF
include(default)
[settings]
compiler.cppstd=20
[platform_requires]
boost/$boost_version
EOF
  # Build from a copy of the recipe's files, so that test_package/build stays out of the tree.
  rm -rf "$work/conan-src"
  mkdir "$work/conan-src"
  (cd "$root" && cp -r conanfile.py meson.build meson_options.txt include cmake test_package "$work/conan-src/")
  if [[ -e "$root/LICENSE" ]]; then cp "$root/LICENSE" "$work/conan-src/"; fi
  rm -rf "$work/conan-src/test_package/build"
  "$conan" create "$work/conan-src" -pr:h cask -pr:b default --no-remote 2>&1 | tee "$work/conan-create.out"
  # One package for every configuration (the package id of no settings), holding
  # the headers and the licence.
  local pref pkg
  pref=$(sed -n 's/^Full package reference: //p' "$work/conan-create.out")
  case $pref in *:da39a3ee5e6b4b0d3255bfef95601890afd80709#*) ;; *) echo "unexpected package: $pref"; exit 1 ;; esac
  pkg=$("$conan" cache path "$pref")
  test -f "$pkg/include/cask.hpp"
  test -f "$pkg/include/cask/log_store.hpp"
  if [[ -e "$root/LICENSE" ]]; then test -f "$pkg/licenses/LICENSE"; fi
  copy_app conan
  rm -rf "$work/conan/subprojects"
  "$conan" build "$work/conan" -pr:h cask -pr:b default --no-remote
}

way_docs() {
  rm -rf "$work/docs-build"
  meson setup "$work/docs-build" "$root" -Dtests=false -Dexamples=false
  ninja -C "$work/docs-build" docs
  test -f "$work/docs-build/docs/html/index.html"
}

run_way "consumer meson-subproject" way_subproject
run_way "consumer pkg-config" way_pkgconfig
run_way "consumer cmake" way_cmake
run_way "consumer conan" way_conan
run_way "docs doxygen" way_docs

if [[ $failed -eq 0 && $keep -eq 0 ]]; then
  rm -rf "$work"
else
  say "run.sh: logs and builds in $work"
fi
exit $failed
