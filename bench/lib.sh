# Helpers the benchmark scripts share (sourced, not run).

# median: the median of the numbers on stdin, one per line ("nan" if none).
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit}; if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

# interleave RUNS FN VARIANT...: for each of RUNS runs, calls FN LABEL DIR
# RUN [VAR=VALUE...] for every variant in turn, each given as one argument
# "LABEL=DIR [VAR=VALUE...]" (values may hold commas, not spaces); sets
# labels to the variants' labels, in order.
interleave() {
  local runs=$1 fn=$2 r v parts
  shift 2
  labels=()
  for v in "$@"; do labels+=("${v%%=*}"); done
  for r in $(seq "$runs"); do
    for v in "$@"; do
      read -r -a parts <<< "$v"
      "$fn" "${parts[0]%%=*}" "${parts[0]#*=}" "$r" "${parts[@]:1}"
    done
  done
}
