#!/usr/bin/env bash
# Restore throughput: `ubackup-agent restore` against the stock `rsync` client pulling the same
# chain (a full + three incrementals) from the same node module (a stock rsync daemon with a
# password, on loopback), same run, rounds interleaved, source files in the page cache. Prints
# each round and the medians.
#
#   cargo build --release -p ubackup-agent
#   bash client-agent/benches/restore-vs-rsync.sh            # FULL_MIB=1024 INC_MIB=256 ROUNDS=5
#
# Needs xxhsum (Debian package xxhash) for the plan's checksums.
# The restore does more than rsync here: it also hashes every byte with the catalog's algorithm
# (xxh128), fsyncs each file and the directory, and keeps a resumable state file.
set -euo pipefail
FULL_MIB=${FULL_MIB:-1024}
INC_MIB=${INC_MIB:-256}
ROUNDS=${ROUNDS:-5}
RSYNC=${RSYNC:-/usr/bin/rsync}
HERE=$(cd "$(dirname "$0")/../.." && pwd)
AGENT=${AGENT:-$HERE/target/release/ubackup-agent}
[ -x "$AGENT" ] || { echo "build it first: cargo build --release -p ubackup-agent" >&2; exit 1; }
DIR=$(mktemp -d /tmp/ubackup-restore-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$DIR"; }
trap cleanup EXIT
NODE_DIR=mysql/127.0.0/1
mkdir -p "$DIR/root/$NODE_DIR" "$DIR/run"
chmod 755 "$DIR" "$DIR/root"
names=(full.xb inc1.xb inc2.xb inc3.xb)
sizes=("$FULL_MIB" "$INC_MIB" "$INC_MIB" "$INC_MIB")
for i in 0 1 2 3; do
    head -c "$((sizes[i] << 20))" /dev/urandom >"$DIR/root/$NODE_DIR/${names[i]}"
done
echo "ubackup-restore:bench-secret" >"$DIR/run/secrets"; chmod 600 "$DIR/run/secrets"
echo "bench-secret" >"$DIR/run/pass"; chmod 600 "$DIR/run/pass"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$DIR/run/rsyncd.conf" <<CONF
pid file = $DIR/run/rsyncd.pid
use chroot = no
[ubackup]
path = $DIR/root
read only = yes
auth users = ubackup-restore
secrets file = $DIR/run/secrets
CONF
"$RSYNC" --daemon --no-detach --address=127.0.0.1 --port="$PORT" --config="$DIR/run/rsyncd.conf" &
PIDS+=($!)
sleep 0.5
# The plan, as the indexer gives it (checksums as xxh128sum prints them).
python3 - "$DIR" "$NODE_DIR" "${names[@]}" >"$DIR/run/plan.json" <<'PY'
import json, subprocess, sys, os
d, node_dir, names = sys.argv[1], sys.argv[2], sys.argv[3:]
files = []
for i, n in enumerate(names):
    p = os.path.join(d, "root", node_dir, n)
    out = subprocess.run(["xxhsum", "-H2", p], capture_output=True, text=True).stdout.split()
    files.append({"role": "full" if i == 0 else "incremental", "filename": n,
        "create_time_ms": 1764489600000 + i * 3600000, "node": "127.0.0.1",
        "module_path": f"{node_dir}/{n}", "size": os.path.getsize(p),
        "checksum": "xxh128:" + out[0],
        "last_all_filename": None if i == 0 else names[0],
        "prev_filename": names[i - 1] if i >= 2 else None})
print(json.dumps({"server_id": "1", "type": "mysql", "instance": 3306, "files": files}))
PY
total=$(( (FULL_MIB + 3 * INC_MIB) ))
warm() { cat "$DIR/root/$NODE_DIR"/* >/dev/null; }
t_restore=(); t_rsync=()
for r in $(seq 1 "$ROUNDS"); do
    for who in restore rsync; do
        rm -rf "$DIR/out"; mkdir -p "$DIR/out"; sync; warm
        s=$(date +%s.%N)
        if [ "$who" = restore ]; then
            "$AGENT" restore --plan "$DIR/run/plan.json" --server-id 1 --type mysql --instance 3306 \
                --to "$DIR/out" --password-file "$DIR/run/pass" --node-port "$PORT" >/dev/null 2>&1
        else
            srcs=(); for n in "${names[@]}"; do srcs+=("rsync://ubackup-restore@127.0.0.1:$PORT/ubackup/$NODE_DIR/$n"); done
            "$RSYNC" -t --password-file="$DIR/run/pass" "${srcs[@]}" "$DIR/out/"
        fi
        e=$(date +%s.%N)
        secs=$(python3 -c "print(f'{$e-$s:.3f}')")
        cmp -s "$DIR/out/${names[3]}" "$DIR/root/$NODE_DIR/${names[3]}" || { echo "$who: output differs" >&2; exit 1; }
        echo "round $r $who: ${secs}s ($(python3 -c "print(f'{$total/($e-$s):.0f}')") MiB/s)"
        if [ "$who" = restore ]; then t_restore+=("$secs"); else t_rsync+=("$secs"); fi
    done
done
python3 - "$total" "${t_restore[*]}" "${t_rsync[*]}" <<'PY'
import statistics, sys
total = int(sys.argv[1])
a = [float(x) for x in sys.argv[2].split()]
b = [float(x) for x in sys.argv[3].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"chain {total} MiB; median ubackup-agent restore {ma:.2f}s ({total/ma:.0f} MiB/s), "
      f"rsync {mb:.2f}s ({total/mb:.0f} MiB/s); restore/rsync time ratio {ma/mb:.2f}")
PY
