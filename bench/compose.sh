#!/usr/bin/env bash
# lodge compose against the lodge commands it stands for, in the same
# script, interleaved run by run (the built-in busybox image):
#   up        lodge compose up -d of three services on the project's network
#             (one depends on another), from nothing: network and containers
#   again     lodge compose up -d once more, nothing changed (left running)
#   down      lodge compose down: containers stopped (each ends at SIGTERM)
#             and removed, and the network
#   by hand   the same three containers with lodge network create, three
#             lodge run -d, lodge stop, lodge rm, lodge network rm (the baseline)
# Prints every run, then the medians and up/by-hand.
#
# Usage: bench/compose.sh  (env: RUNS, default 5; BIN, default ./bin)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-5} BIN=${BIN:-$PWD/bin}
WORK=$(mktemp -d /tmp/lodge-compose-bench.XXXXXX)
L="$BIN/lodge"
cleanup() {
	"$L" compose -f "$WORK/compose.yaml" -p lodgebench down >/dev/null 2>&1 || true
	"$L" rm -f lodgebench-a lodgebench-b lodgebench-c >/dev/null 2>&1 || true
	"$L" network rm lodgebench-net >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT
ms() { echo $(( $(date +%s%N) / 1000000 )); }
cat > "$WORK/compose.yaml" <<'YAML'
x-app: &app
  image: busybox
  command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
services:
  a: *app
  b: {<<: *app, depends_on: [a]}
  c: *app
YAML
C=("$L" compose -f "$WORK/compose.yaml" -p lodgebench)
declare -A t
"$L" run --rm --network none busybox true >/dev/null   # any template is built before timing
for r in $(seq "$RUNS"); do
	t0=$(ms); "${C[@]}" up -d 2>/dev/null; t1=$(ms)
	"${C[@]}" up -d 2>/dev/null; t2=$(ms)
	"${C[@]}" down 2>/dev/null; t3=$(ms)
	"$L" network create lodgebench-net >/dev/null
	for s in a b c; do "$L" run -d --name "lodgebench-$s" --network lodgebench-net busybox sh -c "trap 'exit 0' TERM; while :; do sleep 1; done" >/dev/null; done
	"$L" stop lodgebench-b lodgebench-a lodgebench-c >/dev/null
	"$L" rm lodgebench-a lodgebench-b lodgebench-c >/dev/null
	"$L" network rm lodgebench-net >/dev/null; t4=$(ms)
	echo "run $r: up $((t1-t0)) again $((t2-t1)) down $((t3-t2)) by-hand $((t4-t3)) ms"
	t[up]+="$((t1-t0)) " t[again]+="$((t2-t1)) " t[down]+="$((t3-t2)) " t[hand]+="$((t4-t3)) "
done
m() { echo "${t[$1]}" | tr ' ' '\n' | grep . | median; }
for k in up again down hand; do echo "$k: median $(m $k) ms of $RUNS"; done
awk -v u="$(m up)" -v d="$(m down)" -v h="$(m hand)" 'BEGIN{printf "(up+down)/by-hand %.2f\n", (u+d)/h}'
