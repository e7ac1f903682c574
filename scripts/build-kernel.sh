#!/usr/bin/env bash
# Builds Lodge's guest kernel (kernel/lodge.config on top of Linux 6.1's
# tinyconfig, from Debian's linux-source-6.1) and prints the path of its
# PVH vmlinux. The result is cached under CACHE (/var/cache/lodge/kernel)
# by a hash of the source package's version, the config, this script and
# the compiler: an unchanged input is never built twice, and a Debian
# security update of linux-source-6.1 makes a new kernel at the next
# `make setup`. ~12 minutes on two idle cores; the build tree and the
# kernels of older inputs are removed.
#   scripts/build-kernel.sh          build if needed, print the vmlinux path
#   Env: CACHE, JOBS (default: the number of CPUs)
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${CACHE:-/var/cache/lodge/kernel}
JOBS=${JOBS:-$(nproc)}
src=/usr/src/linux-source-6.1.tar.xz
frag=$PWD/kernel/lodge.config
die() { echo "build-kernel: $*" >&2; exit 1; }
[[ -r $src ]] || die "$src missing: install Debian's linux-source-6.1 (scripts/install-deps.sh does)"
version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
key=$( { echo "$version"; cat "$frag" "$0"; gcc --version | head -1; } | sha256sum | cut -c1-16)
out=$CACHE/$key
if [[ -s $out/vmlinux ]]; then
  echo "$out/vmlinux"
  exit 0
fi
mkdir -p "$CACHE"
# One build at a time; a second caller waits and then finds the result.
exec 9>"$CACHE/.lock"
flock 9
if [[ -s $out/vmlinux ]]; then
  echo "$out/vmlinux"
  exit 0
fi
rm -rf "$CACHE"/.build-* # a build whose builder died
work=$(mktemp -d "$CACHE/.build-$key.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "build-kernel: building Linux $version with kernel/lodge.config in $work (about 12 minutes on 2 cores)" >&2
tar -xf "$src" -C "$work"
tree=$work/linux-source-6.1
mk() { make -C "$tree" ARCH=x86_64 KBUILD_BUILD_USER=lodge KBUILD_BUILD_HOST=lodge \
  KBUILD_BUILD_TIMESTAMP="Debian $version" "$@"; }
mk tinyconfig >/dev/null 2>&1
"$tree/scripts/kconfig/merge_config.sh" -m -O "$tree" "$tree/.config" "$frag" >/dev/null 2>&1
mk olddefconfig >/dev/null 2>&1 # the option check below is what counts
# Every option of the fragment must have stuck: Kconfig drops one whose
# dependencies are missing without a word.
while read -r opt; do
  name=${opt%%=*} want=${opt#*=}
  got=$(grep -E "^$name=|^# $name is not set" "$tree/.config" || true)
  if [[ $want == n ]]; then
    [[ -z $got || $got == "# $name is not set" ]] || die "$opt did not stick: $got"
  else
    [[ $got == "$name=$want" ]] || die "$opt did not stick: ${got:-absent} (a missing dependency?)"
  fi
done < <(grep -o '^CONFIG_[A-Z0-9_]*=.*' "$frag")
log=$work/build.log
if ! mk -j"$JOBS" vmlinux >"$log" 2>&1; then
  tail -30 "$log" >&2
  die "the kernel build failed (above: the end of its log)"
fi
mkdir -p "$work/out"
cp "$tree/vmlinux" "$work/out/vmlinux"
cp "$tree/.config" "$work/out/config"
mk -s kernelrelease >"$work/out/release"
mv "$work/out" "$out"
# Kernels of older inputs go: setup copied the one it installed.
find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$key" ! -name '.build-*' -exec rm -rf {} +
echo "$out/vmlinux"
