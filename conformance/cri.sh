#!/usr/bin/env bash
# containerd and CRI conformance of containerd-shim-lodge-v2 (bin/ of this checkout):
#   1. ctr smoke checks (11) on Debian's containerd 1.6 and on containerd 2.4.2
#   2. cri-tools' critest v1.37 on containerd 2.4.2 with -runtime-handler lodge
#   3. the shim's integration tests (ctr flows, faults, CRI pod) on containerd 2.4.2
#      (`make test` runs them on Debian's 1.6)
# It drives the shared harness scripts (../shared/tools, or $TOOLS): they build
# containerd 2.4.2, crictl and critest from the Go module proxy, serve stand-ins for
# critest's images on 127.0.0.1:5000 and start private containerds under /tmp.
# docs/conformance-cri.md lists every failing spec with its cause.
#
# Usage: conformance/cri.sh     Env: TOOLS, OCITEST_BIN (/tmp/ocitest-bin), FOCUS, SKIP,
#   WORK (/tmp/lodge-cri: logs and critest results)
set -uo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
TOOLS=${TOOLS:-$TOP/../shared/tools}
export OCITEST_BIN=${OCITEST_BIN:-/tmp/ocitest-bin}
WORK=${WORK:-/tmp/lodge-cri}
mkdir -p "$WORK"
[ -x "$TOOLS/setup-containerd.sh" ] || { echo "conformance/cri.sh: need the shared harness in $TOOLS (set TOOLS=)"; exit 2; }
[ -x "$OCITEST_BIN/containerd" ] || "$TOOLS/build-containerd.sh" "$OCITEST_BIN" > "$WORK/build-containerd.log" 2>&1 || { tail "$WORK/build-containerd.log"; exit 2; }
[ -x "$OCITEST_BIN/critest" ] || "$TOOLS/build-cri-tools.sh" "$OCITEST_BIN" > "$WORK/build-cri-tools.log" 2>&1 || { tail "$WORK/build-cri-tools.log"; exit 2; }
[ -x "$OCITEST_BIN/imgtool" ] || "$TOOLS/build-ocitest-tools.sh" "$OCITEST_BIN" > "$WORK/build-ocitest.log" 2>&1 || { tail "$WORK/build-ocitest.log"; exit 2; }
export EXTRA_HANDLERS="lodge=io.containerd.lodge.v2" SHIM_PATH=$TOP/bin

summary=()
# containerd 1.6 (Debian)
export CTRD_DIR=/tmp/lodge-ctrd16
"$TOOLS/setup-containerd.sh" start > "$WORK/ctrd16.log" 2>&1 || { cat "$WORK/ctrd16.log"; exit 2; }
"$TOOLS/run-ctr-smoke.sh" io.containerd.lodge.v2 > "$WORK/smoke-1.6.log" 2>&1
summary+=("containerd 1.6: $(tail -1 "$WORK/smoke-1.6.log")")
"$TOOLS/setup-containerd.sh" stop >/dev/null 2>&1

# containerd 2.4.2
export CTRD_DIR=/tmp/lodge-ctrd24 CTRD_BIN=$OCITEST_BIN/containerd
"$TOOLS/setup-containerd.sh" start > "$WORK/ctrd24.log" 2>&1 || { cat "$WORK/ctrd24.log"; exit 2; }
CTR=$OCITEST_BIN/ctr "$TOOLS/run-ctr-smoke.sh" io.containerd.lodge.v2 > "$WORK/smoke-2.4.log" 2>&1
summary+=("containerd 2.4.2: $(tail -1 "$WORK/smoke-2.4.log")")
OUT=$WORK/critest "$TOOLS/run-critest.sh" lodge > "$WORK/critest.out" 2>&1
summary+=("containerd 2.4.2: $(tail -1 "$WORK/critest.out")")
# critest's hostNetwork spec leaves its pod behind when it fails: remove
# what is left through CRI, so the shims clean up after themselves
SOCK=unix://$CTRD_DIR/containerd.sock
for p in $("$OCITEST_BIN/crictl" -r "$SOCK" pods -q 2>/dev/null); do
  "$OCITEST_BIN/crictl" -r "$SOCK" stopp "$p" >/dev/null 2>&1; "$OCITEST_BIN/crictl" -r "$SOCK" rmp -f "$p" >/dev/null 2>&1
done
"$TOOLS/setup-containerd.sh" stop >/dev/null 2>&1

# the Go integration tests of the shim, on containerd 2.4.2
LODGE_TEST_CONTAINERD=$OCITEST_BIN/containerd LODGE_TEST_CTR=$OCITEST_BIN/ctr LODGE_INTEGRATION=1 LODGE_BIN=$TOP/bin \
  go test -count=1 -timeout 20m -v -run 'TestShim' ./test/integration > "$WORK/shim-tests-2.4.log" 2>&1
summary+=("containerd 2.4.2: shim integration tests: $(grep -c '^--- PASS' "$WORK/shim-tests-2.4.log") passed, $(grep -c '^--- FAIL' "$WORK/shim-tests-2.4.log") failed")

printf '%s\n' "${summary[@]}"
leftover=$(pgrep -f "containerd-shim-lodge-v2|lodge-shim|/run/lodge/shim" || true)
[ -z "$leftover" ] || echo "LEFT BEHIND: $leftover"
