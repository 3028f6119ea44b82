#!/usr/bin/env bash
# Failover benchmark (issue 13, README "Automatic failover"), on one machine, two parts:
#
#   kills       failover time: KILLS (20) SIGKILLs of whichever replica is master of a
#               2-replica SYNC_MASTER + SYNC_FLUSH group in controller mode (the controller
#               embedded in a nameserver, controllerHeartBeatTimeoutMills 2000, scan 200 ms),
#               each timed from the kill to the first SEND_OK on the new master (sent to it
#               directly) and to the first SEND_OK of a client that asks the nameserver for the
#               route before every attempt; min/median/max of both. This part is the ignored
#               test tests/it/failover.rs failover_time_over_20_kills (real processes, the
#               debug build cargo test makes).
#   throughput  SYNC throughput in controller mode against plain SYNC_MASTER (release builds):
#               loadgen produce (128 B, 64 in flight; LOADGEN_ARGS) against
#                 sync_master  a SYNC_MASTER and its SLAVE (both SYNC_FLUSH), and
#                 controller   the same pair in controller mode with allAckInSyncStateSet=true
#                              (the nameserver embeds the controller);
#               each on fresh stores; prints controller / sync_master (target >= 90 %).
#
# Usage: loadgen/failover-bench.sh [kills|throughput|all]   (default all)
# Knobs: OUT, STORE (base dir of the stores, on a real file system), KILLS (20), DURATION (10),
# WARMUP (2), SHARDS (1), MASTER_CPU (0), SLAVE_CPU (1), LOADGEN_CPU (1), NS_PORT (29876),
# MASTER_PORT (20911), SLAVE_PORT (20921), LOADGEN_ARGS, SKIP_BUILD=1, CARGO_TARGET_DIR, RINGMQ,
# LOADGEN (the binaries; default: the release builds under the target dir).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/loadgen-failover-bench}
STORE=${STORE:-/tmp/lg-failover-store}
KILLS=${KILLS:-20}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SHARDS=${SHARDS:-1}
MASTER_CPU=${MASTER_CPU:-0}
SLAVE_CPU=${SLAVE_CPU:-1}
LOADGEN_CPU=${LOADGEN_CPU:-1}
NS_PORT=${NS_PORT:-29876}
MASTER_PORT=${MASTER_PORT:-20911}
SLAVE_PORT=${SLAVE_PORT:-20921}
LOADGEN_ARGS=${LOADGEN_ARGS:--s 128 -w 64}
RINGMQ=${RINGMQ:-$TARGET/release/ringmq}
LOADGEN=${LOADGEN:-$TARGET/release/loadgen}
WHAT=${1:-all}

mkdir -p "$OUT"

kills() {
    echo "== kills: $KILLS SIGKILLs of the master (tests/it/failover.rs, debug build)"
    (cd "$ROOT" && FAILOVER_KILLS=$KILLS cargo test --test it \
        failover::failover_time_over_20_kills -- --ignored --nocapture --test-threads 1) \
        2>&1 | tee "$OUT/kills.log" | grep -E '^(round|failover over)'
}

# shellcheck source=loadgen/lib.sh
source "$ROOT/loadgen/lib.sh"
trap stop_all EXIT

# start_namesrv [controller]: a nameserver, with an embedded controller when asked.
start_namesrv() {
    {
        printf 'listenPort=%s\nlistenAddress=127.0.0.1\nkvConfigPath=%s/kv/kvConfig.json\n' \
            "$NS_PORT" "$STORE"
        if [ "${1:-}" = controller ]; then
            printf 'enableControllerInNamesrv=true\ncontrollerDLegerGroup=bench\n'
            printf 'controllerDLegerPeers=n0-127.0.0.1:%s\ncontrollerDLegerSelfId=n0\n' $((NS_PORT + 2))
            printf 'controllerStorePath=%s/controller\n' "$STORE"
        fi
    } >"$OUT/namesrv.properties"
    "$RINGMQ" namesrv -c "$OUT/namesrv.properties" >"$OUT/namesrv.log" 2>&1 &
    PIDS+=($!)
    wait_boot "$OUT/namesrv.log" 300
}

