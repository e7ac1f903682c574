#!/usr/bin/env bash
# Host memory of an idle cold-booted sandbox: for each variant, in turn,
# RUNS times, one detached busybox `sleep` container started with templates
# off, left idle WAIT seconds; then the PSS of every host process that
# serves its VM (the VM's processes in its state record and their children:
# QEMU, and virtiofsd's two where a build had one) summed, in MiB, with each
# process's part.
# Prints every run, then each variant's median.
# Usage: bench/pss-cold.sh "LABEL=BINDIR [LODGE_CONFIG=FILE]"...
#   e.g. bench/pss-cold.sh "old=/tmp/ab/old/bin LODGE_CONFIG=/tmp/ab/old-cold.toml" \
#          "new=$PWD/bin LODGE_CONFIG=/tmp/ab/new-cold.toml"
#   Each LODGE_CONFIG must turn templates off ([template] enabled = false).
#   Env: RUNS (3), WAIT (15).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3} WAIT=${WAIT:-15}
declare -A totals
one() {
  local label=$1 bin=$2 id sup parts="" total=0 pid kb
  shift 3
  id=$(env "$@" "$bin/lodge" run -d busybox sleep 600)
  sleep "$WAIT"
  for pid in $(for p in $(python3 -c 'import json,sys; print(*[p["pid"] for p in json.load(open(sys.argv[1]))["vm_procs"]])' "/run/lodge/lodge/$id/state.json"); do descendants "$p"; done); do
    kb=$(pss_kb "$pid")
    total=$((total + kb)) parts="$parts $(cat /proc/"$pid"/comm 2>/dev/null)=$((kb / 1024))"
  done
  env "$@" "$bin/lodge" rm -f "$id" >/dev/null
  echo "run $label $((total / 1024)) MiB:$parts"
  totals[$label]+="$((total / 1024)) "
}
interleave "$RUNS" one "$@"
for l in "${labels[@]}"; do
  echo "$l: median $(echo "${totals[$l]}" | tr ' ' '\n' | grep . | median) MiB of $RUNS"
done
