#!/usr/bin/env bash
# CRI start-up and footprint benchmark: Lodge (handler "lodge": pods start as
# clones of a template, container roots are built in the guest from layer
# images; "lodge-cold": the same handler on a containerd whose shims get
# LODGE_CONFIG with templates off, so every pod boots a kernel; "lodge-9p":
# templates on, layer images off, so roots are host directories shared over
# 9p; "lodge-pool": templates with a pool of POOL clones per template, each
# round started once the pool is full) against runc (handler "runc") in the
# same run, on a private containerd.
#
# Prints, per mode and concurrency (1, 4 and 10):
#   runp   median ms of `crictl runp` until the pod is SANDBOX_READY (the
#          metric RunD reports)
#   start  median ms of `crictl create` + `crictl start` of a container in a
#          ready pod (its first)
#   next   with NEXT=1: the same for a second container of the same image in
#          that pod, made once the first runs (then stopped and removed before
#          PSS is read; it leaves its guest pages, so compare PSS within NEXT)
#   pss    median host PSS per pod in MB (lodge: shim + QEMU + virtiofsd;
#          runc: shim + pause + container), read from smaps_rollup while idle
#   cpu    median host CPU per idle pod, in % of one CPU, over IDLE seconds
#          (default 10) with every pod of the round alive
#   rate   pods started per second: the round's pods divided by the time
#          from launching them all at once until the last is ready (median)
# and the lodge/runc ratios.
#
# Usage: bench/cri.sh            Env: ROUNDS (default 5), CONC (default "1 4 10"),
#   MODES (default "runc lodge lodge-9p lodge-cold"; also lodge-pool), POOL (1), NEXT,
#   TOOLS (../shared/tools: setup-containerd.sh, build-critest-images.sh),
#   CTRD_DIR (/tmp/lodge-bench-ctrd), CTRD_BIN/CTR (containerd 2.x, optional)
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
TOOLS=${TOOLS:-$TOP/../shared/tools}
ROUNDS=${ROUNDS:-5}
CONC=${CONC:-1 4 10}
MODES=${MODES:-runc lodge lodge-9p lodge-cold}
IDLE=${IDLE:-10}
export CTRD_DIR=${CTRD_DIR:-/tmp/lodge-bench-ctrd}
. bench/lib.sh
cri_env bench-cri

"$TOOLS/build-critest-images.sh" start >/dev/null
# ctrd warm|cold|9p: (re)starts the private containerd; "cold" hands its
# shims a config with templates off, "9p" one with layer images off
# (containerd passes its environment to shims).
printf '[template]\nenabled = false\n' > "$WORK/cold.toml"
printf '[layers]\nenabled = false\n' > "$WORK/9p.toml"
POOL=${POOL:-1}
printf '[template]\npool = %d\n' "$POOL" > "$WORK/pool.toml"
# pool_ready N: waits (up to 3 min) until N clones are pooled
pool_ready() {
  local i
  for i in $(seq 1800); do
    [ "$(ls /run/lodge/templates/.pool/*/vm-*/ready 2>/dev/null | wc -l)" -ge "$1" ] && return 0
    sleep 0.1
  done
  echo "the pool did not fill: $(cat /run/lodge/templates/.pool/*/last-error 2>/dev/null)" >&2
}
CTRD_MODE=""
ctrd() {
  [ "$CTRD_MODE" = "$1" ] && return 0
  "$TOOLS/setup-containerd.sh" stop >/dev/null 2>&1 || true
  if [ "$1" != warm ]; then
    LODGE_CONFIG=$WORK/$1.toml EXTRA_HANDLERS="lodge=io.containerd.lodge.v2" SHIM_PATH=$TOP/bin "$TOOLS/setup-containerd.sh" start >/dev/null
  else
    EXTRA_HANDLERS="lodge=io.containerd.lodge.v2" SHIM_PATH=$TOP/bin "$TOOLS/setup-containerd.sh" start >/dev/null
  fi
  CTRD_MODE=$1
}
ctrd warm
cleanup() {
  cri_stop
  # pooled clones are no containerd's: end them
  [ -e "$WORK/pool.toml" ] && LODGE_CONFIG=$WORK/pool.toml "$TOP/bin/lodge" template drain >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
"${C[@]}" pull "$IMG" >/dev/null 2>&1
"${C[@]}" pull registry.k8s.io/pause:3.10 >/dev/null 2>&1 || true

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }


