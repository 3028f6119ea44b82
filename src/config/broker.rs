//! Owns the broker's config type (`ringmq broker -c broker.properties`): every key of
//! `spec/CONFIG.md` §2 (Java's BrokerConfig, NettyServerConfig and MessageStoreConfig read from
//! one file) with Java's defaults and unit-named fields, plus ringmq-only keys. Loading, the
//! post-load rules and `validate()` live in `broker_load.rs`. Built once at startup on the main
//! thread and handed to constructors by value.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use super::units::{format_delay_levels, format_hours, parse_bool, parse_delay_levels};
use super::units::{parse_hours, parse_ip, parse_opt_host_port, parse_opt_path, parse_path};
use super::units::{parse_string, parse_u16, parse_u32, parse_u64, parse_u8};
use super::units::{Reason, ToProperty, DAY_MS};
use super::HostInfo;
use crate::limits::CQ_UNIT_BYTES;

/// `brokerRole`: how this broker takes part in master/slave replication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrokerRole {
    /// `ASYNC_MASTER`: acknowledges sends without waiting for the slave.
    AsyncMaster,
    /// `SYNC_MASTER`: acknowledges a send once the slave has it (or FLUSH_SLAVE_TIMEOUT).
    SyncMaster,
    /// `SLAVE`: replicates a master of the same `brokerName`; needs `brokerId` > 0.
    Slave,
}

impl BrokerRole {
    const NAMES: [(&'static str, BrokerRole); 3] = [
        ("ASYNC_MASTER", BrokerRole::AsyncMaster),
        ("SYNC_MASTER", BrokerRole::SyncMaster),
        ("SLAVE", BrokerRole::Slave),
    ];

    /// Both master roles; a master's `brokerId` is always 0.
    pub fn is_master(self) -> bool {
        self != BrokerRole::Slave
    }
}

/// `flushDiskType`: when a send is acknowledged relative to fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlushDiskType {
    /// `ASYNC_FLUSH`: acknowledge after the append; a background task flushes.
    AsyncFlush,
    /// `SYNC_FLUSH`: acknowledge after fsync (group commit), or FLUSH_DISK_TIMEOUT.
    SyncFlush,
}

