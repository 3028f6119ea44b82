#!/usr/bin/env bash
# Broker CPU per message, two or more ringmq builds alternated case by case in the same
# minutes (this machine is shared and noisy: compare builds only within one run).
#
#   BINS="old=/path/to/old/ringmq new=/path/to/new/ringmq" loadgen/cpu.sh
#
# The floor: a build given as `null:glommio` or `null:threads` (e.g. BINS="null=null:glommio
# threads=null:threads new=...") is `loadgen null-broker` on NS_PORT, its own nameserver, which
# answers every send SEND_OK and stores nothing (loadgen/src/null_broker.rs): one glommio
# executor, or a blocking thread per connection. It has no shards or flush: it runs only the
# `*-a1` cases, and its CPU per message is what this machine's wake-ups, system calls and
# loopback cost alone. `null:hop` is the glommio one handing the records of odd queues to a
# second executor (one channel message per read pass) and answering without waiting for it:
# the floor of handing half the records to another core, so it runs only the `*-a2` cases.
#
# Cases (CASES, default all), each on a fresh store, 128 B bodies, nothing pinned:
#   open-a1 open-a2   open loop at RATE msgs/s (256 in flight at most), ASYNC_FLUSH, 1 / 2 shards
#   open-s1 open-s2   the same under SYNC_FLUSH
#   w1-a1 w1-a2       one synchronous producer (`loadgen produce -w 1`), ASYNC_FLUSH, 1 / 2 shards
#   w1-s1 w1-s2       the same under SYNC_FLUSH, 1 / 2 shards
# For each: msgs/s, p99 (µs), the broker's CPU per message (utime+stime from /proc/PID/stat
# over the measured run ÷ messages sent, µs) and, with SYSCALLS=1, per message: io_uring_enter,
# eventfd writes (write(2) calls), futex calls, context switches and all system calls (`perf
# stat` on the broker);
# last, p999 and max latency (µs) and the write requests the device under /tmp completed per
# message (a SYNC_FLUSH broker's durable writes: messages per flush round is its inverse). The
# header gives the disk's own durable 4 KiB write rate and the CPU dd spends per such write
# (`disk_probe` in lib.sh): a SYNC_FLUSH case's CPU per message above its ASYNC twin is about
# that cost times its writes per message.
#
# Knobs: ROUNDS (3: each round runs every case once per build, builds in turn, the order
# flipped every other round), DURATION (8 s), WARMUP (2 s), RATE (20000), LOADGEN
# (target/release/loadgen), NS_PORT (29976), BROKER_PORT (21911), OUT (a tsv, printed at the end),
# NICE (e.g. `nice -n -10`, root only: a prefix for the broker and loadgen, so that other work
# on a shared machine takes less of their CPU; unset by default).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LOADGEN=${LOADGEN:-$TARGET/release/loadgen}
BINS=${BINS:-new=$TARGET/release/ringmq}
CASES=${CASES:-open-a1 open-a2 open-s1 open-s2 w1-a1 w1-a2 w1-s2}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
RATE=${RATE:-20000}
NS_PORT=${NS_PORT:-29976}
BROKER_PORT=${BROKER_PORT:-21911}
SYSCALLS=${SYSCALLS:-0}
read -r -a nice_cmd <<<"${NICE:-}"
OUT=${OUT:-$(mktemp /tmp/ringmq-cpu.XXXXXX.tsv)}
TICK=$(getconf CLK_TCK)

PGID=
STORE=
# shellcheck source=loadgen/lib.sh
source "$ROOT/loadgen/lib.sh"
trap stop_broker EXIT

# start BIN FLUSH SHARDS
start() {
    STORE=$(mktemp -d /tmp/ringmq-cpu.XXXXXX)
    if [ "${1%%:*}" = null ]; then
        setsid "${nice_cmd[@]}" "$LOADGEN" null-broker --port "$NS_PORT" --runtime "${1#null:}" \
            >"$STORE/broker.log" 2>&1 &
        PGID=$!
        wait_sendable "$NS_PORT" CpuWarm 60 0.5 null-broker
        return
    fi
    cat >"$STORE/broker.properties" <<EOF
brokerClusterName=DefaultCluster
brokerName=cpu-broker
brokerId=0
listenPort=$BROKER_PORT
flushDiskType=$2
shardCount=$3
EOF
    setsid "${nice_cmd[@]}" "$1" standalone -c "$STORE/broker.properties" --store "$STORE/store" \
        --namesrv-port "$NS_PORT" >"$STORE/broker.log" 2>&1 &
    PGID=$!
    wait_sendable "$NS_PORT" CpuWarm 60 0.5 broker
}

