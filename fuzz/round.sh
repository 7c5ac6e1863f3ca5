#!/bin/sh
# A fuzzing round: each target in turn (one at a time, at nice 19: the machines have 2
# cores and other people compile on them), with its dictionary and seeds, until it has run
# FUZZ_RUNS executions or FUZZ_SECS seconds, whichever comes first. Prints one line per
# target for the table in fuzz/README.md; the full libFuzzer output is in fuzz/logs/.
#
#   fuzz/round.sh                   # every target
#   FUZZ_SECS=60 fuzz/round.sh wire mux
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain, or stable with
# RUSTC_BOOTSTRAP=1 (the default here: FUZZ_TOOLCHAIN=+stable).
set -eu
cd "$(dirname "$0")/.."
secs=${FUZZ_SECS:-600}
runs=${FUZZ_RUNS:-10000000}
toolchain=${FUZZ_TOOLCHAIN:-+stable}
targets=${*:-$(RUSTC_BOOTSTRAP=1 cargo $toolchain fuzz list)}
mkdir -p fuzz/logs
printf '%-16s %12s %8s %10s %10s %8s\n' target executions exec/s cov_start cov_end rss_MB
for t in $targets; do
    mkdir -p "fuzz/corpus/$t"
    dict=""
    [ -f "fuzz/dict/$t.dict" ] && dict="-dict=fuzz/dict/$t.dict"
    RUSTC_BOOTSTRAP=1 nice -n 19 cargo $toolchain fuzz run -a "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        $dict -max_total_time="$secs" -runs="$runs" -rss_limit_mb=2048 -print_final_stats=1 \
        >"fuzz/logs/$t.log" 2>&1 || echo "$t: libFuzzer exited non-zero, see fuzz/logs/$t.log"
    fuzz/stats.sh "$t" "fuzz/logs/$t.log"
done
