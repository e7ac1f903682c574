#!/usr/bin/env bash
# Runs the built-in busybox image (made by `lodge setup` from Debian's
# busybox-static) in a Lodge microVM, offline. Needs `make setup-run` (the
# Makefile's demo target runs it first).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "host kernel:  $(uname -r)"
bin/lodge check | sed -n 1p
bin/lodge images
start=$(date +%s%N)
bin/lodge run --rm --hostname lodge-demo busybox sh -c 'echo "Hello from a container in a Lodge microVM"; echo "guest kernel: $(uname -r)"; echo "hostname:     $(hostname)"; echo "processes:    $(ps -o pid,comm | tail -n +2 | tr -s " \n" " ")"'
end=$(date +%s%N)
echo "lodge run took $(( (end - start) / 1000000 )) ms (VM start, run, teardown)"
cat <<'NEXT'

Next, try:
  bin/lodge run --rm -it busybox sh          # a shell in a microVM
  bin/lodge run --rm -v /etc:/host-etc:ro busybox ls /host-etc
  bin/lodge pull REGISTRY/IMAGE:TAG           # any registry you can reach
  bin/lodge images
  bin/lodge template ls                       # the VM templates sandboxes start from
NEXT
