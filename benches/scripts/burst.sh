#!/usr/bin/env bash
# The hourly burst over WAN latency: JOBS jobs (default 2,000) of 64 KiB to 1 MiB spread over
# HOSTS (20) stock rsync daemons, each on its own 127.0.0.x address, queued in UBackup's
# format and pulled through the testkit's WAN relay (DELAY_MS, 25 ms each way, so 50 ms RTT).
#
#   the node (`ubackup-puller run`) at NODE_WORKERS (16 64 256) workers, against
#   UBackup's way, one `rsync -a` process per job, RSYNC_LOOPS (4 64) at a time.
#
# Reports per case: wall, jobs/s, client CPU per job (user+sys of the node, or of every rsync
# process), the daemons' CPU per job, peak RSS (node; for rsync the largest single process),
# the relay's CPU per job (the WAN simulation's own cost, on the same cores), and the relay's
# client turns per connection (how many times a pull waited for its daemon).
#
#   bash benches/scripts/burst.sh [WORKDIR]     RUNS=1 JOBS=2000 HOSTS=20 DELAY_MS=25
#                                               NODE_WORKERS="16 64 256" RSYNC_LOOPS="4 64"
#                                               PULLER=path (another ubackup-puller build)
#
# Loopback only; bounded: every case is killed after CASE_LIMIT seconds (600).
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-1}
JOBS=${JOBS:-2000}
HOSTS=${HOSTS:-20}
DELAY_MS=${DELAY_MS:-25}
NODE_WORKERS=${NODE_WORKERS-16 64 256}
RSYNC_LOOPS=${RSYNC_LOOPS-4 64}
CASE_LIMIT=${CASE_LIMIT:-600}
WORK=${1:-$(mktemp -d /tmp/ubackup-burst.XXXXXX)}
mkdir -p "$WORK"/{src,run}
chmod 755 "$WORK" "$WORK/src"
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p ubackup-puller -p ubackup-benches --bin ubackup-puller --bin wan-relay
PULLER=${PULLER:-$TARGET/release/ubackup-puller}
RELAY=$TARGET/release/wan-relay

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
host_ip() { echo "127.0.0.$((10 + $1))"; }

echo "generating $JOBS files of 64 KiB - 1 MiB over $HOSTS hosts in $WORK/src"
python3 - "$WORK/src" "$JOBS" "$HOSTS" <<'EOF'
import os, random, sys
root, jobs, hosts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(2026)
for j in range(jobs):
    h = j % hosts
    d = os.path.join(root, f"h{h:02d}")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"dump-{j:05d}.rdb")
    size = rng.randint(64 << 10, 1 << 20)
    if not os.path.exists(p) or os.path.getsize(p) != size:
        with open(p, "wb") as f:
            f.write(rng.randbytes(size))
EOF

DPORT=$(free_port)
RPORT=$(free_port)
pids=()
cleanup() {
    rm -rf "$WORK/out"
    date +%s >"$WORK/deleted-at"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -n ${relay_in:-} ]] && exec {relay_in}>&- || true
}
trap cleanup EXIT

pairs=()
for h in $(seq 0 $((HOSTS - 1))); do
    ip=$(host_ip "$h")
    mkdir -p "$WORK/run/d$h"
    {
        echo "use chroot = no"
        echo "log file = /dev/null"
        echo "pid file = $WORK/run/d$h/pid"
        if [[ $(id -u) == 0 ]]; then printf 'uid = root\ngid = root\n'; fi
        printf '[backup]\npath = %s\nread only = yes\nmax connections = 0\n' "$WORK/src/h$(printf %02d "$h")"
    } >"$WORK/run/d$h/rsyncd.conf"
    rsync --daemon --no-detach --address="$ip" --port="$DPORT" --config="$WORK/run/d$h/rsyncd.conf" &
    pids+=($!)
    daemon_pids[$h]=$!
    pairs+=("$ip:$RPORT=$ip:$DPORT")
done
for h in $(seq 0 $((HOSTS - 1))); do
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/$(host_ip "$h")/$DPORT") 2>/dev/null && break
        sleep 0.1
    done
done
coproc RELAYPROC { exec "$RELAY" --delay-ms "$DELAY_MS" "${pairs[@]}"; }
pids+=("$RELAYPROC_PID")
relay_in=${RELAYPROC[1]}
read -r ready <&"${RELAYPROC[0]}"
[[ $ready == ready ]] || { echo "relay did not start" >&2; exit 1; }
relay_totals() { echo >&"$relay_in"; read -r line <&"${RELAYPROC[0]}"; echo "$line"; }

REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/run" --save '' --appendonly no \
    >"$WORK/run/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
R() { redis-cli -p "$REDIS_PORT" "$@"; }

# The daemons' CPU so far (user+sys of their reaped children, in clock ticks).
daemon_ticks() {
    local t=0 p
    for p in "${daemon_pids[@]}"; do
        read -r -a f <"/proc/$p/stat"
        t=$((t + f[13] + f[14] + f[15] + f[16]))
    done
    echo "$t"
}
TCK=$(getconf CLK_TCK)
relay_ticks() { read -r -a f <"/proc/$RELAYPROC_PID/stat"; echo $((f[13] + f[14])); }

# Every case writes into a directory of its own: ext4 without a journal (as here) skips
# inodes freed in the last 60 s when it allocates (`recently_deleted` in fs/ext4/ialloc.c:
# RECENTCY_MIN is 60 s since Linux 5.7; 360 s while the inode table block is dirty), reading
# each one's inode, so creating 2,000 files right after deleting 2,000 costs every client
# several times the CPU (recently_deleted/find_inode_bit were 18 % of the node's samples).
# So nothing is deleted right before a case: after KEEP_CASES cases (default 4, 1.06 GiB
# each) they are deleted together, the filesystem synced, and the next case waits 61 s.
# The last cases are deleted at exit, and the time noted, so that a run started within the
# minute waits out the rest.
KEEP_CASES=${KEEP_CASES:-4}
case_no=0
inode_pause() { # waits until the inodes freed at $1 (epoch seconds) are reusable
    local left=$(($1 + 61 - $(date +%s)))
    if [ "$left" -gt 0 ]; then
        echo "(waiting ${left} s for ext4 to reuse the inodes freed $(($(date +%s) - $1)) s ago)"
        sleep "$left"
    fi
}
new_dest() { # sets $dest
    case_no=$((case_no + 1))
    dest="$WORK/out/$1-$case_no"
    if [ "$(find "$WORK/out" -mindepth 1 -maxdepth 1 | wc -l)" -ge "$KEEP_CASES" ]; then
        rm -rf "${WORK:?}"/out/*
        sync -f "$WORK/out"
        inode_pause "$(date +%s)"
    fi
}
if [ -d "$WORK/out" ] && [ -n "$(ls -A "$WORK/out")" ]; then
    rm -rf "$WORK/out"
    sync -f "$WORK"
    date +%s >"$WORK/deleted-at"
fi
[ -f "$WORK/deleted-at" ] && inode_pause "$(cat "$WORK/deleted-at")"
mkdir -p "$WORK/out"

config() { # workers dest
    cat >"$WORK/run/node.toml" <<EOF
[node]
id = "burst"
ip = "127.0.0.1"
root = "$2"
workers = $1
[queue]
redis = "redis://127.0.0.1:$REDIS_PORT/"
lists = ["level1", "uuzuback_f"]
idle_poll_ms = 100
[pull]
rsync_port = $RPORT
basis = "none"
[log]
level = "warn"
EOF
}

queue() { # one UBackup-format job per file, hosts interleaved as an hourly burst arrives
    python3 - "$WORK/src" "$HOSTS" <<'EOF' | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
import json, os, sys
src, hosts = sys.argv[1], int(sys.argv[2])
def cmd(*args):
    out = f"*{len(args)}\r\n"
    for a in args:
        b = a.encode()
        out += f"${len(b)}\r\n{a}\r\n"
    return out
files = []
for h in range(hosts):
    d = os.path.join(src, f"h{h:02d}")
    for name in sorted(os.listdir(d)):
        files.append((name, h, os.path.getsize(os.path.join(d, name))))
files.sort()
for name, h, size in files:
    m = {"filename": name, "last_all_filename": None, "last_all_time": 0, "size": size,
         "log": "ok", "create_time": 1700000000, "success": True, "server_id": f"S{h}",
         "game_id": 1, "op_id": 0, "game_server_ip": f"127.0.0.{10 + h}", "back_type": "redis",
         "instance": 6379, "rsync_model": "backup", "interval": 3600}
    sys.stdout.write(cmd("LPUSH", "uuzuback_f", json.dumps(m)))
EOF
}

now() { date +%s.%N; }
jq_field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# report NAME WALL CPU_S RSS_KIB DAEMON_TICKS RELAY_BEFORE RELAY_AFTER RELAY_TICKS
report() {
    local c0 c1 t0 t1
    c0=$(jq_field "$6" connections); c1=$(jq_field "$7" connections)
    t0=$(jq_field "$6" client_turns); t1=$(jq_field "$7" client_turns)
    python3 - "$@" "$JOBS" "$TCK" "$c0" "$c1" "$t0" "$t1" <<'EOF'
import sys
name, wall, cpu, rss, dt, _, _, rt, jobs, tck, c0, c1, t0, t1 = sys.argv[1:]
wall, cpu, rss, dt, jobs, tck = float(wall), float(cpu), int(rss), int(dt), int(jobs), int(tck)
rt = int(rt)
conns = int(c1) - int(c0)
turns = (int(t1) - int(t0)) / conns if conns else float("nan")
print(f"| {name} | {wall:.1f} | {jobs / wall:.1f} | {1000 * cpu / jobs:.2f} | "
      f"{1000 * dt / tck / jobs:.2f} | {1000 * rt / tck / jobs:.2f} | {rss / 1024:.1f} MiB | "
      f"{turns:.2f} | {conns} |")
EOF
}

run_node() { # workers
    local dest
    new_dest node
    R DEL message >/dev/null
    config "$1" "$dest"
    queue
    local before after d0 d1 r0 r1 t0 t1
    before=$(relay_totals); d0=$(daemon_ticks); r0=$(relay_ticks)
    t0=$(now)
    timeout "$CASE_LIMIT" /usr/bin/time -f '%U %S %M' -o "$WORK/run/time" \
        "$PULLER" run --config "$WORK/run/node.toml" --until-idle
    t1=$(now)
    d1=$(daemon_ticks); after=$(relay_totals); r1=$(relay_ticks)
    local n ok
    n=$(R LLEN message)
    ok=$(R LRANGE message 0 -1 | grep -c '"succeed":1' || true)
    [[ $n == "$JOBS" && $ok == "$JOBS" ]] || { echo "node: $ok of $n results succeeded (of $JOBS)" >&2; exit 1; }
    read -r u s m <"$WORK/run/time"
    report "node, $1 workers" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$u + $s" | bc -l)" "$m" \
        "$((d1 - d0))" "$before" "$after" "$((r1 - r0))"
}

run_rsync() { # parallel loops
    local dest
    new_dest rsync
    mkdir -p "$dest"
    python3 - "$WORK/src" "$HOSTS" "$RPORT" "$dest" >"$WORK/run/urls" <<'EOF'
import os, sys
src, hosts, port, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
files = []
for h in range(hosts):
    for name in sorted(os.listdir(os.path.join(src, f"h{h:02d}"))):
        files.append((name, h))
files.sort()
for name, h in files:
    print(f"rsync://127.0.0.{10 + h}:{port}/backup/{name} {dest}/h{h:02d}/")
EOF
    for h in $(seq 0 $((HOSTS - 1))); do mkdir -p "$dest/h$(printf %02d "$h")"; done
    local before after d0 d1 r0 r1 t0 t1
    before=$(relay_totals); d0=$(daemon_ticks); r0=$(relay_ticks)
    t0=$(now)
    # One rsync process per job, as UBackup's work_thread loops run them; %M of xargs is the
    # largest child's peak RSS.
    timeout "$CASE_LIMIT" /usr/bin/time -f '%U %S %M' -o "$WORK/run/time" \
        xargs -P "$1" -L 1 rsync -a <"$WORK/run/urls"
    t1=$(now)
    d1=$(daemon_ticks); after=$(relay_totals); r1=$(relay_ticks)
    local got
    got=$(find "$dest" -type f | wc -l)
    [[ $got == "$JOBS" ]] || { echo "rsync: $got of $JOBS files" >&2; exit 1; }
    read -r u s m <"$WORK/run/time"
    report "rsync -a per job, $1 at a time" "$(echo "$t1 - $t0" | bc -l)" "$(echo "$u + $s" | bc -l)" \
        "$m" "$((d1 - d0))" "$before" "$after" "$((r1 - r0))"
}

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| case | wall s | jobs/s | client CPU ms/job | daemons' CPU ms/job | relay CPU ms/job | peak RSS | client turns per pull | connections |"
echo "|---|---|---|---|---|---|---|---|---|"
for r in $(seq "$RUNS"); do
    for w in $NODE_WORKERS; do run_node "$w"; done
    for l in $RSYNC_LOOPS; do run_rsync "$l"; done
done
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); $JOBS jobs over $HOSTS daemons, ${DELAY_MS} ms each way"
