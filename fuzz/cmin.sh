#!/bin/sh
# Adds to fuzz/seeds/<target>/ the inputs of fuzz/corpus/<target>/ that reach coverage edges
# the seeds do not, keeping the named seeds (real transcripts, encoder output) as they are.
# This is what `cargo fuzz cmin` runs (libFuzzer -merge=1), counting edges only
# (-use_counters=0) so that the committed seeds stay small. Build first:
#   RUSTC_BOOTSTRAP=1 cargo +stable fuzz build -a
#   fuzz/cmin.sh job_v1 result
set -eu
cd "$(dirname "$0")/.."
bin=fuzz/target/x86_64-unknown-linux-gnu/release
for t in "$@"; do
    m=$(mktemp -d)
    cp fuzz/seeds/"$t"/* "$m"/
    nice -n 19 "$bin/$t" -merge=1 -use_counters=0 -use_value_profile=0 "$m" "fuzz/corpus/$t" >"$m.log" 2>&1
    for f in "$m"/*; do
        [ -e "fuzz/seeds/$t/$(basename "$f")" ] || cp "$f" "fuzz/seeds/$t/"
    done
    echo "$t: $(ls "fuzz/seeds/$t" | wc -l) seeds, $(cat "fuzz/seeds/$t"/* | wc -c) bytes"
    rm -rf "$m" "$m.log"
done
