#!/usr/bin/env bash
# lodge diff, commit and build against `lodge run --rm busybox true` in the
# same script, interleaved run by run (the built-in busybox image):
#   diff      lodge diff of a running container that wrote 4 MiB in 64 files
#   commit    lodge commit of it (frozen while its guest reads its layer)
#   ended     lodge commit of it once ended (read by a VM made for that)
#   build     lodge build of FROM busybox, COPY of a 1 MiB file, one RUN,
#             --no-cache (every step runs; the RUN in a microVM of its own)
#   cached    the same build again, every step from the cache
#   run       lodge run --rm busybox true (the baseline)
# Prints every run, then the medians and commit/run, build/run.
#
# Usage: bench/commit.sh  (env: RUNS, default 5; BIN, default ./bin)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-5} BIN=${BIN:-$PWD/bin}
WORK=$(mktemp -d /tmp/lodge-commit-bench.XXXXXX)
L="$BIN/lodge"
cleanup() {
	"$L" rm -f lodge-bench-commit >/dev/null 2>&1 || true
	for i in $(seq "$RUNS"); do "$L" rmi "lodge-bench:$i" "lodge-bench:e$i" >/dev/null 2>&1 || true; done
	"$L" rmi lodge-bench:built >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT
ms() { echo $(( $(date +%s%N) / 1000000 )); }
mkdir "$WORK/ctx"
head -c 1048576 /dev/urandom > "$WORK/ctx/blob"
printf 'FROM busybox\nCOPY blob /data/blob\nRUN md5sum /data/blob > /data/sum\n' > "$WORK/ctx/Dockerfile"
declare -A t
"$L" run --rm --network none busybox true >/dev/null   # any template is built before timing
for r in $(seq "$RUNS"); do
	"$L" run -d --name lodge-bench-commit --network none busybox sh -c \
		'for i in $(seq 64); do head -c 65536 /dev/urandom > /f$i; done; touch /ready; exec sleep 1000' >/dev/null
	until "$L" exec lodge-bench-commit test -e /ready 2>/dev/null; do sleep 0.2; done
	t0=$(ms); "$L" diff lodge-bench-commit >/dev/null; t1=$(ms)
	"$L" commit lodge-bench-commit "lodge-bench:$r" >/dev/null; t2=$(ms)
	"$L" stop -t 0 lodge-bench-commit >/dev/null
	t3=$(ms); "$L" commit lodge-bench-commit "lodge-bench:e$r" >/dev/null; t4=$(ms)
	"$L" rm -f lodge-bench-commit >/dev/null
	t5=$(ms); "$L" build -q --no-cache --network none -t lodge-bench:built "$WORK/ctx" >/dev/null; t6=$(ms)
	"$L" build -q --network none -t lodge-bench:built "$WORK/ctx" >/dev/null; t7=$(ms)
	"$L" run --rm --network none busybox true >/dev/null; t8=$(ms)
	echo "run $r: diff $((t1-t0)) commit $((t2-t1)) ended $((t4-t3)) build $((t6-t5)) cached $((t7-t6)) run $((t8-t7)) ms"
	t[diff]+="$((t1-t0)) " t[commit]+="$((t2-t1)) " t[ended]+="$((t4-t3)) " t[build]+="$((t6-t5)) " t[cached]+="$((t7-t6)) " t[run]+="$((t8-t7)) "
done
m() { echo "${t[$1]}" | tr ' ' '\n' | grep . | median; }
for k in diff commit ended build cached run; do echo "$k: median $(m $k) ms of $RUNS"; done
awk -v c="$(m commit)" -v e="$(m ended)" -v b="$(m build)" -v r="$(m run)" \
	'BEGIN{printf "commit/run %.2f, ended commit/run %.2f, build/run %.2f\n", c/r, e/r, b/r}'
