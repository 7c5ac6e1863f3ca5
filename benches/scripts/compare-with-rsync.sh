#!/usr/bin/env bash
# Compares `ubackup-puller fetch` with the stock rsync client on the same rsync 3.5.0 daemon,
# same data, same run: one 1 GiB file and a 5,000-file tree (whole-file pulls). fetch fsyncs
# every file before renaming it into place, so stock rsync runs twice: as it is by default
# (no fsync) and with --fsync (the same durability).
#
#   bash benches/scripts/compare-with-rsync.sh [WORKDIR]
#
# Needs rsync, hyperfine and python3. Prints hyperfine's tables and a summary of median wall
# time and mean CPU time (user+sys) per tool, with the fetch/rsync ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/scripts/lib.sh
work=${1:-/tmp/ubackup-compare}
runs=${RUNS:-7}
mkdir -p "$work/big" "$work/tree" "$work/out"

cargo build --release -p ubackup-puller
fetch=${CARGO_TARGET_DIR:-$PWD/target}/release/ubackup-puller

if [[ ! -f $work/big/big.bin ]]; then
    head -c $((1024 * 1024 * 1024)) /dev/urandom >"$work/big/big.bin"
fi
if [[ ! -f $work/tree/.done ]]; then
    python3 - "$work/tree" <<'PY'
import os, random, sys
random.seed(7)
root = sys.argv[1]
for a in range(10):
    for b in range(10):
        d = os.path.join(root, f"d{a}", f"sub {b}")
        os.makedirs(d, exist_ok=True)
        for c in range(50):
            with open(os.path.join(d, f"f{c}.dat"), "wb") as f:
                f.write(os.urandom(random.randint(0, 40000)))
open(os.path.join(root, ".done"), "w").close()
PY
fi

start_daemon "$work" "[big]\npath = $work/big\n[tree]\npath = $work/tree\nexclude = .done"

for module in big tree; do
    hyperfine --runs "$runs" --warmup 1 --export-json "$work/$module.json" \
        --prepare "rm -rf $work/out/dest" \
        -n "fetch-$module" "$fetch fetch -r rsync://127.0.0.1:$port/$module/ $work/out/dest" \
        -n "rsync-$module" "rsync -rt rsync://127.0.0.1:$port/$module/ $work/out/dest" \
        -n "rsyncfsync-$module" "rsync -rt --fsync rsync://127.0.0.1:$port/$module/ $work/out/dest"
done

python3 - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]
for module in ("big", "tree"):
    res = {r["command"].split("-")[0]: r for r in json.load(open(f"{work}/{module}.json"))["results"]}
    f = res["fetch"]
    fw, fc = statistics.median(f["times"]), f["user"] + f["system"]
    for other, label in (("rsync", "rsync"), ("rsyncfsync", "rsync --fsync")):
        r = res[other]
        rw, rc = statistics.median(r["times"]), r["user"] + r["system"]
        print(f"{module} vs {label}: median wall fetch {fw:.3f}s {label} {rw:.3f}s ratio {fw/rw:.2f}; "
              f"mean cpu fetch {fc:.3f}s {label} {rc:.3f}s ratio {fc/rc:.2f}")
PY
