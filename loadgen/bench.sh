#!/usr/bin/env bash
# loadgen's reference runs against a local `ringmq standalone` (release builds):
#
#   async-128b    128 B single sends, 64 in flight, ASYNC_FLUSH
#   async-1k      1 KiB single sends, 64 in flight, ASYNC_FLUSH
#   sync-128b     128 B single sends, 64 in flight, SYNC_FLUSH
#   sync-1k       1 KiB single sends, 64 in flight, SYNC_FLUSH
#   batch32-128b  batches of 32 x 128 B (SEND_BATCH_MESSAGE), 64 in flight, ASYNC_FLUSH
#   open50k-sync  open loop at 50,000 msgs/s, 128 B, SYNC_FLUSH (latency from intended time)
#   open25k-sync  the same at 25,000 msgs/s (a rate this 2-core machine's broker sustains)
#
# Each run gets a fresh store and broker (one shard, pinned to BROKER_CPU) and loadgen runs on
# LOADGEN_CPU: on a 2-core machine each side has a core. Every run writes
# $OUT/<name>.json (loadgen's report) and $OUT/<name>.broker.json (the broker's VmRSS and VmHWM
# right after the run); a table of the main numbers is printed at the end.
#
# Knobs (environment): OUT, STORE, DURATION (s, default 10), WARMUP (s, default 2),
# BROKER_CPU (0), LOADGEN_CPU (1), NS_PORT (29876), BROKER_PORT (20911),
# SERIALIZE (json | rocketmq: request header encoding, default json as the Java client),
# SKIP_BUILD=1 to use the binaries already in target/release.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/target/loadgen-bench}
STORE=${STORE:-/tmp/lg-store}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
BROKER_CPU=${BROKER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
NS_PORT=${NS_PORT:-29876}
BROKER_PORT=${BROKER_PORT:-20911}
SERIALIZE=${SERIALIZE:-json}
RINGMQ=$ROOT/target/release/ringmq
LOADGEN=$ROOT/target/release/loadgen

mkdir -p "$OUT"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p loadgen --bin loadgen && cargo build --release --bin ringmq)
fi

BROKER_PID=
stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    fi
}
trap stop_broker EXIT

# start_broker ASYNC_FLUSH|SYNC_FLUSH: a fresh store and a one-shard broker on BROKER_CPU.
start_broker() {
    local props=$OUT/broker-$1.properties
    cat >"$props" <<EOF
brokerClusterName=DefaultCluster
brokerName=bench-broker
brokerId=0
listenPort=$BROKER_PORT
flushDiskType=$1
shardCount=1
EOF
    rm -rf "$STORE"
    taskset -c "$BROKER_CPU" "$RINGMQ" standalone -c "$props" --store "$STORE" \
        --namesrv-port "$NS_PORT" >"$OUT/broker.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 1 100); do
        grep -q "ringmq standalone: nameserver" "$OUT/broker.log" && return 0
        sleep 0.1
    done
    echo "broker did not start; see $OUT/broker.log" >&2
    exit 1
}

# run NAME FLUSH LOADGEN-ARGS...: one measured run on a fresh broker.
run() {
    local name=$1 flush=$2
    shift 2
    start_broker "$flush"
    echo "== $name ($flush): loadgen produce $*"
    "$LOADGEN" produce -n "127.0.0.1:$NS_PORT" -t "Bench_$name" --cpus "$LOADGEN_CPU" \
        --duration "$DURATION" --warmup "$WARMUP" --serialize "$SERIALIZE" -q \
        --json "$OUT/$name.json" "$@"
    local rss hwm
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$BROKER_PID/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$BROKER_PID/status")
    printf '{"broker_vmrss_kib": %s, "broker_vmhwm_kib": %s}\n' "$rss" "$hwm" \
        >"$OUT/$name.broker.json"
    echo "   broker VmRSS $rss KiB, VmHWM $hwm KiB"
    stop_broker
}

run async-128b ASYNC_FLUSH -s 128 -w 64
run async-1k ASYNC_FLUSH -s 1024 -w 64
run sync-128b SYNC_FLUSH -s 128 -w 64
run sync-1k SYNC_FLUSH -s 1024 -w 64
run batch32-128b ASYNC_FLUSH -s 128 -w 64 --batch 32
run open50k-sync SYNC_FLUSH -s 128 -w 256 --rate 50000
run open25k-sync SYNC_FLUSH -s 128 -w 256 --rate 25000

echo
printf '%-14s %12s %9s %9s %9s %9s %8s %10s %10s\n' run msgs/s p50_us p99_us p999_us max_us \
    failed lg_cores broker_MiB
for name in async-128b async-1k sync-128b sync-1k batch32-128b open50k-sync open25k-sync; do
    field() { grep -o "\"$1\": [0-9.]*" "$OUT/$name.json" | head -1 | awk '{print $2}'; }
    rss=$(grep -o '"broker_vmrss_kib": [0-9]*' "$OUT/$name.broker.json" | awk '{print $2}')
    printf '%-14s %12.0f %9s %9s %9s %9s %8s %10.2f %10.1f\n' "$name" \
        "$(field throughput_messages_per_second)" "$(field p50_latency_us)" \
        "$(field p99_latency_us)" "$(field p999_latency_us)" "$(field max_latency_us)" \
        "$(field failed_messages)" "$(field loadgen_cpu_cores)" "$(awk "BEGIN {print $rss / 1024}")"
done
echo "JSON reports in $OUT"
