//! Owns loading a [`BrokerConfig`]: applying a file's entries over the defaults, the keys old
//! RocketMQ samples still carry, Java's post-load rules (master ⇒ `brokerId = 0`, HA port =
//! listenPort + 1, the clamps) and [`BrokerConfig::validate`]. Runs once at startup.

use std::path::Path;

use super::broker::JAVA_INT_MAX;
use super::broker::{BrokerConfig, BrokerRole, ShardColocation, KEYS};
use super::properties::Entry;
use super::units::{check_host_port, parse_u64, DELAY_LEVELS_MAX};
use super::{apply_entries, check_ranges, read_entries, unknown_key_note};
use super::{ConfigError, ConfigWarning, Seen, Warnings};
use crate::limits::CQ_UNIT_BYTES;

impl BrokerConfig {
    /// Reads and parses `path`, then applies it over the defaults (see [`Self::from_entries`]).
    pub fn load(path: &Path) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let entries = read_entries(path)?;
        Self::from_entries(&entries, &path.display().to_string())
    }

    /// Applies `entries` over [`BrokerConfig::default`]; `file` labels messages.
    pub fn from_entries(
        entries: &[Entry],
        file: &str,
    ) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        Self::default().with_entries(entries, file)
    }

    /// Applies `entries` over `self` (e.g. a config from [`BrokerConfig::for_host`] with a
    /// chosen IP), then Java's post-load rules, then [`Self::validate`]. Unknown and legacy
    /// keys, adjusted values and trailing whitespace come back as warnings, in file order.
    pub fn with_entries(
        mut self,
        entries: &[Entry],
        file: &str,
    ) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let mut warnings = Warnings {
            file,
            list: Vec::new(),
        };
        let (seen, others) = apply_entries(&mut self, KEYS, entries, &mut warnings)?;
        for entry in others {
            self.apply_other_key(entry, &seen, &mut warnings)
                .map_err(|e| e.located(file, &seen))?;
        }
        self.apply_java_rules(&seen, &mut warnings);
        warn_ignored(&seen, super::status::BROKER_IGNORED, &mut warnings);
        self.validate().map_err(|e| e.located(file, &seen))?;
        Ok((self, warnings.into_sorted()))
    }

    /// Every key with its current value, one `key=value` line each (like `mqbroker -p`).
    pub fn to_properties(&self) -> String {
        super::table_to_properties(self, KEYS)
    }

    /// What `ringmq broker -p` prints: [`Self::to_properties`], then the keys ringmq accepts
    /// and ignores, as comments.
    pub fn print_config_item(&self) -> String {
        self.to_properties() + &super::status::ignored_trailer(super::status::BROKER_IGNORED)
    }

    /// The keys this config understands, in `to_properties` order.
    pub fn known_keys() -> impl Iterator<Item = &'static str> {
        KEYS.iter().map(|k| k.name)
    }

    /// A key not in the table: a legacy key (warned about, and `mapedFileSizeCommitLog`
    /// honoured when alone) or an unknown one (warned about).
    fn apply_other_key(
        &mut self,
        entry: &Entry,
        seen: &Seen,
        warnings: &mut Warnings<'_>,
    ) -> Result<(), ConfigError> {
        let key = entry.key.as_str();
        let note = if key == "mapedFileSizeCommitLog" {
            self.apply_old_commitlog_size(entry, seen)?
        } else {
            self.legacy_note(key)
                .unwrap_or_else(|| unknown_key_note(key, KEYS))
        };
        warnings.push(entry.line, key, note);
        Ok(())
    }

    /// `mapedFileSizeCommitLog`, the pre-4.5.2 spelling: honoured unless the new one is set.
    fn apply_old_commitlog_size(
        &mut self,
        entry: &Entry,
        seen: &Seen,
    ) -> Result<String, ConfigError> {
        const NEW: &str = "mappedFileSizeCommitLog";
        if let Some(line) = seen.line(NEW) {
            return Ok(format!(
                "old spelling, ignored: {NEW} is set on line {line} (RocketMQ >= 4.5.2 \
                 ignores the old spelling in any case)"
            ));
        }
        let value = entry.value.trim_end();
        self.mapped_file_size_commitlog_bytes =
            parse_u64(value).map_err(|reason| ConfigError::value(&entry.key, value, reason))?;
        Ok(format!(
            "old spelling of {NEW}: RocketMQ >= 4.5.2 ignores it and keeps the 1 GiB default; \
             ringmq honours it as {NEW} = {value}. Rename the key"
        ))
    }

    /// What RocketMQ 4.9 does with a key old sample configs still carry, or `None`.
    fn legacy_note(&self, key: &str) -> Option<String> {
        let root = self.store_path_root_dir.display();
        let fixed = |file: &str| {
            format!("not a RocketMQ 4.x setting, ignored: always {root}/{file} (storePathRootDir)")
        };
        let note = match key {
            "mapedFileSizeConsumeQueue" => "old spelling of mappedFileSizeConsumeQueue, ignored \
                since RocketMQ 4.5.2 (and by ringmq): rename the key to change the size"
                .to_string(),
            "storePathConsumeQueue" => fixed("consumequeue"),
            "storePathIndex" => fixed("index"),
            "storeCheckpoint" => fixed("checkpoint"),
            "abortFile" => fixed("abort"),
            "checkTransactionMessageEnable" => "removed in RocketMQ 4.x, ignored: transaction \
                check-back always runs (see transactionCheckInterval, transactionCheckMax)"
                .to_string(),
            _ => return None,
        };
        Some(note)
    }

    /// Java's BrokerStartup/MessageStoreConfig rules, applied after the file: derived paths and
    /// ports, forced ids and clamped values. Each change the file did not ask for is warned.
    fn apply_java_rules(&mut self, seen: &Seen, warnings: &mut Warnings<'_>) {
        if seen.contains("storePathRootDir") && !seen.contains("storePathCommitLog") {
            self.store_path_commitlog = self.store_path_root_dir.join("commitlog");
        }
        let line = |keys: &[&str]| keys.iter().find_map(|k| seen.line(k)).unwrap_or(0);
        if self.broker_role.is_master() && self.broker_id != 0 {
            let note = format!(
                "brokerRole {} is a master role: brokerId {} is forced to 0 (as RocketMQ does)",
                self.broker_role, self.broker_id
            );
            warnings.push(line(&["brokerId", "brokerRole"]), "brokerId", note);
            self.broker_id = 0;
        }
        if let Some(ha_port) = self.listen_port.checked_add(1) {
            if seen.contains("haListenPort") && self.ha_listen_port != ha_port {
                let note = format!("ignored: the HA port is always listenPort + 1 = {ha_port}");
                warnings.push(line(&["haListenPort"]), "haListenPort", note);
            }
            self.ha_listen_port = ha_port;
        }
        self.clamp_java_values(&line, warnings);
    }

    /// The values Java silently clamps or rounds on use; ringmq does it once, and says so.
    fn clamp_java_values(&mut self, line: &dyn Fn(&[&str]) -> usize, warnings: &mut Warnings<'_>) {
        const PERIOD: &str = "registerNameServerPeriod";
        let period = self.register_namesrv_period_ms.clamp(10_000, 60_000);
        if period != self.register_namesrv_period_ms {
            let note = format!(
                "{} is outside 10000..=60000 ms; clamped to {period} (RocketMQ clamps silently)",
                self.register_namesrv_period_ms
            );
            warnings.push(line(&[PERIOD]), PERIOD, note);
            self.register_namesrv_period_ms = period;
        }
        const RATIO: &str = "diskMaxUsedSpaceRatio";
        let ratio = self.disk_max_used_space_ratio_percent.clamp(10, 95);
        if ratio != self.disk_max_used_space_ratio_percent {
            let note = format!(
                "{} is outside 10..=95 %; clamped to {ratio} (RocketMQ clamps silently)",
                self.disk_max_used_space_ratio_percent
            );
            warnings.push(line(&[RATIO]), RATIO, note);
            self.disk_max_used_space_ratio_percent = ratio;
        }
        const CQ: &str = "mappedFileSizeConsumeQueue";
        let size = self.mapped_file_size_consume_queue_bytes;
        if let Some(rounded) = size
            .div_ceil(CQ_UNIT_BYTES)
            .checked_mul(CQ_UNIT_BYTES)
            .filter(|&r| r != size)
        {
            let note = format!(
                "{size} rounded up to {rounded}, a whole number of 20-byte consume-queue units \
                 (as RocketMQ does)"
            );
            warnings.push(line(&[CQ]), CQ, note);
            self.mapped_file_size_consume_queue_bytes = rounded;
        }
    }

    /// Rejects values outside the bounds documented on each field, and combinations RocketMQ
    /// refuses (a SLAVE with `brokerId` 0). Errors name the key; loaders add file and line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_ranges(&self.bounds_checks())?;
        self.validate_identity()?;
        self.validate_store()
    }

    /// Names, role and id, ports, permission, addresses.
    fn validate_identity(&self) -> Result<(), ConfigError> {
        for (key, name) in [
            ("brokerClusterName", &self.broker_cluster_name),
            ("brokerName", &self.broker_name),
            ("msgTraceTopicName", &self.msg_trace_topic_name),
        ] {
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                return Err(ConfigError::value(
                    key,
                    name,
                    "must be non-empty, without blanks",
                ));
            }
        }
        match (self.broker_role, self.broker_id) {
            (BrokerRole::Slave, 0) => {
                let reason = "brokerRole SLAVE needs brokerId > 0 (0 is the master's id)";
                return Err(ConfigError::value("brokerId", 0, reason));
            }
            (role, id) if role.is_master() && id != 0 => {
                let reason = format!("brokerRole {role} is a master role, whose brokerId is 0");
                return Err(ConfigError::value("brokerId", id, reason));
            }
            _ => {}
        }
        if self.enable_controller_mode {
            if self.controller_addr.is_none() {
                let reason =
                    "enableControllerMode needs controllerAddr (the controllers' addresses)";
                return Err(ConfigError::value("controllerAddr", "", reason));
            }
            if !self.broker_role.is_master() {
                let reason = "in controller mode the controller decides who is slave; brokerRole names \
                              the master role this broker runs when elected (ASYNC_MASTER or SYNC_MASTER)";
                return Err(ConfigError::value("brokerRole", self.broker_role, reason));
            }
        }
        if u32::from(self.ha_listen_port) != u32::from(self.listen_port) + 1 {
            let reason = format!(
                "must be listenPort + 1 = {}",
                u32::from(self.listen_port) + 1
            );
            return Err(ConfigError::value(
                "haListenPort",
                self.ha_listen_port,
                reason,
            ));
        }
        if ![2, 4, 6].contains(&self.broker_permission) {
            let reason = "expected 2 (write), 4 (read) or 6 (read and write)";
            return Err(ConfigError::value(
                "brokerPermission",
                self.broker_permission,
                reason,
            ));
        }
        if let Some(addrs) = &self.namesrv_addr {
            super::parse_namesrv_addrs(addrs)?;
        }
        if let Some(addr) = &self.ha_master_address {
            check_host_port(addr).map_err(|r| ConfigError::value("haMasterAddress", addr, r))?;
        }
        if self.pin_shards && self.shard_colocation == ShardColocation::Always {
            let reason = "pinShards=true keeps each shard on its own core: set shardColocation \
                          to auto or off, or pinShards to false";
            return Err(ConfigError::value(
                "shardColocation",
                self.shard_colocation,
                reason,
            ));
        }
        Ok(())
    }

    /// Cross-field store rules, delay levels, deletion hours, unsupported modes.
    fn validate_store(&self) -> Result<(), ConfigError> {
        if self.mapped_file_size_commitlog_bytes <= self.max_message_size_bytes {
            let reason = format!(
                "must exceed maxMessageSize ({}) so that any message fits in one file",
                self.max_message_size_bytes
            );
            let size = self.mapped_file_size_commitlog_bytes;
            return Err(ConfigError::value("mappedFileSizeCommitLog", size, reason));
        }
        let cq = self.mapped_file_size_consume_queue_bytes;
        if cq % CQ_UNIT_BYTES != 0 {
            let reason = "must be a multiple of the 20-byte consume-queue unit";
            return Err(ConfigError::value("mappedFileSizeConsumeQueue", cq, reason));
        }
        let index_bytes =
            40 + 4 * u64::from(self.max_hash_slot_num) + 20 * u64::from(self.max_index_num);
        if index_bytes > JAVA_INT_MAX {
            let reason = format!(
                "an index file of 40 + 4 × maxHashSlotNum + 20 × maxIndexNum = {index_bytes} \
                 bytes exceeds 2 GiB − 1"
            );
            return Err(ConfigError::value(
                "maxIndexNum",
                self.max_index_num,
                reason,
            ));
        }
        let levels = &self.message_delay_levels_ms;
        if levels.is_empty() || levels.len() > DELAY_LEVELS_MAX || levels.contains(&0) {
            let reason = format!("expected 1..={DELAY_LEVELS_MAX} levels, each above 0");
            let text = super::units::format_delay_levels(levels);
            return Err(ConfigError::value("messageDelayLevel", text, reason));
        }
        let hours = &self.delete_when_hours;
        if hours.is_empty() || hours.iter().any(|&h| h > 23) {
            let text = super::units::format_hours(hours);
            return Err(ConfigError::value(
                "deleteWhen",
                text,
                "expected hours in 0..=23",
            ));
        }
        if self.store_path_root_dir.as_os_str().is_empty() {
            return Err(ConfigError::value(
                "storePathRootDir",
                "",
                "expected a path",
            ));
        }
        for (key, value, reason) in super::status::BROKER_REFUSED {
            let current = KEYS.iter().find(|k| k.name == *key).map(|k| (k.get)(self));
            if current.as_deref() == Some(*value) {
                return Err(ConfigError::value(key, value, *reason));
            }
        }
        if self.acl_access_key.is_some() != self.acl_secret_key.is_some() {
            let (key, reason) = match self.acl_access_key.is_some() {
                true => ("aclSecretKey", "must be set with aclAccessKey"),
                false => ("aclAccessKey", "must be set with aclSecretKey"),
            };
            return Err(ConfigError::value(key, "", reason));
        }
        Ok(())
    }
}

