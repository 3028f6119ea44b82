# Shared by loadgen's benchmark scripts (sourced). compare.sh and cpu.sh: the broker under
# test runs in its own process group, PGID, with its fresh store in STORE. ha-bench.sh and
# failover-bench.sh: the servers they start are in PIDS, stopped newest first.

# stop_broker: ends the broker's process group (TERM, then KILL after 10 s) and removes its
# store.
stop_broker() {
    if [ -n "$PGID" ]; then
        kill -TERM -- "-$PGID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 -- "-$PGID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$PGID" 2>/dev/null || true
        PGID=
    fi
    if [ -n "$STORE" ]; then
        rm -rf "$STORE"
        STORE=
    fi
}

# wait_sendable NS_PORT TOPIC SECONDS PAUSE WHAT: until a one-second warm-up send to TOPIC through
# the nameserver on NS_PORT succeeds, retried every PAUSE seconds for at most SECONDS while the
# broker in PGID runs; otherwise says WHAT did not start, with the end of $STORE/broker.log.
wait_sendable() {
    local deadline=$((SECONDS + $3))
    until "$LOADGEN" produce -n "127.0.0.1:$1" -t "$2" -w 1 --duration 1 \
        --warmup 0 -q >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ] || ! kill -0 "$PGID" 2>/dev/null; then
            echo "$5 did not start; the end of its log:" >&2
            tail -5 "$STORE/broker.log" >&2
            return 1
        fi
        sleep "$4"
    done
}

# stop_all: TERM to every server in PIDS, newest first, waiting for each.
PIDS=()
stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -TERM "${PIDS[$i]}" 2>/dev/null || true
        wait "${PIDS[$i]}" 2>/dev/null || true
    done
    PIDS=()
}

# wait_boot LOG [TENTHS]: until LOG has the "boot success" line (at most TENTHS tenths of a
# second, 100 by default); exits the script when it never comes.
wait_boot() {
    for _ in $(seq 1 "${2:-100}"); do
        grep -q "boot success" "$1" && return 0
        sleep 0.1
    done
    echo "no boot; see $1" >&2
    exit 1
}

# disk_probe DIR: the disk under DIR, as "RATE CPU_US": 4 KiB O_DIRECT writes each made
# durable (O_DSYNC) per second, into a file already written (as a preallocated segment is), and
# the CPU time (user + system) dd spent per such write. The rate bounds a SYNC_FLUSH broker's
# flush rounds per second; the CPU is what each round costs at least (the kernel's write, the
# device's flush and their interrupts), whoever issues it.
disk_probe() {
    local probe secs cpu
    probe=$(mktemp "$1/ringmq-disk-probe.XXXXXX")
    dd if=/dev/zero of="$probe" bs=1M count=8 oflag=direct 2>/dev/null
    sync
    cpu=$({
        TIMEFORMAT='%U %S'
        time dd if=/dev/zero of="$probe" bs=4k count=2000 oflag=direct,dsync conv=notrunc \
            2>"$probe.dd"
    } 2>&1)
    secs=$(awk '/copied/ {print $(NF-3)}' "$probe.dd")
    rm -f "$probe" "$probe.dd"
    echo "$cpu" | awk -v s="$secs" '{printf "%.0f %.1f\n", 2000 / s, ($1 + $2) / 2000 * 1e6}'
}

# block_dev DIR: the name under /sys/class/block of the device holding DIR; nothing when DIR is
# on no block device (tmpfs, overlay).
block_dev() {
    local src
    src=$(df --output=source "$1" 2>/dev/null | tail -n 1)
    src=${src#/dev/}
    if [ -n "$src" ] && [ -e "/sys/class/block/$src/stat" ]; then echo "$src"; fi
}

# dev_writes DEV: the write requests DEV (a block_dev name) has completed since boot; 0
# without a device.
dev_writes() {
    if [ -n "$1" ]; then awk '{print $5}' "/sys/class/block/$1/stat"; else echo 0; fi
}

# window_tps LOG: the TPS of each of producer.sh's 10 s windows so far, one a line.
window_tps() { { grep -o 'Current Time:.*Send TPS: *[0-9]*' "$1" 2>/dev/null || true; } | awk '{print $NF}'; }

# wait_windows LOG N PID: until producer.sh has printed N windows (or PID has ended, or
# 10 x N + 30 s have passed: a JVM that never sends). It starts no process while it waits: it
# reads the log from an open descriptor and sleeps in `read -t` on a FIFO of its own. A loop
# that ran grep, awk and wc five times a second (stop 31's) cost ringmq a sixth of its
# `producer.sh` rate (README "What decides `producer.sh`'s rate").
wait_windows() {
    local deadline=$((SECONDS + 10 * $2 + 30)) seen=0 line partial="" log="" nap dir
    dir=$(mktemp -d /tmp/ringmq-wait.XXXXXX)
    mkfifo "$dir/nap"
    exec {nap}<>"$dir/nap"
    rm -rf "$dir"
    while :; do
        # The log may not be there yet: producer.sh's shell creates it.
        [ -z "$log" ] && [ -e "$1" ] && exec {log}<"$1"
        # Whole lines so far; a line still being written is kept until its end arrives.
        while [ -n "$log" ] && IFS= read -r line <&"$log"; do
            line=$partial$line
            partial=""
            [[ "$line" == *"Current Time:"*"Send TPS:"* ]] && seen=$((seen + 1))
        done
        partial+=$line
        line=""
        [ "$seen" -ge "$2" ] && break
        if [ $SECONDS -ge $deadline ] || ! kill -0 "$3" 2>/dev/null; then
            echo "producer.sh printed fewer than $2 windows (see $1)" >&2
            break
        fi
        read -r -t 0.2 -u "$nap" _ || true
    done
    [ -n "$log" ] && exec {log}<&-
    exec {nap}<&-
}
