#!/usr/bin/env bash
# Replication benchmark (release builds), on one machine:
#
#   alone       a master with SYNC_FLUSH and no slave (ASYNC_MASTER)
#   replicated  the same master as SYNC_MASTER with SYNC_FLUSH, and its slave (SYNC_FLUSH):
#               a send is answered once it is durable on the master and the slave
#
# Both with loadgen sending 128 B single messages, 64 in flight (override with LOADGEN_ARGS).
# Each run gets fresh stores, a nameserver and brokers of SHARDS shards; the master runs on
# MASTER_CPU, the slave on SLAVE_CPU, loadgen on LOADGEN_CPU (on a 2-core machine the slave
# and loadgen share a core). Reports: $OUT/<run>.json; a table at the end.
#
# Knobs: OUT, STORE (base dir of the stores, on a real file system), DURATION (10), WARMUP (2),
# SHARDS (1), MASTER_CPU (0), SLAVE_CPU (1), LOADGEN_CPU (1), NS_PORT (29876),
# MASTER_PORT (20911), SLAVE_PORT (20921), LOADGEN_ARGS, SKIP_BUILD=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/target/loadgen-ha-bench}
STORE=${STORE:-/tmp/lg-ha-store}
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
RINGMQ=$ROOT/target/release/ringmq
LOADGEN=$ROOT/target/release/loadgen

mkdir -p "$OUT"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p loadgen --bin loadgen && cargo build --release --bin ringmq)
fi

# shellcheck source=loadgen/lib.sh
source "$ROOT/loadgen/lib.sh"
trap stop_all EXIT

start_namesrv() {
    printf 'listenPort=%s\nlistenAddress=127.0.0.1\nkvConfigPath=%s/kv/kvConfig.json\n' \
        "$NS_PORT" "$STORE" >"$OUT/namesrv.properties"
    "$RINGMQ" namesrv -c "$OUT/namesrv.properties" >"$OUT/namesrv.log" 2>&1 &
    PIDS+=($!)
    wait_boot "$OUT/namesrv.log"
}

# start_broker NAME ROLE ID PORT CPU
start_broker() {
    local name=$1 role=$2 id=$3 port=$4 cpu=$5
    cat >"$OUT/$name.properties" <<EOF
brokerClusterName=DefaultCluster
brokerName=bench-ha
brokerId=$id
brokerRole=$role
flushDiskType=SYNC_FLUSH
brokerIP1=127.0.0.1
brokerIP2=127.0.0.1
listenAddress=127.0.0.1
listenPort=$port
storePathRootDir=$STORE/$name
shardCount=$SHARDS
EOF
    taskset -c "$cpu" "$RINGMQ" broker -c "$OUT/$name.properties" -n "127.0.0.1:$NS_PORT" \
        >"$OUT/$name.log" 2>&1 &
    PIDS+=($!)
    wait_boot "$OUT/$name.log"
}

wait_slave() {
    for _ in $(seq 1 100); do
        "$RINGMQ" admin brokerStatus -n "127.0.0.1:$NS_PORT" -b "127.0.0.1:$MASTER_PORT" 2>/dev/null |
            grep -Eq '^haConnectionCount +: 1' && return 0
        sleep 0.1
    done
    echo "the slave did not connect; see $OUT/slave.log" >&2
    exit 1
}

run() {
    local name=$1
    echo "== $name: loadgen produce $LOADGEN_ARGS"
    # shellcheck disable=SC2086
    taskset -c "$LOADGEN_CPU" "$LOADGEN" produce -n "127.0.0.1:$NS_PORT" -t "HaBench_$name" \
        --duration "$DURATION" --warmup "$WARMUP" -q --json "$OUT/$name.json" $LOADGEN_ARGS
}

rm -rf "$STORE"
start_namesrv
start_broker master ASYNC_MASTER 0 "$MASTER_PORT" "$MASTER_CPU"
run alone
stop_all

rm -rf "$STORE"
start_namesrv
start_broker master SYNC_MASTER 0 "$MASTER_PORT" "$MASTER_CPU"
start_broker slave SLAVE 1 "$SLAVE_PORT" "$SLAVE_CPU"
wait_slave
run replicated
"$RINGMQ" admin brokerStatus -n "127.0.0.1:$NS_PORT" -b "127.0.0.1:$MASTER_PORT" | grep '^ha' \
    >"$OUT/replicated.ha.txt" || true
stop_all

echo
printf '%-11s %12s %9s %9s %9s %9s %8s\n' run msgs/s p50_us p99_us p999_us max_us failed
for name in alone replicated; do
    field() { grep -o "\"$1\": [0-9.]*" "$OUT/$name.json" | head -1 | awk '{print $2}'; }
    printf '%-11s %12.0f %9s %9s %9s %9s %8s\n' "$name" \
        "$(field throughput_messages_per_second)" "$(field p50_latency_us)" \
        "$(field p99_latency_us)" "$(field p999_latency_us)" "$(field max_latency_us)" \
        "$(field failed_messages)"
done
alone=$(grep -o '"throughput_messages_per_second": [0-9.]*' "$OUT/alone.json" | awk '{print $2}')
repl=$(grep -o '"throughput_messages_per_second": [0-9.]*' "$OUT/replicated.json" | awk '{print $2}')
awk "BEGIN {printf \"replicated / alone: %.0f%%\\n\", 100 * $repl / $alone}"
echo "JSON reports in $OUT"
