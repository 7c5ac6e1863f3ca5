#!/usr/bin/env bash
# The backup node against UBackup's way (stock rsync processes), on the same daemon, same run:
#
#   1. 2,000 jobs of 20 KB through the Redis queue, 4 workers, vs 4 parallel loops of
#      `rsync -a` (UBackup's work_thread = 4, one rsync process per job) and vs 1 loop;
#   2. 8 files of 256 MiB, 4 workers, vs 4 parallel `rsync -a` processes;
#   3. the node's peak RSS with 16 workers busy (16 files of 128 MiB, pulled at once).
#
#   bash benches/scripts/node-vs-rsync.sh [WORKDIR]      (RUNS=3 by default; medians;
#                                                         SKIP_SMALL=1 leaves out part 1,
#                                                         SKIP_SERIAL=1 its one-loop case)
#
# The node fsyncs every file before renaming it into place; stock rsync does not (UBackup ran
# it without --fsync), so rsync is also timed with --fsync for the same durability.
set -euo pipefail
cd "$(dirname "$0")/../.."
. benches/scripts/lib.sh

RUNS=${RUNS:-3}
WORK=${1:-$(mktemp -d /tmp/ubackup-node-bench.XXXXXX)}
mkdir -p "$WORK"/{src/small,src/big,src/rss,run}
chmod 755 "$WORK" "$WORK/src"
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ubackup-puller
PULLER=$TARGET/release/ubackup-puller

echo "generating data in $WORK/src"
python3 - "$WORK/src" <<'EOF'
import os, sys
root = sys.argv[1]
for i in range(2000):
    p = os.path.join(root, "small", f"f{i:04d}.rdb")
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.write(os.urandom(20_000))
EOF
for i in $(seq 0 7); do
    [[ -f $WORK/src/big/b$i.sql ]] || head -c $((256 << 20)) /dev/urandom >"$WORK/src/big/b$i.sql"
done
for i in $(seq 0 15); do
    [[ -f $WORK/src/rss/r$i.sql ]] || head -c $((128 << 20)) /dev/urandom >"$WORK/src/rss/r$i.sql"
done

start_daemon "$WORK/run" "[backup]\npath = $WORK/src\nread only = yes\nmax connections = 0"
REDIS_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/run" --save '' --appendonly no \
    >"$WORK/run/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $daemon_pid $redis_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
R() { redis-cli -p "$REDIS_PORT" "$@"; }

config() { # workers
    cat >"$WORK/run/node.toml" <<EOF
[node]
id = "bench"
ip = "127.0.0.1"
root = "$WORK/dest"
workers = $1
[queue]
redis = "redis://127.0.0.1:$REDIS_PORT/"
lists = ["level1", "uuzuback_f"]
idle_poll_ms = 100
[pull]
rsync_port = $port
basis = "none"
[log]
level = "warn"
EOF
}

# queue DIR SIZE: one UBackup-format job per file of src/DIR, via redis-cli --pipe.
queue() {
    local dir=$1 size=$2
    python3 - "$WORK/src/$dir" "$dir" "$size" <<'EOF' | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
import json, os, sys
src, sub, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
def cmd(*args):
    out = f"*{len(args)}\r\n"
    for a in args:
        b = a.encode()
        out += f"${len(b)}\r\n{a}\r\n"
    return out
for name in sorted(os.listdir(src)):
    m = {"filename": name, "last_all_filename": None, "last_all_time": 0, "size": size,
         "log": "ok", "create_time": 1700000000, "success": True, "server_id": "S1",
         "game_id": 1, "op_id": 0, "game_server_ip": "127.0.0.1", "back_type": "mysql",
         "instance": 3306, "rsync_model": f"backup/{sub}", "interval": 3600}
    sys.stdout.write(cmd("LPUSH", "uuzuback_f", json.dumps(m)))
EOF
}

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# node DIR SIZE WORKERS → prints wall seconds; checks every result succeeded.
node_run() {
    rm -rf "$WORK/dest"
    R DEL message >/dev/null
    config "$3"
    queue "$1" "$2"
    local t0 t1
    t0=$(now)
    "$PULLER" run --config "$WORK/run/node.toml" --until-idle
    t1=$(now)
    local n ok
    n=$(R LLEN message)
    ok=$(R LRANGE message 0 -1 | grep -c '"succeed":1' || true)
    if [[ $n != "$ok" ]]; then echo "node: $ok of $n results succeeded" >&2; exit 1; fi
    echo "$t1 - $t0" | bc -l
}

# rsync_loops DIR PARALLEL [EXTRA...] → wall seconds; one rsync process per file.
rsync_loops() {
    local dir=$1 par=$2
    shift 2
    rm -rf "$WORK/dest-rsync"
    mkdir -p "$WORK/dest-rsync"
    local t0 t1
    t0=$(now)
    ls "$WORK/src/$dir" | xargs -P "$par" -I{} rsync -a "$@" \
        "rsync://127.0.0.1:$port/backup/$dir/{}" "$WORK/dest-rsync/"
    t1=$(now)
    echo "$t1 - $t0" | bc -l
}

declare -A T
for r in $(seq "$RUNS"); do
    echo "run $r/$RUNS"
    if [[ -z ${SKIP_SMALL:-} ]]; then
        T[node_small]+=" $(node_run small 20000 4)"
        T[rsync_small_4]+=" $(rsync_loops small 4)"
        T[rsync_small_4_fsync]+=" $(rsync_loops small 4 --fsync)"
        [[ -n ${SKIP_SERIAL:-} ]] || T[rsync_small_1]+=" $(rsync_loops small 1)"
    fi
    T[node_big]+=" $(node_run big $((256 << 20)) 4)"
    T[rsync_big_4]+=" $(rsync_loops big 4)"
    T[rsync_big_4_fsync]+=" $(rsync_loops big 4 --fsync)"
done

med() { printf '%s\n' ${T[$1]} | median; }
echo
echo "== 2,000 jobs of 20 KB (medians of $RUNS)"
for k in node_small rsync_small_4 rsync_small_4_fsync rsync_small_1; do
    [[ -n ${T[$k]:-} ]] || continue
    m=$(med $k)
    printf '%-22s %7.2f s  %7.1f jobs/s   runs:%s\n' "$k" "$m" "$(echo "2000 / $m" | bc -l)" "${T[$k]}"
done
echo "== 8 files of 256 MiB, 4 at a time (medians of $RUNS)"
for k in node_big rsync_big_4 rsync_big_4_fsync; do
    m=$(med $k)
    printf '%-22s %7.2f s  %7.1f MiB/s   runs:%s\n' "$k" "$m" "$(echo "2048 / $m" | bc -l)" "${T[$k]}"
done

echo "== peak RSS, 16 workers busy (16 files of 128 MiB at once)"
rm -rf "$WORK/dest"
R DEL message >/dev/null
config 16
queue rss $((128 << 20))
/usr/bin/time -f '%M' -o "$WORK/run/rss" "$PULLER" run --config "$WORK/run/node.toml" --until-idle
echo "peak RSS: $(( $(cat "$WORK/run/rss") / 1024 )) MiB ($(cat "$WORK/run/rss") KiB); results: $(R LLEN message)"