impl FlushDiskType {
    const NAMES: [(&'static str, FlushDiskType); 2] = [
        ("ASYNC_FLUSH", FlushDiskType::AsyncFlush),
        ("SYNC_FLUSH", FlushDiskType::SyncFlush),
    ];
}

fn parse_named<T: Copy>(names: &[(&'static str, T)], value: &str) -> Result<T, Reason> {
    match names.iter().find(|(name, _)| *name == value) {
        Some((_, v)) => Ok(*v),
        None => {
            let all: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
            Err(format!("expected one of {}", all.join(", ")))
        }
    }
}

fn java_name_of<T: Copy + PartialEq>(names: &[(&'static str, T)], v: T) -> &'static str {
    names
        .iter()
        .find(|(_, candidate)| *candidate == v)
        .map_or("?", |(name, _)| name)
}

/// For each enum with a `NAMES` table (its names exactly as broker.properties spells them:
/// Java's enum names, `SYNC_MASTER`, or ringmq's own lower-case ones, `auto`): `parse` and
/// `java_name` over that table, and `Display`, `FromStr` and `ToProperty` through them.
macro_rules! java_enum_traits {
    ($($ty:ty),*) => {$(
        impl $ty {
            /// Parses the name exactly as the file spells it (as Java's `valueOf` for its
            /// enums); anything else is refused with the names it could have been.
            pub fn parse(value: &str) -> Result<Self, Reason> {
                parse_named(&Self::NAMES, value)
            }

            /// The name as the file spells it, e.g. `SYNC_MASTER` or `auto`.
            pub fn java_name(self) -> &'static str {
                java_name_of(&Self::NAMES, self)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.java_name())
            }
        }
        impl std::str::FromStr for $ty {
            type Err = Reason;
            fn from_str(s: &str) -> Result<Self, Reason> {
                Self::parse(s)
            }
        }
        impl ToProperty for $ty {
            fn to_property(&self) -> String {
                self.java_name().to_string()
            }
        }
    )*};
}

/// `shardColocation` (ringmq-only): whether the shards of a multi-shard broker share one CPU
/// while that is cheaper ([`crate::runtime::colocate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardColocation {
    /// `auto` (the default): share one CPU while the shards are light (under 0.6 of a CPU
    /// apart), run apart as soon as together they fill it, and between the two keep whichever
    /// the load does better with, found by trial ([`crate::runtime::colocate::policy`]).
    /// ASYNC_FLUSH only ([`ShardColocation::under`]).
    Auto,
    /// `off`: the kernel places every shard thread freely.
    Off,
    /// `always`: every shard thread restricted to one CPU whatever the load (the pinned
    /// one-shard layout's cost with several shards' queues).
    Always,
}

impl ShardColocation {
    const NAMES: [(&'static str, ShardColocation); 3] = [
        ("auto", ShardColocation::Auto),
        ("off", ShardColocation::Off),
        ("always", ShardColocation::Always),
    ];

    /// What the broker runs with under `flush`: `auto` means `off` under SYNC_FLUSH. The
    /// io_uring workers that run the durable writes are kept off the shards' shared CPU
    /// ([`crate::runtime::colocate::iowq`], since stop 32; before, they inherited the shard's
    /// one-CPU mask and the disk's waits queued there: open loop p99 47 ms), but sharing a
    /// CPU still loses where SYNC_FLUSH users look: Java's `producer.sh` (64 synchronous
    /// threads) 38.8k / 39.0k msgs/s with `auto` against 41.4k / 42.5k with `off`, though
    /// the open loop at 20,000/s spent 30 µs of CPU per message against 38 (README
    /// "Co-located shards"). `always` is honoured as asked.
    pub fn under(self, flush: FlushDiskType) -> Self {
        match (self, flush) {
            (ShardColocation::Auto, FlushDiskType::SyncFlush) => ShardColocation::Off,
            (mode, _) => mode,
        }
    }
}

/// `shardScheduling` (ringmq-only): the Linux scheduling policy of the shards' threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShardScheduling {
    /// `batch` (the default): `SCHED_BATCH`. A shard woken by a socket, a disk completion or
    /// another shard does not preempt the thread running on its CPU (the client, or the other
    /// shard, where they share the cores); it runs when a CPU is idle or at the next tick.
    /// Fewer forced context switches where the broker shares its CPUs: on a 2-CPU machine
    /// with the client beside it, Java's `producer.sh` SYNC_FLUSH about a quarter faster
    /// and a quarter less broker CPU per message, other cases within noise (README "Shards
    /// that do not preempt").
    Batch,
    /// `normal`: `SCHED_OTHER`, the kernel's default, for a broker that shares its CPUs with
    /// busy processes and wants each wake-up to preempt them.
    Normal,
}

impl ShardScheduling {
    const NAMES: [(&'static str, ShardScheduling); 2] = [
        ("batch", ShardScheduling::Batch),
        ("normal", ShardScheduling::Normal),
    ];
}

java_enum_traits!(BrokerRole, FlushDiskType, ShardColocation, ShardScheduling);

/// Largest `maxMessageSize`: 16 MiB − 1024, so a message and its headers fit one 16 MiB frame
/// (Java's `com.rocketmq.remoting.frameMaxLength` default).
pub(super) const MAX_MESSAGE_SIZE_MAX_BYTES: u64 = (16 << 20) - 1024;
/// Java addresses mapped files with an `int`.
pub(super) const JAVA_INT_MAX: u64 = i32::MAX as u64;
/// Largest consume-queue file: the last multiple of the unit that Java's `int` holds.
const CONSUME_QUEUE_SIZE_MAX_BYTES: u64 = JAVA_INT_MAX - JAVA_INT_MAX % CQ_UNIT_BYTES;

/// Java's default delay levels (`messageDelayLevel`), in seconds.
const DEFAULT_DELAY_LEVELS_S: [u64; 18] = [
    1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200,
];

/// Java's `sendMessageThreadPoolNums` default, min(CPUs, 4); other pool defaults derive from it.
fn send_threads(host: &HostInfo) -> u32 {
    host.cpus.clamp(1, 4)
}

/// Accepts a single commitlog directory. Java also reads a `,`-separated list of several;
/// ringmq (one commitlog per shard) does not, and says so instead of using only the first.
fn parse_commitlog_dir(value: &str) -> Result<PathBuf, Reason> {
    if value.contains(',') {
        return Err("ringmq supports one commitlog directory, not a ','-separated list".into());
    }
    parse_path(value)
}

config_struct! {
    /// The broker's settings. Field docs give the key, Java's default and the bounds that
    /// [`BrokerConfig::validate`] enforces. Keys marked "accepted, unused" are parsed and
    /// checked so Java configs load cleanly, but ringmq's thread-per-core design has no use
    /// for them. Build with [`BrokerConfig::default`], [`BrokerConfig::load`] or
    /// [`BrokerConfig::from_entries`] (the loaders apply Java's post-load rules and validate).
    pub struct BrokerConfig;
    fn for_host(host: &HostInfo);

    // --- identity / network (BrokerConfig, NettyServerConfig) ---
    /// `brokerClusterName`: cluster name (also an auto-created topic). Default
    /// `DefaultCluster`. Non-empty, no whitespace.
    "brokerClusterName" => broker_cluster_name: String = "DefaultCluster".to_string(),
        parse_string;
    /// `brokerName`: the broker group (master and slaves share it). Default: the host name
    /// ([`crate::config::host::detect_host_name`]). Non-empty, no whitespace.
    "brokerName" => broker_name: String = host.name.clone(), parse_string;
    /// `brokerId`: 0 = master, > 0 = slave. Default 0. Forced to 0 for master roles (with a
    /// warning); a SLAVE with 0 is an error.
    "brokerId" => broker_id: u64 = 0, parse_u64;
    /// `namesrvAddr`: `;`-separated `host:port` list. Default unset (CLI `-n` and env
    /// `NAMESRV_ADDR` are merged by `config::resolve_namesrv_addrs`). Empty means unset.
    "namesrvAddr" => namesrv_addr: Option<String> = None, parse_namesrv_value;
    /// `fetchNamesrvAddrByAddressServer`: fetch the list over HTTP. Default false. Accepted,
    /// unused (ringmq does not fetch).
    "fetchNamesrvAddrByAddressServer" => fetch_namesrv_addr_by_address_server: bool = false,
        parse_bool;
    /// `brokerIP1`: advertised address (`brokerIP1:listenPort`) and the storeHost written into
    /// every message. Default: [`crate::config::host::detect_broker_ip`]. An IP address.
    "brokerIP1" => broker_ip1: IpAddr = host.ip, parse_ip;
    /// `brokerIP2`: advertised HA address (`brokerIP2:haListenPort`). Default: as `brokerIP1`.
    "brokerIP2" => broker_ip2: IpAddr = host.ip, parse_ip;
    /// `listenPort`: remoting port. Default 10911 (Java's BrokerStartup; the class says 8888).
    /// 1..=65534 (the HA port is listenPort + 1).
    "listenPort" => listen_port: u16 = 10911, parse_u16, bounds(1, 65_534);
    /// `haListenPort`: always `listen_port + 1`, as in Java (a different file value is
    /// overwritten with a warning). Default 10912.
    "haListenPort" => ha_listen_port: u16 = 10912, parse_u16;
    /// `listenAddress` (ringmq-only): address to bind. Default `0.0.0.0`.
    "listenAddress" => listen_addr: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED), parse_ip;
    /// `brokerPermission`: 2 write, 4 read, 6 read+write; a non-6 value is applied to every
    /// topic at registration. Default 6. One of 2, 4, 6.
    "brokerPermission" => broker_permission: u8 = 6, parse_u8;
    /// `serverWorkerThreads` (Netty). Default 8. 1..=4096. Accepted, unused.
    "serverWorkerThreads" => server_worker_threads: u32 = 8, parse_u32, bounds(1, 4096);
    /// `serverSelectorThreads` (Netty). Default 3. 1..=4096. Accepted, unused.
    "serverSelectorThreads" => server_selector_threads: u32 = 3, parse_u32, bounds(1, 4096);
    /// `serverChannelMaxIdleTimeSeconds`: idle connections are closed. Default 120. 0..=86400.
    "serverChannelMaxIdleTimeSeconds" => server_channel_max_idle_seconds: u32 = 120,
        parse_u32, bounds(0, 86_400);
    /// `registerNameServerPeriod`: re-registration period. Default 30000. Clamped into
    /// 10000..=60000 on load, with a warning (Java clamps silently on use).
    "registerNameServerPeriod" => register_namesrv_period_ms: u64 = 30_000, parse_u64,
        bounds(10_000, 60_000);
    /// `registerBrokerTimeoutMills`: REGISTER_BROKER call timeout. Default 6000.
    /// 1..=86400000.
    "registerBrokerTimeoutMills" => register_broker_timeout_ms: u64 = 6_000, parse_u64,
        bounds(1, DAY_MS);
    /// `forceRegister`: false → QUERY_DATA_VERSION before registering. Default true.
    "forceRegister" => force_register: bool = true, parse_bool;
    /// `compressedRegister`: zlib body in REGISTER_BROKER. Default false.
    "compressedRegister" => compressed_register: bool = false, parse_bool;
    /// `regionId`: returned as `MSG_REGION`. Default `DefaultRegion`.
    "regionId" => region_id: String = "DefaultRegion".to_string(), parse_string;
    /// `traceOn`: returned as `TRACE_ON`. Default true.
    "traceOn" => trace_on: bool = true, parse_bool;
    /// `aclEnable`: check every request against plain_acl.yml (see [`crate::acl`]). Default
    /// false.
    "aclEnable" => acl_enable: bool = false, parse_bool;
    /// `rocketmqHome`: default env `ROCKETMQ_HOME`. The ACL files are looked for under it
    /// (`conf/plain_acl.yml`, `conf/acl/*.yml`).
    "rocketmqHome" => rocketmq_home: Option<PathBuf> = host.rocketmq_home.clone(),
        parse_opt_path;
    /// `aclPlainFile` (ringmq-only): the one ACL file to use instead of those under
    /// `rocketmqHome`. Default unset.
    "aclPlainFile" => acl_plain_file: Option<PathBuf> = None, parse_opt_path;
    /// `aclAccessKey` (ringmq-only): this broker's own account, which signs its registrations
    /// with the nameservers and, on a slave, its HA link and metadata sync to the master.
    /// Default unset; set together with `aclSecretKey`.
    "aclAccessKey" => acl_access_key: Option<String> = None, parse_opt_string;
    /// `aclSecretKey` (ringmq-only): the secret of `aclAccessKey`; printed masked.
    "aclSecretKey" => acl_secret_key: Option<String> = None, parse_opt_string,
        fmt = format_secret;
    /// `shardCount` (ringmq-only): executor shards, each owning a commitlog. Default 0 = one
    /// per available core. 0..=256 (the shard sits in bits 45-52 of a physical offset).
    "shardCount" => shard_count: u32 = 0, parse_u32, bounds(0, 256);
    /// `ioDepth` (ringmq-only): io_uring ring depth per shard. Default 128. 1..=32768.
    "ioDepth" => io_depth: u32 = 128, parse_u32, bounds(1, 32_768);
    /// `pinShards` (ringmq-only): pin shard i to CPU i (mod the CPUs available) when there
    /// is more than one shard. Default false: the kernel places the shards, which costs less
    /// when clients or other processes share the cores (README "Broker CPU per message").
    "pinShards" => pin_shards: bool = false, parse_bool;
    /// `shardColocation` (ringmq-only): `auto`, `off` or `always`; see [`ShardColocation`]
    /// and README "Co-located shards". Default `auto` (stop 31), which is `off` under SYNC_FLUSH. Has
    /// no effect with one shard or with `pinShards=true` (a pinned shard is not moved);
    /// `always` with `pinShards=true` is refused.
    "shardColocation" => shard_colocation: ShardColocation = ShardColocation::Auto,
        ShardColocation::parse;
    /// `shardScheduling` (ringmq-only): `batch` or `normal`, the scheduling policy of the
    /// shards' threads; see [`ShardScheduling`]. Default `batch`.
    "shardScheduling" => shard_scheduling: ShardScheduling = ShardScheduling::Batch,
        ShardScheduling::parse;

    // --- topics / groups ---
    /// `autoCreateTopicEnable`: create `TBW102` so unknown topics auto-create. Default true.
    "autoCreateTopicEnable" => auto_create_topic_enable: bool = true, parse_bool;
    /// `defaultTopicQueueNums`: queue count of TBW102. Default 8. 1..=1024.
    "defaultTopicQueueNums" => default_topic_queue_nums: u32 = 8, parse_u32, bounds(1, 1024);
    /// `autoCreateSubscriptionGroup`: create unknown consumer groups on use. Default true.
    "autoCreateSubscriptionGroup" => auto_create_subscription_group: bool = true, parse_bool;
    /// `clusterTopicEnable`: RW perm on the cluster-name topic. Default true.
    "clusterTopicEnable" => cluster_topic_enable: bool = true, parse_bool;
    /// `brokerTopicEnable`: RW perm on the broker-name topic. Default true.
    "brokerTopicEnable" => broker_topic_enable: bool = true, parse_bool;
    /// `traceTopicEnable`: create the trace topic. Default false.
    "traceTopicEnable" => trace_topic_enable: bool = false, parse_bool;
    /// `msgTraceTopicName`: Default `RMQ_SYS_TRACE_TOPIC`. Non-empty.
    "msgTraceTopicName" => msg_trace_topic_name: String = "RMQ_SYS_TRACE_TOPIC".to_string(),
        parse_string;
    /// `storeReplyMessageEnable`: store request-reply replies on `<cluster>_REPLY_TOPIC`
    /// besides pushing them to the requester. Default true.
    "storeReplyMessageEnable" => store_reply_message_enable: bool = true, parse_bool;
    /// `notifyConsumerIdsChangedEnable`: send NOTIFY_CONSUMER_IDS_CHANGED. Default true.
    "notifyConsumerIdsChangedEnable" => notify_consumer_ids_changed_enable: bool = true,
        parse_bool;
    /// `rejectTransactionMessage`: refuse `TRAN_MSG` sends (NO_PERMISSION). Default false.
    "rejectTransactionMessage" => reject_transaction_message: bool = false, parse_bool;
    /// `transactionTimeOut`: minimum age of a half message before check-back. Default 6000.
    /// 1..=86400000.
    "transactionTimeOut" => transaction_timeout_ms: u64 = 6_000, parse_u64, bounds(1, DAY_MS);
    /// `transactionCheckMax`: check-backs before a half message is discarded. Default 15.
    /// 1..=10000.
    "transactionCheckMax" => transaction_check_max: u32 = 15, parse_u32, bounds(1, 10_000);
    /// `transactionCheckInterval`: check-back pass period. Default 60000. 1..=86400000.
    "transactionCheckInterval" => transaction_check_interval_ms: u64 = 60_000, parse_u64,
        bounds(1, DAY_MS);
    /// `enablePropertyFilter`: allow SQL92 subscriptions. Default false.
    "enablePropertyFilter" => enable_property_filter: bool = false, parse_bool;
    /// `filterSupportRetry`: apply SQL filters to retry topics. Default false.
    "filterSupportRetry" => filter_support_retry: bool = false, parse_bool;

    // --- threads / queues / flow control (Java's executor pools: accepted, unused) ---
    /// `sendMessageThreadPoolNums`: Default min(CPUs, 4). 1..=4096. Accepted, unused.
    "sendMessageThreadPoolNums" => send_message_thread_pool_nums: u32 = send_threads(host),
        parse_u32, bounds(1, 4096);
    /// `putMessageFutureThreadPoolNums`: Default min(CPUs, 4). 1..=4096. Accepted, unused.
    "putMessageFutureThreadPoolNums" => put_message_future_thread_pool_nums: u32 =
        send_threads(host), parse_u32, bounds(1, 4096);
    /// `pullMessageThreadPoolNums`: Default 16 + 2×CPUs. 1..=4096. Accepted, unused.
    "pullMessageThreadPoolNums" => pull_message_thread_pool_nums: u32 = 16 + 2 * host.cpus,
        parse_u32, bounds(1, 4096);
    /// `queryMessageThreadPoolNums`: Default 8 + CPUs. 1..=4096. Accepted, unused.
    "queryMessageThreadPoolNums" => query_message_thread_pool_nums: u32 = 8 + host.cpus,
        parse_u32, bounds(1, 4096);
    /// `processReplyMessageThreadPoolNums`: Default 16 + 2×CPUs. 1..=4096. Accepted, unused.
    "processReplyMessageThreadPoolNums" => process_reply_message_thread_pool_nums: u32 =
        16 + 2 * host.cpus, parse_u32, bounds(1, 4096);
    /// `adminBrokerThreadPoolNums`: Default 16. 1..=4096. Accepted, unused.
    "adminBrokerThreadPoolNums" => admin_broker_thread_pool_nums: u32 = 16, parse_u32,
        bounds(1, 4096);
    /// `clientManageThreadPoolNums`: Default 32. 1..=4096. Accepted, unused.
    "clientManageThreadPoolNums" => client_manage_thread_pool_nums: u32 = 32, parse_u32,
        bounds(1, 4096);
    /// `consumerManageThreadPoolNums`: Default 32. 1..=4096. Accepted, unused.
    "consumerManageThreadPoolNums" => consumer_manage_thread_pool_nums: u32 = 32, parse_u32,
        bounds(1, 4096);
    /// `heartbeatThreadPoolNums`: Default min(32, CPUs). 1..=4096. Accepted, unused.
    "heartbeatThreadPoolNums" => heartbeat_thread_pool_nums: u32 = host.cpus.clamp(1, 32),
        parse_u32, bounds(1, 4096);
    /// `endTransactionThreadPoolNums`: Default max(8 + 2×CPUs, 4 × the *default* send pool;
    /// Java computes it at construction). 1..=4096. Accepted, unused.
    "endTransactionThreadPoolNums" => end_transaction_thread_pool_nums: u32 =
        (8 + 2 * host.cpus).max(4 * send_threads(host)), parse_u32, bounds(1, 4096);
    /// `sendThreadPoolQueueCapacity`: Default 10000. 1..=10000000. Accepted, unused.
    "sendThreadPoolQueueCapacity" => send_thread_pool_queue_capacity: u32 = 10_000, parse_u32,
        bounds(1, 10_000_000);
    /// `pullThreadPoolQueueCapacity`: Default 100000. 1..=10000000. Accepted, unused.
    "pullThreadPoolQueueCapacity" => pull_thread_pool_queue_capacity: u32 = 100_000, parse_u32,
        bounds(1, 10_000_000);
    /// `queryThreadPoolQueueCapacity`: Default 20000. 1..=10000000. Accepted, unused.
    "queryThreadPoolQueueCapacity" => query_thread_pool_queue_capacity: u32 = 20_000,
        parse_u32, bounds(1, 10_000_000);
    /// `brokerFastFailureEnable`: answer SYSTEM_BUSY to sends queued too long. Default true.
    "brokerFastFailureEnable" => broker_fast_failure_enable: bool = true, parse_bool;
    /// `waitTimeMillsInSendQueue`: the "too long" above. Default 200. 1..=86400000.
    "waitTimeMillsInSendQueue" => wait_time_in_send_queue_ms: u64 = 200, parse_u64,
        bounds(1, DAY_MS);
    /// `longPollingEnable`: park pulls that find nothing new. Default true.
    "longPollingEnable" => long_polling_enable: bool = true, parse_bool;
    /// `shortPollingTimeMills`: suspend time when long polling is off. Default 1000.
    /// 1..=86400000.
    "shortPollingTimeMills" => short_polling_time_ms: u64 = 1_000, parse_u64, bounds(1, DAY_MS);
    /// `transferMsgByHeap`: Java copies pull bodies to heap. Default true. Accepted, unused
    /// (ringmq serves stored bytes as they are).
    "transferMsgByHeap" => transfer_msg_by_heap: bool = true, parse_bool;
    /// `slaveReadEnable`: let consumers read from the slave when the master says so. Default
    /// false.
    "slaveReadEnable" => slave_read_enable: bool = false, parse_bool;
    /// `flushConsumerOffsetInterval`: consumerOffset.json persist period. Default 5000.
    /// 1..=86400000.
    "flushConsumerOffsetInterval" => flush_consumer_offset_interval_ms: u64 = 5_000, parse_u64,
        bounds(1, DAY_MS);
    /// `useReentrantLockWhenPutMessage`: Default true (≥ 4.9.1). Accepted, unused.
    "useReentrantLockWhenPutMessage" => use_reentrant_lock_when_put_message: bool = true,
        parse_bool;

    // --- store (MessageStoreConfig) ---
    /// `storePathRootDir`: root of the store. Default `$HOME/store`.
    "storePathRootDir" => store_path_root_dir: PathBuf = host.home.join("store"), parse_path;
    /// `storePathCommitLog`: commitlog directory. Default `<storePathRootDir>/commitlog` when
    /// the file does not set it (spec/CONFIG.md; Java's own default is `$HOME/store/commitlog`
    /// whatever the root). One directory (a `,`-separated list is rejected).
    "storePathCommitLog" => store_path_commitlog: PathBuf = host.home.join("store/commitlog"),
        parse_commitlog_dir;
    /// `mappedFileSizeCommitLog` (the old spelling `mapedFileSizeCommitLog` is honoured when
    /// alone): commitlog segment size. Default 1073741824 (1 GiB). 4096..=2147483647, and
    /// larger than `maxMessageSize` so any message fits one segment.
    "mappedFileSizeCommitLog" => mapped_file_size_commitlog_bytes: u64 = 1 << 30, parse_u64,
        bounds(4096, JAVA_INT_MAX);
    /// `mappedFileSizeConsumeQueue`: consume-queue file size. Default 6000000 (300000 units of
    /// 20 bytes). Rounded up to a multiple of 20 on load. 20..=2147483640.
    "mappedFileSizeConsumeQueue" => mapped_file_size_consume_queue_bytes: u64 = 6_000_000,
        parse_u64, bounds(20, CONSUME_QUEUE_SIZE_MAX_BYTES);
    /// `brokerRole`: `ASYNC_MASTER`, `SYNC_MASTER` or `SLAVE`. Default `ASYNC_MASTER`.
    "brokerRole" => broker_role: BrokerRole = BrokerRole::AsyncMaster, BrokerRole::parse;
    /// `flushDiskType`: `ASYNC_FLUSH` or `SYNC_FLUSH`. Default `ASYNC_FLUSH`.
    "flushDiskType" => flush_disk_type: FlushDiskType = FlushDiskType::AsyncFlush,
        FlushDiskType::parse;
    /// `syncFlushTimeout`: SYNC_FLUSH wait before FLUSH_DISK_TIMEOUT. Default 5000.
    /// 1..=86400000.
    "syncFlushTimeout" => sync_flush_timeout_ms: u64 = 5_000, parse_u64, bounds(1, DAY_MS);
    /// `slaveTimeout`: SYNC_MASTER wait before FLUSH_SLAVE_TIMEOUT. Default 3000.
    /// 1..=86400000.
    "slaveTimeout" => slave_timeout_ms: u64 = 3_000, parse_u64, bounds(1, DAY_MS);
    /// `flushIntervalCommitLog`: async flush period. Default 500. 1..=86400000.
    "flushIntervalCommitLog" => flush_interval_commitlog_ms: u64 = 500, parse_u64,
        bounds(1, DAY_MS);
    /// `flushCommitLogLeastPages`: 4 KiB pages per async flush. Default 4. 0..=1048576.
    "flushCommitLogLeastPages" => flush_commitlog_least_pages: u32 = 4, parse_u32,
        bounds(0, 1 << 20);
    /// `flushCommitLogThoroughInterval`: forced full flush period. Default 10000.
    /// 1..=86400000.
    "flushCommitLogThoroughInterval" => flush_commitlog_thorough_interval_ms: u64 = 10_000,
        parse_u64, bounds(1, DAY_MS);
    /// `flushCommitLogTimed`: sleep instead of a wake-able wait. Default true (≥ 4.9.1).
    "flushCommitLogTimed" => flush_commitlog_timed: bool = true, parse_bool;
    /// `flushIntervalConsumeQueue`: Default 1000. 1..=86400000.
    "flushIntervalConsumeQueue" => flush_interval_consume_queue_ms: u64 = 1_000, parse_u64,
        bounds(1, DAY_MS);
    /// `flushConsumeQueueLeastPages`: Default 2. 0..=1048576.
    "flushConsumeQueueLeastPages" => flush_consume_queue_least_pages: u32 = 2, parse_u32,
        bounds(0, 1 << 20);
    /// `flushConsumeQueueThoroughInterval`: Default 60000. 1..=86400000.
    "flushConsumeQueueThoroughInterval" => flush_consume_queue_thorough_interval_ms: u64 =
        60_000, parse_u64, bounds(1, DAY_MS);
    /// `commitIntervalCommitLog` (transient pool only): Default 200. 1..=86400000.
    "commitIntervalCommitLog" => commit_interval_commitlog_ms: u64 = 200, parse_u64,
        bounds(1, DAY_MS);
    /// `commitCommitLogLeastPages` (transient pool only): Default 4. 0..=1048576.
    "commitCommitLogLeastPages" => commit_commitlog_least_pages: u32 = 4, parse_u32,
        bounds(0, 1 << 20);
    /// `commitCommitLogThoroughInterval` (transient pool only): Default 200. 1..=86400000.
    "commitCommitLogThoroughInterval" => commit_commitlog_thorough_interval_ms: u64 = 200,
        parse_u64, bounds(1, DAY_MS);
    /// `transientStorePoolEnable`: off-heap write buffers (Java: ASYNC_FLUSH master only).
    /// Default false.
    "transientStorePoolEnable" => transient_store_pool_enable: bool = false, parse_bool;
    /// `transientStorePoolSize`: number of write buffers. Default 5. 1..=1024.
    "transientStorePoolSize" => transient_store_pool_buffers: u32 = 5, parse_u32, bounds(1, 1024);
    /// `maxMessageSize`: max body (and batch body) bytes. Default 4194304 (4 MiB).
    /// 1..=16776192 (16 MiB − 1024, so a message and its headers fit a 16 MiB frame).
    "maxMessageSize" => max_message_size_bytes: u64 = 4 << 20, parse_u64,
        bounds(1, MAX_MESSAGE_SIZE_MAX_BYTES);
    /// `checkCRCOnRecover`: verify record CRCs in recovery. Default true.
    "checkCRCOnRecover" => check_crc_on_recover: bool = true, parse_bool;
    /// `deleteWhen`: hours of the day (0..=23, `;`-separated) when expired files are deleted.
    /// Default `04`. At least one.
    "deleteWhen" => delete_when_hours: Vec<u8> = vec![4], parse_hours, fmt = format_hours;
    /// `fileReservedTime`: hours to keep commitlog files. Default 72. 1..=87600.
    "fileReservedTime" => file_reserved_time_hours: u32 = 72, parse_u32, bounds(1, 87_600);
    /// `diskMaxUsedSpaceRatio`: disk use above which files are deleted at any hour. Default
    /// 75. Clamped into 10..=95 on load, with a warning (Java clamps silently on use).
    "diskMaxUsedSpaceRatio" => disk_max_used_space_ratio_percent: u32 = 75, parse_u32,
        bounds(10, 95);
    /// `cleanFileForciblyEnable`: delete unexpired files when the disk is > 85 % full.
    /// Default true.
    "cleanFileForciblyEnable" => clean_file_forcibly_enable: bool = true, parse_bool;
    /// `cleanResourceInterval`: cleanup pass period. Default 10000. 1..=86400000.
    "cleanResourceInterval" => clean_resource_interval_ms: u64 = 10_000, parse_u64,
        bounds(1, DAY_MS);
    /// `deleteCommitLogFilesInterval`: pause between two deleted commitlog files. Default 100.
    /// 0..=86400000.
    "deleteCommitLogFilesInterval" => delete_commitlog_files_interval_ms: u64 = 100, parse_u64,
        bounds(0, DAY_MS);
    /// `deleteConsumeQueueFilesInterval`: pause between two deleted queue files. Default 100.
    /// 0..=86400000.
    "deleteConsumeQueueFilesInterval" => delete_consume_queue_files_interval_ms: u64 = 100,
        parse_u64, bounds(0, DAY_MS);
    /// `destroyMapedFileIntervalForcibly` (one *p*, still current): Default 120000.
    /// 0..=86400000.
    "destroyMapedFileIntervalForcibly" => destroy_mapped_file_interval_forcibly_ms: u64 =
        120_000, parse_u64, bounds(0, DAY_MS);
    /// `redeleteHangedFileInterval`: Default 120000. 0..=86400000.
    "redeleteHangedFileInterval" => redelete_hanged_file_interval_ms: u64 = 120_000, parse_u64,
        bounds(0, DAY_MS);
    /// `messageDelayLevel`: delay levels (units s/m/h/d, blank-separated). Default `1s 5s 10s
    /// 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h`. 1..=255 levels, each > 0.
    "messageDelayLevel" => message_delay_levels_ms: Vec<u64> =
        DEFAULT_DELAY_LEVELS_S.iter().map(|s| s * 1_000).collect(),
        parse_delay_levels, fmt = format_delay_levels;
    /// `flushDelayOffsetInterval`: delayOffset.json persist period. Default 10000.
    /// 1..=86400000.
    "flushDelayOffsetInterval" => flush_delay_offset_interval_ms: u64 = 10_000, parse_u64,
        bounds(1, DAY_MS);
    /// `timerWheelEnable`: accept timer messages (`TIMER_DELIVER_MS`, `TIMER_DELAY_SEC`,
    /// `TIMER_DELAY_MS`; RocketMQ 5). Default true; false refuses them (SYSTEM_ERROR).
    "timerWheelEnable" => timer_wheel_enable: bool = true, parse_bool;
    /// `timerMaxDelaySec`: longest timer delay; a later one is refused (MESSAGE_ILLEGAL).
    /// Default 259200 (3 days). 1..=2147483647.
    "timerMaxDelaySec" => timer_max_delay_sec: u64 = 259_200, parse_u64, bounds(1, JAVA_INT_MAX);
    /// `timerPrecisionMs`: timer slot width; a timer is delivered at the first slot boundary
    /// at or after its time. Default 1000. Snapped to 100, 200, 500 or 1000 as Java does.
    "timerPrecisionMs" => timer_precision_ms: u64 = 1_000, parse_timer_precision;
    /// `timerFlushIntervalMs`: how often the timer progress checkpoint is saved (only when it
    /// moved). Default 1000. 1..=86400000.
    "timerFlushIntervalMs" => timer_flush_interval_ms: u64 = 1_000, parse_u64, bounds(1, DAY_MS);
    /// `timerInterceptDelayLevel`: Default false (refused true: delay levels stay levels).
    "timerInterceptDelayLevel" => timer_intercept_delay_level: bool = false, parse_bool;
    /// `timerStopEnqueue`: Default false (refused true).
    "timerStopEnqueue" => timer_stop_enqueue: bool = false, parse_bool;
    /// `timerStopDequeue`: Default false (refused true).
    "timerStopDequeue" => timer_stop_dequeue: bool = false, parse_bool;
    /// `mappedFileSizeTimerLog`: Default 104857600 (ignored).
    "mappedFileSizeTimerLog" => mapped_file_size_timer_log_bytes: u64 = 100 << 20, parse_u64;
    /// `timerRollWindowSlot`: Default 172800 (ignored).
    "timerRollWindowSlot" => timer_roll_window_slot: u64 = 172_800, parse_u64;
    /// `timerGetMessageThreadNum`: Default 3 (ignored).
    "timerGetMessageThreadNum" => timer_get_message_thread_num: u32 = 3, parse_u32;
    /// `timerPutMessageThreadNum`: Default 3 (ignored).
    "timerPutMessageThreadNum" => timer_put_message_thread_num: u32 = 3, parse_u32;
    /// `timerEnableDisruptor`: Default false (ignored).
    "timerEnableDisruptor" => timer_enable_disruptor: bool = false, parse_bool;
    /// `timerEnableCheckMetrics`: Default true (ignored).
    "timerEnableCheckMetrics" => timer_enable_check_metrics: bool = true, parse_bool;
    /// `timerCheckMetricsWhen`: Default `05` (ignored).
    "timerCheckMetricsWhen" => timer_check_metrics_when: String = "05".to_string(),
        parse_string;
    /// `timerMetricSmallThreshold`: Default 1000000 (ignored).
    "timerMetricSmallThreshold" => timer_metric_small_threshold: u64 = 1_000_000, parse_u64;
    /// `timerProgressLogIntervalMs`: Default 10000 (ignored).
    "timerProgressLogIntervalMs" => timer_progress_log_interval_ms: u64 = 10_000, parse_u64;
    /// `timerCongestNumEachSlot`: Default 2147483647 (ignored).
    "timerCongestNumEachSlot" => timer_congest_num_each_slot: u64 = JAVA_INT_MAX, parse_u64;
    /// `timerSkipUnknownError`: Default false (ignored).
    "timerSkipUnknownError" => timer_skip_unknown_error: bool = false, parse_bool;
    /// `timerWarmEnable`: Default false (ignored).
    "timerWarmEnable" => timer_warm_enable: bool = false, parse_bool;
    /// `timerEnableRetryUntilSuccess`: Default false (ignored).
    "timerEnableRetryUntilSuccess" => timer_enable_retry_until_success: bool = false,
        parse_bool;
    /// `timerColdDataCheckIntervalMs`: Default 60000 (ignored).
    "timerColdDataCheckIntervalMs" => timer_cold_data_check_interval_ms: u64 = 60_000,
        parse_u64;
    /// `maxTransferBytesOnMessageInMemory`: per pull. Default 262144. 1..=1073741824.
    "maxTransferBytesOnMessageInMemory" => max_transfer_in_memory_bytes: u64 = 262_144,
        parse_u64, bounds(1, 1 << 30);
    /// `maxTransferCountOnMessageInMemory`: per pull. Default 32. 1..=65536.
    "maxTransferCountOnMessageInMemory" => max_transfer_in_memory_count: u32 = 32, parse_u32,
        bounds(1, 65_536);
    /// `maxTransferBytesOnMessageInDisk`: per pull. Default 65536. 1..=1073741824.
    "maxTransferBytesOnMessageInDisk" => max_transfer_on_disk_bytes: u64 = 65_536, parse_u64,
        bounds(1, 1 << 30);
    /// `maxTransferCountOnMessageInDisk`: per pull. Default 8. 1..=65536.
    "maxTransferCountOnMessageInDisk" => max_transfer_on_disk_count: u32 = 8, parse_u32,
        bounds(1, 65_536);
    /// `accessMessageInMemoryMaxRatio`: % of RAM considered "in memory" (HA.md §5). Default
    /// 40. 0..=100.
    "accessMessageInMemoryMaxRatio" => access_message_in_memory_max_ratio_percent: u32 = 40,
        parse_u32, bounds(0, 100);
    /// `messageIndexEnable`: build the key/time index. Default true.
    "messageIndexEnable" => message_index_enable: bool = true, parse_bool;
    /// `messageIndexSafe`: Default false.
    "messageIndexSafe" => message_index_safe: bool = false, parse_bool;
    /// `maxHashSlotNum`: hash slots per index file. Default 5000000. >= 1, and the index file
    /// (40 + 4×slots + 20×maxIndexNum bytes) must stay within 2 GiB − 1.
    "maxHashSlotNum" => max_hash_slot_num: u32 = 5_000_000, parse_u32, bounds(1, JAVA_INT_MAX);
    /// `maxIndexNum`: entries per index file. Default 20000000. >= 1 (see `maxHashSlotNum`).
    "maxIndexNum" => max_index_num: u32 = 20_000_000, parse_u32, bounds(1, JAVA_INT_MAX);
    /// `defaultQueryMaxNum`: Default 32. 1..=65536.
    "defaultQueryMaxNum" => default_query_max_num: u32 = 32, parse_u32, bounds(1, 65_536);
    /// `haMasterAddress`: a slave's fixed master HA address (`host:port`). Default unset.
    "haMasterAddress" => ha_master_address: Option<String> = None, parse_opt_host_port;
    /// `haSendHeartbeatInterval`: Default 5000. 1..=86400000.
    "haSendHeartbeatInterval" => ha_send_heartbeat_interval_ms: u64 = 5_000, parse_u64,
        bounds(1, DAY_MS);
    /// `haHousekeepingInterval`: HA connection idle limit. Default 20000. 1..=86400000.
    "haHousekeepingInterval" => ha_housekeeping_interval_ms: u64 = 20_000, parse_u64,
        bounds(1, DAY_MS);
    /// `haTransferBatchSize`: bytes per HA transfer. Default 32768. 1..=1073741824.
    "haTransferBatchSize" => ha_transfer_batch_size_bytes: u64 = 32_768, parse_u64,
        bounds(1, 1 << 30);
    /// `haSlaveFallbehindMax`: a slave further behind is "not available" to SYNC_MASTER.
    /// Default 268435456 (256 MiB).
    "haSlaveFallbehindMax" => ha_slave_fallbehind_max_bytes: u64 = 256 << 20, parse_u64;
    /// `offsetCheckInSlave`: Default false.
    "offsetCheckInSlave" => offset_check_in_slave: bool = false, parse_bool;
    /// `osPageCacheBusyTimeOutMills`: Default 1000. 1..=86400000.
    "osPageCacheBusyTimeOutMills" => os_page_cache_busy_timeout_ms: u64 = 1_000, parse_u64,
        bounds(1, DAY_MS);
    /// `warmMapedFileEnable`: pre-touch new segments. Default false.
    "warmMapedFileEnable" => warm_mapped_file_enable: bool = false, parse_bool;
    /// `duplicationEnable`: Default false.
    "duplicationEnable" => duplication_enable: bool = false, parse_bool;
    /// `enableDLegerCommitLog`: DLedger mode. Default false; true is rejected (out of scope).
    "enableDLegerCommitLog" => enable_dleger_commitlog: bool = false, parse_bool;
    /// `enableControllerMode`: RocketMQ 5's controller mode: the controllers of
    /// `controllerAddr` decide whether this broker is its group's master (then it runs the
    /// master role of `brokerRole`, as brokerId 0) or a slave (with the id the controller
    /// assigned); see `crate::controller::broker_agent`. Default false.
    "enableControllerMode" => enable_controller_mode: bool = false, parse_bool;
    /// `controllerAddr`: `;`-separated remoting addresses of the controllers (or of the
    /// nameservers embedding them). Required with `enableControllerMode`.
    "controllerAddr" => controller_addr: Option<String> = None, parse_opt_string;
    /// `syncBrokerMetadataPeriod`: how often a broker in controller mode asks the controller
    /// who its master is, in ms. Default 5000. 10..=86400000.
    "syncBrokerMetadataPeriod" => sync_broker_metadata_period_ms: u64 = 5_000, parse_u64,
        bounds(10, DAY_MS);
    /// `checkSyncStateSetPeriod`: how often a master in controller mode compares its caught-up
    /// slaves with the SyncStateSet and reports changes, in ms. Default 5000. 10..=86400000.
    "checkSyncStateSetPeriod" => check_sync_state_set_period_ms: u64 = 5_000, parse_u64,
        bounds(10, DAY_MS);
    /// `haMaxTimeSlaveNotCatchup`: a slave behind the master for longer than this (ms) leaves
    /// the SyncStateSet. Default 15000. 1..=86400000.
    "haMaxTimeSlaveNotCatchup" => ha_max_time_slave_not_catchup_ms: u64 = 15_000, parse_u64,
        bounds(1, DAY_MS);
    /// `controllerHeartBeatTimeoutMills`: the controller declares this broker dead after this
    /// long without a heartbeat; a master on a lease (any but a SYNC_MASTER with
    /// `allAckInSyncStateSet`, which its replicas fence) that has not had a heartbeat answered
    /// by the controller leader for half of it stops serving. Default 10000. 300..=86400000.
    "controllerHeartBeatTimeoutMills" => controller_heartbeat_timeout_ms: u64 = 10_000,
        parse_u64, bounds(300, DAY_MS);
    /// `allAckInSyncStateSet`: a SYNC_MASTER in controller mode answers SEND_OK only once every
    /// replica of its SyncStateSet holds the message. This is what fences a master cut off
    /// from the controllers (see `crate::controller::broker_agent`). Default false (Java's).
    "allAckInSyncStateSet" => all_ack_in_sync_state_set: bool = false, parse_bool;
    /// `inSyncReplicas`: with `allAckInSyncStateSet=false`, the replicas (the master counted)
    /// that must hold a message before a SYNC_MASTER in controller mode answers SEND_OK.
    /// Default 1 (the master alone). 1..=64.
    "inSyncReplicas" => in_sync_replicas: u32 = 1, parse_u32, bounds(1, 64);
    /// `minInSyncReplicas`: a SYNC_MASTER in controller mode whose SyncStateSet (the master
    /// counted) is smaller does not answer SEND_OK (ringmq: SLAVE_NOT_AVAILABLE, the message
    /// stored; Java: SYSTEM_ERROR "in-sync replicas not enough", not stored). Default 1. 1..=64.
    "minInSyncReplicas" => min_in_sync_replicas: u32 = 1, parse_u32, bounds(1, 64);
}

/// `timerPrecisionMs` as Java's setter stores it: the largest of 100, 200, 500 and 1000 not
/// above the value (100 below 200).
fn parse_timer_precision(value: &str) -> Result<u64, Reason> {
    let ms = value
        .parse::<i64>()
        .map_err(|_| "expected a whole number of milliseconds".to_string())?;
    Ok(match ms {
        i64::MIN..=199 => 100,
        200..=499 => 200,
        500..=999 => 500,
        _ => 1_000,
    })
}

/// Empty = unset.
fn parse_opt_string(value: &str) -> Result<Option<String>, Reason> {
    Ok(Some(value.to_string()).filter(|v| !v.is_empty()))
}

/// A secret is never printed (`-p`, GET_BROKER_CONFIG): only whether it is set.
fn format_secret(value: &Option<String>) -> String {
    value
        .as_ref()
        .map_or_else(String::new, |_| "******".to_string())
}

/// `namesrvAddr`: empty = unset; otherwise every address must be a valid `host:port`.
fn parse_namesrv_value(value: &str) -> Result<Option<String>, Reason> {
    if value.is_empty() {
        return Ok(None);
    }
    match super::parse_namesrv_addrs(value) {
        Ok(_) => Ok(Some(value.to_string())),
        Err(super::ConfigError::Value { reason, .. }) => Err(reason),
        Err(other) => Err(other.to_string()),
    }
}

impl Default for BrokerConfig {
    /// Java's defaults on this host ([`HostInfo::detect`]).
    fn default() -> Self {
        Self::for_host(&HostInfo::detect())
    }
}
