#!/usr/bin/env bash
# What a VM gives back to the host of the memory its container freed. For
# each mode (clone: a template's clone; cold: a cold boot), a detached
# busybox container (the built-in image) writes SIZE MiB to /dev/shm and
# removes it; the PSS of its QEMU is read before the write, right after the
# removal, and WAIT seconds later.
#
# Prints one line per run and mode, then the medians per mode.
# Usage: bench/memory-giveback.sh   Env: RUNS (3), SIZE (56, MiB; /dev/shm
#   holds 64), WAIT (10), BIN (the Lodge build, default bin), CONFIG (a
#   Lodge configuration to start from, e.g. another guest and template
#   directory for another build).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
RUNS=${RUNS:-3} SIZE=${SIZE:-56} WAIT=${WAIT:-10} BIN=${BIN:-$PWD/bin}
lodge_work giveback
# mode_config ENABLED: CONFIG with [template] enabled set.
mode_config() {
  if [ -n "${CONFIG:-}" ] && grep -q '^\[template\]' "$CONFIG"; then
    sed "s/^\[template\]\$/[template]\nenabled = $1/" "$CONFIG"
  else
    if [ -n "${CONFIG:-}" ]; then cat "$CONFIG"; fi
    printf '\n[template]\nenabled = %s\n' "$1"
  fi
}
mode_config true > "$WORK/clone.toml"
mode_config false > "$WORK/cold.toml"

pss_mb() { echo $(( $(pss_kb "$1") / 1024 )); }

for r in $(seq "$RUNS"); do
  for mode in clone cold; do
    export LODGE_CONFIG=$WORK/$mode.toml
    id=$("$BIN/lodge" run -d busybox sleep 3600)
    ids=("$id")
    read -r _ pid < <(lodge_pids "$id")
    before=$(pss_mb "$pid")
    "$BIN/lodge" exec "$id" sh -c "dd if=/dev/zero of=/dev/shm/fill bs=1M count=$SIZE 2>/dev/null; rm /dev/shm/fill"
    freed=$(pss_mb "$pid")
    sleep "$WAIT"
    later=$(pss_mb "$pid")
    echo "$mode run $r: before $before MiB, freed $freed MiB, ${WAIT}s later $later MiB"
    echo "$before $freed $later" >> "$WORK/$mode.pss"
    "$BIN/lodge" rm -f "$id" >/dev/null
    ids=()
  done
done
echo
printf '%-6s %10s %10s %12s\n' mode before freed "${WAIT}s_later"
for mode in clone cold; do
  printf '%-6s %10s %10s %12s\n' "$mode" "$(cut -d' ' -f1 "$WORK/$mode.pss" | median)" \
    "$(cut -d' ' -f2 "$WORK/$mode.pss" | median)" "$(cut -d' ' -f3 "$WORK/$mode.pss" | median)"
done
