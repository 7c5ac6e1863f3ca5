#!/bin/sh
# ubackup-agent restore hook for MySQL backups taken with Percona XtraBackup (xbstream files):
# unpack the full and each incremental, prepare the full, apply every incremental in order,
# then copy the result back into an empty datadir.
#
#   ubackup-agent restore -c /etc/ubackup-agent.toml --instance mysql3306 --at 2026-11-30T08:00:00Z \
#       --to /data/restore/3306 --hook "sh /usr/local/ubackup/hooks/xtrabackup.sh"
#
# The files arrive as arguments, full first, in the order they must be applied (also in
# $UBACKUP_RESTORE_FILES, one a line). Environment it reads (all optional):
#   DATADIR        where to copy back (default /var/lib/mysql); must be empty, mysqld stopped
#   XTRABACKUP     the binary (default xtrabackup)
#   XB_MEMORY      --use-memory for prepare (default 1G)
#   COPY_BACK      1 to copy back (default 1); 0 stops after prepare
#   DECOMPRESS     1 when the backups were taken with --compress (default 0)
set -eu

[ "$#" -ge 1 ] || { echo "xtrabackup hook: no files" >&2; exit 2; }
XTRABACKUP=${XTRABACKUP:-xtrabackup}
DATADIR=${DATADIR:-/var/lib/mysql}
XB_MEMORY=${XB_MEMORY:-1G}
COPY_BACK=${COPY_BACK:-1}
DECOMPRESS=${DECOMPRESS:-0}
WORK="${UBACKUP_RESTORE_DIR:-$(dirname "$1")}/prepared"

unpack() { # file -> directory
    mkdir -p "$2"
    case "$1" in
        *.xbstream) xbstream -x -C "$2" <"$1" ;;
        *.tar.gz|*.tgz) tar -xzf "$1" -C "$2" ;;
        *.tar) tar -xf "$1" -C "$2" ;;
        *) echo "xtrabackup hook: do not know how to unpack $1" >&2; exit 2 ;;
    esac
    if [ "$DECOMPRESS" = 1 ]; then
        "$XTRABACKUP" --decompress --remove-original --target-dir="$2"
    fi
}

rm -rf "$WORK"
full="$1"; shift
echo "xtrabackup hook: full $full"
unpack "$full" "$WORK/base"
if [ "$#" -eq 0 ]; then
    "$XTRABACKUP" --prepare --use-memory="$XB_MEMORY" --target-dir="$WORK/base"
else
    # Every step but the last keeps the redo log un-applied (--apply-log-only), so the next
    # incremental can still be applied on top.
    "$XTRABACKUP" --prepare --apply-log-only --use-memory="$XB_MEMORY" --target-dir="$WORK/base"
    n=0
    for inc in "$@"; do
        n=$((n + 1))
        echo "xtrabackup hook: incremental $n/$#: $inc"
        unpack "$inc" "$WORK/inc$n"
        if [ "$n" -lt "$#" ]; then
            "$XTRABACKUP" --prepare --apply-log-only --use-memory="$XB_MEMORY" \
                --target-dir="$WORK/base" --incremental-dir="$WORK/inc$n"
        else
            "$XTRABACKUP" --prepare --use-memory="$XB_MEMORY" \
                --target-dir="$WORK/base" --incremental-dir="$WORK/inc$n"
        fi
        rm -rf "$WORK/inc$n"
    done
fi
if [ "$COPY_BACK" = 1 ]; then
    if [ -d "$DATADIR" ] && [ -n "$(ls -A "$DATADIR" 2>/dev/null)" ]; then
        echo "xtrabackup hook: $DATADIR is not empty; stop mysqld and move it away first" >&2
        exit 3
    fi
    "$XTRABACKUP" --copy-back --target-dir="$WORK/base" --datadir="$DATADIR"
    chown -R mysql:mysql "$DATADIR" 2>/dev/null || true
    echo "xtrabackup hook: copied back into $DATADIR; start mysqld"
else
    echo "xtrabackup hook: prepared in $WORK/base"
fi
