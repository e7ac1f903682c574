#!/usr/bin/env bash
# What lodge pause --reclaim gives back to the host, against lodge pause:
# RUNS times, one detached busybox container that wrote and read a file of
# MB MiB (its file cache in the guest), then idle; the host PSS of its VM's
# processes running, SETTLE seconds after a plain pause, and SETTLE seconds
# after a pause --reclaim (each undone before the next); how long each
# pause takes; and what the reclaim costs after: reading the file again,
# against reading it warm. Prints every run, then medians.
# Usage: bench/pause-reclaim.sh   Env: RUNS (5), MB (64), SETTLE (10), BIN (bin).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-5} MB=${MB:-64} SETTLE=${SETTLE:-10} BIN=${BIN:-bin}
ms() { local a b; a=$(date +%s%N); "$@" >/dev/null 2>&1; b=$(date +%s%N); echo $(((b - a) / 1000000)); }
declare -A all
for r in $(seq "$RUNS"); do
  id=$("$BIN/lodge" run -d busybox sleep 100000)
  procs=$(python3 -c 'import json,sys; print(*[p["pid"] for p in json.load(open(sys.argv[1]))["vm_procs"]])' "/run/lodge/lodge/$id/state.json")
  "$BIN/lodge" exec "$id" sh -c "dd if=/dev/urandom of=/tmp/f bs=1M count=$MB 2>/dev/null; sync; cat /tmp/f >/dev/null"
  warm_ms=$(ms "$BIN/lodge" exec "$id" sh -c "cat /tmp/f >/dev/null")
  sleep "$SETTLE"
  run_pss=$(($(pss_kb $procs) / 1024))
  pause_ms=$(ms "$BIN/lodge" pause "$id")
  sleep "$SETTLE"
  paused_pss=$(($(pss_kb $procs) / 1024))
  "$BIN/lodge" unpause "$id" >/dev/null
  reclaim_ms=$(ms "$BIN/lodge" pause --reclaim "$id")
  sleep "$SETTLE"
  reclaimed_pss=$(($(pss_kb $procs) / 1024))
  "$BIN/lodge" unpause "$id" >/dev/null
  cold_ms=$(ms "$BIN/lodge" exec "$id" sh -c "cat /tmp/f >/dev/null")
  "$BIN/lodge" rm -f "$id" >/dev/null
  echo "run $r: running ${run_pss} MiB; paused ${paused_pss} MiB (pause ${pause_ms} ms); paused with reclaim ${reclaimed_pss} MiB (pause --reclaim ${reclaim_ms} ms); reading the ${MB} MiB file warm ${warm_ms} ms, after the reclaim ${cold_ms} ms"
  all[run_pss]+="$run_pss " all[paused_pss]+="$paused_pss " all[reclaimed_pss]+="$reclaimed_pss "
  all[pause_ms]+="$pause_ms " all[reclaim_ms]+="$reclaim_ms " all[warm_ms]+="$warm_ms " all[cold_ms]+="$cold_ms "
done
for k in run_pss paused_pss reclaimed_pss pause_ms reclaim_ms warm_ms cold_ms; do
  echo "$k: median $(echo "${all[$k]}" | tr ' ' '\n' | grep . | median) of $RUNS"
done
