//! What ringmq does with each key it accepts: every key of the broker and nameserver tables is
//! either implemented (it does what RocketMQ documents), accepted and ignored (a start-up
//! warning names it when a file sets it, and `-p` lists it), or refused in a value ringmq
//! cannot honour where ignoring it would weaken safety or durability (start-up stops with an
//! error naming it). A test walks both tables and checks that every key is in exactly one
//! class and behaves as its class says.

/// How ringmq treats one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Does what RocketMQ documents (or what the field doc says for a ringmq key).
    Implemented,
    /// Accepted and ignored, with the reason.
    Ignored(&'static str),
    /// Refused when set to the given value, with the reason (the default is accepted).
    Refused {
        value: &'static str,
        reason: &'static str,
    },
}

const THREADS: &str = "ringmq runs one executor per core (shardCount), not Java's thread pools";
const QUEUES: &str = "ringmq has no executor queues: a shard runs each request as it arrives";
const NETTY: &str = "ringmq has no Netty threads: each shard owns its own sockets (io_uring)";
const FLUSH: &str = "ringmq's ASYNC_FLUSH flushes every flushIntervalCommitLog whatever is \
    pending (group commit); it has no page threshold or forced thorough flush";
const TRANSIENT: &str = "ringmq writes the commitlog with O_DIRECT from its own buffers; \
    Java's transient store pool does not apply";
const DELETE_PACING: &str = "ringmq pauses only between commitlog files \
    (deleteCommitLogFilesInterval); consume-queue files go in one pass, and it maps no files \
    that would need a forced destroy";

const TIMER_FILES: &str = "ringmq's timer store is per-shard minute files of (time, queue \
    offset) entries next to the commitlog, not Java's timer log and wheel files";
const TIMER_METRICS: &str = "ringmq keeps no timer metrics file";
const TIMER_RETRY: &str = "ringmq retries a failed timer delivery until it succeeds and skips \
    (with a warning) only a timer whose stored message is gone";

/// Broker keys that are accepted and ignored.
pub const BROKER_IGNORED: &[(&str, &str)] = &[
    ("serverWorkerThreads", NETTY),
    ("serverSelectorThreads", NETTY),
    ("sendMessageThreadPoolNums", THREADS),
    ("putMessageFutureThreadPoolNums", THREADS),
    ("pullMessageThreadPoolNums", THREADS),
    ("queryMessageThreadPoolNums", THREADS),
    ("processReplyMessageThreadPoolNums", THREADS),
    ("adminBrokerThreadPoolNums", THREADS),
    ("clientManageThreadPoolNums", THREADS),
    ("consumerManageThreadPoolNums", THREADS),
    ("heartbeatThreadPoolNums", THREADS),
    ("endTransactionThreadPoolNums", THREADS),
    ("sendThreadPoolQueueCapacity", QUEUES),
    ("pullThreadPoolQueueCapacity", QUEUES),
    ("queryThreadPoolQueueCapacity", QUEUES),
    ("brokerFastFailureEnable", QUEUES),
    ("waitTimeMillsInSendQueue", QUEUES),
    ("useReentrantLockWhenPutMessage", "a shard appends to its own commitlog without locks"),
    ("transferMsgByHeap", "pull bodies are served from the stored bytes as they are"),
    ("osPageCacheBusyTimeOutMills", "ringmq does not write through the page cache (O_DIRECT)"),
    ("warmMapedFileEnable", "ringmq maps no commitlog files"),
    ("shortPollingTimeMills", "with longPollingEnable=false a pull that finds nothing answers at once"),
    ("forceRegister", "ringmq always registers its whole topic table"),
    ("compressedRegister", "REGISTER_BROKER bodies are sent as plain JSON"),
    ("filterSupportRetry", "SQL92 filters are not applied to retry topics"),
    ("flushCommitLogLeastPages", FLUSH),
    ("flushCommitLogThoroughInterval", FLUSH),
    ("flushCommitLogTimed", FLUSH),
    ("flushDelayOffsetInterval", "delay offsets are saved every flushConsumerOffsetInterval with the consumer offsets"),
    ("commitIntervalCommitLog", TRANSIENT),
    ("commitCommitLogLeastPages", TRANSIENT),
    ("commitCommitLogThoroughInterval", TRANSIENT),
    ("transientStorePoolEnable", TRANSIENT),
    ("transientStorePoolSize", TRANSIENT),
    ("deleteConsumeQueueFilesInterval", DELETE_PACING),
    ("destroyMapedFileIntervalForcibly", DELETE_PACING),
    ("redeleteHangedFileInterval", DELETE_PACING),
    ("maxHashSlotNum", "ringmq's index is not Java's hash-slot file; it sizes itself"),
    ("maxIndexNum", "ringmq's index is not Java's hash-slot file; it sizes itself"),
    ("messageIndexSafe", "ringmq rebuilds the index from the commitlog in recovery"),
    ("maxTransferBytesOnMessageInDisk", "pulls are bounded by the in-memory limits (maxTransfer*OnMessageInMemory) wherever the data is"),
    ("maxTransferCountOnMessageInDisk", "pulls are bounded by the in-memory limits (maxTransfer*OnMessageInMemory) wherever the data is"),
    ("duplicationEnable", "a DLedger-era switch; ringmq has no DLedger mode"),
    ("mappedFileSizeTimerLog", TIMER_FILES),
    ("timerRollWindowSlot", "ringmq's timers wait in per-minute files on disk whatever their \
        delay (up to timerMaxDelaySec); none is rolled over and re-put"),
    ("timerGetMessageThreadNum", THREADS),
    ("timerPutMessageThreadNum", THREADS),
    ("timerEnableDisruptor", THREADS),
    ("timerEnableCheckMetrics", TIMER_METRICS),
    ("timerCheckMetricsWhen", TIMER_METRICS),
    ("timerMetricSmallThreshold", TIMER_METRICS),
    ("timerProgressLogIntervalMs", "ringmq logs no periodic timer progress"),
    ("timerCongestNumEachSlot", "ringmq does not flow-control timers per slot: a slot's \
        timers wait on disk and are delivered in batches"),
    ("timerSkipUnknownError", TIMER_RETRY),
    ("timerEnableRetryUntilSuccess", TIMER_RETRY),
    ("timerWarmEnable", TIMER_FILES),
    ("timerColdDataCheckIntervalMs", TIMER_FILES),
];

