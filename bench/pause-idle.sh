#!/usr/bin/env bash
# What a paused container costs the host, against the same container
# running: RUNS times, one detached busybox `sleep` container, idle WAIT
# seconds; the host CPU of its VM's processes (QEMU and their children:
# utime+stime from /proc) over SECS seconds running, then over SECS seconds
# paused (lodge pause), and their PSS at the end of each; and how long
# lodge pause and lodge unpause take. Prints every run, then medians.
# Usage: bench/pause-idle.sh   Env: RUNS (3), WAIT (10), SECS (20), BIN (bin).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3} WAIT=${WAIT:-10} SECS=${SECS:-20} BIN=${BIN:-bin}
hz=$(getconf CLK_TCK)
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
ms() { local a b; a=$(date +%s%N); "$@" >/dev/null; b=$(date +%s%N); echo $(((b - a) / 1000000)); }
declare -A all
for r in $(seq "$RUNS"); do
  id=$("$BIN/lodge" run -d busybox sleep 100000)
  sleep "$WAIT"
  procs=$(for p in $(python3 -c 'import json,sys; print(*[p["pid"] for p in json.load(open(sys.argv[1]))["vm_procs"]])' "/run/lodge/lodge/$id/state.json"); do descendants "$p"; done)
  a=$(ticks $procs); sleep "$SECS"; b=$(ticks $procs)
  run_cpu=$(echo "scale=2; 100 * ($b - $a) / $hz / $SECS" | bc) run_pss=$(($(pss_kb $procs) / 1024))
  pause_ms=$(ms "$BIN/lodge" pause "$id")
  a=$(ticks $procs); sleep "$SECS"; b=$(ticks $procs)
  paused_cpu=$(echo "scale=2; 100 * ($b - $a) / $hz / $SECS" | bc) paused_pss=$(($(pss_kb $procs) / 1024))
  resume_ms=$(ms "$BIN/lodge" unpause "$id")
  "$BIN/lodge" rm -f "$id" >/dev/null
  echo "run $r: running ${run_cpu}% of a CPU, ${run_pss} MiB; paused ${paused_cpu}%, ${paused_pss} MiB; pause ${pause_ms} ms, unpause ${resume_ms} ms"
  all[run_cpu]+="$run_cpu " all[paused_cpu]+="$paused_cpu " all[run_pss]+="$run_pss " all[paused_pss]+="$paused_pss "
  all[pause_ms]+="$pause_ms " all[resume_ms]+="$resume_ms "
done
for k in run_cpu paused_cpu run_pss paused_pss pause_ms resume_ms; do
  echo "$k: median $(echo "${all[$k]}" | tr ' ' '\n' | grep . | median) of $RUNS"
done