json_field() { grep -o "\"$2\": [0-9.]*" "$1" | head -1 | awk '{print $2}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PGID/stat"; }

# run_case NAME BIN_NAME BIN
run_case() {
    local name=$1 bin_name=$2 bin=$3 flush shards args
    case $name in
        open-a1) flush=ASYNC_FLUSH shards=1 args=(-w 256 --rate "$RATE") ;;
        open-a2) flush=ASYNC_FLUSH shards=2 args=(-w 256 --rate "$RATE") ;;
        open-s1) flush=SYNC_FLUSH shards=1 args=(-w 256 --rate "$RATE") ;;
        open-s2) flush=SYNC_FLUSH shards=2 args=(-w 256 --rate "$RATE") ;;
        w1-a1) flush=ASYNC_FLUSH shards=1 args=(-w 1) ;;
        w1-a2) flush=ASYNC_FLUSH shards=2 args=(-w 1) ;;
        w1-s1) flush=SYNC_FLUSH shards=1 args=(-w 1) ;;
        w1-s2) flush=SYNC_FLUSH shards=2 args=(-w 1) ;;
        *) echo "unknown case $name" >&2; return 1 ;;
    esac
    # The null broker has neither shards nor a flush: only the -a1 cases measure it, and
    # null:hop (its two executors) only the -a2 ones.
    case $bin:$name in null:hop:*-a2) ;; null:hop:*) return 0 ;; null:*-a1) ;; null:*) return 0 ;; esac
    start "$bin" "$flush" "$shards" || { stop_broker; return 0; }
    local json=$STORE/out.json perf_out=$STORE/perf.csv perf_pid=
    # The warm-up is left out of the CPU count: loadgen reports messages after it.
    "${nice_cmd[@]}" "$LOADGEN" produce -n "127.0.0.1:$NS_PORT" -t "Cpu_$name" -s 128 --duration "$DURATION" \
        --warmup "$WARMUP" -q --json "$json" "${args[@]}" >/dev/null 2>&1 &
    local lg=$!
    sleep "$WARMUP"
    local c0 c1 t0 t1 w0 w1
    c0=$(cpu_ticks)
    w0=$(dev_writes "$DEV")
    t0=$(date +%s.%N)
    if [ "$SYSCALLS" = 1 ]; then
        perf stat -x, -o "$perf_out" -e 'syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_write,syscalls:sys_enter_futex,context-switches,raw_syscalls:sys_enter' \
            -p "$PGID" -- sleep "$DURATION" 2>/dev/null &
        perf_pid=$!
    fi
    wait "$lg" || echo "loadgen failed in $name $bin_name" >&2
    c1=$(cpu_ticks)
    w1=$(dev_writes "$DEV")
    t1=$(date +%s.%N)
    [ -n "$perf_pid" ] && { kill -INT "$perf_pid" 2>/dev/null || true; wait "$perf_pid" 2>/dev/null || true; }
    local sent tps p99 cpu_us writes
    sent=$(json_field "$json" sent_messages)
    tps=$(json_field "$json" throughput_messages_per_second)
    p99=$(json_field "$json" p99_latency_us)
    tail_us="$(json_field "$json" p999_latency_us) $(json_field "$json" max_latency_us)"
    # CPU and device writes over the measured window, per message at the measured rate.
    local msgs
    msgs=$(awk "BEGIN {n = $tps * ($t1 - $t0); print (n > 0 ? n : 1)}")
    cpu_us=$(awk "BEGIN {printf \"%.1f\", ($c1 - $c0) / $TICK / $msgs * 1e6}")
    writes=-
    [ -n "$DEV" ] && writes=$(awk "BEGIN {printf \"%.3f\", ($w1 - $w0) / $msgs}")
    local extra="- - - - -"
    if [ -n "$perf_pid" ] && [ -s "$perf_out" ]; then
        extra=$(awk -F, -v n="$(awk "BEGIN {print $tps * $DURATION}")" '
            $3 == "syscalls:sys_enter_io_uring_enter" {u = $1}
            $3 == "syscalls:sys_enter_write" {w = $1}
            $3 == "syscalls:sys_enter_futex" {f = $1}
            $3 == "context-switches" {c = $1}
            $3 == "raw_syscalls:sys_enter" {a = $1}
            END {printf "%.2f %.2f %.2f %.2f %.2f", u / n, w / n, f / n, c / n, a / n}' "$perf_out")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$bin_name" "$tps" "$p99" "$cpu_us" "$extra" \
        "$tail_us $writes" | tee -a "$OUT"
    stop_broker
}

read -r -a bins <<<"$BINS"
DEV=$(block_dev /tmp)
read -r disk_rate disk_cpu <<<"$(disk_probe /tmp)"
printf 'case\tbuild\tmsg/s\tp99_us\tcpu_us/msg\tio_uring_enter write futex ctxsw syscalls (per msg)\tp999_us max_us dev_writes/msg\n' | tee "$OUT"
echo "# $(date -u '+%Y-%m-%d %H:%M'), load $(cut -d' ' -f1-3 /proc/loadavg), RATE=$RATE DURATION=$DURATION NICE=${NICE:-}" | tee -a "$OUT"
echo "# disk ${DEV:-none}: $disk_rate durable 4 KiB writes/s, $disk_cpu µs of CPU each (dd oflag=direct,dsync into a written file)" | tee -a "$OUT"
for round in $(seq 1 "$ROUNDS"); do
    order=("${bins[@]}")
    if [ $((round % 2)) = 0 ]; then
        order=()
        for ((i = ${#bins[@]} - 1; i >= 0; i--)); do order+=("${bins[$i]}"); done
    fi
    for c in $CASES; do
        for b in "${order[@]}"; do
            run_case "$c" "${b%%=*}" "${b#*=}"
        done
    done
done
echo "# medians of cpu_us/msg" | tee -a "$OUT"
for c in $CASES; do
    for b in "${bins[@]}"; do
        awk -F'\t' -v c="$c" -v b="${b%%=*}" '$1 == c && $2 == b {print $5}' "$OUT" | sort -n |
            awk -v c="$c" -v b="${b%%=*}" '{v[NR] = $1} END {if (NR) printf "%s\t%s\tmedian %s of %d\n", c, b, v[int((NR + 1) / 2)], NR}'
    done
done | tee -a "$OUT"
echo "results: $OUT"
