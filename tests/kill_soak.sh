#!/usr/bin/env bash
# Kill soak: runs tests/kill_test (a writer killed with SIGKILL at random
# moments, its store checked against its log of acknowledged operations) for
# many thousands of cycles, in rounds of fresh seeds, and stops at the first
# failure with the seed that replays its workload.
#
#   tests/kill_soak.sh [total cycles (default 20000)] [build dir (default build)]
#
# Environment: ROUND (cycles per round, default 1000), FIRST_SEED (default:
# from the clock), CASK_TEST_DIR (where stores go; default /dev/shm - set it to
# a directory on a real disk to run the fsync paths against it), KEEP_DIR
# (where a failing round leaves its store and log; default /tmp/cask-kill-soak).
set -euo pipefail
total=${1:-20000}
build=${2:-build}
round=${ROUND:-1000}
seed=${FIRST_SEED:-$(date +%s)}
keep=${KEEP_DIR:-/tmp/cask-kill-soak}
root=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -d "$build" ]; then meson setup "$build" "$root" -Dexamples=false; fi
ninja -C "$build" tests/kill_test
bin="$build/tests/kill_test"

done_cycles=0
start=$(date +%s)
while [ "$done_cycles" -lt "$total" ]; do
  n=$(( total - done_cycles < round ? total - done_cycles : round ))
  log=$(mktemp)
  if CASK_KILL_CYCLES=$n CASK_KILL_SEED=$seed CASK_KILL_SECONDS=0 CASK_KILL_KEEP_DIR="$keep" \
       "$bin" --log_level=message >"$log" 2>&1; then
    summary=$(grep -o 'kill test: [0-9]* cycles in.*' "$log" | sed 's/\x1b\[[0-9;]*m//g' || true)
    echo "seed $seed: ${summary:-(no summary)}"
    rm -f "$log"
  else
    cat "$log"
    echo "FAILED: seed $seed (replay: CASK_KILL_SEED=$seed CASK_KILL_CYCLES=$n $bin); store and log kept under $keep"
    rm -f "$log"
    exit 1
  fi
  done_cycles=$(( done_cycles + n ))
  seed=$(( seed + 1 ))
done
echo "kill soak: $done_cycles cycles passed in $(( $(date +%s) - start )) s"
