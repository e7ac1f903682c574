#!/usr/bin/env bash
# Guest CPU work under each of several Lodge builds: a container (through
# lodge-runtime run, a clone of that build's template) times, with the
# guest's own clock (10 ms resolution), 100 fork+execs of /bin/true (page zeroing and copies in
# the guest kernel: what a shell script or a build does) and a 32 MB pipe
# copy. Builds alternate run by run; prints each run and the medians.
#
# Usage: bench/guest-exec.sh "LABEL=BINDIR [VAR=VALUE...]" ...
#   Env: RUNS (default 5). A build whose guest differs must key its own
#   templates (Lodge's template key does this for its own changes).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
(($# >= 1)) || { sed -n '2,11p' "$0"; exit 2; }
WORK=$(mktemp -d /tmp/lodge-guest-exec.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
# (busybox's date has no %N: milliseconds from /proc/uptime's centiseconds)
../shared/tools/make-bundle.sh "$WORK/bundle" sh -c 'ms() { read -r u _ < /proc/uptime; f=${u#*.}; echo $((${u%.*} * 1000 + 10 * (1$f - 100))); }; s=$(ms); i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done; e=$(ms); head -c 32000000 /dev/zero | cat >/dev/null; p=$(ms); echo $((e-s)) $((p-e))' >/dev/null 2>&1 ||
  { echo "need ../shared/tools/make-bundle.sh"; exit 2; }
. bench/lib.sh
# one_run LABEL BINDIR RUN [VAR=VALUE...]
one_run() {
  local label=$1 dir=$2 r=$3 out ex cp
  shift 3
  out=$(env "$@" "$dir/lodge-runtime" --root "$WORK/root" run -b "$WORK/bundle" "ge-$label-$r" 2>&1) || { echo "$label: $out"; exit 1; }
  read -r ex cp <<< "$(tail -1 <<< "$out")"
  echo "$label run $r: 100 execs $ex ms, 32 MB pipe $cp ms"
  echo "$ex" >> "$WORK/$label.exec"
  echo "$cp" >> "$WORK/$label.pipe"
}
interleave "$RUNS" one_run "$@"
echo
printf '%-8s %14s %14s\n' build execs_ms pipe_ms
for l in "${labels[@]}"; do
  printf '%-8s %14s %14s\n' "$l" "$(median < "$WORK/$l.exec")" "$(median < "$WORK/$l.pipe")"
done
