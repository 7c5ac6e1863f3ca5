#!/usr/bin/env bash
# The ubackup pipeline on one machine, from nothing:
#
#   bash scripts/quickstart.sh
#
# 1. installs what is missing (rsync and redis-server from apt, as root or with sudo);
# 2. builds ubackup-puller;
# 3. starts a private redis-server and an rsync daemon on free loopback ports, in a scratch
#    directory, with sample backup files (a MySQL dump and a Redis RDB) in module `backup`;
# 4. queues jobs exactly as UBackup's client does (its JSON, LPUSHed onto `level1` and
#    `uuzuback_f`), plus one illegal message;
# 5. runs the puller with a UBackup-style config (uuzuback.conf) until the queue is empty;
# 6. shows where the files landed and what the results say;
# 7. pulls a backup back through the node's read-only, password-protected rsync module (the
#    path restores take), then shows the node's life cycle: `prune --dry-run` and `scrub`.
#
# Everything runs on 127.0.0.1 and stops at the end. QUICKSTART_DIR picks the scratch
# directory (default: a new one under /tmp); KEEP=1 leaves it in place.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

need_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

say "1. prerequisites"
missing=()
command -v rsync >/dev/null || missing+=(rsync)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    need_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust from https://rustup.rs (curl https://sh.rustup.rs -sSf | sh)" >&2
    exit 1
fi
echo "rsync: $(rsync --version | head -n1)"
echo "redis: $(redis-server --version)"

say "2. build"
cargo build --release -q -p ubackup-puller
PULLER=$(pwd)/target/release/ubackup-puller
if [[ -n ${CARGO_TARGET_DIR:-} ]]; then PULLER=$CARGO_TARGET_DIR/release/ubackup-puller; fi
echo "$PULLER"

DIR=${QUICKSTART_DIR:-$(mktemp -d /tmp/ubackup-quickstart.XXXXXX)}
mkdir -p "$DIR"/{src/database_3306,src/redis_6379,backups,run}
chmod 755 "$DIR" "$DIR/src" "$DIR/backups"   # a root rsync daemon reads the modules as nobody
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [[ ${KEEP:-0} != 1 ]]; then rm -rf "$DIR"; else echo "kept $DIR"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

say "3. a private redis-server and rsync daemon, with sample backups"
REDIS_PORT=$(free_port)
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DIR/run" --save '' \
    --appendonly no --daemonize no >"$DIR/run/redis.log" 2>&1 &
PIDS+=($!)
RSYNC_PORT=$(free_port)
# One daemon plays both parts on loopback: the database host's module `backup`, and the
# backup node's module `ubackup` (its root, read-only, password-protected: what restores read;
# docs/operations.md has the production rsyncd.conf).
echo "ubackup-restore:quickstart-secret" >"$DIR/run/rsyncd.secrets"
chmod 600 "$DIR/run/rsyncd.secrets"
echo "quickstart-secret" >"$DIR/run/restore.pass"
chmod 600 "$DIR/run/restore.pass"
cat >"$DIR/run/rsyncd.conf" <<EOF
pid file = $DIR/run/rsyncd.pid
use chroot = no
[backup]
path = $DIR/src
read only = yes
[ubackup]
comment = the node's stored backups, for restores (read-only)
path = $DIR/backups
read only = yes
list = no
auth users = ubackup-restore
secrets file = $DIR/run/rsyncd.secrets
strict modes = yes
exclude = .ubackup-state/ .ubackup-partial/
refuse options = delete* remove-source-files
EOF
rsync --daemon --no-detach --address=127.0.0.1 --port="$RSYNC_PORT" \
    --config="$DIR/run/rsyncd.conf" --log-file="$DIR/run/rsyncd.log" &
PIDS+=($!)
# Sample backups: a 20 MB SQL dump and a 4 MB RDB-like file.
python3 - "$DIR/src" <<'EOF'
import os, random, sys
root = sys.argv[1]
random.seed(7)
with open(os.path.join(root, "database_3306", "db-20261127.sql"), "w") as f:
    f.write("-- MySQL dump 10.13\nCREATE TABLE orders (id INT, user VARCHAR(32), total INT);\n")
    for i in range(300000):
        f.write(f"INSERT INTO orders VALUES ({i},'user{random.randrange(5000)}',{random.randrange(10**6)});\n")
with open(os.path.join(root, "redis_6379", "dump-20261127.rdb"), "wb") as f:
    f.write(b"REDIS0011" + os.urandom(4 << 20))
EOF
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 50); do rsync "rsync://127.0.0.1:$RSYNC_PORT/" >/dev/null 2>&1 && break; sleep 0.1; done
echo "redis-server on 127.0.0.1:$REDIS_PORT, rsync daemon on 127.0.0.1:$RSYNC_PORT"
find "$DIR/src" -type f -printf '  %P  %s bytes\n'

say "4. jobs, as UBackup's client pushes them"
NOW=$(date +%s)
job() { # back_type instance rsync_model filename size
    printf '{"filename": "%s", "last_all_filename": null, "last_all_time": 0, "size": %s, "log": "ok", "create_time": %s, "success": true, "server_id": "S1001", "game_id": 31, "op_id": 1, "game_server_ip": "127.0.0.1", "back_type": "%s", "instance": %s, "rsync_model": "%s", "interval": 3600}' \
        "$4" "$5" "$NOW" "$1" "$2" "$3"
}
SQL=$DIR/src/database_3306/db-20261127.sql
RDB=$DIR/src/redis_6379/dump-20261127.rdb
redis-cli -p "$REDIS_PORT" LPUSH uuzuback_f "$(job redis 6379 backup/redis_6379 dump-20261127.rdb "$(stat -c %s "$RDB")")" >/dev/null
redis-cli -p "$REDIS_PORT" LPUSH level1 "$(job mysql 3306 backup/database_3306 db-20261127.sql "$(stat -c %s "$SQL")")" >/dev/null
redis-cli -p "$REDIS_PORT" LPUSH uuzuback_f '{"success": true, "filename": "../../etc/shadow", "server_id": "S1001", "game_server_ip": "127.0.0.1"}' >/dev/null
for l in level1 uuzuback_f; do echo "  $l: $(redis-cli -p "$REDIS_PORT" LLEN $l) job(s)"; done

say "5. ubackup-puller run, with UBackup's server config format"
cat >"$DIR/run/uuzuback.conf" <<EOF
[global]
work_thread = 2 #pull threads
rsync_bwlimit = 0 #no cap (KB/s)
server_root_path = $DIR/backups/
reserve = 1 #GB kept free
interval = 0
redis_host = 127.0.0.1
redis_port = $REDIS_PORT
redis_queue = level1 uuzuback_f #highest priority first
log = $DIR/run/puller.log
error_log = $DIR/run/puller.error
myip = 127.0.0.1
retry = 3
message_redis_host=127.0.0.1
message_redis_port=$REDIS_PORT
message_queue=message
node_id=quickstart
mysqlkeeptime = 7 #days (reserved in UBackup; honoured by ubackup-puller)
rediskeeptime = 3
# ubackup's one addition: UBackup's messages carry no port, and this demo's daemon is not
# on 873 (a real fleet's rsyncd is, and needs no such line).
rsync_port = $RSYNC_PORT
EOF
"$PULLER" check-config "$DIR/run/uuzuback.conf" | grep -E 'form|workers|lists|root' | sed 's/^/  /'
echo "running the node until the queue is empty..."
"$PULLER" run --config "$DIR/run/uuzuback.conf" --until-idle
echo "done; log: $DIR/run/puller.log"

say "6. where the files landed"
find "$DIR/backups" -type f -not -path '*/.ubackup-state/*' -printf '  %p  %s bytes\n'
for f in "$SQL" "$RDB"; do
    name=$(basename "$f")
    got=$(find "$DIR/backups" -name "$name" -type f | head -n1)
    if cmp -s "$f" "$got"; then echo "  $name: identical to the source"; else echo "  $name: DIFFERS" >&2; exit 1; fi
done

say "results (list 'message', oldest first)"
redis-cli -p "$REDIS_PORT" LRANGE message 0 -1 | tac | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    keys = ["succeed", "log", "type", "instance", "filename", "file_path", "size", "checksum_algorithm", "checksum", "bytes_received", "queue", "duration_ms"]
    print("  " + ", ".join(f"{k}={r.get(k)}" for k in keys))'
say "dead letters (list 'ubackup:dead')"
redis-cli -p "$REDIS_PORT" LRANGE ubackup:dead 0 -1 | python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    print("  reason:", d["reason"])'

say "7. a restore's path: the node's read-only module 'ubackup' (user ubackup-restore)"
rel=$(cd "$DIR/backups" && find . -name 'db-20261127.sql' -type f | head -n1 | sed 's|^\./||')
mkdir -p "$DIR/restore"
"$PULLER" fetch --password-file "$DIR/run/restore.pass" \
    "rsync://ubackup-restore@127.0.0.1:$RSYNC_PORT/ubackup/$rel" "$DIR/restore/"
if cmp -s "$SQL" "$DIR/restore/db-20261127.sql"; then
    echo "  ubackup/$rel: pulled back, identical to the source"
else
    echo "  ubackup/$rel: DIFFERS" >&2; exit 1
fi
if RSYNC_PASSWORD=wrong rsync "rsync://ubackup-restore@127.0.0.1:$RSYNC_PORT/ubackup/" >/dev/null 2>&1; then
    echo "  the module accepted a wrong password" >&2; exit 1
fi
echo "  a wrong password is refused; the module is read-only"

say "8. the node's life cycle: its manifest, retention (dry run) and a scrub pass"
"$PULLER" prune --config "$DIR/run/uuzuback.conf" --dry-run | sed 's/^/  /'
"$PULLER" scrub --config "$DIR/run/uuzuback.conf" | sed 's/^/  /'
