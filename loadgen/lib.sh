# Shared by loadgen's benchmark scripts (sourced): the broker under test runs in its own
# process group, PGID, with its fresh store in STORE.

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
