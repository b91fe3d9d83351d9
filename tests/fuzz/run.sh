#!/usr/bin/env bash
# tests/fuzz/run.sh - builds the fuzz targets with clang, libFuzzer, ASan and
# UBSan, and fuzzes them side by side (one process per target, all at once)
# for a while, each starting from its seed corpus.
#
#   tests/fuzz/run.sh [seconds, default 60] [target ...]
#
# Targets: record, hint, recovery (all by default). Output goes to
# $CASK_FUZZ_OUT (default build-fuzz/ at the repository root): the binaries,
# a working corpus per target (new inputs found; the seeds in
# tests/fuzz/corpus/<target>/ are only read), logs, and any crashing input in
# crashes/<target>/. Exits non-zero if a target crashed, leaked, hit undefined
# behaviour or timed out; each crash is printed with the command that replays
# it. CASK_FUZZ_TRACE=1, given to a replay, prints the image, the opens and
# the operations of the input.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(record hint recovery)
out=${CASK_FUZZ_OUT:-$root/build-fuzz}
cxx=${CLANGXX:-clang++}

if ! command -v "$cxx" >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing clang"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang libclang-rt-14-dev >/dev/null || true
  fi
  command -v "$cxx" >/dev/null || { echo "fuzz: $cxx not found (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
fi

mkdir -p "$out"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
flags=(-std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -fno-omit-frame-pointer -I "$root/include" -I "$here" -pthread)
declare -A max_len=([record]=8192 [hint]=8192 [recovery]=32768)

failed=0
summary=()
# The targets are built, then fuzzed, side by side (one process each): on a
# machine with fewer cores than targets each gets a share of the time.
declare -A built=()
for t in "${targets[@]}"; do
  src="$here/fuzz_$t.cpp"
  [ -f "$src" ] || { echo "fuzz: no target $t" >&2; failed=1; summary+=("$t: no such target"); continue; }
  echo "== fuzz_$t: building"
  "$cxx" "${flags[@]}" "$src" -o "$out/fuzz_$t" 2>"$out/fuzz_$t.build.log" &
  built[$t]=$!
done
declare -A fuzzing=()
for t in "${!built[@]}"; do
  if ! wait "${built[$t]}"; then
    tail -n 30 "$out/fuzz_$t.build.log"; failed=1; summary+=("$t: build failed"); continue
  fi
  mkdir -p "$out/corpus/$t" "$out/crashes/$t"
  echo "== fuzz_$t: fuzzing for ${seconds}s"
  "$out/fuzz_$t" -max_total_time="$seconds" -max_len="${max_len[$t]:-8192}" -timeout=60 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$out/crashes/$t/" "$out/corpus/$t" "$here/corpus/$t" \
    >"$out/fuzz_$t.log" 2>&1 &
  fuzzing[$t]=$!
done
for t in "${targets[@]}"; do
  [ -n "${fuzzing[$t]:-}" ] || continue
  wait "${fuzzing[$t]}"
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/fuzz_$t.log" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/fuzz_$t.log" | tail -n 1)
  if [ $rc -ne 0 ]; then
    failed=1
    grep -m 1 -E 'check failed|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error' "$out/fuzz_$t.log"
    tail -n 40 "$out/fuzz_$t.log"
    for c in "$out/crashes/$t"/*; do
      [ -f "$c" ] && echo "   replay: $out/fuzz_$t $c   (or the fuzz_${t}_replay test program)"
    done
    summary+=("$t: FAILED after ${runs:-?} runs (log $out/fuzz_$t.log)")
  else
    summary+=("$t: ok, ${runs:-?} runs, ${rate:-?} execs/s, corpus $(ls "$out/corpus/$t" | wc -l) + $(ls "$here/corpus/$t" | wc -l) seeds")
  fi
done
echo "== fuzz summary"
printf '  %s\n' "${summary[@]}"
exit $failed
