#!/usr/bin/env bash
# Side by side: ringmq against another RocketMQ 4.x broker (Java RocketMQ, for one), the same
# cases against each in one run, printed as one table with ratios (ringmq / other).
#
#   loadgen/compare.sh                      ringmq alone (OTHER_START unset)
#   OTHER_START='...' loadgen/compare.sh    both
#
# Cases, each on a fresh store (128 B bodies):
#   lg-async-w64     loadgen produce, closed loop, 64 in flight, ASYNC_FLUSH
#   lg-sync-w64      the same under SYNC_FLUSH
#   lg-sync-w1       one synchronous producer (1 in flight), SYNC_FLUSH
#   open-async       open loop at RATE msgs/s (256 in flight at most), ASYNC_FLUSH
#   open-sync        the same under SYNC_FLUSH
#   psh-async/-sync  RocketMQ's own benchmark `producer.sh -w 64` (when PRODUCER_SH is set):
#                    the median of the "Send TPS" it prints per 10 s window over PSH_WINDOWS
#                    windows (default 3), after the first PSH_SKIP (default 2: the JVM's start
#                    and its JIT's warm-up, over which the client's rate still climbs). PRODUCER_SH
#                    must stay in the foreground (the stock producer.sh backgrounds its JVM:
#                    point it at a script that runs `runclass.sh ... benchmark.Producer "$@"`);
#                    it is run as `sh $PRODUCER_SH -n NS -t TOPIC -w 64 -s 128`.
# For each: msgs/s, p99/p999/max latency (µs), the broker's CPU per message (utime+stime of
# every process of the broker's process group over the case ÷ messages sent, µs), the
# client's CPU per message over the same window (`cli_us`: loadgen's utime+stime, read by
# bash's `time`; for psh-* every process of producer.sh's process group, the JVM's threads
# included), the machine's idle share over that window (`idle%`: idle+iowait ÷ all CPU time in
# /proc/stat, all cores) and the broker's resident memory at the end (sum of the group's
# VmRSS, MiB). loadgen cases measure their whole run (warm-up included) against every message
# sent; psh-* cases measure from the end of the last window skipped to the end of the last
# one counted, against those windows' messages (their TPS x 10 s). With C cores,
# cli_us c and cpu_us b: TPS <= C x 1e6 / (c + b) when the machine is busy (idle% 0).
#
# Rounds (ROUNDS, default 1): each round runs every case of every layout once against each
# broker, the two brokers back to back case by case (ringmq first in odd rounds, the other
# first in even ones), so that both meet the same minutes of a noisy machine. The table gives
# each column's median over the rounds (the mean of the middle two for an even count), the
# ratio of the median rates, and in `per_round` each round's own ratio.
#
# The header gives the disk's own rate of durable 4 KiB writes and the CPU time each costs
# (`disk_probe` in lib.sh): the most flush rounds a SYNC_FLUSH broker gets per second, and the
# least CPU each one costs.
#
# Layouts (LAYOUTS, default "default pinned"):
#   default  nothing pinned, ringmq with its default shards (one per core)
#   pinned   broker on BROKER_CPU (ringmq with one shard), clients on CLIENT_CPU
#   one      nothing pinned, ringmq with shardCount=1. The other broker is not run again for
#            it: its ratios are against the other broker's `default` rows (the same layout
#            for a broker that has no shards), which must be in LAYOUTS too.
#
# The other broker: OTHER_START is a shell command run in its own process group (killed at
# the end of each case) that starts a nameserver on 127.0.0.1:$NS_PORT and a broker
# registered with it, with these variables set for it:
#   NS_PORT BROKER_PORT   ports to use
#   STORE                 a fresh, empty directory for its store and logs
#   FLUSH                 ASYNC_FLUSH or SYNC_FLUSH
#   CPUS                  "" (default layout) or the CPU list to pin to (e.g. via taskset)
# OTHER_NAME names it in the table (default "other"). The script waits until a send through
# the nameserver succeeds (up to 90 s). The other broker gets NS_PORT+1 and BROKER_PORT+10.
#
# Knobs: DURATION (s, 10), WARMUP (s, 2), RATE (20000), PSH_SKIP (2), PSH_WINDOWS (3),
# ROUNDS (1), OUT (target/compare), NS_PORT (29876),
# BROKER_PORT (20911), BROKER_CPU (0), CLIENT_CPU (1), CASES (all of the above),
# SKIP_BUILD=1 to use target/release as it is, RINGMQ_CONF (lines added to ringmq's
# broker.properties, e.g. 'shardScheduling=normal', to compare settings of one build).
# Ports must be free; data lives under /tmp.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$TARGET/compare}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
RATE=${RATE:-20000}
PSH_WINDOWS=${PSH_WINDOWS:-3}
PSH_SKIP=${PSH_SKIP:-2}
NS_PORT=${NS_PORT:-29876}
BROKER_PORT=${BROKER_PORT:-20911}
BROKER_CPU=${BROKER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
LAYOUTS=${LAYOUTS:-default pinned}
ROUNDS=${ROUNDS:-1}
for layout in $LAYOUTS; do
    case $layout in
        default | pinned | one) ;;
        *) echo "unknown layout '$layout' in LAYOUTS (default, pinned, one)" >&2 && exit 2 ;;
    esac
