#!/usr/bin/env bash
# Runs every Go fuzz target of the repository for FUZZTIME each (default
# 10s): the decoders of bytes that come from the guest (agent replies and
# frames, stream headers, log lines, console text, QMP), from users (specs,
# kernel images) and from registries (layer tars). A failure leaves its
# input in the package's testdata/fuzz/<Target>/, where `go test` replays it
# from then on as a seed: commit it with the fix.
#   scripts/fuzz.sh [FUZZTIME]
set -euo pipefail
cd "$(dirname "$0")/.."
T=${1:-${FUZZTIME:-10s}}
export PATH=$PATH:/usr/local/go/bin
fail=0
# tries bounds the runs of a target whose fuzzing engine fails without
# recording an input (a worker that did not answer in time).
tries=5
# inputs counts the recorded inputs of a target (0 when it has none yet:
# the directory appears only with the first crasher).
inputs() { { find "$1/testdata/fuzz/$2" -type f 2>/dev/null || true; } | wc -l; }
while IFS=: read -r file target; do
  pkg=./$(dirname "$file")
  echo "fuzz $pkg $target ($T)"
  for try in $(seq "$tries"); do
    before=$(inputs "$pkg" "$target")
    if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$T" "$pkg" > /tmp/lodge-fuzz.log 2>&1; then
      break
    fi
    grep -v '^fuzz: elapsed' /tmp/lodge-fuzz.log || true
    if [ "$(inputs "$pkg" "$target")" -gt "$before" ]; then
      echo "FAIL: $target in $pkg; its input is in $pkg/testdata/fuzz/$target/"
      fail=1
      break
    fi
    # No input recorded: the fuzzing engine itself failed (a worker that
    # did not answer in time on a loaded machine); run the target again.
    [ "$try" = "$tries" ] && { echo "FAIL: $target in $pkg (no input recorded)"; fail=1; }
  done
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' internal cmd 2>/dev/null | sed 's/func //' | sort)
exit $fail
