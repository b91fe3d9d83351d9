#!/usr/bin/env bash
# bench/run.sh - builds cask_bench (release, outside the source tree), runs the
# standard set, and writes docs/PERFORMANCE.md and its charts (docs/perf/*.png).
#
# usage: bench/run.sh [--quick] [--install] [--replay] [--num N] [--repeat R] [-- more cask_bench options]
#   --quick     N=100000, 1 round, short fillsync: a smoke run (still writes the report)
#   --install   apt-get install the peers' -dev packages and gnuplot-nox first (root)
#   --replay    rewrite the report and charts from the saved raw results, running nothing
#   --num N     keys (default 1000000)      --repeat R  rounds (default 3)
# The raw results of every round (docs/perf/results.tsv) and the report's header
# (docs/perf/header.md) are kept beside the charts, so --replay can redo the report.
# Environment: BUILD_DIR (default /tmp/cask-benchbuild), SCRATCH (default /tmp/cask-bench-data),
#   OUT (default docs/PERFORMANCE.md), CHARTS (default docs/perf).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${BUILD_DIR:-/tmp/cask-benchbuild}
scratch=${SCRATCH:-/tmp/cask-bench-data}
out=${OUT:-$root/docs/PERFORMANCE.md}
charts=${CHARTS:-$root/docs/perf}
num=1000000
repeat=3
extra=()
install=0
quick=0
replay=0

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; num=100000; repeat=1; shift ;;
    --install) install=1; shift ;;
    --replay) replay=1; shift ;;
    --num) num=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$install" = 1 ]; then
  apt-get update -qq
  apt-get install -y -qq meson ninja-build pkg-config g++ libboost-dev gnuplot-nox \
    liblmdb-dev libtkrzw-dev libleveldb-dev librocksdb-dev libkyotocabinet-dev >/dev/null
fi

# Build (release, assertions off) outside the source tree.
# The commit the benchmark is built from, taken before the build (the work
# tree may change while the run takes its minutes).
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain -- include bench 2>/dev/null)" ]; then commit="$commit (include/ or bench/ modified)"; fi

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$root" -Dbench=true -Dtests=false -Dexamples=false \
    -Dbuildtype=release -Db_ndebug=true >/dev/null
else
  meson configure "$build" -Dbench=true -Dbuildtype=release -Db_ndebug=true >/dev/null
fi
ninja -C "$build" bench/cask_bench >/dev/null
bin="$build/bench/cask_bench"

args=(--num "$num" --repeat "$repeat" --dir "$scratch")
[ "$quick" = 1 ] && args+=(--sync-seconds 0.5 --large-bytes 33554432)
args+=("${extra[@]}")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$charts"
status=0
if [ "$replay" = 1 ]; then
  [ -f "$charts/results.tsv" ] && [ -f "$charts/header.md" ] ||
    { echo "run.sh: no saved results in $charts to replay" >&2; exit 1; }
  "$bin" --replay "$charts/results.tsv" --markdown "$work/body.md" --plot-dir "$work/plot" >/dev/null
  cp "$charts/header.md" "$work/header.md"
else
  load_before=$(cut -d' ' -f1-3 /proc/loadavg)
  started=$(date -u '+%Y-%m-%d %H:%M UTC')
  echo "run.sh: $bin ${args[*]}" >&2
  set +e
  "$bin" "${args[@]}" --markdown "$work/body.md" --plot-dir "$work/plot" --save-results "$work/results.tsv" >/dev/null
  status=$?
  set -e
  load_after=$(cut -d' ' -f1-3 /proc/loadavg)
  [ -f "$work/body.md" ] || { echo "run.sh: cask_bench wrote no report (exit $status)" >&2; exit 1; }

  cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
  cores=$(nproc)
  mem=$(free -g | awk '/^Mem:/ {print $2 " GiB"}')
  kernel=$(uname -r)
  fs=$(df -T "$(dirname "$scratch")" | awk 'NR==2 {print $2}')
  cxx=$(c++ --version | head -1)
  virt=$(systemd-detect-virt 2>/dev/null || echo unknown)
  {
    echo "| | |"
    echo "|---|---|"
    echo "| date | $started |"
    echo "| commit | $commit |"
    echo "| machine | $cpu, $cores cores ($virt), $mem RAM, Linux $kernel, $fs |"
    echo "| compiler | $cxx, release build (-O3, NDEBUG) |"
    echo "| load average (1/5/15 min) | before: $load_before; after: $load_after |"
    echo "| command | \`cask_bench ${args[*]}\` |"
  } >"$work/header.md"
  cp "$work/results.tsv" "$charts/results.tsv"
  cp "$work/header.md" "$charts/header.md"
fi

have_charts=0
if command -v gnuplot >/dev/null; then
  gnuplot -e "data='$work/plot'; out='$charts'" "$here/charts.gp" && have_charts=1
else
  echo "run.sh: gnuplot not found (apt-get install gnuplot-nox): no charts" >&2
fi
rel_charts=$(realpath --relative-to="$(dirname "$out")" "$charts")

{
  echo "# Performance"
  echo
  echo "Written by \`bench/run.sh\` (cask_bench, see [bench/README.md](../bench/README.md)); do not edit by hand."
  echo
  cat "$work/header.md"
  echo
  if [ "$have_charts" = 1 ]; then
    echo "![throughput]($rel_charts/throughput.png)"
    echo
    echo "![ratio to the best peer]($rel_charts/ratio.png)"
    echo
    echo "![p99 latency]($rel_charts/latency_p99.png)"
    echo
  fi
  cat "$work/body.md"
} >"$out"
echo "run.sh: wrote $out$([ "$have_charts" = 1 ] && echo " and $charts/*.png")" >&2
exit $status
