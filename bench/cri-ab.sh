#!/usr/bin/env bash
# A/B benchmark of container start in ready pods: two or more builds (or
# configurations) of the Lodge shim, interleaved run by run on one private
# containerd each time, so that this host's drift hits every variant alike.
# Each run of a variant starts containerd with that variant's shim, makes
# PODS pods one after another and CTRS busybox containers in each
# (`crictl create` + `crictl start` of a `sleep`), and stops it all.
#
# Prints one line per pod (runp and each container's ms), then per variant
# the medians of runp, of the first containers and of the later ones.
#
# Usage: bench/cri-ab.sh "LABEL=SHIMDIR [VAR=VALUE...]" "LABEL=SHIMDIR ..."...
#   e.g. bench/cri-ab.sh A=$PWD/bin "B=/tmp/other/bin LODGE_CONFIG=/tmp/b.toml"
#   (the variables are set for that variant's containerd and so its shims)
#   Env: RUNS (runs per variant, default 3), PODS (3), CTRS (4),
#   TOOLS (../shared/tools), CTRD_DIR (/tmp/lodge-ab-ctrd), CTR_LINUX (the
#   containers' CRI "linux" section, default {}; e.g.
#   '{"security_context":{"seccomp":{"profile_type":0}}}' (RuntimeDefault)),
#   POD_LINUX (the pods' CRI "linux" section, default {}; the same seccomp
#   section gives the pod's sandbox container the profile),
#   EXECS (after its containers, each pod times this many `crictl exec` of
#   `true` in its last container; default 0).
# A variant with its own guest must have its own template directory
# (LODGE_CONFIG with [template] dir), or its clones restore another's.
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
TOOLS=${TOOLS:-$TOP/../shared/tools}
RUNS=${RUNS:-3} PODS=${PODS:-3} CTRS=${CTRS:-4} CTR_LINUX=${CTR_LINUX:-"{}"} POD_LINUX=${POD_LINUX:-"{}"} EXECS=${EXECS:-0}
export CTRD_DIR=${CTRD_DIR:-/tmp/lodge-ab-ctrd}
(($# >= 2)) || { sed -n '2,20p' "$0"; exit 2; }
. bench/lib.sh
cri_env cri-ab
cleanup() {
  cri_stop
  rm -rf "$WORK"
}
trap cleanup EXIT
"$TOOLS/build-critest-images.sh" start >/dev/null
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# run_variant LABEL SHIMDIR RUN [VAR=VALUE...]
run_variant() {
  local label=$1 dir=$2 p n pod ctr t0 t1 line
  shift 3
  env "$@" EXTRA_HANDLERS="lodge=io.containerd.lodge.v2" SHIM_PATH="$dir" "$TOOLS/setup-containerd.sh" start >/dev/null
  "${C[@]}" pull "$IMG" >/dev/null 2>&1
  for p in $(seq "$PODS"); do
    cat > "$WORK/pod.json" <<J
{"metadata":{"name":"ab-$p","namespace":"ab","uid":"u-$p-$RANDOM","attempt":1},"log_directory":"$WORK/logs","linux":$POD_LINUX}
J
    t0=$(now_ms); pod=$("${C[@]}" runp --runtime lodge "$WORK/pod.json" 2>"$WORK/err") ||
      { echo "$label: pod $p: $(cat "$WORK/err")" >&2; exit 1; }
    t1=$(now_ms)
    line="$label runp $((t1-t0))"
    echo $((t1-t0)) >> "$WORK/$label.runp"
    for n in $(seq "$CTRS"); do
      cat > "$WORK/c.json" <<J
{"metadata":{"name":"c$n"},"image":{"image":"$IMG"},"command":["sleep","3600"],"log_path":"c$n.log","linux":$CTR_LINUX}
J
      t0=$(now_ms)
      ctr=$("${C[@]}" create "$pod" "$WORK/c.json" "$WORK/pod.json" 2>"$WORK/err") && "${C[@]}" start "$ctr" >/dev/null 2>"$WORK/err" ||
        { echo "$label: container c$n: $(cat "$WORK/err")" >&2; exit 1; }
      t1=$(now_ms)
      line="$line c$n $((t1-t0))"
      if ((n == 1)); then echo $((t1-t0)) >> "$WORK/$label.first"; else echo $((t1-t0)) >> "$WORK/$label.later"; fi
    done
    for n in $(seq "$EXECS"); do
      t0=$(now_ms)
      "${C[@]}" exec "$ctr" true >/dev/null 2>"$WORK/err" || { echo "$label: exec: $(cat "$WORK/err")" >&2; exit 1; }
      t1=$(now_ms)
      line="$line x$n $((t1-t0))"
      echo $((t1-t0)) >> "$WORK/$label.exec"
    done
    echo "$line"
    "${C[@]}" stopp "$pod" >/dev/null 2>&1; "${C[@]}" rmp "$pod" >/dev/null 2>&1
  done
  "$TOOLS/setup-containerd.sh" stop >/dev/null 2>&1
}

interleave "$RUNS" run_variant "$@"
echo
printf '%-8s %8s %12s %12s %8s %8s\n' variant runp first_ms later_ms later_n exec_ms
for l in "${labels[@]}"; do
  printf '%-8s %8s %12s %12s %8s %8s\n' "$l" "$(median < "$WORK/$l.runp")" "$(median < "$WORK/$l.first")" \
    "$(median < "$WORK/$l.later")" "$(wc -l < "$WORK/$l.later")" "$( ((EXECS > 0)) && median < "$WORK/$l.exec" || echo -)"
done
