#!/usr/bin/env bash
# The node's life cycle at scale: prune's decision and manifest work on FILES synthetic
# manifest entries, and the scrub's read rate and CPU cost on SCRUB_MIB of stored files read
# from disk (their pages dropped with posix_fadvise first; nothing else on the machine is
# evicted).
#
#   bash benches/scripts/lifecycle.sh            # FILES=1000000 SCRUB_MIB=2048 RUNS=3
#   FILES=100000 SCRUB_MIB=256 bash benches/scripts/lifecycle.sh
#
# Prune: a manifest of FILES entries written by `--example synthetic_manifest` (daily full +
# 23 hourly incremental-on-incremental backups per instance, 21 days); `prune --dry-run` at day
# 21 with keep_days = 7 (two thirds expire) RUNS times, then one real prune (the files do not
# exist: it measures the decision, the manifest records and the compaction, not unlink; no
# Redis, so the events stay pending). Scrub: `rebuild-manifest`, then `scrub` at the default
# 50 MiB/s and unlimited. Prints wall time, user+sys CPU and peak RSS from /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/../.."
FILES=${FILES:-1000000}
SCRUB_MIB=${SCRUB_MIB:-2048}
RUNS=${RUNS:-3}
cargo build --release -q -p ubackup-puller --bin ubackup-puller --example synthetic_manifest
T=${CARGO_TARGET_DIR:-$(pwd)/target}/release
P=$T/ubackup-puller
W=$(mktemp -d /tmp/ubackup-lifecycle.XXXXXX)
trap 'rm -rf "$W"' EXIT
# timed LABEL CMD...: runs CMD (its stdout passes through), then prints /usr/bin/time's figures.
timed() {
    /usr/bin/time -o "$W/time" -f "  $1: %e s wall, %U s user, %S s sys, %M KB peak RSS" "${@:2}" || true
    cat "$W/time" >&3
}
exec 3>&1

echo "== prune over $FILES manifest entries ($(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg))"
cat >"$W/prune.toml" <<CONF
[node]
root = "$W/prune"
[queue]
redis = "redis://127.0.0.1:1/"
[retention]
interval_secs = 0
[retention.mysql]
keep_days = 7
[log]
level = "warn"
CONF
"$T/examples/synthetic_manifest" "$W/prune" "$FILES"
ls -l "$W/prune/.ubackup-state/manifest.log" | awk '{print "  manifest: " $5 " bytes"}'
cp "$W/prune/.ubackup-state/manifest.log" "$W/manifest.orig"
for _ in $(seq "$RUNS"); do
    timed "dry run" "$P" prune --config "$W/prune.toml" --dry-run --now-ms 1701814400000 >"$W/out"
    tail -n1 "$W/out" | sed 's/^/  /'
done
timed "real run" "$P" prune --config "$W/prune.toml" --now-ms 1701814400000 >"$W/out" 2>/dev/null
tail -n1 "$W/out" | sed 's/^/  /'

echo "== scrub of $SCRUB_MIB MiB in 256 MiB files"
mkdir -p "$W/scrub/mysql/10.0.0/1"
for i in $(seq $(((SCRUB_MIB + 255) / 256))); do
    head -c $((256 << 20)) /dev/urandom >"$W/scrub/mysql/10.0.0/1/dump-$i.xb"
done
cat >"$W/scrub.toml" <<CONF
[node]
root = "$W/scrub"
[queue]
redis = "redis://127.0.0.1:1/"
[log]
level = "warn"
CONF
drop_pages() {
    python3 - "$W/scrub" <<'PY'
import glob, os, sys
for p in glob.glob(sys.argv[1] + "/**/*.xb", recursive=True):
    fd = os.open(p, os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
PY
}
timed "rebuild-manifest (unlimited)" "$P" rebuild-manifest --config "$W/scrub.toml" --rate 0 | tail -n1 | cut -c1-60 | sed 's/^/  /'
for rate in 50M 0; do
    drop_pages
    timed "scrub --rate $rate, from disk" "$P" scrub --config "$W/scrub.toml" --rate "$rate" 2>/dev/null | sed 's/^/  /'
done