done
CASES=${CASES:-lg-async-w64 lg-sync-w64 lg-sync-w1 open-async open-sync psh-async psh-sync}
OTHER_NAME=${OTHER_NAME:-other}
RINGMQ=$TARGET/release/ringmq
LOADGEN=$TARGET/release/loadgen
TICK=$(getconf CLK_TCK)

mkdir -p "$OUT"
: >"$OUT/results.tsv"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    (cd "$ROOT" && cargo build --release -p loadgen --bin loadgen && cargo build --release --bin ringmq)
fi

PGID=
STORE=
# shellcheck source=loadgen/lib.sh
source "$ROOT/loadgen/lib.sh"
trap stop_broker EXIT

# group_cpu_ticks / group_rss_kib: summed over every process of the broker's process group.
group_sum() { group_sum_of "$PGID" "$1"; }
# group_sum_of PGID FN: FN summed over every process of process group PGID.
group_sum_of() {
    local total=0 pid
    for pid in $(pgrep -g "$1" || true); do
        total=$((total + $("$2" "$pid" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
cpu_ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib_of() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
group_cpu_ticks() { group_sum cpu_ticks_of; }
group_rss_kib() { group_sum rss_kib_of; }

# machine_ticks: "busy idle" clock ticks of all cores so far (/proc/stat; iowait counts idle).
machine_ticks() {
    awk '$1 == "cpu" {idle = $5 + $6; busy = 0; for (i = 2; i <= NF; i++) busy += $i; print busy - idle, idle; exit}' /proc/stat
}
# per_message TICKS MESSAGES: µs of CPU per message.
per_message() { awk "BEGIN {printf \"%.1f\", $1 / $TICK / ($2 > 0 ? $2 : 1) * 1e6}"; }
# idle_share "BUSY0 IDLE0" "BUSY1 IDLE1": idle per cent of all CPU time between two samples.
idle_share() {
    echo "$1 $2" | awk '{busy = $3 - $1; idle = $4 - $2; printf "%.0f", (busy + idle > 0) ? 100 * idle / (busy + idle) : 0}'
}

client_prefix() { [ "$1" = pinned ] && echo "taskset -c $CLIENT_CPU" || true; }

# ports_free PORT...: none of them has a listener on loopback. A taken port would have the
# case measure whatever already listens there (wait_sendable's send succeeds against it).
ports_free() {
    local p
    for p in "$@"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "port $p is already in use: pick other NS_PORT/BROKER_PORT" >&2
            return 1
        fi
    done
}

# start BROKER LAYOUT FLUSH: a fresh store and broker in a new process group.
start() {
    local broker=$1 layout=$2 flush=$3
    STORE=$(mktemp -d /tmp/ringmq-compare.XXXXXX)
    # Each broker gets its own ports, so one never waits for the other's to be released.
    CUR_NS=$NS_PORT
    local broker_port=$BROKER_PORT
    if [ "$broker" != ringmq ]; then
        CUR_NS=$((NS_PORT + 1))
        broker_port=$((BROKER_PORT + 10))
    fi
    # The broker also listens on listenPort - 2 (fast/VIP) and listenPort + 1 (HA).
    ports_free "$CUR_NS" "$broker_port" $((broker_port - 2)) $((broker_port + 1)) || return 1
    local cpus=""
    [ "$layout" = pinned ] && cpus=$BROKER_CPU
    if [ "$broker" = ringmq ]; then
        local shards=0
        [ "$layout" = default ] || shards=1
        cat >"$STORE/broker.properties" <<EOF
brokerClusterName=DefaultCluster
brokerName=compare-broker
brokerId=0
listenPort=$broker_port
flushDiskType=$flush
shardCount=$shards
${RINGMQ_CONF:-}
EOF
        local pin=()
        [ -n "$cpus" ] && pin=(taskset -c "$cpus")
        setsid "${pin[@]}" "$RINGMQ" standalone -c "$STORE/broker.properties" \
            --store "$STORE/store" --namesrv-port "$CUR_NS" >"$STORE/broker.log" 2>&1 &
    else
        NS_PORT=$CUR_NS BROKER_PORT=$broker_port STORE=$STORE FLUSH=$flush CPUS=$cpus \
            setsid bash -c "$OTHER_START" >"$STORE/broker.log" 2>&1 &
    fi
    PGID=$!
    wait_sendable "$CUR_NS" CompareWarm 90 1 "$broker"
}

# record BROKER LAYOUT CASE TPS P99 P999 MAX CPU_US RSS_MIB CLIENT_US IDLE_PCT (and the round)
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" "$ROUND" >>"$OUT/results.tsv"; }

json_field() { grep -o "\"$2\": [0-9.]*" "$1" | head -1 | awk '{print $2}'; }

# loadgen_case BROKER LAYOUT CASE LOADGEN-ARGS...
loadgen_case() {
    local broker=$1 layout=$2 name=$3
    shift 3
    local json=$OUT/$broker-$layout-$name-r$ROUND.json cpus=()
    [ "$layout" = pinned ] && cpus=(--cpus "$CLIENT_CPU")
    local c0 c1 m0 m1 client TIMEFORMAT='%3U %3S'
    c0=$(group_cpu_ticks)
    m0=$(machine_ticks)
    # bash's `time` reports loadgen's own utime and stime (its threads included) on stderr.
    client=$({ time "$LOADGEN" produce -n "127.0.0.1:$CUR_NS" -t "Compare_$name" "${cpus[@]}" \
        -s 128 --duration "$DURATION" --warmup "$WARMUP" -q --json "$json" "$@" \
        >/dev/null 2>&1 || echo "loadgen failed in $broker $layout $name (see $json)" >&2; } 2>&1)
    m1=$(machine_ticks)
    c1=$(group_cpu_ticks)
    local sent client_ticks
    sent=$(json_field "$json" sent_messages)
    client_ticks=$(echo "$client" | awk -v t="$TICK" 'NF == 2 {printf "%.0f", ($1 + $2) * t}')
    record "$broker" "$layout" "$name" "$(json_field "$json" throughput_messages_per_second)" \
        "$(json_field "$json" p99_latency_us)" "$(json_field "$json" p999_latency_us)" \
        "$(json_field "$json" max_latency_us)" "$(per_message $((c1 - c0)) "$sent")" \
        "$(($(group_rss_kib) / 1024))" "$(per_message "${client_ticks:-0}" "$sent")" \
        "$(idle_share "$m0" "$m1")"
}

# producer_sh_case BROKER LAYOUT CASE: RocketMQ's benchmark producer, 64 threads.
producer_sh_case() {
    local broker=$1 layout=$2 name=$3 log=$OUT/$1-$2-$3-r$ROUND.log
    local c0 c1 m0 m1 j0 j1 pre
    pre=$(client_prefix "$layout")
    NAMESRV_ADDR=127.0.0.1:$CUR_NS setsid $pre sh "$PRODUCER_SH" -n "127.0.0.1:$CUR_NS" \
        -t "Compare_$name" -w 64 -s 128 >"$log" 2>&1 &
    local ppid=$!
    # producer.sh prints its TPS over each 10 s window (its last 9 s, in fact); the first
    # window holds the JVM's start and the next its JIT's warm-up. The measured window runs
    # from line PSH_SKIP to line PSH_SKIP + PSH_WINDOWS, sampled as each appears.
    wait_windows "$log" "$PSH_SKIP" "$ppid"
    c0=$(group_cpu_ticks)
    j0=$(group_sum_of "$ppid" cpu_ticks_of)
    m0=$(machine_ticks)
    wait_windows "$log" $((PSH_SKIP + PSH_WINDOWS)) "$ppid"
    m1=$(machine_ticks)
    j1=$(group_sum_of "$ppid" cpu_ticks_of)
    c1=$(group_cpu_ticks)
    kill -TERM -- "-$ppid" 2>/dev/null || true
    wait "$ppid" 2>/dev/null || true
    local counted tps sent
    # The windows measured: the (PSH_SKIP + 1)th to the (PSH_SKIP + PSH_WINDOWS)th.
    counted=$(window_tps "$log" | head -n $((PSH_SKIP + PSH_WINDOWS)) | tail -n +$((PSH_SKIP + 1)))
    tps=$(echo "$counted" | sort -n | awk 'NF {v[++n] = $1} END {print (n ? v[int((n + 1) / 2)] : 0)}')
    sent=$(echo "$counted" | awk '{n += $1 * 10} END {print n + 0}')
    record "$broker" "$layout" "$name" "$tps" - - - "$(per_message $((c1 - c0)) "$sent")" \
        "$(($(group_rss_kib) / 1024))" "$(per_message $((j1 - j0)) "$sent")" \
        "$(idle_share "$m0" "$m1")"
}

wants() { [[ " $CASES " == *" $1 "* ]]; }

# run_case BROKER LAYOUT CASE: one case on a fresh broker.
run_case() {
    local broker=$1 layout=$2 c=$3 flush=ASYNC_FLUSH
    [[ "$c" == *sync* && "$c" != *async* ]] && flush=SYNC_FLUSH
    echo "== round $ROUND: $broker $layout $c" >&2
    if ! start "$broker" "$layout" "$flush"; then
        record "$broker" "$layout" "$c" 0 "no start" - - - - - -
        stop_broker
        return 0
    fi
    case $c in
        lg-*-w64) loadgen_case "$broker" "$layout" "$c" -w 64 ;;
        lg-sync-w1) loadgen_case "$broker" "$layout" "$c" -w 1 ;;
        open-*) loadgen_case "$broker" "$layout" "$c" -w 256 --rate "$RATE" ;;
        psh-*) producer_sh_case "$broker" "$layout" "$c" ;;
    esac
    stop_broker
}

