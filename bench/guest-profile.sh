#!/usr/bin/env bash
# Where a pod's guest spends its CPU while containers are made in it: a
# privileged container with Debian's perf (linux-perf, from the host) runs
# `perf record -a -g` in the pod's guest while N busybox containers are
# created and started in the pod one after another, and the samples are
# summed by where they were (outside the pod's PID namespace: the agent,
# nsexec's stages, kernel threads; inside: each container's own runc init
# and program) and by system call or user code.
#
# Usage: bench/guest-profile.sh          Env: N (containers, default 10),
#   TOOLS (../shared/tools), OCITEST_BIN (/tmp/ocitest-bin: imgtool),
#   CTRD_DIR (/tmp/lodge-profile-ctrd), KEEP (a directory to keep perf's
#   script output in)
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
TOOLS=${TOOLS:-$TOP/../shared/tools}
OCITEST_BIN=${OCITEST_BIN:-/tmp/ocitest-bin}
N=${N:-10}
export CTRD_DIR=${CTRD_DIR:-/tmp/lodge-profile-ctrd}
command -v perf >/dev/null || { echo "needs perf on the host (apt-get install linux-perf)"; exit 2; }
[ -x "$OCITEST_BIN/imgtool" ] || "$TOOLS/build-ocitest-tools.sh" "$OCITEST_BIN" >/dev/null
. bench/lib.sh
cri_env guest-profile
PIMG=registry.k8s.io/e2e-test-images/lodge-perf:1
cleanup() {
  cri_stop
  rm -rf "$WORK"
}
trap cleanup EXIT

# The perf image: a busybox root with perf and the libraries it links.
"$TOOLS/build-busybox-rootfs.sh" "$WORK/root" >/dev/null 2>&1
perf=$(readlink -f "$(command -v perf)")
install -D "$perf" "$WORK/root/usr/bin/perf"
for l in $(ldd "$perf" | grep -o '/[^ ]*'); do install -D "$(readlink -f "$l")" "$WORK/root$l"; done
"$TOOLS/build-critest-images.sh" start >/dev/null
"$OCITEST_BIN/imgtool" build -rootfs "$WORK/root" -cmd '["sleep","3600"]' -push 127.0.0.1:5000/e2e-test-images/lodge-perf:1 >/dev/null
EXTRA_HANDLERS="lodge=io.containerd.lodge.v2" SHIM_PATH=$TOP/bin "$TOOLS/setup-containerd.sh" start >/dev/null
"${C[@]}" pull "$IMG" >/dev/null 2>&1
"${C[@]}" pull "$PIMG" >/dev/null 2>&1

cat > "$WORK/pod.json" <<J
{"metadata":{"name":"profile","namespace":"profile","uid":"u-$RANDOM","attempt":1},"log_directory":"$WORK/logs","linux":{"security_context":{"privileged":true}}}
J
cat > "$WORK/perf.json" <<J
{"metadata":{"name":"perf"},"image":{"image":"$PIMG"},"command":["sleep","3600"],"log_path":"perf.log","linux":{"security_context":{"privileged":true}}}
J
pod=$("${C[@]}" runp --runtime lodge "$WORK/pod.json" 2>/dev/null)
pc=$("${C[@]}" create "$pod" "$WORK/perf.json" "$WORK/pod.json" 2>/dev/null)
"${C[@]}" start "$pc" >/dev/null 2>&1
# make NAME: one busybox container created and started; prints its ms
make_ctr() {
  local t0 c
  cat > "$WORK/c.json" <<J
{"metadata":{"name":"$1"},"image":{"image":"$IMG"},"command":["sleep","3600"],"log_path":"$1.log","linux":{}}
J
  t0=$(date +%s%N)
  c=$("${C[@]}" create "$pod" "$WORK/c.json" "$WORK/pod.json" 2>/dev/null) && "${C[@]}" start "$c" >/dev/null 2>&1
  echo "$1 $(( ($(date +%s%N) - t0) / 1000000 )) ms"
}
make_ctr warm1; make_ctr warm2 # the path translated before the samples start
secs=$(( N + 6 ))
"${C[@]}" exec "$pc" perf record -q -e cpu-clock -a -g -F 997 -o /tmp/p.data -- sleep "$secs" >/dev/null 2>&1 &
rec=$!
sleep 2
for i in $(seq "$N"); do make_ctr "c$i"; done
wait "$rec"
"${C[@]}" exec "$pc" perf script -i /tmp/p.data -F comm,pid,ip,sym > "$WORK/script.txt" 2>/dev/null
[ -z "${KEEP:-}" ] || cp "$WORK/script.txt" "$KEEP/"
# Sum the samples: idle, outside the pod's PID namespace (pid 0 as the pod
# sees it), inside; and per place, the outermost system call or user code.
awk -v n="$N" '
  function flush() {
    if (!have) return
    total++
    if (first == "native_safe_halt") idle++
    else {
      where = (pid == 0) ? "outside" : "inside"
      busy[where]++
      what = (sys != "") ? sys : (first == "[unknown]" ? "user code" : "kernel, other")
      by[where "\t" what]++
    }
    have = 0; sys = ""; first = ""
  }
  /^[^ \t]/ { flush(); have = 1; pid = $2; if ($1 == "perf" || $1 == "perf-exec") have = 0; next }
  /^$/ { flush(); next }
  { if (first == "") first = $2
    if ($2 ~ /^__(x64|do)_sys_/ || $2 == "asm_exc_page_fault") sys = $2 }
  END {
    flush()
    printf "samples %d (~1 ms each), idle %d, busy outside the pod %d, inside %d: %.0f ms of guest CPU per container\n",
      total, idle, busy["outside"], busy["inside"], (busy["outside"] + busy["inside"]) / n
    for (k in by) { split(k, a, "\t"); printf "%6d  %5.1f ms/container  %-8s %s\n", by[k], by[k] / n, a[1], a[2] }
  }' "$WORK/script.txt" | { read -r head; echo "$head"; sort -n -r | head -30; }
