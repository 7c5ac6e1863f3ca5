//! Sample backup scripts, written the way a DBA writes them for UBackup: they make a backup file
//! under `back_dir`, then write `back_log` (line 1 `ok` + line 2 the file name, or `wrong` + the
//! error), and for full + incremental types also `last_all_log` when they took a full.
//!
//! Each script appends the name of every backup it completed to `back_dir/.ledger`, the
//! ground truth the end-to-end test compares the catalog with.
//!
//! Each script fails (exit 1, a message on stderr) while a file named `FAIL` exists in its
//! `back_dir`, so a demo or a test can make a backup fail on purpose and then mend it.

/// A MySQL-like full + incremental chain (xtrabackup style): the first run and every
/// `full_every`-th after it takes a full, the others an incremental on the previous backup.
/// Files are `full-<n>.xb` / `incr-<n>.xb` of random bytes, a little larger each run.
pub fn mysql_chain(full_every: u32) -> String {
    format!(
        r#"#!/bin/sh
# usage: mysql_chain.sh BACK_DIR BACK_LOG LAST_ALL_LOG
set -eu
dir=$1; log=$2; full_log=$3
if [ -e "$dir/FAIL" ]; then
    echo "xtrabackup: Can't connect to local MySQL server through socket" >&2
    exit 1
fi
n=$(cat "$dir/.runs" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$dir/.runs"
if [ $(( (n - 1) % {full_every} )) -eq 0 ]; then kind=full; else kind=incr; fi
name=$kind-$(printf '%04d' "$n").xb
head -c $((200000 + n * 4099)) /dev/urandom > "$dir/$name.tmp"
mv "$dir/$name.tmp" "$dir/$name"
printf 'ok\n%s\n' "$name" > "$log"
if [ "$kind" = full ]; then printf 'ok\n%s\n' "$name" > "$full_log"; fi
echo "$name" >> "$dir/.ledger"
"#
    )
}

/// A Redis RDB full every run: `dump-<n>.rdb`.
pub fn redis_full() -> String {
    r#"#!/bin/sh
# usage: redis_full.sh BACK_DIR BACK_LOG
set -eu
dir=$1; log=$2
if [ -e "$dir/FAIL" ]; then
    echo "redis-cli: Could not connect to Redis at 127.0.0.1:6379: Connection refused" >&2
    exit 1
fi
n=$(cat "$dir/.runs" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > "$dir/.runs"
name=dump-$(printf '%04d' "$n").rdb
{ printf 'REDIS0009'; head -c $((150000 + n * 1021)) /dev/urandom; } > "$dir/$name.tmp"
mv "$dir/$name.tmp" "$dir/$name"
printf 'ok\n%s\n' "$name" > "$log"
echo "$name" >> "$dir/.ledger"
"#
    .to_owned()
}
