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
