#!/usr/bin/env bash
# A/B benchmark of `lodge run --rm busybox true` (the whole command: a
# clone's start, the container, its teardown): two or more builds of
# `lodge`, interleaved run by run so that this host's drift hits each alike.
# Prints every run's wall time, then each variant's median.
#
# Usage: bench/run-ab.sh LABEL=BINDIR LABEL=BINDIR...
#   e.g. bench/run-ab.sh old=/tmp/ab/old/bin new=$PWD/bin
#   Env: RUNS (runs per variant, default 9). Each variant runs once first,
#   unmeasured (a template it keys differently is built then).
set -euo pipefail
RUNS=${RUNS:-9}
labels=() dirs=()
for v in "$@"; do
	labels+=("${v%%=*}") dirs+=("${v#*=}")
done
ms() { date +%s%N | awk '{printf "%d", $1/1e6}'; }
declare -A times
for i in "${!labels[@]}"; do
	"${dirs[$i]}/lodge" run --rm busybox true >/dev/null
done
for r in $(seq "$RUNS"); do
	for i in "${!labels[@]}"; do
		t0=$(ms)
		"${dirs[$i]}/lodge" run --rm busybox true >/dev/null
		t=$(( $(ms) - t0 ))
		echo "run $r ${labels[$i]} ${t} ms"
		times[${labels[$i]}]+="$t "
	done
done
for l in "${labels[@]}"; do
	echo "${l}: median $(echo "${times[$l]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}') ms of ${RUNS}"
done
