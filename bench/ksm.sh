#!/usr/bin/env bash
# What the host's KSM would save on idle clones, and what it costs: N
# detached busybox `sleep` containers (the built-in image, clones of one
# template) are started with [vmm] merge_pages = MERGE, left idle WAIT
# seconds, and their QEMUs' PSS is read; then KSM runs (pages_to_scan
# PAGES every 20 ms) until it has scanned everything twice more, and the
# PSS is read again, with the CPU time ksmd took for it and per second
# afterwards (its steady rescanning). The host's KSM settings are put
# back (and what it merged unmerged) at the end.
#
# Usage: bench/ksm.sh    Env: N (10), MERGE (true; false shows that
#   nothing is merged by default), WAIT (10), PAGES (1000), BIN (bin)
# Changes host-wide settings while it runs: run it on a host of your own.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-10} MERGE=${MERGE:-true} WAIT=${WAIT:-10} PAGES=${PAGES:-1000} BIN=${BIN:-$PWD/bin}
K=/sys/kernel/mm/ksm
[ -w "$K/run" ] || { echo "needs root and a kernel with KSM ($K)"; exit 2; }
lodge_work ksm
old_run=$(cat $K/run) old_pages=$(cat $K/pages_to_scan)
restore() {
  echo 2 > $K/run # unmerge what this run merged
  echo "$old_pages" > $K/pages_to_scan
  echo "$old_run" > $K/run
}
trap 'restore; ((${#ids[@]})) && "$BIN/lodge" rm -f "${ids[@]}" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
printf '[vmm]\nmerge_pages = %s\n' "$MERGE" > "$WORK/config.toml"
export LODGE_CONFIG=$WORK/config.toml

for i in $(seq "$N"); do
  ids+=("$("$BIN/lodge" run -d busybox sleep 3600)")
done
qemus=()
for id in "${ids[@]}"; do read -r _ q < <(lodge_pids "$id"); qemus+=("$q"); done
sleep "$WAIT"
before=$(( $(pss_kb "${qemus[@]}") / 1024 / N ))
ksmd=$(pgrep -x ksmd)
echo "$PAGES" > $K/pages_to_scan
t0=$(ticks "$ksmd") s0=$(date +%s%N) scans=$(cat $K/full_scans)
echo 1 > $K/run
# ksmd scans only processes with mergeable memory: with none, it waits
for _ in $(seq 240); do (( $(cat $K/full_scans) >= scans + 2 )) && break; sleep 0.5; done
(( $(cat $K/full_scans) >= scans + 2 )) || echo "KSM made no full scan in 2 minutes: nothing of these clones is mergeable"
t1=$(ticks "$ksmd") s1=$(date +%s%N)
after=$(( $(pss_kb "${qemus[@]}") / 1024 / N ))
sleep 10
t2=$(ticks "$ksmd")
HZ=$(getconf CLK_TCK)
echo "merge_pages=$MERGE clones=$N: QEMU PSS per clone $before MB before KSM, $after MB once it ran"
echo "pages_sharing=$(cat $K/pages_sharing) pages_shared=$(cat $K/pages_shared) ksm_zero_pages=$(cat $K/ksm_zero_pages 2>/dev/null || echo -)"
echo "ksmd: $(( (t1 - t0) * 1000 / HZ )) ms CPU for the two scans ($(( (s1 - s0) / 1000000 )) ms), then $(( (t2 - t1) * 100 / HZ / 10 ))% of a CPU rescanning (pages_to_scan=$PAGES)"
