#!/usr/bin/env bash
# The sandbox service (`lodge sandbox serve`, docs/sandbox-service.md) as a
# platform running untrusted code sees it, against `lodge run --rm` of the
# same image in the same script, interleaved run by run:
#   create   POST /v1/sandboxes until its reply (the sandbox's VM runs)
#   first    its first command (`true`), a clone's first exec
#   next     a later command (`true`)
#   file     a 1 MiB file written, then read back
#   port     a GET through the service's port of an httpd in the sandbox
#            (a connection of its own: a lodge port-forward per connection)
#   watch    GET .../files/watch until its reply's header (a lodge watch in
#            place in the guest)
#   event    a command that creates a file below the watched directory,
#            until its create event came on the watch (compare with next)
#   pause    POST .../pause until its reply (its processes frozen)
#   resume   POST .../resume until its reply, then a command (`true`)
#   delete   DELETE until its reply (VM, container and record gone)
#   run      `lodge run --rm busybox true` (the baseline)
# Prints every run, then PAR sandboxes asked for at once (the time until
# all answer, and the rate), then the medians and create+first / run.
#
# Usage: bench/sandbox.sh  (env: RUNS, default 5; PAR, default 4, 0 to skip;
# BIN, default ./bin)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-5} BIN=${BIN:-$PWD/bin}
WORK=$(mktemp -d /tmp/lodge-sandbox-bench.XXXXXX)
SOCK=$WORK/s.sock
"$BIN/lodge" sandbox serve --listen "unix://$SOCK" --dir "$WORK/records" 2>"$WORK/serve.log" &
SERVE=$!
trap 'kill $SERVE 2>/dev/null; wait $SERVE 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
api() { curl -sf --unix-socket "$SOCK" "$@"; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
head -c 1048576 /dev/urandom > "$WORK/blob"
declare -A t
"$BIN/lodge" run --rm busybox true >/dev/null   # any template is built before timing
for r in $(seq "$RUNS"); do
	t0=$(ms); id=$(api -d '{}' http://lodge/v1/sandboxes | sed 's/.*"id":"\([^"]*\)".*/\1/'); t1=$(ms)
	api -d '{"argv":["true"]}' "http://lodge/v1/sandboxes/$id/commands" >/dev/null; t2=$(ms)
	api -d '{"argv":["true"]}' "http://lodge/v1/sandboxes/$id/commands" >/dev/null; t3=$(ms)
	api -X PUT --data-binary "@$WORK/blob" "http://lodge/v1/sandboxes/$id/files?path=/tmp/blob"
	api "http://lodge/v1/sandboxes/$id/files?path=/tmp/blob" | cmp -s - "$WORK/blob" || echo "run $r: the file read back differs"
	t4=$(ms)
	api -d '{"background":true,"cmd":"mkdir -p /www && echo hi > /www/i && exec httpd -f -p 8080 -h /www"}' "http://lodge/v1/sandboxes/$id/commands" >/dev/null
	until api "http://lodge/v1/sandboxes/$id/ports/8080/i" >/dev/null 2>&1; do sleep 0.1; done # httpd up
	p0=$(ms); api "http://lodge/v1/sandboxes/$id/ports/8080/i" >/dev/null || echo "run $r: no answer through the port"; p1=$(ms)
	api -d '{"argv":["mkdir","/tmp/w"]}' "http://lodge/v1/sandboxes/$id/commands" >/dev/null
	: > "$WORK/watch.h"; : > "$WORK/watch.b"
	w0=$(ms)
	curl -sN --unix-socket "$SOCK" -D "$WORK/watch.h" "http://lodge/v1/sandboxes/$id/files/watch?path=/tmp/w" > "$WORK/watch.b" & WATCH=$!
	until grep -q '^HTTP/1.1 200' "$WORK/watch.h"; do sleep 0.01; done; w1=$(ms)
	api -d '{"argv":["touch","/tmp/w/f"]}' "http://lodge/v1/sandboxes/$id/commands" >/dev/null &
	until grep -q '"create"' "$WORK/watch.b"; do sleep 0.01; done; w2=$(ms)
	wait $!; kill $WATCH 2>/dev/null; wait $WATCH 2>/dev/null || true
	q0=$(ms); api -X POST "http://lodge/v1/sandboxes/$id/pause" >/dev/null; q1=$(ms)
	api -X POST "http://lodge/v1/sandboxes/$id/resume" >/dev/null
	api -d '{"argv":["true"]}' "http://lodge/v1/sandboxes/$id/commands" >/dev/null; q2=$(ms)
	t5a=$(ms); api -X DELETE "http://lodge/v1/sandboxes/$id"; t5=$(ms)
	"$BIN/lodge" run --rm busybox true >/dev/null; t6=$(ms)
	echo "run $r: create $((t1-t0)) first $((t2-t1)) next $((t3-t2)) file $((t4-t3)) port $((p1-p0)) watch $((w1-w0)) event $((w2-w1)) pause $((q1-q0)) resume $((q2-q1)) delete $((t5-t5a)) run $((t6-t5)) ms"
	t[create]+="$((t1-t0)) " t[first]+="$((t2-t1)) " t[next]+="$((t3-t2)) " t[file]+="$((t4-t3)) " t[delete]+="$((t5-t5a)) " t[run]+="$((t6-t5)) "
	t[port]+="$((p1-p0)) " t[pause]+="$((q1-q0)) " t[resume]+="$((q2-q1)) "
	t[watch]+="$((w1-w0)) " t[event]+="$((w2-w1)) "
	t[cf]+="$((t2-t0)) "
done
# PAR sandboxes asked for at once (PAR=0: skipped): the time until all
# answer, and their rate.
PAR=${PAR:-4}
if [ "$PAR" -gt 0 ]; then
	t0=$(ms)
	pids=()
	for i in $(seq "$PAR"); do api -d '{}' http://lodge/v1/sandboxes > "$WORK/par.$i" & pids+=($!); done
	wait "${pids[@]}"
	t1=$(ms)
	ok=0
	for i in $(seq "$PAR"); do
		id=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' "$WORK/par.$i")
		[ -n "$id" ] && ok=$((ok+1)) && api -X DELETE "http://lodge/v1/sandboxes/$id"
	done
	echo "$PAR at once: $ok made in $((t1-t0)) ms, $(awk -v n="$ok" -v ms="$((t1-t0))" 'BEGIN{printf "%.2f", n*1000/ms}') sandboxes/s"
fi
m() { echo "${t[$1]}" | tr ' ' '\n' | grep . | median; }
for k in create first next file port watch event pause resume delete run; do echo "$k: median $(m $k) ms of $RUNS"; done
echo "create+first: median $(m cf) ms; / run: $(awk -v a="$(m cf)" -v b="$(m run)" 'BEGIN{printf "%.2f", a/b}')"