/// Broker keys refused in one value.
pub const BROKER_REFUSED: &[(&str, &str, &str)] = &[
    (
        "enableDLegerCommitLog",
        "true",
        "DLedger mode is not supported by ringmq; use master/slave roles",
    ),
    (
        "fetchNamesrvAddrByAddressServer",
        "true",
        "ringmq does not fetch nameserver addresses over HTTP; set namesrvAddr (or -n)",
    ),
    (
        "timerInterceptDelayLevel",
        "true",
        "delay-level messages stay on their levels in ringmq (as in Java, where the switch is \
         not wired)",
    ),
    (
        "timerStopEnqueue",
        "true",
        "ringmq cannot pause taking in timer messages",
    ),
    (
        "timerStopDequeue",
        "true",
        "ringmq cannot pause delivering due timer messages",
    ),
];

/// Nameserver keys that are accepted and ignored.
pub const NAMESRV_IGNORED: &[(&str, &str)] = &[
    ("rocketmqHome", "the nameserver reads nothing under it"),
    (
        "configStorePath",
        "UPDATE_NAMESRV_CONFIG is not supported, so nothing is stored there",
    ),
    ("clusterTest", "no test-cluster routing"),
    ("productEnvName", "no environment-specific routing"),
    ("serverWorkerThreads", NETTY),
    ("serverSelectorThreads", NETTY),
];

