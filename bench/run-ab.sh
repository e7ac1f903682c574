#!/usr/bin/env bash
# A/B benchmark of `lodge run --rm busybox true` (the whole command: a
# clone's start, the container, its teardown): two or more builds of
# `lodge`, interleaved run by run so that this host's drift hits each alike.
# Prints every run's wall time, then each variant's median.
#
# Usage: bench/run-ab.sh LABEL=BINDIR LABEL=BINDIR...
#   e.g. bench/run-ab.sh old=/tmp/ab/old/bin new=$PWD/bin
#   Env: RUNS (runs per variant, default 9); KEEP=1 times `lodge run`
#   without --rm (the container kept, so its writable layer is flushed as
#   its VM ends) and removes it after, untimed. Each variant runs once
#   first, unmeasured (a template it keys differently is built then).
set -euo pipefail
RUNS=${RUNS:-9} KEEP=${KEEP:-0}
labels=() dirs=()
for v in "$@"; do
	labels+=("${v%%=*}") dirs+=("${v#*=}")
done
ms() { echo $(( $(date +%s%N) / 1000000 )); }
declare -A times
for i in "${!labels[@]}"; do
	"${dirs[$i]}/lodge" run --rm busybox true >/dev/null
done
for r in $(seq "$RUNS"); do
	for i in "${!labels[@]}"; do
		t0=$(ms)
		if [ "$KEEP" = 1 ]; then
			"${dirs[$i]}/lodge" run --name run-ab busybox true >/dev/null
			t=$(( $(ms) - t0 ))
			"${dirs[$i]}/lodge" rm run-ab >/dev/null
		else
			"${dirs[$i]}/lodge" run --rm busybox true >/dev/null
			t=$(( $(ms) - t0 ))
		fi
		echo "run $r ${labels[$i]} ${t} ms"
		times[${labels[$i]}]+="$t "
	done
done
for l in "${labels[@]}"; do
	echo "${l}: median $(echo "${times[$l]}" | tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}') ms of ${RUNS}"
done
