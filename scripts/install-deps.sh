#!/usr/bin/env bash
# Installs the Debian packages Lodge needs ("run": what `make demo` runs)
# and, by default, what its tests need too ("all"). Idempotent: it calls
# apt only when something is missing.
#   scripts/install-deps.sh [run|all|kernel]
set -euo pipefail
what=${1:-all}
pkgs=(
  qemu-system-x86      # the VMM
  busybox-static       # the built-in image (lodge setup), test root filesystems
  libseccomp-dev       # static libseccomp for the guest agent
  gcc libc6-dev        # cgo for the agent (libcontainer's nsenter)
  xz-utils             # lodge setup: the generic kernel's image is XZ-compressed
  e2fsprogs            # mkfs.ext4: containers' writable layers (layer-image roots)
  containernetworking-plugins iptables  # lodge's bridge network; CNI for the CRI pod test
  tini                 # lodge run --init (tini-static)
  git                  # lodge build: ADD of a git repository
)
[ "$what" = run ] || pkgs+=(
  kmod                 # not needed at run time; handy for debugging modules
  podman conmon        # the Podman integration test
  containerd runc      # the containerd integration tests (lodge shim; runc shim -> lodge-runtime)
  docker.io            # the Docker integration test (a private dockerd per test)
  jq bc                # conformance and demo scripts
  erofs-utils          # mkfs.erofs: containerd 2.x's erofs snapshotter (shim test)
)
# Lodge's own guest kernel (`make kernel`, opt-in): Debian's source and
# what building it takes.
[ "$what" = kernel ] && pkgs=(linux-source-6.1 make gcc flex bison bc libelf-dev libssl-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages with daemons (containerd, docker.io) must not start them: the
  # tests start private ones. policy-rc.d says so to invoke-rc.d.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# `lodge setup` resolves the kernel package from apt's lists.
if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
  apt-get update -q
fi
[ "$what" = run ] || [ "$what" = kernel ] && exit 0
# crictl drives containerd's CRI in the pod test (not packaged in Debian 12).
CRICTL_VERSION=v1.37.0
if ! command -v crictl >/dev/null 2>&1; then
  echo "installing crictl $CRICTL_VERSION (go install)"
  GOBIN=/usr/local/bin CGO_ENABLED=0 GOFLAGS=-mod=mod go install sigs.k8s.io/cri-tools/cmd/crictl@"$CRICTL_VERSION"
fi
# containerd 2.x (not packaged in Debian 12) for the shim test of its erofs
# snapshotter (Debian's 1.6 has none): containerd and ctr from the Go module
# proxy, cached by version (76 s on two idle cores with empty Go caches).
CONTAINERD2_VERSION=v2.4.2
CONTAINERD2_DIR=/usr/local/lib/lodge-test/containerd-$CONTAINERD2_VERSION
if [[ ! -x $CONTAINERD2_DIR/containerd || ! -x $CONTAINERD2_DIR/ctr ]]; then
  echo "building containerd $CONTAINERD2_VERSION into $CONTAINERD2_DIR (go install)"
  mkdir -p "$CONTAINERD2_DIR.tmp"
  GOBIN=$CONTAINERD2_DIR.tmp GOFLAGS=-mod=mod go install \
    github.com/containerd/containerd/v2/cmd/containerd@"$CONTAINERD2_VERSION" \
    github.com/containerd/containerd/v2/cmd/ctr@"$CONTAINERD2_VERSION"
  rm -rf "$CONTAINERD2_DIR" && mv "$CONTAINERD2_DIR.tmp" "$CONTAINERD2_DIR"
fi
