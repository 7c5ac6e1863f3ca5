#!/usr/bin/env bash
# Shared by the comparison scripts: start a stock rsync 3.5.0 daemon on a free loopback port.
#
#   start_daemon WORKDIR "[module]\npath = ...\n..."   → sets $port, stops the daemon at exit

start_daemon() {
    local work=$1 modules=$2
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    {
        echo "use chroot = no"
        echo "log file = $work/rsyncd.log"
        if [[ $(id -u) == 0 ]]; then
            printf 'uid = root\ngid = root\n'
        fi
        printf '%b\n' "$modules"
    } >"$work/rsyncd.conf"
    rsync --daemon --no-detach --address=127.0.0.1 --port="$port" --config="$work/rsyncd.conf" &
    daemon_pid=$!
    trap 'kill $daemon_pid 2>/dev/null || true' EXIT
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "rsync daemon did not start; see $work/rsyncd.log" >&2
    return 1
}