fn status_in(
    key: &str,
    ignored: &[(&str, &'static str)],
    refused: &[(&str, &'static str, &'static str)],
) -> KeyStatus {
    if let Some((_, reason)) = ignored.iter().find(|(k, _)| *k == key) {
        return KeyStatus::Ignored(reason);
    }
    if let Some((_, value, reason)) = refused.iter().find(|(k, _, _)| *k == key) {
        return KeyStatus::Refused { value, reason };
    }
    KeyStatus::Implemented
}

/// The class of a broker key.
pub fn broker_key_status(key: &str) -> KeyStatus {
    status_in(key, BROKER_IGNORED, BROKER_REFUSED)
}

/// The class of a nameserver key.
pub fn namesrv_key_status(key: &str) -> KeyStatus {
    status_in(key, NAMESRV_IGNORED, &[])
}

/// The class of a controller key (`ringmq controller -c`, or namesrv.properties with
/// `enableControllerInNamesrv=true`): every key of its table is implemented; Java's other
/// ControllerConfig keys (controllerType, thread pools, metrics) are unknown keys and warned
/// about as such.
pub fn controller_key_status(key: &str) -> KeyStatus {
    status_in(key, &[], &[])
}

/// The warning for an ignored key a file sets.
pub(crate) fn ignored_note(reason: &str) -> String {
    format!("accepted and ignored by ringmq: {reason}")
}

/// `-p`'s trailer: the ignored keys as comments, so the printed file still loads back.
pub(crate) fn ignored_trailer(ignored: &[(&str, &str)]) -> String {
    let mut out = String::from("# Accepted and ignored by ringmq (setting them has no effect):\n");
    for (key, reason) in ignored {
        out.push_str(&format!("#   {key}: {reason}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::properties::parse;
    use crate::config::{BrokerConfig, ConfigError, ConfigWarning, NamesrvConfig};

    type Loader = fn(&str) -> Result<Vec<ConfigWarning>, ConfigError>;

    fn load_broker(text: &str) -> Result<Vec<ConfigWarning>, ConfigError> {
        let entries = parse(text).expect("parses");
        BrokerConfig::from_entries(&entries, "broker.properties").map(|(_, w)| w)
    }

    fn load_namesrv(text: &str) -> Result<Vec<ConfigWarning>, ConfigError> {
        let entries = parse(text).expect("parses");
        NamesrvConfig::from_entries(&entries, "namesrv.properties").map(|(_, w)| w)
    }

    /// Walks one key table: each key is in one class and behaves as its class says. A key set
    /// to its default value (as `-p` prints it) is enough to tell: an implemented key loads
    /// silently, an ignored one is warned about by name, a refused one is accepted at its
    /// default and refused, naming it, at the refused value.
    fn walk(
        printed: &str,
        status: fn(&str) -> KeyStatus,
        ignored: &[(&str, &str)],
        refused: &[(&str, &str, &str)],
        load: Loader,
    ) -> (usize, usize, usize) {
        let keys: Vec<&str> = printed
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        for (key, _) in ignored {
            assert!(keys.contains(key), "{key} is classified but not a key");
        }
        for (key, _, _) in refused {
            assert!(keys.contains(key), "{key} is classified but not a key");
            assert!(
                !ignored.iter().any(|(k, _)| k == key),
                "{key} is in two classes"
            );
        }
        let mut counts = (0, 0, 0);
        for line in printed.lines() {
            let (key, _) = line.split_once('=').expect("key=value");
            let warnings = load(&format!("{line}\n")).unwrap_or_else(|e| panic!("{line}: {e}"));
            let about_key: Vec<&ConfigWarning> = warnings.iter().filter(|w| w.key == key).collect();
            match status(key) {
                KeyStatus::Implemented => {
                    assert_eq!(about_key, Vec::<&ConfigWarning>::new(), "{key}");
                    counts.0 += 1;
                }
                KeyStatus::Ignored(reason) => {
                    assert_eq!(about_key.len(), 1, "{key}: {warnings:?}");
                    assert_eq!(about_key[0].message, ignored_note(reason));
                    counts.1 += 1;
                }
                KeyStatus::Refused { value, reason } => {
                    assert_eq!(about_key, Vec::<&ConfigWarning>::new(), "{key}");
                    let err = load(&format!("{key}={value}\n"))
                        .expect_err(key)
                        .to_string();
                    assert!(err.contains(key) && err.contains(reason), "{err}");
                    counts.2 += 1;
                }
            }
        }
        counts
    }

    #[test]
    fn every_broker_key_is_implemented_ignored_or_refused() {
        let printed = BrokerConfig::default().to_properties();
        let counts = walk(
            &printed,
            broker_key_status,
            BROKER_IGNORED,
            BROKER_REFUSED,
            load_broker,
        );
        assert_eq!(counts.1, BROKER_IGNORED.len());
        assert_eq!(counts.2, BROKER_REFUSED.len());
        assert_eq!(broker_key_status("aclEnable"), KeyStatus::Implemented);
        assert_eq!(
            broker_key_status("serverChannelMaxIdleTimeSeconds"),
            KeyStatus::Implemented
        );
        let p = BrokerConfig::default().print_config_item();
        assert!(p.contains("#   serverWorkerThreads: "), "{p}");
    }

    #[test]
    fn every_controller_key_is_implemented() {
        use crate::config::ControllerConfig;
        let base = "controllerDLegerGroup=g\ncontrollerDLegerPeers=n0-127.0.0.1:9878\ncontrollerDLegerSelfId=n0\n";
        let printed = ControllerConfig::default().to_properties();
        for line in printed.lines() {
            let (key, _) = line.split_once('=').expect("key=value");
            assert_eq!(controller_key_status(key), KeyStatus::Implemented, "{key}");
            let text = if key.starts_with("controllerDLeger") {
                base.to_string()
            } else {
                format!("{base}{line}\n")
            };
            let entries = parse(&text).expect("parses");
            let (_, warnings) = ControllerConfig::default()
                .with_entries(&entries, "controller.properties", &|_| false)
                .unwrap_or_else(|e| panic!("{line}: {e}"));
            assert!(warnings.is_empty(), "{key}: {warnings:?}");
        }
        // In namesrv.properties the controller keys are accepted only with the switch on.
        let with = load_namesrv(&format!("enableControllerInNamesrv=true\n{base}")).unwrap();
        assert!(with.is_empty(), "{with:?}");
        let without = load_namesrv(base).unwrap();
        assert_eq!(without.len(), 3);
        assert!(without[0]
            .message
            .contains("enableControllerInNamesrv is false"));
    }

    #[test]
    fn every_namesrv_key_is_implemented_or_ignored() {
        let printed = NamesrvConfig::default().to_properties();
        let counts = walk(
            &printed,
            namesrv_key_status,
            NAMESRV_IGNORED,
            &[],
            load_namesrv,
        );
        assert_eq!(counts.1, NAMESRV_IGNORED.len());
        assert!(NamesrvConfig::default()
            .print_config_item()
            .contains("#   clusterTest: "));
    }
}
