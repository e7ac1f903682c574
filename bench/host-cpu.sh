#!/usr/bin/env bash
# Where the host's CPU goes when a pod starts: PODS CRI pods started one
# after another on a private containerd (`crictl runp`, then `create` +
# `start` of a busybox container), and for each, the CPU time every part
# took from runp's call to the container's start, split into
#   guest    QEMU's vCPU threads: the guest's own work (emulated under TCG;
#            under KVM the guest runs natively and this shrinks most)
#   qemu     QEMU's other threads: its start, the restore, its devices
#            (9p, virtio-serial, the network), the main loop
#   shim     the pod's shim and the helpers it started, running or reaped
#            (QEMU excluded; for runc, runc itself)
#   ctrd     containerd, with the processes it ran and reaped (the shim's
#            bootstrap, CNI plugins)
#   crictl   the client calls themselves
#   lodge    qemu + shim: what Lodge itself costs the host besides the
#            guest's CPU (for runc: its shim and runc)
# in ms per pod, then the medians. Kernel threads and the host's other
# work are not counted (/proc/stat is tick-sampled, and in a VM host not
# comparable with the processes' own figures).
#
# Usage: bench/host-cpu.sh        Env: PODS (default 8), WARM (pods started
#   and dropped first, default 1), HANDLER (default lodge; runc for the
#   baseline), TOOLS (../shared/tools), CTRD_DIR (/tmp/lodge-hostcpu-ctrd)
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
TOOLS=${TOOLS:-$TOP/../shared/tools}
PODS=${PODS:-8} WARM=${WARM:-1} HANDLER=${HANDLER:-lodge}
export CTRD_DIR=${CTRD_DIR:-/tmp/lodge-hostcpu-ctrd}
. bench/lib.sh
cri_env host-cpu
cleanup() {
  cri_stop
  rm -rf "$WORK"
}
trap cleanup EXIT
"$TOOLS/build-critest-images.sh" start >/dev/null
EXTRA_HANDLERS="lodge=io.containerd.lodge.v2" SHIM_PATH=$TOP/bin "$TOOLS/setup-containerd.sh" start >/dev/null
"${C[@]}" pull "$IMG" >/dev/null 2>&1
HZ=$(getconf CLK_TCK)
CTRD=$(cat "$CTRD_DIR/containerd.pid")

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# self_ticks PID: CPU time of a process and of its reaped children
self_ticks() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }
# vcpu_ms PID: CPU time of QEMU's vCPU threads ("CPU n/TCG", "CPU n/KVM"),
# in ms, from their schedstat (a thread's ticks in /proc are sampled, and
# short by a tenth or more on some hosts; a process's total is not)
vcpu_ms() {
  local t=0 d
  for d in /proc/"$1"/task/*; do
    case $(cat "$d/comm" 2>/dev/null) in "CPU "*) t=$((t + $(awk '{print $1}' "$d/schedstat") / 1000000)) ;; esac
  done
  echo $t
}
ms() { echo $(( $1 * 1000 / HZ )); }

# one_pod N: starts pod N and its container; prints the line of figures
one_pod() {
  local n=$1 c0 s0 t0 t1 t2 pod ctr pids qemu="" p q g s me=$BASHPID
  cat > "$WORK/pod.json" <<J
{"metadata":{"name":"h-$n","namespace":"hostcpu","uid":"u-$n-$RANDOM","attempt":1},"log_directory":"$WORK/logs","linux":{}}
J
  cat > "$WORK/c.json" <<J
{"metadata":{"name":"c"},"image":{"image":"$IMG"},"command":["sleep","3600"],"log_path":"c.log","linux":{}}
J
  s0=$(self_ticks "$me"); c0=$(self_ticks "$CTRD"); t0=$(now_ms)
  pod=$("${C[@]}" runp --runtime "$HANDLER" "$WORK/pod.json" 2>"$WORK/err") || { echo "pod $n: $(cat "$WORK/err")" >&2; exit 1; }
  t1=$(now_ms)
  ctr=$("${C[@]}" create "$pod" "$WORK/c.json" "$WORK/pod.json" 2>"$WORK/err") && "${C[@]}" start "$ctr" >/dev/null 2>"$WORK/err" ||
    { echo "pod $n: container: $(cat "$WORK/err")" >&2; exit 1; }
  t2=$(now_ms)
  local c=$(( $(self_ticks "$CTRD") - c0 )) cr=$(( $(self_ticks "$me") - s0 ))
  pids=$(pod_pids "$pod")
  for p in $pids; do case $(cat "/proc/$p/comm" 2>/dev/null) in qemu-system*) qemu="$qemu $p" ;; esac; done
  g=0; q=0
  for p in $qemu; do g=$((g + $(vcpu_ms "$p"))); q=$((q + $(ticks "$p"))); done
  # the shim's children it reaped (its helpers) count as the shim's
  s=$(ms $(( $(ticks $pids) - q + $(awk '{print $16+$17}' "/proc/$(head -1 <<< "$pids")/stat") )))
  q=$(( $(ms "$q") - g ))
  echo "$((t1 - t0)) $((t2 - t1)) $g $q $s $(ms "$c") $(ms "$cr") $((q + s))"
  "${C[@]}" stopp "$pod" >/dev/null 2>&1; "${C[@]}" rmp "$pod" >/dev/null 2>&1
}

cols="runp start guest qemu shim ctrd crictl lodge"
for n in $(seq "$WARM"); do one_pod "w$n" > /dev/null; done
printf '%-4s' pod; for c in $cols; do printf ' %8s' "$c"; done; echo
for n in $(seq "$PODS"); do
  line=$(one_pod "$n")
  echo "$line" >> "$WORK/lines"
  printf '%-4s' "$n"; for v in $line; do printf ' %8s' "$v"; done; echo
done
printf '%-4s' med
i=1; for c in $cols; do printf ' %8s' "$(awk -v i=$i '{print $i}' "$WORK/lines" | median)"; i=$((i + 1)); done; echo
echo "handler=$HANDLER pods=$PODS ms (runp, start: wall; the rest: CPU over both) load: $(cut -d' ' -f1-3 /proc/loadavg)"