# one_pod HANDLER N: runs pod N, records runp and start times and PSS
one_pod() {
  local h=$1 n=$2 t0 t1 pod ctr rt=${1%%-*}
  cat > "$WORK/pod-$h-$n.json" <<J
{"metadata":{"name":"b-$h-$n","namespace":"bench","uid":"u-$h-$n-$RANDOM","attempt":1},"log_directory":"$WORK/logs","linux":{}}
J
  cat > "$WORK/ctr-$h-$n.json" <<J
{"metadata":{"name":"c"},"image":{"image":"$IMG"},"command":["sleep","3600"],"log_path":"c-$h-$n.log","linux":{}}
J
  t0=$(now_ms); pod=$("${C[@]}" runp --runtime "$rt" "$WORK/pod-$h-$n.json" 2>/dev/null); t1=$(now_ms)
  [ "$("${C[@]}" inspectp -o go-template --template '{{.status.state}}' "$pod" 2>/dev/null)" = SANDBOX_READY ] || { echo "pod $h-$n not ready" >&2; return 1; }
  echo $((t1-t0)) >> "$WORK/runp-$h-$3"
  t0=$(now_ms)
  ctr=$("${C[@]}" create "$pod" "$WORK/ctr-$h-$n.json" "$WORK/pod-$h-$n.json" 2>/dev/null) && "${C[@]}" start "$ctr" >/dev/null 2>&1
  t1=$(now_ms)
  echo $((t1-t0)) >> "$WORK/start-$h-$3"
  if [ -n "${NEXT:-}" ]; then
    sed 's/"name":"c"/"name":"c2"/; s/"log_path":"c-/"log_path":"c2-/' "$WORK/ctr-$h-$n.json" > "$WORK/ctr2-$h-$n.json"
    t0=$(now_ms)
    ctr=$("${C[@]}" create "$pod" "$WORK/ctr2-$h-$n.json" "$WORK/pod-$h-$n.json" 2>/dev/null) && "${C[@]}" start "$ctr" >/dev/null 2>&1
    t1=$(now_ms)
    echo $((t1-t0)) >> "$WORK/next-$h-$3"
    "${C[@]}" stop -t 0 "$ctr" >/dev/null 2>&1; "${C[@]}" rm "$ctr" >/dev/null 2>&1
  fi
  echo "$pod" >> "$WORK/pods-$h-$3"
}

