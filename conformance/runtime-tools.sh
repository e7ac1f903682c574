#!/usr/bin/env bash
# Runs the OCI runtime-tools validation suite against bin/lodge-runtime and
# prints "runtime-tools: N passed, N failed, N skipped".
#
# Usage: conformance/runtime-tools.sh [PROGRAM_REGEX]
#   PROGRAM_REGEX  which validation programs to build and run (default: all 58)
# Env:
#   WORK          build and results directory (default /tmp/lodge-runtime-tools)
#   TEST_TIMEOUT  seconds per program (default 900: every container is a VM boot)
#   RUNTIME       the runtime (default bin/lodge-runtime of this checkout)
# Counting: TAP "ok"/"not ok" lines; a program that prints no test points
# counts as one pass if it exits 0 without an "error" diagnostic, else one
# failure. Results: $WORK/results/{summary.txt,failures.txt,<program>.tap}.
# docs/conformance-oci.md explains every failure seen.
set -uo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
FILTER=${1:-.}
WORK=${WORK:-/tmp/lodge-runtime-tools}
TEST_TIMEOUT=${TEST_TIMEOUT:-900}
RUNTIME=${RUNTIME:-$TOP/bin/lodge-runtime}
# The proxy serves runtime-tools master only by its exact pseudo-version.
RT_VERSION=v0.9.1-0.20251205004911-5e639034dcdc
MOD=github.com/opencontainers/runtime-tools
export GOTOOLCHAIN=local PATH=$PATH:/usr/local/go/bin
command -v jq >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -q jq >/dev/null; }

SRC=$WORK/src
mkdir -p "$WORK"
if [ ! -x "$SRC/runtimetest" ]; then
  DIR=$(go mod download -json "$MOD@$RT_VERSION" | jq -r .Dir) || exit 2
  rm -rf "$SRC"; cp -r "$DIR" "$SRC"; chmod -R u+w "$SRC"
  (cd "$SRC" && rm -rf vendor && CGO_ENABLED=0 go build -mod=mod -o runtimetest ./cmd/runtimetest) || exit 2
fi
cd "$SRC" || exit 2
for f in validation/*/*.go; do
  case $f in validation/util/*) continue;; esac
  name=$(basename "$f" .go)
  echo "$name" | grep -Eq "$FILTER" || continue
  [ -x "${f%.go}.t" ] || go build -mod=mod -o "${f%.go}.t" "$f" || echo "BUILD FAILED: $f" >&2
done

# Each bundle is unpacked from ./rootfs-amd64.tar.gz: busybox-static, hard links.
ROOTFS=$WORK/rootfs
rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"/{bin,etc,proc,sys,dev,tmp,root,run,var/tmp,home}
chmod 1777 "$ROOTFS/tmp" "$ROOTFS/var/tmp"
install -m 0755 /bin/busybox "$ROOTFS/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -f "$ROOTFS/bin/busybox" "$ROOTFS/bin/$a"; done
ln -s bin "$ROOTFS/sbin"; mkdir -p "$ROOTFS/usr"; ln -s ../bin "$ROOTFS/usr/bin"; ln -s ../bin "$ROOTFS/usr/sbin"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' > "$ROOTFS/etc/group"
echo '127.0.0.1 localhost' > "$ROOTFS/etc/hosts"
tar -C "$ROOTFS" -czf "$SRC/rootfs-amd64.tar.gz" .

RES=$WORK/results; rm -rf "$RES"; mkdir -p "$RES"
tp=0; tf=0; ts=0
printf '%-40s %5s %5s %5s  %s\n' PROGRAM PASS FAIL SKIP NOTE > "$RES/summary.txt"
t0=$(date +%s)
for t in validation/*/*.t; do
  name=$(basename "$t" .t)
  echo "$name" | grep -Eq "$FILTER" || continue
  RUNTIME=$RUNTIME timeout -k 5 "$TEST_TIMEOUT" "./$t" > "$RES/$name.tap" 2> "$RES/$name.err"
  rc=$?
  p=$(grep -E '^ok [0-9]+' "$RES/$name.tap" | grep -vc '# SKIP')
  s=$(grep -E '^ok [0-9]+' "$RES/$name.tap" | grep -c '# SKIP')
  f=$(grep -cE '^not ok [0-9]+' "$RES/$name.tap")
  note=""; [ $rc -ne 0 ] && note="exit=$rc"; [ $rc -eq 124 ] && note="TIMEOUT"
  if [ "$p$f$s" = 000 ]; then
    if grep -q '"error"' "$RES/$name.tap"; then
      f=1; note="$note $(grep -m1 '"error"' "$RES/$name.tap" | sed 's/^ *"error": *//' | cut -c1-100)"
    elif [ $rc -eq 0 ]; then p=1
    fi
  fi
  # A program that exited non-zero failed, whatever points it printed
  # before (util.Fatal after some) or none.
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1; note="$note $(tr '\n' ' ' < "$RES/$name.err" | cut -c1-140)"
  fi
  grep -E '^not ok' "$RES/$name.tap" | sed "s|^|$name: |" >> "$RES/failures.txt"
  if [ "$f" -gt 0 ] && ! grep -q "^$name: " "$RES/failures.txt" 2>/dev/null; then echo "$name: $note" >> "$RES/failures.txt"; fi
  tp=$((tp+p)); tf=$((tf+f)); ts=$((ts+s))
  printf '%-40s %5d %5d %5d  %s\n' "$name" "$p" "$f" "$s" "$note" | tee -a "$RES/summary.txt"
done
# Anything a program left behind is a failure of ours.
left=$(ls /run/lodge-runtime 2>/dev/null | wc -l)
{
  echo "wall $(( $(date +%s) - t0 ))s; containers left in /run/lodge-runtime: $left"
  echo "runtime-tools: $tp passed, $tf failed, $ts skipped"
} | tee -a "$RES/summary.txt"
