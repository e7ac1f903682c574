#!/usr/bin/env bash
# Churn: many sandbox lifecycles, partly in parallel, then a count of what
# the host holds against its count before them. Two front ends:
#   lodge-runtime  N cycles (default 100) of create, start, exec, kill -9,
#                  delete, P at a time (default 2)
#   CRI            M pod cycles (default 50) through containerd-shim-lodge-v2
#                  on a private containerd: runp, create, start, exec, stopp,
#                  rmp, P at a time
# Prints failed cycles, the time per cycle, and before/after: mounts, network
# links, cgroups, /run and /dev/shm entries, QEMU and virtiofsd processes, and
# containerd's open files and RSS (the one long-lived process).
#
# Usage: bench/churn.sh    Env: N (100), M (50), P (2), BIN (bin),
#   TOOLS (../shared/tools), CTRD_DIR (/tmp/lodge-churn-ctrd)
set -uo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
BIN=$(realpath "${BIN:-bin}")
TOOLS=${TOOLS:-$TOP/../shared/tools}
N=${N:-100} M=${M:-50} P=${P:-2}
export CTRD_DIR=${CTRD_DIR:-/tmp/lodge-churn-ctrd}
WORK=$(mktemp -d /var/tmp/lodge-churn.XXXXXX)
ROOT=$WORK/root

# snapshot: one line of counts of what a sandbox could leave behind.
snapshot() {
  local ctrd fds=- rss=-
  ctrd=$(pgrep -f "containerd --config $CTRD_DIR" | head -1)
  if [ -n "$ctrd" ]; then
    fds=$(ls /proc/"$ctrd"/fd | wc -l)
    rss=$(awk '/^VmRSS:/{print int($2/1024)}' /proc/"$ctrd"/status)
  fi
  printf 'mounts=%s links=%s cgroups=%s run=%s shm=%s qemu=%s virtiofsd=%s containerd_fds=%s containerd_rss_MB=%s\n' \
    "$(wc -l < /proc/self/mountinfo)" "$(ip -o link | wc -l)" \
    "$(find /sys/fs/cgroup -type d | wc -l)" "$(find /run -mindepth 1 -maxdepth 3 ! -path '/run/lodge/templates*' | wc -l)" \
    "$(find /dev/shm -mindepth 1 | wc -l)" "$(pgrep -c qemu-system || true)" "$(pgrep -c -x virtiofsd || true)" "$fds" "$rss"
}

count() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# churn NAME CYCLE COUNT WHAT SETTLE: runs COUNT cycles (CYCLE i), P at a
# time, and reports failures (CYCLE appends to $WORK/NAME.failed and
# $WORK/NAME.err), time per cycle and the host's counts before and after.
churn() {
  local name=$1 cycle=$2 n=$3 what=$4 settle=$5 before t0 t1 i
  before=$(snapshot)
  t0=$(now_ms)
  for i in $(seq "$n"); do
    "$cycle" "$i" &
    (( i % P == 0 )) && wait
  done
  wait
  t1=$(now_ms)
  sleep "$settle"
  echo "$name: $n cycles ($what), $P at a time: $(count "$WORK/$name.failed") failed, $(( (t1 - t0) * P / n )) ms per cycle"
  echo "  before: $before"
  echo "  after:  $(snapshot)"
  if [ -s "$WORK/$name.failed" ]; then echo "  failures:"; sort -u "$WORK/$name.err" | head -5 | sed 's/^/    /'; fi
}

# ---- lodge-runtime ----
mkdir -p "$WORK/bundle"
go run ./bench/mkbundle "$WORK/bundle" sleep 600 || exit 2
rt() { "$BIN/lodge-runtime" --root "$ROOT" "$@"; }
rt_cycle() {
  local id=churn-$1
  rt create --bundle "$WORK/bundle" "$id" >/dev/null 2>>"$WORK/lodge-runtime.err" &&
    rt start "$id" 2>>"$WORK/lodge-runtime.err" &&
    [ "$(rt exec "$id" echo ok 2>>"$WORK/lodge-runtime.err")" = ok ] &&
    rt kill "$id" KILL 2>>"$WORK/lodge-runtime.err" &&
    for _ in $(seq 100); do rt state "$id" 2>/dev/null | grep -q '"stopped"' && break; sleep 0.1; done &&
    rt delete "$id" 2>>"$WORK/lodge-runtime.err" || { echo "$id" >> "$WORK/lodge-runtime.failed"; rt delete --force "$id" >/dev/null 2>&1; }
}
churn lodge-runtime rt_cycle "$N" "create, start, exec, kill -9, delete" 2
echo "  left in the state root: $(ls "$ROOT" 2>/dev/null | wc -l)"

# ---- CRI ----
if [ "$M" -gt 0 ] && [ -x "$TOOLS/setup-containerd.sh" ] && command -v crictl >/dev/null; then
  SOCK=unix://$CTRD_DIR/containerd.sock
  C=(crictl -r "$SOCK" -i "$SOCK" -t 5m)
  IMG=registry.k8s.io/e2e-test-images/busybox:1.29-2
  "$TOOLS/build-critest-images.sh" start >/dev/null
  EXTRA_HANDLERS="lodge=io.containerd.lodge.v2" SHIM_PATH=$BIN "$TOOLS/setup-containerd.sh" start >/dev/null
  trap '"$TOOLS/setup-containerd.sh" stop >/dev/null 2>&1; rm -rf "$WORK"' EXIT
  "${C[@]}" pull "$IMG" >/dev/null 2>&1
  "${C[@]}" pull registry.k8s.io/pause:3.10 >/dev/null 2>&1 || true
  cri_cycle() {
    local n=$1 pod ctr
    printf '{"metadata":{"name":"churn-%s","namespace":"churn","uid":"u-%s","attempt":1},"log_directory":"%s/logs","linux":{}}' "$n" "$n" "$WORK" > "$WORK/pod-$n.json"
    printf '{"metadata":{"name":"c"},"image":{"image":"%s"},"command":["sleep","600"],"log_path":"c-%s.log","linux":{}}' "$IMG" "$n" > "$WORK/ctr-$n.json"
    pod=$("${C[@]}" runp --runtime lodge "$WORK/pod-$n.json" 2>>"$WORK/CRI.err") &&
      ctr=$("${C[@]}" create "$pod" "$WORK/ctr-$n.json" "$WORK/pod-$n.json" 2>>"$WORK/CRI.err") &&
      "${C[@]}" start "$ctr" >/dev/null 2>>"$WORK/CRI.err" &&
      [ "$("${C[@]}" exec -s "$ctr" echo ok 2>>"$WORK/CRI.err")" = ok ] &&
      "${C[@]}" stopp "$pod" >/dev/null 2>>"$WORK/CRI.err" &&
      "${C[@]}" rmp "$pod" >/dev/null 2>>"$WORK/CRI.err" || {
      echo "$n" >> "$WORK/CRI.failed"
      [ -n "${pod:-}" ] && { "${C[@]}" stopp "$pod" >/dev/null 2>&1; "${C[@]}" rmp -f "$pod" >/dev/null 2>&1; }
    }
  }
  cri_cycle warmup
  sleep 2
  churn CRI cri_cycle "$M" "runp, create, start, exec, stopp, rmp" 5
else
  rm -rf "$WORK"
  echo "CRI: skipped (M=0, or no containerd harness in $TOOLS, or no crictl)"
fi
