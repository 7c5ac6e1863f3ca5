#!/bin/sh
# A fuzzing round on several cores: targets with a time cap each (`target:secs`), shared out
# over FUZZ_LANES lanes (default 2) in the order given, each lane running fuzz/round.sh on
# one target after the other (so every fuzzer is at nice 19, with its dictionary and seeds,
# and stops at FUZZ_RUNS executions or its seconds). One round.sh line per target is
# appended to fuzz/logs/lanes.txt, with fuzz/plateau.sh's line after it.
#
#   fuzz/lanes.sh web_forms:600 job_v1:300 wire:120
#   FUZZ_LANES=1 fuzz/lanes.sh result:60
#
# A target goes to the lane that has the fewest seconds queued so far, so list the ones
# that matter most first.
set -eu
cd "$(dirname "$0")/.."
lanes=${FUZZ_LANES:-2}
mkdir -p fuzz/logs
out=fuzz/logs/lanes.txt
tmp=$(mktemp -d)
i=0
while [ "$i" -lt "$lanes" ]; do
    echo 0 >"$tmp/load.$i"
    : >"$tmp/list.$i"
    i=$((i + 1))
done
for spec in "$@"; do
    best=0
    bestload=$(cat "$tmp/load.0")
    i=1
    while [ "$i" -lt "$lanes" ]; do
        l=$(cat "$tmp/load.$i")
        if [ "$l" -lt "$bestload" ]; then
            best=$i
            bestload=$l
        fi
        i=$((i + 1))
    done
    echo "$spec" >>"$tmp/list.$best"
    echo $((bestload + ${spec#*:})) >"$tmp/load.$best"
done
i=0
while [ "$i" -lt "$lanes" ]; do
    (
        while read -r spec; do
            t=${spec%%:*}
            line=$(FUZZ_SECS=${spec#*:} fuzz/round.sh "$t" | tail -n +2)
            {
                echo "$(date -u +%H:%M:%S) $line"
                fuzz/plateau.sh "$t" "fuzz/logs/$t.log"
            } >>"$out"
        done <"$tmp/list.$i"
    ) &
    i=$((i + 1))
done
wait
rm -rf "$tmp"
