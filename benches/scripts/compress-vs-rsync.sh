#!/usr/bin/env bash
# Compressed pulls: `ubackup-puller fetch --compress-choice NAME` against the stock rsync client
# with the same --compress-choice, from the same rsync 3.5.0 daemon, in the same run, on a
# 512 MiB SQL-dump-like file (whole-file pulls into an empty destination).
#
#   bash benches/scripts/compress-vs-rsync.sh [WORKDIR]
#
# ALGOS (default "zstd lz4 zlibx zlib") picks the algorithms. RUNS (default 3) runs per tool and algorithm, interleaved (fetch, rsync, fetch, ...) so that
# load on the shared machine hits both alike. fetch fsyncs every file before renaming it into
# place, so rsync runs with --fsync (the same durability). Reported per algorithm: bytes
# received by the client (fetch's --json bytes_received; rsync's --stats "Total bytes
# received"), the median wall time and the median client CPU time (user+sys of the client
# process, from wait4; the daemon's compression CPU is the same for both and not counted).
# Needs rsync and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/scripts/lib.sh
work=${1:-/tmp/ubackup-compress}
runs=${RUNS:-3}
size_mib=${SIZE_MIB:-512}
mkdir -p "$work/src" "$work/out"

cargo build --release -p ubackup-puller
fetch=${CARGO_TARGET_DIR:-$PWD/target}/release/ubackup-puller

dump=$work/src/dump.sql
if [[ ! -f $dump || $(stat -c %s "$dump") -ne $((size_mib * 1024 * 1024)) ]]; then
    python3 - "$dump" "$size_mib" <<'PY'
import random, sys
# mysqldump-like: extended INSERTs of rows with ids, names, amounts, dates and text.
path, mib = sys.argv[1], int(sys.argv[2])
size = mib * 1024 * 1024
rnd = random.Random(42)
names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()
out = bytearray(b"-- MySQL dump 10.13\n--\n-- Table structure for table `orders`\n\n")
rid = 1
with open(path, "wb") as f:
    while True:
        rows = []
        for _ in range(200):
            rows.append("(%d,'%s',%d.%02d,'2024-%02d-%02d %02d:%02d:%02d','%s',%s)" % (
                rid, rnd.choice(names), rnd.randrange(100000), rnd.randrange(100),
                rnd.randrange(1, 13), rnd.randrange(1, 29), rnd.randrange(24), rnd.randrange(60),
                rnd.randrange(60), " ".join(rnd.choice(words) for _ in range(rnd.randrange(2, 9))),
                rnd.choice(["NULL", "0", "1"])))
            rid += 1
        out += b"INSERT INTO `orders` VALUES " + ",".join(rows).encode() + b";\n"
        if len(out) >= size:
            f.write(out[:size])
            break
        if len(out) > 8 << 20:
            f.write(out)
            size -= len(out)
            out = bytearray()
PY
fi

start_daemon "$work" "[dump]\npath = $work/src"

python3 - "$work" "$port" "$fetch" "$runs" "${ALGOS:-zstd lz4 zlibx zlib}" <<'PY'
import json, os, re, shutil, statistics, subprocess, sys, time
work, port, fetch, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
algos = sys.argv[5].split()
src = f"rsync://127.0.0.1:{port}/dump/dump.sql"
dest = os.path.join(work, "out", "dest")

def run(cmd):
    shutil.rmtree(dest, ignore_errors=True)
    os.makedirs(dest)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    if status != 0:
        sys.exit(f"{cmd[0]} failed ({status}): {err.decode(errors='replace')}")
    return wall, ru.ru_utime + ru.ru_stime, out.decode(errors="replace")

def fetch_cmd(algo):
    return [fetch, "fetch", "--json", "--compress-choice", algo, src, dest]

def rsync_cmd(algo):
    return ["rsync", "-t", "--fsync", "--stats", f"--compress-choice={algo}", src, dest + "/"]

size = os.path.getsize(os.path.join(work, "src", "dump.sql"))
rows = []
for algo in algos:
    res = {"fetch": [], "rsync": []}
    fbytes = rbytes = None
    for _ in range(runs):
        w, c, out = run(fetch_cmd(algo))
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["ok"] and summary["compression"] == algo, summary
        fbytes = summary["bytes_received"]
        res["fetch"].append((w, c))
        w, c, out = run(rsync_cmd(algo))
        m = re.search(r"Total bytes received: ([\d,]+)", out)
        rbytes = int(m.group(1).replace(",", ""))
        res["rsync"].append((w, c))
    fw = statistics.median(x[0] for x in res["fetch"])
    fc = statistics.median(x[1] for x in res["fetch"])
    rw = statistics.median(x[0] for x in res["rsync"])
    rc = statistics.median(x[1] for x in res["rsync"])
    rows.append((algo, fbytes, rbytes, fw, rw, fc, rc))

print(f"\n{size/2**20:.0f} MiB SQL dump, {runs} runs per tool, medians (client side)\n")
print("| algorithm | bytes received fetch | bytes received rsync | ratio to file | wall fetch | wall rsync | wall ratio | CPU fetch | CPU rsync | CPU ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for algo, fb, rb, fw, rw, fc, rc in rows:
    print(f"| {algo} | {fb:,} | {rb:,} | {fb/size:.3f} | {fw:.2f} s | {rw:.2f} s | {fw/rw:.2f} | {fc:.2f} s | {rc:.2f} s | {fc/rc:.2f} |")
PY
