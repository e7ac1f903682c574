# Helpers the benchmark scripts share (sourced, not run).

# median: the median of the numbers on stdin, one per line ("nan" if none).
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit}; if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# pss_kb PID...: the summed PSS of processes, in kB (0 for one that is gone).
pss_kb() { local t=0 p v; for p in "$@"; do v=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0); t=$((t+${v:-0})); done; echo $t; }

# interleave RUNS FN VARIANT...: for each of RUNS runs, calls FN LABEL DIR
# RUN [VAR=VALUE...] for every variant in turn, each given as one argument
# "LABEL=DIR [VAR=VALUE...]" (values may hold commas, not spaces); sets
# labels to the variants' labels, in order.
interleave() {
  local runs=$1 fn=$2 r v parts
  shift 2
  labels=()
  for v in "$@"; do labels+=("${v%%=*}"); done
  for r in $(seq "$runs"); do
    for v in "$@"; do
      read -r -a parts <<< "$v"
      "$fn" "${parts[0]%%=*}" "${parts[0]#*=}" "$r" "${parts[@]:1}"
    done
  done
}

# cri_env NAME: checks for the shared harness ($TOOLS) and crictl, and sets
# SOCK and C (crictl on $CTRD_DIR's private containerd), IMG (the busybox
# image the CRI benchmarks run) and WORK (a new /tmp/lodge-NAME.XXXXXX).
cri_env() {
  [ -x "$TOOLS/setup-containerd.sh" ] || { echo "need the shared harness in $TOOLS (set TOOLS=)"; exit 2; }
  command -v crictl >/dev/null || { echo "crictl not found (make deps installs it)"; exit 2; }
  SOCK=unix://$CTRD_DIR/containerd.sock
  C=(crictl -r "$SOCK" -i "$SOCK" -t 5m)
  IMG=registry.k8s.io/e2e-test-images/busybox:1.29-2
  WORK=$(mktemp -d "/tmp/lodge-$1.XXXXXX")
}

# cri_stop: stops and removes every pod of $CTRD_DIR's containerd (so its
# shims end their VMs), then stops it.
cri_stop() {
  local p
  for p in $("${C[@]}" pods -q 2>/dev/null); do "${C[@]}" stopp "$p" >/dev/null 2>&1; "${C[@]}" rmp -f "$p" >/dev/null 2>&1; done
  "$TOOLS/setup-containerd.sh" stop >/dev/null 2>&1 || true
}

# lodge_pids ID: the supervisor's and the VM's (QEMU's) PIDs of the lodge
# container ID, from its state record.
lodge_pids() { python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["pid"], r["vm_procs"][0]["pid"])' "/run/lodge/lodge/$1/state.json"; }

# lodge_work NAME: sets WORK (a new /tmp/lodge-NAME.XXXXXX) and ids (the
# lodge containers the script starts: add each one's ID), and removes both
# when the script exits. Needs BIN.
lodge_work() {
  WORK=$(mktemp -d "/tmp/lodge-$1.XXXXXX")
  ids=()
  trap '((${#ids[@]})) && "$BIN/lodge" rm -f "${ids[@]}" >/dev/null 2>&1; rm -rf "$WORK"' EXIT
}

# descendants PID: PID and every process below it.
descendants() { local p=$1 c; echo "$p"; for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do descendants "$c"; done; }

# pod_pids POD: the processes serving one pod (its shim and descendants;
# for a pooled clone, its keeper and QEMU, which the shim adopted)
pod_pids() {
  local pod=$1 shim l
  shim=$(pgrep -f "containerd-shim-.*-address $CTRD_DIR/containerd.sock" | while read -r s; do
    if grep -qa "$pod" /proc/"$s"/cmdline 2>/dev/null; then echo "$s"; fi; done | head -1)
  [ -n "$shim" ] || return 0
  # a keeper the shim started to refill the pool is the pool's, not the pod's
  descendants "$shim" | while read -r p; do
    k=$p; while [ -n "$k" ] && [ "$k" != "$shim" ] && [ "$k" != 1 ]; do
      grep -qa __lodge-pool-keeper /proc/"$k"/cmdline 2>/dev/null && continue 2
      k=$(awk '{print $4}' /proc/"$k"/stat 2>/dev/null)
    done
    echo "$p"
  done
  for l in /run/lodge/templates/.pool/*/vm-*/keeper.log; do
    grep -q "claimant_pid=$shim\b" "$l" 2>/dev/null && descendants "$(cat "${l%/keeper.log}/keeper.pid")"
  done
  return 0
}
# pod_pss POD: PSS (kB) of the processes serving one pod
pod_pss() { local pids; pids=$(pod_pids "$1"); [ -n "$pids" ] && pss_kb $pids || echo 0; }
# ticks PID...: CPU time (user + system, clock ticks) of processes so far
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
