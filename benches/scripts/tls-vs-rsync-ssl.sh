#!/usr/bin/env bash
# Issue 24's benchmarks: a 1 GiB whole-file pull over TLS (stunnel4 in front of a stock rsync
# 3.5.0 daemon, loopback), against a plain pull from the same daemon and against stock
# `rsync-ssl` (openssl mode) through the same stunnel, all in the same run, interleaved, each
# pull after `sync` and into an empty destination. The floors run in the same loop: `dd
# conv=fsync` of the same file, and the daemon's send rate (a pull into a sink that discards
# the data, plain and through stunnel).
#
#   bash benches/scripts/tls-vs-rsync-ssl.sh [WORKDIR]     # RUNS=5 rounds after a warm-up
#
# Needs rsync (3.5.0), rsync-ssl, openssl, stunnel4, GNU time at /usr/bin/time and python3.
# CPU is user+sys of the whole process tree (GNU time reports the waited-for children too:
# rsync-ssl's rsync and its `openssl s_client`). Prints per-round figures and the medians of
# the per-round ratios. Deletes the 1 GiB files at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
source benches/scripts/lib.sh
work=${1:-/tmp/ubackup-tls-bench}
runs=${RUNS:-5}
mib=${MIB:-1024}
mkdir -p "$work/big" "$work/out" "$work/pki" "$work/times"

cargo build --release -p ubackup-puller -p ubackup-benches --bin ubackup-puller --bin pull-discard
bin=${CARGO_TARGET_DIR:-$PWD/target}/release
fetch=$bin/ubackup-puller

src=$work/big/big.bin
if [[ ! -f $src || $(stat -c %s "$src") != $((mib * 1024 * 1024)) ]]; then
    head -c $((mib * 1024 * 1024)) /dev/urandom >"$src"
fi

# A private CA and a server certificate for "localhost" (P-256, as a fleet's CA might issue).
pki=$work/pki
if [[ ! -f $pki/server.crt ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=bench-ca -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$pki/server.key" -out "$pki/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' >"$pki/ext"
    openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
        -CAcreateserial -days 2 -extfile "$pki/ext" -out "$pki/server.crt" 2>/dev/null
fi

start_daemon "$work" "[big]\npath = $work/big"
tls_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/stunnel.conf" <<CONF
foreground = yes
pid =
output = $work/stunnel.log
[rsync]
accept = 127.0.0.1:$tls_port
connect = 127.0.0.1:$port
cert = $pki/server.crt
key = $pki/server.key
CONF
stunnel4 "$work/stunnel.conf" &
stunnel_pid=$!
trap 'kill $daemon_pid $stunnel_pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$tls_port") 2>/dev/null && break
    sleep 0.1
done

plain=rsync://127.0.0.1:$port/big/big.bin
tls=rsyncs://localhost:$tls_port/big/big.bin
export RSYNC_SSL_CA_CERT=$pki/ca.crt RSYNC_SSL_TYPE=openssl
dest=$work/out/dest
declare -A cmd=(
    [fetch]="$fetch fetch $plain $dest/"
    [fetch-tls]="$fetch fetch $tls $dest/"
    [rsync-ssl]="rsync-ssl -t rsync://localhost:$tls_port/big/big.bin $dest/"
    [rsync-ssl-fsync]="rsync-ssl -t --fsync rsync://localhost:$tls_port/big/big.bin $dest/"
    [dd]="dd if=$src of=$dest/big.bin bs=1M conv=fsync status=none"
    [ceiling]="$bin/pull-discard $plain"
    [ceiling-tls]="$bin/pull-discard $tls"
)
clients=(fetch-tls fetch rsync-ssl rsync-ssl-fsync dd ceiling ceiling-tls)
# CPU seconds (in clock ticks) of stunnel, and of the daemon's finished children (the
# sender of each pull), read from /proc: where the pipeline's CPU goes besides the client.
cpu_ticks() {
    local s d
    s=$(awk '{print $14 + $15}' "/proc/$stunnel_pid/stat")
    d=$(awk '{print $16 + $17}' "/proc/$daemon_pid/stat")
    echo "$s $d"
}
rm -f "$work/times/"*
for round in $(seq 0 "$runs"); do
    n=${#clients[@]}
    for i in $(seq 0 $((n - 1))); do
        c=${clients[$(((i + round) % n))]}
        rm -rf "$dest" && mkdir -p "$dest"
        sync
        before=$(cpu_ticks)
        /usr/bin/time -f '%e %U %S' -o "$work/times/$round.$c" ${cmd[$c]} >/dev/null
        sleep 0.2 # the daemon reaps its child
        echo "$before $(cpu_ticks)" >>"$work/times/$round.$c"
        if [[ $c != ceiling* ]] && ! cmp -s "$src" "$dest/big.bin"; then
            echo "round $round: $c did not produce an identical copy" >&2
            exit 1
        fi
        echo "round $round/$runs $c $(cat "$work/times/$round.$c")"
    done
done
rm -rf "$dest"

python3 - "$work/times" "$runs" "$mib" <<'PY'
import os, statistics, sys
d, runs, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = {}
for f in os.listdir(d):
    r, c = f.split(".", 1)
    if int(r) == 0:
        continue  # warm-up round
    lines = open(os.path.join(d, f)).read().split("\n")
    w, u, s = map(float, lines[-3].split()[-3:])
    s0, d0, s1, d1 = map(int, lines[-2].split())
    hz = os.sysconf("SC_CLK_TCK")
    t.setdefault(c, {})[int(r)] = (w, u + s, (s1 - s0) / hz, (d1 - d0) / hz)
gib = mib / 1024
def med(v): return statistics.median(v)
def rng(v): return f"{min(v):.2f}-{max(v):.2f}"
print(f"\n{runs} rounds after a warm-up; medians, (min-max)")
print("| client | wall s | client CPU s (user+sys, children included) | client CPU s per GiB | stunnel CPU s | daemon CPU s |")
print("|---|---|---|---|---|---|")
for c in ("fetch-tls", "fetch", "rsync-ssl", "rsync-ssl-fsync", "dd", "ceiling-tls", "ceiling"):
    w, u, st, dm = ([x[i] for x in t[c].values()] for i in range(4))
    print(f"| {c} | {med(w):.3f} ({rng(w)}) | {med(u):.3f} ({rng(u)}) | {med(u)/gib:.3f} | {med(st):.2f} | {med(dm):.2f} |")
print("\nPer-round ratios, median (min-max):")
print("| ratio | wall | CPU |")
print("|---|---|---|")
for a, b in (("fetch-tls", "fetch"), ("fetch-tls", "rsync-ssl"), ("fetch-tls", "rsync-ssl-fsync"),
             ("fetch-tls", "dd"), ("fetch-tls", "ceiling-tls"), ("ceiling-tls", "ceiling")):
    rounds = sorted(set(t[a]) & set(t[b]))
    w = [t[a][r][0] / t[b][r][0] for r in rounds]
    u = [t[a][r][1] / t[b][r][1] for r in rounds]
    print(f"| {a} / {b} | {med(w):.2f} ({rng(w)}) | {med(u):.2f} ({rng(u)}) |")
PY
if [[ ${KEEP:-0} != 1 ]]; then
    rm -f "$src"
fi
