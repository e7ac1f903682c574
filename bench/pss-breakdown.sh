#!/usr/bin/env bash
# Where an idle clone's host memory goes: N detached busybox `sleep`
# containers (the built-in image, each in a clone of one template) are
# started one after another and left idle WAIT seconds; then each one's
# QEMU PSS is split by mapping, from /proc/PID/smaps:
#   tb        TCG's translation buffer (QEMU's one anonymous rwx mapping;
#             absent under KVM)
#   template  the template's memory file (shared pages divided among the
#             clones, plus the pages this clone wrote, privately copied)
#   heap      QEMU's [heap] and its other anonymous mappings (malloc arenas,
#             thread stacks)
#   files     QEMU's binary, libraries and other files
# and the lodge supervisor's PSS beside it (the runtime process that holds
# the sandbox: what a pod's shim is for CRI). Medians over the N clones.
# Usage: bench/pss-breakdown.sh   Env: N (5), WAIT (10), BIN (default bin)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-5} WAIT=${WAIT:-10} BIN=${BIN:-$PWD/bin}
lodge_work pss

for i in $(seq "$N"); do
  ids+=("$("$BIN/lodge" run -d busybox sleep 3600)")
done
sleep "$WAIT"
printf '%-14s %8s %8s %8s %8s %8s %12s\n' clone qemu_MB tb template heap files supervisor
for id in "${ids[@]}"; do
  read -r sup qemu < <(lodge_pids "$id")
  # Sum Pss per class: a mapping's header line names its flags and path.
  awk '
    /^[0-9a-f]+-[0-9a-f]+ / {
      perms = $2; path = (NF >= 6) ? $6 : ""
      if (path ~ /templates/) cls = "template"
      else if (path == "" && perms ~ /x/) cls = "tb"
      else if (path == "" || path ~ /^\[/) cls = "heap"
      else cls = "files"
      next
    }
    /^Pss:/ { kb[cls] += $2; total += $2 }
    END { printf "%d %d %d %d %d\n", total/1024, kb["tb"]/1024, kb["template"]/1024, kb["heap"]/1024, kb["files"]/1024 }
  ' "/proc/$qemu/smaps" > "$WORK/q"
  read -r total tb tmpl heap files < "$WORK/q"
  s=$(( $(pss_kb "$sup") / 1024 ))
  printf '%-14s %8s %8s %8s %8s %8s %12s\n' "${id:0:12}" "$total" "$tb" "$tmpl" "$heap" "$files" "$s"
  echo "$total $tb $tmpl $heap $files $s" >> "$WORK/all"
done
echo
med() { cut -d' ' -f"$1" "$WORK/all" | median; }
printf '%-14s %8s %8s %8s %8s %8s %12s\n' median "$(med 1)" "$(med 2)" "$(med 3)" "$(med 4)" "$(med 5)" "$(med 6)"
echo "templates (shared by all clones): $(du -sm --exclude=.pool /run/lodge/templates 2>/dev/null | cut -f1) MB in /run/lodge/templates"
