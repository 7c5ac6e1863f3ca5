#!/usr/bin/env bash
# Delta transfer figures, from the same rsync 3.5.0 daemon in the same run:
#
#  1. A 1 GiB random file with 16 scattered 4 KiB edits, pulled onto the old version
#     (same name, older mtime) by `ubackup-puller fetch` and by stock `rsync`: bytes received
#     (fetch's --json bytes_received; rsync's "Total bytes received") and median wall time.
#  2. Five "hourly" 256 MiB snapshots, each with 1% of its 32 KiB-aligned blocks rewritten
#     and a new name every hour, each pulled with the previous hour's file as basis
#     (--basis), against whole-file pulls (-W): the ratio of bytes received.
#
#   bash benches/scripts/delta-vs-rsync.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/scripts/lib.sh
work=${1:-/tmp/ubackup-delta}
runs=${RUNS:-5}
mkdir -p "$work/src" "$work/hourly" "$work/out"
cargo build --release -p ubackup-puller
fetch=${CARGO_TARGET_DIR:-$PWD/target}/release/ubackup-puller

python3 - "$work" <<'PY'
import os, random, sys
work = sys.argv[1]
def edit(path, count, size, seed, align=None):
    r = random.Random(seed)
    n = os.path.getsize(path)
    with open(path, "r+b") as f:
        for _ in range(count):
            off = r.randrange(0, n - size)
            if align:
                off -= off % align
            f.seek(off)
            f.write(os.urandom(size))
big_old = os.path.join(work, "big-old.bin")
if not os.path.exists(big_old):
    with open(big_old, "wb") as f:
        for _ in range(1024):
            f.write(os.urandom(1 << 20))
    os.system(f"cp {big_old} {work}/src/big.bin")
    edit(f"{work}/src/big.bin", 16, 4096, 1)
snap0 = os.path.join(work, "hourly", "dump-00.rdb")
if not os.path.exists(os.path.join(work, "hourly", "dump-04.rdb")):
    with open(snap0, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    for h in range(1, 5):
        prev = os.path.join(work, "hourly", f"dump-{h-1:02}.rdb")
        cur = os.path.join(work, "hourly", f"dump-{h:02}.rdb")
        os.system(f"cp {prev} {cur}")
        blocks = (256 << 20) // 32768
        edit(cur, blocks // 100, 32768, 100 + h, align=32768)
PY
touch -d '2020-01-01' "$work/big-old.bin"

start_daemon "$work" "[src]\npath = $work/src\n[hourly]\npath = $work/hourly"

prep="rm -rf $work/out/d && mkdir -p $work/out/d && cp --preserve=timestamps $work/big-old.bin $work/out/d/big.bin"
hyperfine --runs "$runs" --warmup 1 --export-json "$work/delta.json" --prepare "$prep" \
    -n fetch "$fetch fetch rsync://127.0.0.1:$port/src/big.bin $work/out/d/big.bin" \
    -n rsync "rsync -t rsync://127.0.0.1:$port/src/big.bin $work/out/d/big.bin" \
    -n rsync-fsync "rsync -t --fsync rsync://127.0.0.1:$port/src/big.bin $work/out/d/big.bin"

eval "$prep"
fetch_bytes=$("$fetch" fetch --json "rsync://127.0.0.1:$port/src/big.bin" "$work/out/d/big.bin" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["bytes_received"], d["literal_bytes"], d["matched_bytes"])')
eval "$prep"
rsync_bytes=$(rsync -t --stats "rsync://127.0.0.1:$port/src/big.bin" "$work/out/d/big.bin" |
    awk -F': ' '/Total bytes received/ { gsub(/,/, "", $2); print $2 }')
cmp "$work/out/d/big.bin" "$work/src/big.bin"

# Hourly snapshots: dump-00 is already off-site; pull 01..04 with the previous as basis.
rm -rf "$work/out/h" && mkdir -p "$work/out/h"
cp "$work/hourly/dump-00.rdb" "$work/out/h/"
delta_total=0
whole_total=0
for h in 01 02 03 04; do
    prev=$(printf '%02d' $((10#$h - 1)))
    d=$("$fetch" fetch --json --basis "$work/out/h/dump-$prev.rdb" \
        "rsync://127.0.0.1:$port/hourly/dump-$h.rdb" "$work/out/h/dump-$h.rdb" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_received"])')
    w=$("$fetch" fetch --json -W "rsync://127.0.0.1:$port/hourly/dump-$h.rdb" "$work/out/whole-$h.rdb" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_received"])')
    cmp "$work/out/h/dump-$h.rdb" "$work/hourly/dump-$h.rdb"
    rm -f "$work/out/whole-$h.rdb"
    echo "hour $h: delta $d bytes, whole-file $w bytes"
    delta_total=$((delta_total + d))
    whole_total=$((whole_total + w))
done

python3 - "$work" "$fetch_bytes" "$rsync_bytes" "$delta_total" "$whole_total" <<'PY'
import json, statistics, sys
work, fb, rb, dt, wt = sys.argv[1], sys.argv[2].split(), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
res = {r["command"]: r for r in json.load(open(f"{work}/delta.json"))["results"]}
fw, rw = statistics.median(res["fetch"]["times"]), statistics.median(res["rsync"]["times"])
sw = statistics.median(res["rsync-fsync"]["times"])
cpu = lambda r: r["user"] + r["system"]
print(f"1 GiB, 16 x 4 KiB edits: bytes received fetch {fb[0]} (literal {fb[1]}, matched {fb[2]}) "
      f"rsync {rb} ratio {int(fb[0]) / rb:.3f}; median wall fetch {fw:.2f}s rsync {rw:.2f}s ratio {fw / rw:.2f}, "
      f"rsync --fsync {sw:.2f}s ratio {fw / sw:.2f}; mean cpu fetch {cpu(res['fetch']):.2f}s "
      f"rsync {cpu(res['rsync']):.2f}s rsync --fsync {cpu(res['rsync-fsync']):.2f}s")
print(f"hourly 256 MiB snapshots, 4 pulls: delta {dt} bytes vs whole-file {wt} bytes, ratio {dt / wt:.4f}")
PY
