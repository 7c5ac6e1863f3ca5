#!/usr/bin/env bash
# The whole ubackup system on one machine, from nothing:
#
#   bash scripts/quickstart.sh            # walk through it, then stop everything
#   bash scripts/quickstart.sh --keep     # ...and keep it running to explore the dashboard
#
# 1. installs what is missing (rsync, redis-server; as root or with sudo);
# 2. builds ubackup-agent, ubackup-puller, ubackup-indexer and the demo driver;
# 3. starts, on 127.0.0.1 and ports picked at run time:
#    - a private redis-server (the job lists and the results list);
#    - two simulated database hosts, each an rsync daemon module with sample backup scripts
#      (a MySQL-like full + incremental chain and a Redis RDB full) that write real
#      back_log / last_all_log files;
#    - one `ubackup-agent run` per host, backing up every few seconds;
#    - two backup nodes (`ubackup-puller run`), each exporting its root through a read-only,
#      password-protected rsync module for restores;
#    - `ubackup-indexer run` on SQLite, with the dashboard and an admin user;
# 4. walks through it: backups cataloged, a script made to fail (script_error alert, then
#    resolved), an agent stopped (overdue alert, then resolved), and the latest MySQL chain
#    restored with `ubackup-agent restore` and compared byte for byte with the host's files;
# 5. stops everything cleanly (or, with --keep, waits for Ctrl-C).
#
# Options after the script name go to the demo driver: --keep, --interval SECS, --port PORT,
# --dir DIR. Everything it made stays in the printed directory.
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
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    need_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    need_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust from https://rustup.rs" >&2
    exit 1
fi
echo "rsync: $(rsync --version | head -n1)"
echo "redis: $(redis-server --version)"

say "2. build"
start=$SECONDS
cargo build --release -q -p ubackup-agent -p ubackup-puller -p ubackup-indexer -p ubackup-e2e
echo "built in $((SECONDS - start)) s"
BIN=${CARGO_TARGET_DIR:-$(pwd)/target}/release

say "3. the system"
exec "$BIN/ubackup-demo" "$@"
