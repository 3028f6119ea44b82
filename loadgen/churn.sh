#!/usr/bin/env bash
# The connection-churn and bad-input runs of README "Connections and memory", each against a
# fresh `ringmq standalone` (release builds; default settings; store under $STORE):
#
#   rounds      $ROUNDS rounds of $CONNS connections opened at once (a third idle, a third
#               sending one GET_MAX_OFFSET, a third an invalid frame), held 1 s, closed, 3 s pause
#   sequential  $SEQUENTIAL connections one after another, connect then close
#   idle        2,200 idle connections held (the per-connection cost)
#   attack      `loadgen produce` at $RATE msgs/s open loop for $SECONDS s quiet, then again
#               for $SECONDS s while `loadgen churn attack` sends bad input (garbage, length
#               prefixes over and just under the limit, malformed headers, 5 MiB bodies, 2,200
#               silent connections, never-read pipelined pulls); p99 of both runs (and of
#               each second, with its max, in µs), the broker's CPU time in each, the
#               attacker's own CPU time, and the broker's VmRSS for 30 s after the attack
#
# Usage: loadgen/churn.sh [rounds|sequential|idle|attack ...]   (all four by default)
# Knobs (environment): OUT, STORE, ROUNDS (20), CONNS (2000), SEQUENTIAL (100000), RATE (20000),
# SECONDS (30), ATTACK_ARGS (extra `loadgen churn attack` flags, e.g. `--pullers 0` to leave one
# kind of bad input out, `--write-slice-bytes 0` for the oversize frames in one write each as
# before stop 29: on a kernel without full preemption those copies hold the broker's CPUs),
# ATTACK_NICE (run the attacker under `nice -n N`, so that on a small machine its own CPU use
# does not count against the broker), BENCH_WRAP (a command the broker and `loadgen produce`
# run under in every run, e.g. `nice -n -5` on a machine busy with other work;
# a real-time policy such as `chrt -f 10` changes what is measured: the broker is then woken at
# once for every request instead of finding several queued, ~3.4x the context switches and
# ~1.8x the CPU per message at 20,000 msgs/s, README "Connections and memory"), NS_PORT (29876), BROKER_PORT
# (20911), RINGMQ and LOADGEN (binaries; default target/release), SKIP_BUILD=1 to use the binaries as they are.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/target/loadgen-churn}
STORE=${STORE:-/tmp/lg-churn-store}
ROUNDS=${ROUNDS:-20}
CONNS=${CONNS:-2000}
SEQUENTIAL=${SEQUENTIAL:-100000}
RATE=${RATE:-20000}
SECONDS_EACH=${SECONDS:-30}
NS_PORT=${NS_PORT:-29876}
BROKER_PORT=${BROKER_PORT:-20911}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RINGMQ=${RINGMQ:-$TARGET_DIR/release/ringmq}
LOADGEN=${LOADGEN:-$TARGET_DIR/release/loadgen}

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
    rm -rf "$STORE"
}
trap stop_broker EXIT

start_broker() {
    local name=$1
    rm -rf "$STORE"
    mkdir -p "$STORE"
    printf 'brokerClusterName=DefaultCluster\nbrokerName=churn\nlistenPort=%s\n' \
        "$BROKER_PORT" > "$STORE.properties"
    ${BENCH_WRAP:-} "$RINGMQ" standalone --namesrv-port "$NS_PORT" --store "$STORE" -c "$STORE.properties" \
        > "$OUT/$name.broker.out" 2> "$OUT/$name.broker.log" &
    BROKER_PID=$!
    for _ in $(seq 200); do
        grep -q "ringmq standalone:" "$OUT/$name.broker.out" 2>/dev/null && break
        sleep 0.05
    done
    sleep 1
}

churn() {
    ${ATTACK_NICE:+nice -n "$ATTACK_NICE"} "$LOADGEN" churn --addr "127.0.0.1:$BROKER_PORT" --pid "$BROKER_PID" "$@"
}

run_rounds() {
    start_broker rounds
    churn rounds --rounds "$ROUNDS" --connections "$CONNS" --kind mixed | tee "$OUT/rounds.txt"
    echo "broker log lines: $(wc -l < "$OUT/rounds.broker.log")" | tee -a "$OUT/rounds.txt"
    stop_broker
}

run_sequential() {
    start_broker sequential
    # 6 s after each 10,000: past the 5 s in which the broker returns freed memory.
    churn sequential --count "$SEQUENTIAL" --every 10000 --pause-ms 6000 | tee "$OUT/sequential.txt"
    stop_broker
}

run_idle() {
    start_broker idle
    churn idle --connections 2200 | tee "$OUT/idle.txt"
    stop_broker
}

rss_mib() {
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$BROKER_PID/status"
}

# The broker's CPU time so far (user + system), in seconds.
cpu_s() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$BROKER_PID/stat"
}

run_attack() {
    start_broker attack
    local produce=(${BENCH_WRAP:-} "$LOADGEN" produce -n "127.0.0.1:$NS_PORT" -t ChurnBench --rate "$RATE"
        -w 256 --duration "$SECONDS_EACH" --warmup 2 -q)
    local cpu0 cpu1 cpu2
    cpu0=$(cpu_s)
    "${produce[@]}" --json "$OUT/attack-quiet.json" > "$OUT/attack-quiet.txt"
    local quiet_rss
    quiet_rss=$(rss_mib)
    cpu1=$(cpu_s)
    echo "quiet: VmRSS $quiet_rss MiB" | tee "$OUT/attack.txt"
    # The attack starts with the measured part of the second run and lasts as long.
    "${produce[@]}" --json "$OUT/attack-loud.json" > "$OUT/attack-loud.txt" &
    local produce_pid=$!
    sleep 2
    churn -t ChurnBench attack --seconds "$SECONDS_EACH" ${ATTACK_ARGS:-} | tee -a "$OUT/attack.txt" &
    local attack_pid=$!
    wait "$produce_pid"
    cpu2=$(cpu_s)
    wait "$attack_pid"
    local q l run
    q=$(jq .p99_latency_us "$OUT/attack-quiet.json")
    l=$(jq .p99_latency_us "$OUT/attack-loud.json")
    # Each second of both runs: acknowledged, p99 and max in µs (the warm-up seconds first).
    for run in quiet loud; do
        echo "per second ($run): $(jq -c '[.intervals[] | [.second, .sent_per_second,
            .p99_latency_us, .max_latency_us]]' \
            "$OUT/attack-$run.json")" | tee -a "$OUT/attack.txt"
    done
    # Of the sends due in each measured window, the share acknowledged (within loadgen's
    # timeout), whenever the acknowledgement came: what the broker did with the window's load.
    local share='.window_sent_messages / ([.window_issued_messages, 1] | max)'
    echo "sends due in the window acknowledged: quiet $(jq "$share" "$OUT/attack-quiet.json"), \
under attack $(jq "$share" "$OUT/attack-loud.json")" | tee -a "$OUT/attack.txt"
    echo "p99 quiet ${q} us, under attack ${l} us; VmRSS quiet $quiet_rss MiB, now $(rss_mib) MiB; \
broker log lines: $(wc -l < "$OUT/attack.broker.log"); broker CPU quiet \
$(echo "$cpu1 - $cpu0" | bc) s, under attack $(echo "$cpu2 - $cpu1" | bc) s" | tee -a "$OUT/attack.txt"
    stop_broker
}

for what in "${@:-rounds sequential idle attack}"; do
    for w in $what; do "run_$w"; done
done
