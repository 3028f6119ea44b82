#!/usr/bin/env bash
# Where a saturated broker's CPU goes, thread by thread: ringmq builds alternated run by run,
# each run on a fresh store, with every shard thread's CPU and context switches per message
# (from /proc/PID/task). With 2 shards the run says which shard read the connection (the
# kernel's SO_REUSEPORT hash of the client's port picks it per run): that shard does most of
# the work (it decodes every request and builds every record) and rarely sleeps; the other
# appends the records handed to it and sleeps between hand-offs.
#
#   BINS="base=/path/to/ringmq new=/path/to/ringmq" loadgen/threads.sh
#
# Cases (CASES, default "lg-a2 lg-a1"), 128 B bodies, nothing pinned:
#   lg-a1 lg-a2     loadgen produce, closed loop, 64 in flight, DURATION s; 1 / 2 shards
#   psh-a1 psh-a2   RocketMQ's producer.sh -w 64 (PRODUCER_SH, run in the foreground as
#                   compare.sh runs it), measured over its 2nd and 3rd 10 s windows; 1 / 2 shards
#   lg-s1 ... psh-s2  the same under SYNC_FLUSH (`-a` cases are ASYNC_FLUSH)
# Each line: the build, the case, msgs/s, the load average, the whole broker's CPU per message
# (`all=`, every thread: io_uring's workers included), then per shard thread that ran:
# `shard-N cpu=` µs per message, `vcs=` voluntary (sleeps) and `nvcs=` involuntary context
# switches per message. The shard with `vcs` near 0 and most of the CPU is the one reading.
#
# Knobs: ROUNDS (2), DURATION (8), LOADGEN (target/release/loadgen), NS_PORT (29986),
# BROKER_PORT (21931). Ports must be free; stores live under /tmp and are removed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LOADGEN=${LOADGEN:-$TARGET/release/loadgen}
BINS=${BINS:-new=$TARGET/release/ringmq}
CASES=${CASES:-lg-a2 lg-a1}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
NS_PORT=${NS_PORT:-29986}
BROKER_PORT=${BROKER_PORT:-21931}
PGID=
STORE=
# shellcheck source=loadgen/lib.sh
source "$ROOT/loadgen/lib.sh"
trap stop_broker EXIT

# threads: one line per shard thread of the broker: name, CPU ticks, voluntary and
# involuntary context switches.
threads() {
    local t
    for t in /proc/"$PGID"/task/*; do
        grep -q '^shard' "$t/comm" 2>/dev/null || continue
        printf '%s-%s %s %s\n' "$(basename "$t")" "$(cat "$t/comm")" \
            "$(awk '{print $14 + $15}' "$t/stat")" \
            "$(awk '/^voluntary_ctxt/ {v = $2} /^nonvoluntary_ctxt/ {n = $2} END {print v, n}' "$t/status")"
    done | sort
}

# proc_ticks: the broker process's utime+stime, every thread (ended ones included), in ticks.
proc_ticks() {
    awk '{print $14 + $15}' "/proc/$PGID/stat"
}

# run BUILD RINGMQ CASE
run() {
    local name=$1 ringmq=$2 case=$3 shards=${3##*-[as]} flush=ASYNC_FLUSH
    [[ $case == *-s* ]] && flush=SYNC_FLUSH
    STORE=$(mktemp -d /tmp/ringmq-threads.XXXXXX)
    cat >"$STORE/broker.properties" <<EOF
brokerClusterName=DefaultCluster
brokerName=threads-broker
brokerId=0
listenPort=$BROKER_PORT
flushDiskType=$flush
shardCount=$shards
EOF
    setsid "$ringmq" standalone -c "$STORE/broker.properties" --store "$STORE/store" \
        --namesrv-port "$NS_PORT" >"$STORE/broker.log" 2>&1 &
    PGID=$!
    wait_sendable "$NS_PORT" ThreadsWarm 60 0.5 "$name" || { stop_broker; return; }
    local before after sent tps all0 all1
    if [[ $case == lg-* ]]; then
        before=$(threads)
        all0=$(proc_ticks)
        "$LOADGEN" produce -n "127.0.0.1:$NS_PORT" -t "Threads_$case" -s 128 -w 64 \
            --duration "$DURATION" --warmup 2 -q --json "$STORE/out.json" >/dev/null 2>&1 || true
        after=$(threads)
        all1=$(proc_ticks)
        sent=$(grep -o '"sent_messages": [0-9]*' "$STORE/out.json" | awk '{print $2}')
        tps=$(grep -o '"throughput_messages_per_second": [0-9.]*' "$STORE/out.json" | awk '{printf "%.0f", $2}')
    else
        local log=$STORE/psh.log
        NAMESRV_ADDR=127.0.0.1:$NS_PORT setsid sh "$PRODUCER_SH" -n "127.0.0.1:$NS_PORT" \
            -t "Threads_$case" -w 64 -s 128 >"$log" 2>&1 &
        local psh=$!
        wait_windows "$log" 1 "$psh"
        before=$(threads)
        all0=$(proc_ticks)
        wait_windows "$log" 3 "$psh"
        after=$(threads)
        all1=$(proc_ticks)
        kill -TERM -- "-$psh" 2>/dev/null || true
        wait "$psh" 2>/dev/null || true
        sent=$(window_tps "$log" | sed -n 2,3p | awk '{n += $1 * 10} END {print n + 0}')
        tps=$((sent / 20))
    fi
    printf '%s\t%s\t%s msgs/s\tload %s\tall=%s\t' "$name" "$case" "$tps" "$(cut -d' ' -f1 /proc/loadavg)" \
        "$(awk -v a="$all0" -v b="$all1" -v n="${sent:-0}" -v tick="$(getconf CLK_TCK)" \
            'BEGIN { if (n > 0) printf "%.2f", (b - a) * 1e6 / tick / n; else printf "-" }')"
    join <(echo "$before") <(echo "$after") | awk -v n="${sent:-0}" -v tick="$(getconf CLK_TCK)" '
        n > 0 && $5 > $2 {
            sub(/^[0-9]+-/, "", $1)
            printf "%s cpu=%.2f vcs=%.3f nvcs=%.3f  ", $1, ($5 - $2) * 1e6 / tick / n, ($6 - $3) / n, ($7 - $4) / n
        }'
    echo
    stop_broker
}

for round in $(seq 1 "$ROUNDS"); do
    for case in $CASES; do
        [[ $case == psh-* && -z "${PRODUCER_SH:-}" ]] && continue
        builds=($BINS)
        # The order of the builds flips every other round.
        [ $((round % 2)) = 0 ] && builds=($(printf '%s\n' "${builds[@]}" | tac))
        for b in "${builds[@]}"; do
            run "${b%%=*}" "${b#*=}" "$case"
        done
    done
done