HZ=$(getconf CLK_TCK)
printf '%-10s %4s %10s %10s %8s %8s %8s%s\n' mode conc runp_ms start_ms pss_MB cpu_% pods/s "${NEXT:+    next_ms}"
declare -A R
for conc in $CONC; do
  for h in $MODES; do
    case $h in lodge-cold) ctrd cold ;; lodge-9p) ctrd 9p ;; lodge-pool) ctrd pool ;; *) ctrd warm ;; esac
    : > "$WORK/runp-$h-$conc"; : > "$WORK/start-$h-$conc"; : > "$WORK/pss-$h-$conc"; : > "$WORK/cpu-$h-$conc"; : > "$WORK/rate-$h-$conc"; : > "$WORK/next-$h-$conc"
    for r in $(seq "$ROUNDS"); do
      : > "$WORK/pods-$h-$conc"
      if [ "$h" = lodge-pool ]; then
        # the first round's first pod fills the pool; every round waits for it
        [ "$r" != 1 ] || { one_pod "$h" "fill" fill >/dev/null 2>&1; for p in $(cat "$WORK/pods-$h-fill"); do "${C[@]}" stopp "$p" >/dev/null 2>&1; "${C[@]}" rmp -f "$p" >/dev/null 2>&1; done; }
        pool_ready $(( conc < POOL ? conc : POOL ))
      fi
      for i in $(seq "$conc"); do one_pod "$h" "$r-$i" "$conc" & done
      wait
      # one_pod's runp times end at each pod's ready; the slowest is the max
      echo "scale=2; $conc * 1000 / $(tail -n "$conc" "$WORK/runp-$h-$conc" | sort -n | tail -1)" | bc >> "$WORK/rate-$h-$conc"
      sleep 2
      for p in $(cat "$WORK/pods-$h-$conc"); do echo $(( $(pod_pss "$p") / 1024 )) >> "$WORK/pss-$h-$conc"; done
      declare -A T0=()
      for p in $(cat "$WORK/pods-$h-$conc"); do T0[$p]=$(ticks $(pod_pids "$p")); done
      sleep "$IDLE"
      for p in $(cat "$WORK/pods-$h-$conc"); do
        echo "scale=2; ($(ticks $(pod_pids "$p")) - ${T0[$p]}) * 100 / ($HZ * $IDLE)" | bc >> "$WORK/cpu-$h-$conc"
      done
      for p in $(cat "$WORK/pods-$h-$conc"); do "${C[@]}" stopp "$p" >/dev/null 2>&1; "${C[@]}" rmp -f "$p" >/dev/null 2>&1; done
    done
    R[$h-$conc-runp]=$(median < "$WORK/runp-$h-$conc")
    R[$h-$conc-start]=$(median < "$WORK/start-$h-$conc")
    R[$h-$conc-pss]=$(median < "$WORK/pss-$h-$conc")
    R[$h-$conc-cpu]=$(median < "$WORK/cpu-$h-$conc")
    R[$h-$conc-rate]=$(median < "$WORK/rate-$h-$conc")
    next=""; [ -z "${NEXT:-}" ] || next=$(printf ' %10s' "$(median < "$WORK/next-$h-$conc")")
    printf '%-10s %4s %10s %10s %8s %8s %8s%s\n' "$h" "$conc" "${R[$h-$conc-runp]}" "${R[$h-$conc-start]}" "${R[$h-$conc-pss]}" "${R[$h-$conc-cpu]}" "${R[$h-$conc-rate]}" "$next"
  done
  for pair in "lodge runc" "lodge lodge-cold" "lodge lodge-9p" "lodge-pool lodge" "lodge-pool runc"; do
    set -- $pair
    [ -n "${R[$1-$conc-runp]:-}" ] && [ -n "${R[$2-$conc-runp]:-}" ] || continue
    printf '%-10s %4s %10s %10s %8s\n' "$1/${2#lodge-}" "$conc" \
      "$(echo "scale=2; ${R[$1-$conc-runp]}/${R[$2-$conc-runp]}" | bc)" \
      "$(echo "scale=2; ${R[$1-$conc-start]}/${R[$2-$conc-start]}" | bc)" \
      "$(echo "scale=2; ${R[$1-$conc-pss]}/(${R[$2-$conc-pss]}+0.001)" | bc)"
  done
done
echo "templates (shared by all clones; each clone's PSS holds its share): $(du -sm --exclude=.pool /run/lodge/templates 2>/dev/null | cut -f1) MB in /run/lodge/templates"
if [ -e "$WORK/pool.toml" ] && ls /run/lodge/templates/.pool/*/vm-*/ready >/dev/null 2>&1; then
  pp=""; for r in /run/lodge/templates/.pool/*/vm-*/ready; do pp="$pp $(descendants "$(cat "${r%/ready}/keeper.pid")")"; done
  echo "pool: $(ls /run/lodge/templates/.pool/*/vm-*/ready | wc -l) clone(s) waiting, $(( $(pss_kb $pp) / 1024 )) MB PSS (keepers + QEMU)"
fi
echo "rounds=$ROUNDS load: $(cut -d' ' -f1-3 /proc/loadavg)"