read -r DISK_SYNCS DISK_CPU <<<"$(disk_probe /tmp)"

for ROUND in $(seq 1 "$ROUNDS"); do
    for layout in $LAYOUTS; do
        brokers=(ringmq)
        if [ -n "${OTHER_START:-}" ] && [ "$layout" != one ]; then
            if [ $((ROUND % 2)) = 1 ]; then brokers=(ringmq other); else brokers=(other ringmq); fi
        fi
        for c in lg-async-w64 open-async psh-async lg-sync-w64 open-sync psh-sync lg-sync-w1; do
            wants "$c" || continue
            [[ "$c" == psh-* && -z "${PRODUCER_SH:-}" ]] && continue
            for b in "${brokers[@]}"; do
                run_case "$b" "$layout" "$c"
            done
        done
    done
done

{
    echo "# loadgen/compare.sh, $(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r)"
    echo "# DURATION=$DURATION WARMUP=$WARMUP RATE=$RATE PSH_SKIP=$PSH_SKIP PSH_WINDOWS=$PSH_WINDOWS ROUNDS=$ROUNDS; other = ${OTHER_START:+$OTHER_NAME}"
    echo "# disk: $DISK_SYNCS durable 4 KiB writes/s, $DISK_CPU µs of CPU each (dd oflag=direct,dsync into a written file)"
    printf '%-8s %-13s %11s %11s %7s | %9s %9s %9s | %8s %8s | %7s %7s | %5s %5s | %7s %7s | %s\n' \
        layout case ringmq_msg/s other_msg/s ratio p99_us p999_us max_us cpu_us other_cpu \
        cli_us oth_cli idle% oth_i% rss_MiB other per_round
    awk -F'\t' '
        # median(LIST): the median of the space-separated numbers in LIST ("-" when one is not
        # a number: a case that has no such column, or did not run).
        function median(list,    v, m, i, j, t) {
            m = split(list, v, " ")
            if (m == 0) return "-"
            for (i = 1; i <= m; i++) if (v[i] !~ /^[0-9.]+$/) return "-"
            for (i = 2; i <= m; i++)
                for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
            return (m % 2) ? v[(m + 1) / 2] + 0 : (v[m / 2] + v[m / 2 + 1]) / 2
        }
        function fmt(x, f) { return (x == "-") ? "-" : sprintf(f, x) }
        {
            key = $2 "\t" $3
            if ($1 == "ringmq" && !(key in seen)) { seen[key] = 1; order[++n] = key }
            for (f = 4; f <= 11; f++) col[$1, key, f] = col[$1, key, f] " " $f
            tps[$1, key, $12] = $4
            if ($12 + 0 > last) last = $12 + 0
        }
        END {
            for (i = 1; i <= n; i++) {
                k = order[i]; split(k, kk, "\t")
                # `one` is ringmq alone: compared with the default rows of the other broker.
                ok = (kk[1] == "one") ? "default\t" kk[2] : k
                for (f = 4; f <= 11; f++) { a[f] = median(col["ringmq", k, f]); b[f] = median(col["other", ok, f]) }
                ratio = (a[4] != "-" && b[4] != "-" && b[4] > 0) ? sprintf("%.2fx", a[4] / b[4]) : "-"
                per = ""
                for (r = 1; r <= last; r++) {
                    x = tps["ringmq", k, r]; y = tps["other", ok, r]
                    if (x != "" && y > 0) per = per (per == "" ? "" : " ") r ":" sprintf("%.2f", x / y)
                }
                printf "%-8s %-13s %11s %11s %7s | %9s %9s %9s | %8s %8s | %7s %7s | %5s %5s | %7s %7s | %s\n",
                    kk[1], kk[2], fmt(a[4], "%.0f"), fmt(b[4], "%.0f"), ratio,
                    fmt(a[5], "%.0f"), fmt(a[6], "%.0f"), fmt(a[7], "%.0f"), fmt(a[8], "%.1f"),
                    fmt(b[8], "%.1f"), fmt(a[10], "%.1f"), fmt(b[10], "%.1f"), fmt(a[11], "%.0f"),
                    fmt(b[11], "%.0f"), fmt(a[9], "%.0f"), fmt(b[9], "%.0f"), (per == "" ? "-" : per)
            }
        }' "$OUT/results.tsv"
} | tee "$OUT/table.txt"
echo "raw results in $OUT/results.tsv, loadgen reports beside it" >&2
