#!/usr/bin/env bash
# Runs Apache RocketMQ 4.9.8's Java client against ringmq: message trace (enableMsgTrace on a
# producer and a push consumer; the records read back with DefaultMQAdminExt and decoded with
# the client's TraceDataEncoder, then shown by `ringmq admin queryMsgTraceById`) and
# request-reply (DefaultMQProducer.request answered through MessageUtil.createReplyMessage).
# Opt-in, not part of `cargo test` (CI has no JDK):
#
#   ROCKETMQ_CLASSES=/path/to/rocketmq-4.9.8/classes:<its dependency jars> tests/java/run.sh
#
# ROCKETMQ_CLASSES is a class path holding the RocketMQ 4.9.8 client and tools classes with
# their dependencies (for example `lib/*` of the binary distribution). RINGMQ names the ringmq
# binary (default target/release/ringmq); SHARDS the broker's shard count (default 2).
# Starts a nameserver and a broker on NS_PORT/BROKER_PORT (29876/20911) with a fresh store,
# and stops them and removes the store at the end. Exits 0 when every check passed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RINGMQ=${RINGMQ:-$ROOT/target/release/ringmq}
SHARDS=${SHARDS:-2}
NS_PORT=${NS_PORT:-29876}
BROKER_PORT=${BROKER_PORT:-20911}
: "${ROCKETMQ_CLASSES:?set ROCKETMQ_CLASSES to the RocketMQ 4.9.8 client class path}"
WORK=$(mktemp -d /tmp/ringmq-java-XXXXXX)
STORE=$WORK/store
PIDS=()
export RINGMQ_LOG_DIR=none # logs stay in $WORK (stdout)
# shellcheck source=loadgen/lib.sh
source "$ROOT/loadgen/lib.sh"
cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT

javac -nowarn -d "$WORK/classes" -cp "$ROCKETMQ_CLASSES" "$ROOT/tests/java/TraceReplyCheck.java"

printf 'listenPort=%s\nlistenAddress=127.0.0.1\nkvConfigPath=%s/kv/kvConfig.json\n' \
    "$NS_PORT" "$STORE" >"$WORK/namesrv.properties"
"$RINGMQ" namesrv -c "$WORK/namesrv.properties" >"$WORK/namesrv.log" 2>&1 &
PIDS+=($!)
wait_boot "$WORK/namesrv.log"
cat >"$WORK/broker.properties" <<P
brokerClusterName=DefaultCluster
brokerName=java-check
brokerIP1=127.0.0.1
listenAddress=127.0.0.1
listenPort=$BROKER_PORT
storePathRootDir=$STORE
shardCount=$SHARDS
traceTopicEnable=true
autoCreateTopicEnable=true
P
"$RINGMQ" broker -c "$WORK/broker.properties" -n "127.0.0.1:$NS_PORT" \
    >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
wait_boot "$WORK/broker.log"

status=0
java -Duser.home="$WORK" -Drocketmq.client.logRoot="$WORK/logs" \
    -cp "$WORK/classes:$ROCKETMQ_CLASSES" TraceReplyCheck "127.0.0.1:$NS_PORT" |
    tee "$WORK/java.out" || status=$?
id=$(sed -n 's/^TRACE_MSG_ID //p' "$WORK/java.out")
if [ -n "$id" ]; then
    echo "--- ringmq admin queryMsgTraceById -i $id"
    "$RINGMQ" admin queryMsgTraceById -n "127.0.0.1:$NS_PORT" -i "$id" || status=1
fi
exit "$status"
