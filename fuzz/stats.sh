#!/bin/sh
# One table line from a libFuzzer log run with -print_final_stats=1:
#   fuzz/stats.sh <target> <log>
# executions, exec/s, coverage when the seeds were loaded (INITED) and at the end, peak RSS.
t=$1
log=$2
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
start=$(grep -m1 'INITED' "$log" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
end=$(grep 'cov: ' "$log" | tail -n1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
printf '%-16s %12s %8s %10s %10s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "${start:-?}" "${end:-?}" "${rss:-?}"
