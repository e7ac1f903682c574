#!/usr/bin/env bash
# `lodge run --rm busybox true` (image present) beside `podman run --rm` with
# runc and `docker run --rm --runtime lodge` (and runc), the same image in
# each (lodge save -> podman load / docker load), interleaved, medians of
# RUNS (default 5). Podman and dockerd are private to this script (their
# own roots in a temporary directory; dockerd without bridge or iptables),
# so every engine runs with --network none; lodge also runs once per round
# on its default bridge network and once without its default seccomp
# profile (--security-opt seccomp=unconfined).
#   bench/run.sh            (make bench runs it; needs make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
RUNS=${RUNS:-5}
W=$(mktemp -d /var/tmp/lodge-bench-run.XXXXXX)
DPID=""
cleanup() {
  if [[ -n $DPID ]]; then
    docker -H "unix://$W/docker.sock" ps -aq 2>/dev/null | xargs -r docker -H "unix://$W/docker.sock" rm -f >/dev/null 2>&1 || true
    kill "$DPID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.2; done
  fi
  podman "${P[@]}" rm -af >/dev/null 2>&1 || true
  podman "${P[@]}" system reset --force >/dev/null 2>&1 || true
  for m in $(awk -v w="$W" '$2 ~ "^"w {print $2}' /proc/self/mounts | sort -r); do umount -l "$m" || true; done
  rm -rf "$W"
}
P=(--root "$W/podman/storage" --runroot "$W/podman/run" --runtime runc --cgroup-manager cgroupfs --events-backend file)
trap cleanup EXIT

"$BIN/lodge" image ls -q >/dev/null
"$BIN/lodge" save -o "$W/busybox.tar" busybox
podman "${P[@]}" load -q -i "$W/busybox.tar" >/dev/null
echo '{}' > "$W/daemon.json"
dockerd --config-file "$W/daemon.json" -H "unix://$W/docker.sock" --data-root "$W/docker" --exec-root "$W/exec" \
  --pidfile "$W/docker.pid" --storage-driver vfs --bridge none --iptables=false --ip6tables=false --ip-masq=false \
  --userland-proxy=false --add-runtime "lodge=$BIN/lodge-runtime" > "$W/dockerd.log" 2>&1 &
DPID=$!
D=(docker -H "unix://$W/docker.sock")
for _ in $(seq 150); do "${D[@]}" version >/dev/null 2>&1 && break; sleep 0.2; done
"${D[@]}" load -q -i "$W/busybox.tar" >/dev/null
IMG=busybox:latest
# Podman asks runc for rlimits above this shell's, which need CAP_SYS_RESOURCE
# (not in every host's bounding set): ask for ones below them.
UL=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

# ms runs a command and prints how long it took in milliseconds.
ms() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; return 1; }
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
declare -A S
names=("lodge run (bridge)" "lodge run --network none" "podman run, runc" "docker run --runtime lodge" "docker run, runc"
  "lodge run, seccomp=unconfined")
for i in $(seq "$RUNS"); do
  S[0]+=" $(ms "$BIN/lodge" run --rm busybox true)"
  S[1]+=" $(ms "$BIN/lodge" run --rm --network none busybox true)"
  S[2]+=" $(ms podman "${P[@]}" run --rm --network none "${UL[@]}" "$IMG" true)"
  S[3]+=" $(ms "${D[@]}" run --rm --runtime lodge --network none "$IMG" true)"
  S[4]+=" $(ms "${D[@]}" run --rm --runtime runc --network none "$IMG" true)"
  S[5]+=" $(ms "$BIN/lodge" run --rm --network none --security-opt seccomp=unconfined busybox true)"
  echo "round $i:$(for k in 0 1 2 3 4 5; do echo -n " $(echo "${S[$k]}" | awk '{print $NF}')"; done) ms" >&2
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base=$(echo "${S[2]}" | median)
printf '\n%-30s %10s %14s\n' "run --rm busybox true" "median ms" "/ podman+runc"
for k in 0 1 2 3 4 5; do
  m=$(echo "${S[$k]}" | median)
  printf '%-30s %10d %14.1f\n' "${names[$k]}" "$m" "$(echo "$m / $base" | bc -l)"
done
echo "($RUNS runs each, interleaved; accelerator: $("$BIN/lodge" check 2>/dev/null | awk '/^accelerator:/ {print $2; exit}'))"
