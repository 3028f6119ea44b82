#!/usr/bin/env bash
# Timer messages (loadgen timer) against fresh ringmq brokers, alternating the builds given in
# BINS ("name=/path/to/ringmq ..."), ROUNDS times; LOADGEN_ARGS go to `loadgen timer` (the
# broker's address and PID are added). Each run: a nameserver and a 2-shard (SHARDS) broker
# with defaults on a fresh store in /tmp, stopped and removed afterwards. ENV_<name> adds
# environment to that build's broker (e.g. ENV_noprep="RINGMQ_TIMER_PREPARE=0").
#
#   BINS="base=/tmp/ringmq-main new=target/release/ringmq" ROUNDS=2 \
#     LOADGEN_ARGS="--count 100000 --lead-s 45 --idle-s 10" loadgen/timer-bench.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
BINS=${BINS:-new=$ROOT/target/release/ringmq}
ROUNDS=${ROUNDS:-1}
SHARDS=${SHARDS:-2}
NS_PORT=${NS_PORT:-29876}
BROKER_PORT=${BROKER_PORT:-20911}
LOADGEN_ARGS=${LOADGEN_ARGS:---count 100000 --lead-s 45 --idle-s 10}
# shellcheck source=loadgen/lib.sh
source "$ROOT/loadgen/lib.sh"
export RINGMQ_LOG_DIR=none
STORE=
cleanup() {
    stop_all
    [ -n "$STORE" ] && rm -rf "$STORE"
    STORE=
}
trap cleanup EXIT

for round in $(seq 1 "$ROUNDS"); do
    for entry in $BINS; do
        name=${entry%%=*}
        bin=${entry#*=}
        env_var=ENV_$name
        STORE=$(mktemp -d /tmp/ringmq-timer-bench-XXXXXX)
        printf 'listenPort=%s\nlistenAddress=127.0.0.1\nkvConfigPath=%s/kv/kvConfig.json\n' \
            "$NS_PORT" "$STORE" >"$STORE/namesrv.properties"
        "$bin" namesrv -c "$STORE/namesrv.properties" >"$STORE/namesrv.log" 2>&1 &
        PIDS+=($!)
        wait_boot "$STORE/namesrv.log"
        printf 'brokerIP1=127.0.0.1\nlistenAddress=127.0.0.1\nlistenPort=%s\nstorePathRootDir=%s/store\nshardCount=%s\n' \
            "$BROKER_PORT" "$STORE" "$SHARDS" >"$STORE/broker.properties"
        env ${!env_var:-} "$bin" broker -c "$STORE/broker.properties" -n "127.0.0.1:$NS_PORT" \
            >"$STORE/broker.log" 2>&1 &
        PIDS+=($!)
        wait_boot "$STORE/broker.log"
        echo "=== round $round: $name ($bin ${!env_var:-}); load average $(cut -d' ' -f1-3 /proc/loadavg)"
        # shellcheck disable=SC2086
        "$LOADGEN" timer --addr "127.0.0.1:$BROKER_PORT" --pid "${PIDS[1]}" $LOADGEN_ARGS || true
        echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
        cleanup
    done
done