# start_broker NAME PORT CPU LINES: a SYNC_FLUSH broker of group bench-fo plus LINES.
start_broker() {
    local name=$1 port=$2 cpu=$3 lines=$4
    cat >"$OUT/$name.properties" <<EOF
brokerClusterName=DefaultCluster
brokerName=bench-fo
flushDiskType=SYNC_FLUSH
brokerIP1=127.0.0.1
brokerIP2=127.0.0.1
listenAddress=127.0.0.1
listenPort=$port
storePathRootDir=$STORE/$name
shardCount=$SHARDS
$lines
EOF
    taskset -c "$cpu" "$RINGMQ" broker -c "$OUT/$name.properties" -n "127.0.0.1:$NS_PORT" \
        >"$OUT/$name.log" 2>&1 &
    PIDS+=($!)
    wait_boot "$OUT/$name.log" 300
}

wait_slave() {
    for _ in $(seq 1 300); do
        "$RINGMQ" admin brokerStatus -n "127.0.0.1:$NS_PORT" -b "127.0.0.1:$MASTER_PORT" 2>/dev/null |
            grep -Eq '^haConnectionCount +: 1' && return 0
        sleep 0.1
    done
    echo "the slave did not connect; see $OUT/slave.log" >&2
    exit 1
}

wait_sync_state_set() {
    for _ in $(seq 1 300); do
        "$RINGMQ" admin getSyncStateSet -a "127.0.0.1:$NS_PORT" -b bench-fo 2>/dev/null |
            grep -q 'SyncStateSetNums.2' && return 0
        sleep 0.1
    done
    echo "the slave did not join the SyncStateSet; see $OUT/slave.log" >&2
    exit 1
}

run() {
    local name=$1
    echo "== $name: loadgen produce $LOADGEN_ARGS"
    # shellcheck disable=SC2086
    taskset -c "$LOADGEN_CPU" "$LOADGEN" produce -n "127.0.0.1:$NS_PORT" -t "FoBench_$name" \
        --duration "$DURATION" --warmup "$WARMUP" -q --json "$OUT/$name.json" $LOADGEN_ARGS
}

field() { grep -o "\"$2\": [0-9.]*" "$OUT/$1.json" | head -1 | awk '{print $2}'; }

throughput() {
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        (cd "$ROOT" && cargo build --release -p loadgen --bin loadgen && cargo build --release --bin ringmq)
    fi
    rm -rf "$STORE"
    start_namesrv
    start_broker master "$MASTER_PORT" "$MASTER_CPU" $'brokerRole=SYNC_MASTER\nbrokerId=0'
    start_broker slave "$SLAVE_PORT" "$SLAVE_CPU" $'brokerRole=SLAVE\nbrokerId=1'
    wait_slave
    run sync_master
    stop_all

    rm -rf "$STORE"
    start_namesrv controller
    local ctl
    ctl=$(printf '%s\n' brokerRole=SYNC_MASTER enableControllerMode=true \
        "controllerAddr=127.0.0.1:$NS_PORT" allAckInSyncStateSet=true \
        syncBrokerMetadataPeriod=1000 checkSyncStateSetPeriod=1000)
    # The first to ask is elected: the one on MASTER_CPU.
    start_broker master "$MASTER_PORT" "$MASTER_CPU" "$ctl"
    start_broker slave "$SLAVE_PORT" "$SLAVE_CPU" "$ctl"
    wait_sync_state_set
    run controller
    stop_all

    echo
    printf '%-12s %12s %9s %9s %9s %9s %8s\n' run msgs/s p50_us p99_us p999_us max_us failed
    for name in sync_master controller; do
        printf '%-12s %12.0f %9s %9s %9s %9s %8s\n' "$name" \
            "$(field "$name" throughput_messages_per_second)" "$(field "$name" p50_latency_us)" \
            "$(field "$name" p99_latency_us)" "$(field "$name" p999_latency_us)" \
            "$(field "$name" max_latency_us)" "$(field "$name" failed_messages)"
    done
    awk "BEGIN {printf \"controller / sync_master: %.0f%%\\n\", \
        100 * $(field controller throughput_messages_per_second) / $(field sync_master throughput_messages_per_second)}"
    echo "JSON reports in $OUT"
}

case "$WHAT" in
    kills) kills ;;
    throughput) throughput ;;
    all) kills; throughput ;;
    *) sed -n '2,24p' "$0" >&2; exit 2 ;;
esac
