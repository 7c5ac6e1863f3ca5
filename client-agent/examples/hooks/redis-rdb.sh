#!/bin/sh
# ubackup-agent restore hook for Redis (and SSDB-style single-file dumps): put the restored
# RDB in place of the server's dump file, atomically, keeping the old one aside.
#
#   ubackup-agent restore -c /etc/uuzuback.conf --instance redis6379 --at latest \
#       --to /data/restore/6379 --hook "sh /usr/local/ubackup/hooks/redis-rdb.sh"
#
# Redis backups are fulls: the hook takes the last file it is given (the only one).
# Environment it reads:
#   REDIS_DIR       the server's `dir` (default /var/lib/redis)
#   REDIS_DBFILE    the server's `dbfilename` (default dump.rdb)
#   REDIS_STOP      a command that stops the server first (e.g. "systemctl stop redis-server@6379");
#                   empty: the server must already be stopped (a running server would overwrite
#                   the file on its next save or at shutdown)
#   REDIS_START     a command that starts it afterwards (empty: none)
#
# With AOF on (`appendonly yes`), Redis 7 ignores dump.rdb at start when the AOF is missing, and
# loads the AOF instead of it when present: this hook moves `appendonlydir` aside, so start the
# server once with `--appendonly no` (REDIS_START), then `redis-cli CONFIG SET appendonly yes`
# writes a new AOF from the restored data.
set -eu

[ "$#" -ge 1 ] || { echo "redis hook: no files" >&2; exit 2; }
for rdb; do :; done   # the last argument
REDIS_DIR=${REDIS_DIR:-/var/lib/redis}
REDIS_DBFILE=${REDIS_DBFILE:-dump.rdb}
dest="$REDIS_DIR/$REDIS_DBFILE"

case "$rdb" in
    *.gz) reader="gzip -dc" ;;
    *.zst) reader="zstd -dc" ;;
    *) reader="cat" ;;
esac
# An RDB file starts with "REDIS" and a 4-digit version.
magic=$($reader "$rdb" | head -c 5)
[ "$magic" = REDIS ] || { echo "redis hook: $rdb is not an RDB file" >&2; exit 3; }

if [ -n "${REDIS_STOP:-}" ]; then sh -c "$REDIS_STOP"; fi
mkdir -p "$REDIS_DIR"
tmp="$dest.ubackup-restore.$$"
$reader "$rdb" >"$tmp"
sync "$tmp" 2>/dev/null || sync
if [ -e "$dest" ]; then mv -f "$dest" "$dest.before-restore"; fi
if [ -d "$REDIS_DIR/appendonlydir" ]; then
    rm -rf "$REDIS_DIR/appendonlydir.before-restore"
    mv "$REDIS_DIR/appendonlydir" "$REDIS_DIR/appendonlydir.before-restore"
    echo "redis hook: AOF moved to $REDIS_DIR/appendonlydir.before-restore; start with --appendonly no, then CONFIG SET appendonly yes" >&2
fi
mv -f "$tmp" "$dest"
chown --reference="$REDIS_DIR" "$dest" 2>/dev/null || true
echo "redis hook: $rdb is now $dest (the previous file is $dest.before-restore)"
if [ -n "${REDIS_START:-}" ]; then sh -c "$REDIS_START"; fi