/// Warns about each key of `ignored` the file set (at its line).
pub(super) fn warn_ignored(seen: &Seen, ignored: &[(&str, &str)], warnings: &mut Warnings<'_>) {
    for (key, reason) in ignored {
        if let Some(line) = seen.line(key) {
            warnings.push(line, key, super::status::ignored_note(reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::PathBuf;

    use super::*;
    use crate::config::broker::FlushDiskType;
    use crate::config::properties::parse;
    use crate::config::HostInfo;

    const FILE: &str = "conf/broker.properties";

    fn host() -> HostInfo {
        HostInfo {
            ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            name: "box-1".to_string(),
            home: PathBuf::from("/home/mq"),
            rocketmq_home: None,
            cpus: 8,
        }
    }

    fn load(text: &str) -> Result<(BrokerConfig, Vec<ConfigWarning>), ConfigError> {
        let entries = parse(text).expect("parses");
        BrokerConfig::for_host(&host()).with_entries(&entries, FILE)
    }

    fn load_quietly(text: &str) -> BrokerConfig {
        let (cfg, warnings) = load(text).expect("valid");
        assert_eq!(warnings, vec![], "{text}");
        cfg
    }

    fn load_err(text: &str) -> String {
        load(text).expect_err("invalid").to_string()
    }

    fn warned(text: &str) -> (BrokerConfig, Vec<String>) {
        let (cfg, warnings) = load(text).expect("valid");
        (cfg, warnings.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults_match_config_md() {
        let c = BrokerConfig::for_host(&host());
        assert_eq!(c.broker_cluster_name, "DefaultCluster");
        assert_eq!((c.broker_name.as_str(), c.broker_id), ("box-1", 0));
        assert_eq!((c.broker_ip1, c.broker_ip2), (host().ip, host().ip));
        assert_eq!((c.listen_port, c.ha_listen_port), (10911, 10912));
        assert_eq!(c.namesrv_addr, None);
        assert_eq!(c.broker_permission, 6);
        assert_eq!(
            (c.register_namesrv_period_ms, c.register_broker_timeout_ms),
            (30_000, 6_000)
        );
        assert!(c.force_register && !c.compressed_register && c.trace_on && !c.acl_enable);
        assert_eq!(
            (c.shard_count, c.io_depth, c.listen_addr.to_string()),
            (0, 128, "0.0.0.0".into())
        );
        assert_eq!(c.shard_colocation, ShardColocation::Auto);
        assert_eq!(c.shard_scheduling, crate::config::ShardScheduling::Batch);
        assert!(c.auto_create_topic_enable && c.auto_create_subscription_group);
        assert_eq!(c.default_topic_queue_nums, 8);
        assert_eq!(
            (c.transaction_timeout_ms, c.transaction_check_max),
            (6_000, 15)
        );
        assert_eq!(c.transaction_check_interval_ms, 60_000);
        // 8 CPUs: min(8, 4), 16 + 16, 8 + 8, min(32, 8), max(8 + 16, 16).
        assert_eq!(c.send_message_thread_pool_nums, 4);
        assert_eq!(
            (
                c.pull_message_thread_pool_nums,
                c.query_message_thread_pool_nums
            ),
            (32, 16)
        );
        assert_eq!(
            (
                c.heartbeat_thread_pool_nums,
                c.end_transaction_thread_pool_nums
            ),
            (8, 24)
        );
        assert_eq!(c.validate().ok(), Some(()));
    }

    #[test]
    fn store_defaults_match_config_md() {
        let c = BrokerConfig::for_host(&host());
        assert_eq!(c.store_path_root_dir, PathBuf::from("/home/mq/store"));
        assert_eq!(
            c.store_path_commitlog,
            PathBuf::from("/home/mq/store/commitlog")
        );
        assert_eq!(c.mapped_file_size_commitlog_bytes, 1_073_741_824);
        assert_eq!(c.mapped_file_size_consume_queue_bytes, 6_000_000);
        assert_eq!(
            (c.broker_role, c.flush_disk_type),
            (BrokerRole::AsyncMaster, FlushDiskType::AsyncFlush)
        );
        assert_eq!(
            (c.sync_flush_timeout_ms, c.slave_timeout_ms),
            (5_000, 3_000)
        );
        assert_eq!(c.max_message_size_bytes, 4_194_304);
        assert_eq!(
            (c.delete_when_hours.as_slice(), c.file_reserved_time_hours),
            (&[4u8][..], 72)
        );
        assert_eq!(c.disk_max_used_space_ratio_percent, 75);
        assert_eq!(c.message_delay_levels_ms.len(), 18);
        assert_eq!(c.message_delay_levels_ms[17], 7_200_000);
        assert_eq!(
            (c.max_hash_slot_num, c.max_index_num),
            (5_000_000, 20_000_000)
        );
        assert_eq!(c.ha_slave_fallbehind_max_bytes, 268_435_456);
        assert_eq!(c.validate().ok(), Some(()));
    }

    #[test]
    fn small_hosts_get_java_pool_sizes() {
        let c = BrokerConfig::for_host(&HostInfo { cpus: 1, ..host() });
        assert_eq!(c.send_message_thread_pool_nums, 1);
        assert_eq!(
            (
                c.heartbeat_thread_pool_nums,
                c.end_transaction_thread_pool_nums
            ),
            (1, 10)
        );
    }

    #[test]
    fn detected_defaults_are_valid() {
        assert_eq!(BrokerConfig::default().validate().ok(), Some(()));
    }

    #[test]
    fn sample_keys_are_typed() {
        let c = load_quietly(
            "brokerClusterName=DefaultCluster\nbrokerName=broker-a\nbrokerId=0\ndeleteWhen=04\n\
             fileReservedTime=48\nbrokerRole=SYNC_MASTER\nflushDiskType=SYNC_FLUSH\n\
             namesrvAddr=ns1:9876;ns2:9876\nbrokerIP1=192.168.0.10\nautoCreateTopicEnable=FALSE\n",
        );
        assert_eq!(c.broker_name, "broker-a");
        assert_eq!(c.file_reserved_time_hours, 48);
        assert_eq!(
            (c.broker_role, c.flush_disk_type),
            (BrokerRole::SyncMaster, FlushDiskType::SyncFlush)
        );
        assert_eq!(c.namesrv_addr.as_deref(), Some("ns1:9876;ns2:9876"));
        assert_eq!(c.broker_ip1.to_string(), "192.168.0.10");
        assert_eq!(c.broker_ip2, host().ip);
        assert!(!c.auto_create_topic_enable);
    }

    #[test]
    fn shard_colocation_is_a_key_with_three_values() {
        for (text, mode) in [
            ("auto", ShardColocation::Auto),
            ("off", ShardColocation::Off),
            ("always", ShardColocation::Always),
        ] {
            let c = load_quietly(&format!("shardColocation={text}\n"));
            assert_eq!(c.shard_colocation, mode);
            let printed = KEYS
                .iter()
                .find(|k| k.name == "shardColocation")
                .expect("key");
            assert_eq!((printed.get)(&c), text);
        }
        assert_eq!(
            load_err("shardColocation=on\n"),
            "conf/broker.properties:1: shardColocation = \"on\": expected one of auto, off, always"
        );
        assert!(load_err("pinShards=true\nshardColocation=always\n")
            .contains("shardColocation = \"always\": pinShards=true keeps each shard"));
        let c = load_quietly("pinShards=true\nshardColocation=off\n");
        assert!(c.pin_shards);
    }

    #[test]
    fn shard_scheduling_is_a_key_with_two_values() {
        use crate::config::ShardScheduling;
        for (text, policy) in [
            ("batch", ShardScheduling::Batch),
            ("normal", ShardScheduling::Normal),
        ] {
            let c = load_quietly(&format!("shardScheduling={text}\n"));
            assert_eq!(c.shard_scheduling, policy);
            let printed = KEYS
                .iter()
                .find(|k| k.name == "shardScheduling")
                .expect("key");
            assert_eq!((printed.get)(&c), text);
        }
        assert_eq!(
            load_err("shardScheduling=fifo\n"),
            "conf/broker.properties:1: shardScheduling = \"fifo\": expected one of batch, normal"
        );
    }

    #[test]
    fn auto_colocation_is_off_under_sync_flush_and_the_others_are_kept() {
        use ShardColocation::{Always, Auto, Off};
        for (mode, flush, runs) in [
            (Auto, FlushDiskType::AsyncFlush, Auto),
            (Auto, FlushDiskType::SyncFlush, Off),
            (Always, FlushDiskType::SyncFlush, Always),
            (Off, FlushDiskType::AsyncFlush, Off),
        ] {
            assert_eq!(mode.under(flush), runs, "{mode:?} under {flush:?}");
        }
    }

    #[test]
    fn bad_value_error_names_key_value_file_and_line() {
        let text = "a=1\nb=2\nc=3\nd=4\ne=5\nf=6\nbrokerRole=SYNC_MASTR\n";
        let err = load(text).expect_err("typo");
        assert_eq!(
            err.to_string(),
            "conf/broker.properties:7: brokerRole = \"SYNC_MASTR\": \
             expected one of ASYNC_MASTER, SYNC_MASTER, SLAVE"
        );
        let ConfigError::Value {
            location,
            key,
            value,
            ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(
            (location.line, key.as_str(), value.as_str()),
            (Some(7), "brokerRole", "SYNC_MASTR")
        );
        assert_eq!(
            load_err("autoCreateTopicEnable=yes"),
            "conf/broker.properties:1: autoCreateTopicEnable = \"yes\": expected true or false"
        );
        assert!(load_err("listenPort=10911x").contains("listenPort = \"10911x\""));
    }

    #[test]
    fn out_of_range_values_name_the_key_and_line() {
        assert_eq!(
            load_err("\ndefaultTopicQueueNums=0"),
            "conf/broker.properties:2: defaultTopicQueueNums = \"0\": must be in 1..=1024"
        );
        assert!(load_err("defaultTopicQueueNums=1025").contains("1..=1024"));
        assert!(load_err("maxMessageSize=16777216").contains("maxMessageSize = \"16777216\""));
        assert!(load_err("listenPort=65535").contains("listenPort"));
        assert!(load_err("brokerPermission=3").contains("brokerPermission"));
        assert!(load_err("enableDLegerCommitLog=true").contains("DLedger"));
        assert!(load_err("mappedFileSizeCommitLog=65536").contains("must exceed maxMessageSize"));
        assert!(load_err("namesrvAddr=ns1:9876;ns2").contains("\"ns2\""));
        assert!(load_err("haMasterAddress=master").contains("haMasterAddress"));
        assert!(load_err("storePathCommitLog=/a,/b").contains("one commitlog directory"));
        assert!(load_err("brokerName=").contains("brokerName"));
        let _ = load_quietly("maxMessageSize=16776192\nmappedFileSizeCommitLog=16777216");
    }

    #[test]
    fn slave_needs_a_nonzero_broker_id() {
        assert_eq!(
            load_err("brokerRole=SLAVE\nbrokerId=0\n"),
            "conf/broker.properties:2: brokerId = \"0\": \
             brokerRole SLAVE needs brokerId > 0 (0 is the master's id)"
        );
        // Not set at all: the file is named, without a line.
        assert!(
            load_err("brokerRole=SLAVE").starts_with("conf/broker.properties: brokerId = \"0\"")
        );
        let c = load_quietly("brokerRole=SLAVE\nbrokerId=1\n");
        assert_eq!((c.broker_role, c.broker_id), (BrokerRole::Slave, 1));
    }

    #[test]
    fn master_roles_force_broker_id_zero() {
        let (c, warnings) = warned("brokerId=2\nbrokerRole=SYNC_MASTER\n");
        assert_eq!(c.broker_id, 0);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("conf/broker.properties:1: brokerId: "),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("forced to 0"));
    }

    #[test]
    fn both_spellings_of_the_commitlog_size_work() {
        let c = load_quietly("mappedFileSizeCommitLog=104857600");
        assert_eq!(c.mapped_file_size_commitlog_bytes, 104_857_600);

        let (c, warnings) = warned("mapedFileSizeCommitLog=104857600");
        assert_eq!(c.mapped_file_size_commitlog_bytes, 104_857_600);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("mapedFileSizeCommitLog: old spelling"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("4.5.2"), "{warnings:?}");

        let both = "mappedFileSizeCommitLog=209715200\nmapedFileSizeCommitLog=1\n";
        let (c, warnings) = warned(both);
        assert_eq!(c.mapped_file_size_commitlog_bytes, 209_715_200);
        assert!(warnings[0].contains("ignored: mappedFileSizeCommitLog is set on line 1"));

        assert!(
            load_err("mapedFileSizeCommitLog=1g").contains(":1: mapedFileSizeCommitLog = \"1g\"")
        );
    }

    #[test]
    fn legacy_keys_warn_with_what_java_does() {
        let text = "storePathRootDir=/data/store\nmapedFileSizeConsumeQueue=300000\n\
                    storePathConsumeQueue=/x\nstorePathIndex=/y\nstoreCheckpoint=/z\n\
                    abortFile=/w\ncheckTransactionMessageEnable=false\n";
        let (c, warnings) = warned(text);
        assert_eq!(c.mapped_file_size_consume_queue_bytes, 6_000_000);
        assert_eq!(warnings.len(), 6, "{warnings:?}");
        assert!(warnings[0].contains(":2: mapedFileSizeConsumeQueue: old spelling"));
        assert!(warnings[1].contains("ignored: always /data/store/consumequeue"));
        assert!(warnings[2].contains("/data/store/index"));
        assert!(warnings[3].contains("/data/store/checkpoint"));
        assert!(warnings[4].contains("/data/store/abort"));
        assert!(warnings[5].contains("checkTransactionMessageEnable: removed"));
    }

    #[test]
    fn ha_port_is_always_listen_port_plus_one() {
        let c = load_quietly("listenPort=20911\n");
        assert_eq!(c.ha_listen_port, 20912);
        let _ = load_quietly("haListenPort=10912\n");
        let (c, warnings) = warned("listenPort=20911\nhaListenPort=30000\n");
        assert_eq!(c.ha_listen_port, 20912);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains(":2: haListenPort: ignored"),
            "{warnings:?}"
        );
    }

    #[test]
    fn java_clamps_are_applied_with_warnings() {
        let cases = [
            ("registerNameServerPeriod=5000", 10_000),
            ("registerNameServerPeriod=90000", 60_000),
        ];
        for (text, expected) in cases {
            let (c, warnings) = warned(text);
            assert_eq!(c.register_namesrv_period_ms, expected, "{text}");
            assert!(warnings[0].contains("clamped"), "{warnings:?}");
        }
        let (c, _) = warned("diskMaxUsedSpaceRatio=99");
        assert_eq!(c.disk_max_used_space_ratio_percent, 95);
        let (c, _) = warned("diskMaxUsedSpaceRatio=5");
        assert_eq!(c.disk_max_used_space_ratio_percent, 10);
        let (c, warnings) = warned("mappedFileSizeConsumeQueue=6000001");
        assert_eq!(c.mapped_file_size_consume_queue_bytes, 6_000_020);
        assert!(
            warnings[0].contains("rounded up to 6000020"),
            "{warnings:?}"
        );
        let _ = load_quietly("registerNameServerPeriod=10000\ndiskMaxUsedSpaceRatio=95");
    }

    #[test]
    fn delay_levels_and_delete_hours_parse() {
        let c = load_quietly(
            "messageDelayLevel=1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h",
        );
        assert_eq!(c, BrokerConfig::for_host(&host()));
        let c = load_quietly("messageDelayLevel=1s 1m 1h 1d\ndeleteWhen=04;16");
        assert_eq!(
            c.message_delay_levels_ms,
            vec![1_000, 60_000, 3_600_000, 86_400_000]
        );
        assert_eq!(c.delete_when_hours, vec![4, 16]);
        let err = load_err("\n\nmessageDelayLevel=1s 5x");
        assert!(
            err.starts_with("conf/broker.properties:3: messageDelayLevel = \"1s 5x\""),
            "{err}"
        );
        assert!(load_err("deleteWhen=25").contains("deleteWhen"));
    }

    #[test]
    fn commitlog_dir_follows_the_root_unless_set() {
        let c = load_quietly("storePathRootDir=./store");
        assert_eq!(c.store_path_commitlog, PathBuf::from("./store/commitlog"));
        let c = load_quietly("storePathRootDir=./store\nstorePathCommitLog=/fast/commitlog");
        assert_eq!(c.store_path_commitlog, PathBuf::from("/fast/commitlog"));
    }

    #[test]
    fn unknown_keys_and_trailing_blanks_warn() {
        let (c, warnings) = warned("brokerRole=SYNC_MASTER \nbrokerrole=SLAVE\nfooBar=1\n");
        assert_eq!(c.broker_role, BrokerRole::SyncMaster);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings[0].contains(":1: brokerRole: value \"SYNC_MASTER \" ends in whitespace"));
        assert!(
            warnings[1].contains(":2: brokerrole: unknown key, ignored; did you mean brokerRole?")
        );
        assert!(warnings[2].contains(":3: fooBar: unknown key"));
    }

    #[test]
    fn repeated_keys_keep_the_last_value_and_warn() {
        let (c, warnings) = warned("listenPort=1000\nlistenPort=2000\n");
        assert_eq!(c.listen_port, 2000);
        assert!(
            warnings[0].contains(":2: listenPort: also set on line 1"),
            "{warnings:?}"
        );
    }

    #[test]
    fn printed_properties_load_back_identically() {
        let mut cfg = BrokerConfig::for_host(&host());
        cfg.namesrv_addr = Some("ns1:9876".to_string());
        cfg.delete_when_hours = vec![1, 13];
        let (again, warnings) = load(&cfg.to_properties()).expect("round trip");
        // The only warnings: the keys ringmq accepts and ignores, one each.
        assert_eq!(warnings.len(), crate::config::status::BROKER_IGNORED.len());
        assert!(warnings
            .iter()
            .all(|w| w.message.starts_with("accepted and ignored")));
        assert_eq!(again, cfg);
        assert_eq!(
            BrokerConfig::known_keys().count(),
            cfg.to_properties().lines().count()
        );
    }

    #[test]
    fn validate_catches_values_set_in_code() {
        let mut cfg = BrokerConfig::for_host(&host());
        cfg.broker_id = 3;
        let err = cfg.validate().expect_err("master with id 3").to_string();
        assert!(err.starts_with("brokerId = \"3\""), "{err}");
        let mut cfg = BrokerConfig::for_host(&host());
        cfg.listen_port = 20911;
        assert!(cfg
            .validate()
            .expect_err("stale ha port")
            .to_string()
            .contains("haListenPort"));
        let mut cfg = BrokerConfig::for_host(&host());
        cfg.message_delay_levels_ms.clear();
        assert!(cfg.validate().is_err());
    }
}
