#!/usr/bin/env bash
# Starts or stops a whole ringmq layout on this machine: two nameservers (127.0.0.1:9876 and
# 127.0.0.1:9886), or the layout's own namesrv-*.properties (controller-2x3: three nameservers
# with embedded controllers), and the brokers of conf/<layout>/ (masters first, then slaves;
# in controller mode the controllers pick the masters).
#
#   conf/cluster.sh start  2m-2s-sync [RUN_DIR]   # RUN_DIR defaults to ./run/<layout>
#   conf/cluster.sh start  controller-2x3         # 3 nameservers+controllers, 2 groups x 3
#   conf/cluster.sh status 2m-2s-sync [RUN_DIR]
#   conf/cluster.sh stop   2m-2s-sync [RUN_DIR]
#
# Stores, logs and PID files go under RUN_DIR. Processes are stopped by the PIDs recorded at
# start (SIGTERM, then waiting for each to exit), never by name. The binary is $RINGMQ, or
# `ringmq` on the PATH, or target/release/ringmq.
set -euo pipefail

usage() { sed -n '2,12p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
cmd=$1
layout=$2
here="$(cd "$(dirname "$0")" && pwd)"
[ -d "$here/$layout" ] || { echo "no layout conf/$layout" >&2; exit 2; }
run="${3:-$PWD/run/$layout}"
ringmq="${RINGMQ:-$(command -v ringmq || echo "$here/../target/release/ringmq")}"
namesrvs=(9876 9886)
ns_list="127.0.0.1:9876;127.0.0.1:9886"
# The layout's own nameservers, if it has any (their listenPort lines make the list).
layout_ns=("$here/$layout"/namesrv-*.properties)
if [ -e "${layout_ns[0]}" ]; then
    ns_list=$(for f in "${layout_ns[@]}"; do
        echo "127.0.0.1:$(sed -n 's/^listenPort=//p' "$f")"
    done | paste -sd';')
else
    layout_ns=()
fi

# Masters first, then slaves (a slave learns its master from the nameservers).
brokers() {
    for f in "$here/$layout"/*.properties; do
        case "$f" in *-s.properties | */namesrv-*.properties) ;; *) echo "$f" ;; esac
    done
    for f in "$here/$layout"/*-s.properties; do
        [ -e "$f" ] && echo "$f"
    done
    return 0
}

# Waits until $2 (a log) says "boot success", or the process $1 died, or 30 s passed.
wait_boot() {
    local pid=$1 log=$2
    for _ in $(seq 300); do
        grep -q "boot success" "$log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "failed to start; see $log:" >&2; tail -5 "$log" >&2; return 1; }
        sleep 0.1
    done
    echo "no boot within 30 s; see $log" >&2
    return 1
}

launch() {
    local name=$1; shift
    local log="$run/logs/$name.log"
    if [ -f "$run/pids/$name.pid" ] && kill -0 "$(cat "$run/pids/$name.pid")" 2>/dev/null; then
        echo "$name already running (pid $(cat "$run/pids/$name.pid"))"
        return 0
    fi
    (cd "$run" && exec "$ringmq" "$@") >"$log" 2>&1 &
    local pid=$!
    echo "$pid" >"$run/pids/$name.pid"
    wait_boot "$pid" "$log"
    echo "$name started (pid $pid)"
}

start() {
    [ -x "$ringmq" ] || { echo "ringmq binary not found ($ringmq): cargo build --release" >&2; exit 1; }
    mkdir -p "$run/logs" "$run/pids"
    for conf in "${layout_ns[@]}"; do
        launch "$(basename "$conf" .properties)" namesrv -c "$conf"
    done
    [ ${#layout_ns[@]} -eq 0 ] && for port in "${namesrvs[@]}"; do
        local conf="$run/namesrv-$port.properties"
        printf 'listenPort=%s\nlistenAddress=127.0.0.1\nkvConfigPath=%s\n' \
            "$port" "$run/namesrv-$port/kvConfig.json" >"$conf"
        launch "namesrv-$port" namesrv -c "$conf"
    done
    while read -r conf; do
        launch "$(basename "$conf" .properties)" broker -c "$conf" -n "$ns_list"
    done < <(brokers)
    echo "layout $layout is up; nameservers $ns_list"
}

# Stops one process by its recorded PID, if it is still the ringmq we started.
stop_one() {
    local pidfile=$1 name pid
    name=$(basename "$pidfile" .pid)
    pid=$(cat "$pidfile")
    if ! kill -0 "$pid" 2>/dev/null || ! grep -qa ringmq "/proc/$pid/cmdline" 2>/dev/null; then
        echo "$name not running"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || { echo "$name stopped (pid $pid)"; rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    echo "$name (pid $pid) did not stop within 30 s" >&2
    return 1
}

stop() {
    [ -d "$run/pids" ] || { echo "nothing started under $run"; return 0; }
    # Slaves, then masters (and controller-mode replicas), then the nameservers.
    for pattern in '*-s.pid' 'broker-*.pid' 'namesrv-*.pid'; do
        for pidfile in "$run/pids"/$pattern; do
            [ -e "$pidfile" ] && stop_one "$pidfile"
        done
    done
    return 0
}

status() {
    for pidfile in "$run/pids"/*.pid; do
        [ -e "$pidfile" ] || continue
        local pid name
        pid=$(cat "$pidfile")
        name=$(basename "$pidfile" .pid)
        if kill -0 "$pid" 2>/dev/null; then echo "$name running (pid $pid)"; else echo "$name dead"; fi
    done
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac
