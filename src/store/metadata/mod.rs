//! Broker metadata files under `$storePathRootDir/config/` (STORE.md §8): `topics.json`,
//! `consumerOffset.json`, `subscriptionGroup.json` and `delayOffset.json`.
//!
//! Owns the in-memory tables (pure data, no clock other than the wall-clock stamp of a
//! `DataVersion` bump, no sockets) and their files: reading Java-written files (fastjson pretty
//! JSON with tabs and unquoted integer keys), falling back to `<file>.bak` the way
//! `ConfigManager.load` does, and writing the new content atomically while keeping the previous
//! content as `<file>.bak` (`MixAll.string2File`, made crash-safe).
//!
//! Runs on the shard that owns the metadata. The file functions are blocking `std::fs` calls on
//! small files; callers run them at startup or from a background task queue, never inline on
//! the request path. The same JSON shapes are the bodies of GET_ALL_TOPIC_CONFIG,
//! GET_ALL_CONSUMER_OFFSET, GET_ALL_DELAY_OFFSET and GET_ALL_SUBSCRIPTIONGROUP_CONFIG
//! (PROTOCOL.md §7.15): see [`encode_compact`] and [`decode_json`].

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fsutil::write_atomically;

mod writer;
use crate::protocol::fastjson;
pub use crate::protocol::register::{DataVersion, TopicConfig, TopicConfigWrapper};
pub use writer::{OrderedFile, PersistJob};

/// Separates topic and group in a consumer-offset key (`ConsumerOffsetManager`).
pub const TOPIC_GROUP_SEPARATOR: char = '@';

/// Groups with this prefix are auto-created even with `autoCreateSubscriptionGroup=false`
/// (`MixAll.isSysConsumerGroup`).
pub const SYS_CONSUMER_GROUP_PREFIX: &str = "CID_RMQ_SYS_";

/// The groups `SubscriptionGroupManager.init` creates in 4.9.x. `CID_RMQ_SYS_TRANS` is not one
/// of them (5.x added it).
pub const PRE_CREATED_GROUPS: [&str; 7] = [
    "TOOLS_CONSUMER",
    "FILTERSRV_CONSUMER",
    "SELF_TEST_C_GROUP",
    "CID_ONS-HTTP-PROXY",
    "CID_ONSAPI_PULL",
    "CID_ONSAPI_PERMISSION",
    "CID_ONSAPI_OWNER",
];

// ---------------------------------------------------------------------------------------------
// Errors

/// A metadata file that cannot be read, decoded or written. Every variant names the file.
#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("{path}: cannot {op}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a valid {what} file: {source}", path = path.display())]
    Parse {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Only as the reason inside [`MetadataError::NoUsableCopy`]: `load` treats a missing
    /// file as "nothing yet".
    #[error("{path}: does not exist", path = path.display())]
    Missing { path: PathBuf },
    /// Only as the reason inside [`MetadataError::NoUsableCopy`], like `Missing`.
    #[error("{path}: is empty", path = path.display())]
    Empty { path: PathBuf },
    /// Neither the file nor its `.bak` holds a usable copy, and at least one of them exists
    /// with content we cannot read: starting empty would silently lose metadata.
    #[error("{path}: no usable {what} (file: {main}; backup: {bak})", path = path.display())]
    NoUsableCopy {
        path: PathBuf,
        what: &'static str,
        #[source]
        main: Box<MetadataError>,
        bak: Box<MetadataError>,
    },
    #[error("{path}: cannot encode {what}: {source}", path = path.display())]
    Encode {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

// ---------------------------------------------------------------------------------------------
// Paths

/// The four metadata files of one broker (`BrokerPathConfigHelper`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataPaths {
    pub topics: PathBuf,
    pub consumer_offset: PathBuf,
    pub subscription_group: PathBuf,
    pub delay_offset: PathBuf,
}

impl MetadataPaths {
    /// Paths under `<store_root>/config/`.
    pub fn new(store_root: &Path) -> MetadataPaths {
        let dir = store_root.join("config");
        MetadataPaths {
            topics: dir.join("topics.json"),
            consumer_offset: dir.join("consumerOffset.json"),
            subscription_group: dir.join("subscriptionGroup.json"),
            delay_offset: dir.join("delayOffset.json"),
        }
    }
}

/// `<file>.bak`: the previous content, kept by every [`persist`].
pub fn bak_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".bak");
    PathBuf::from(name)
}

// ---------------------------------------------------------------------------------------------
// Data versions

/// A version as a freshly constructed Java `DataVersion` has it: counter 0, stamped now.
pub fn fresh_data_version() -> DataVersion {
    DataVersion {
        counter: 0,
        timestamp: now_ms(),
    }
}

/// `DataVersion.nextVersion`: stamp with the wall clock and increment the counter.
pub fn next_version(version: &mut DataVersion) {
    let before = version.counter;
    version.timestamp = now_ms();
    version.counter = before.wrapping_add(1);
    assert!(
        version.counter != before,
        "data version counter did not move"
    );
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------------------------
// consumerOffset.json

/// `ConsumerOffsetManager.offsetTable`: `"topic@group"` → queue id → next offset to consume.
/// Serialises as `{"offsetTable":{"T@g":{"0":12}}}` (fastjson reads the quoted keys as Integer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerOffsetTable {
    #[serde(default)]
    offset_table: BTreeMap<String, BTreeMap<i32, i64>>,
}

impl ConsumerOffsetTable {
    /// The `topic@group` key.
    pub fn key(topic: &str, group: &str) -> String {
        format!("{topic}{TOPIC_GROUP_SEPARATOR}{group}")
    }

    /// Records `offset` for one queue; returns the offset it replaces. A smaller offset than
    /// the stored one is accepted (offset resets do that), as in Java.
    pub fn commit(&mut self, topic: &str, group: &str, queue_id: i32, offset: i64) -> Option<i64> {
        let queues = self
            .offset_table
            .entry(Self::key(topic, group))
            .or_default();
        let previous = queues.insert(queue_id, offset);
        if previous.is_some_and(|p| offset < p) {
            tracing::debug!(
                topic,
                group,
                queue_id,
                offset,
                ?previous,
                "consumer offset moved back"
            );
        }
        previous
    }

    /// Sets one queue's offset under a `topic@group` key as received (a slave syncing from
    /// its master, whose offsets win).
    pub fn set_by_key(&mut self, key: &str, queue_id: i32, offset: i64) {
        self.offset_table
            .entry(key.to_string())
            .or_default()
            .insert(queue_id, offset);
    }

    /// The committed offset of one queue (`queryOffset`, which answers -1 for `None`).
    pub fn query(&self, topic: &str, group: &str, queue_id: i32) -> Option<i64> {
        self.offsets_of(topic, group)?.get(&queue_id).copied()
    }

    /// Every queue's committed offset of `group` on `topic`.
    pub fn offsets_of(&self, topic: &str, group: &str) -> Option<&BTreeMap<i32, i64>> {
        self.offset_table.get(&Self::key(topic, group))
    }

    /// Groups with offsets on `topic` (`whichGroupByTopic`).
    pub fn groups_of_topic<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let prefix = format!("{topic}{TOPIC_GROUP_SEPARATOR}");
        self.offset_table
            .range(prefix.clone()..)
            .take_while(move |(key, _)| key.starts_with(&prefix))
            .filter_map(|(key, _)| split_key(key))
            .filter(move |(t, _)| *t == topic)
            .map(|(_, group)| group)
    }

    /// Topics on which `group` has offsets (`whichTopicByConsumer`).
    pub fn topics_of_group<'a>(&'a self, group: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.offset_table
            .keys()
            .filter_map(|key| split_key(key))
            .filter(move |(_, g)| *g == group)
            .map(|(topic, _)| topic)
    }

    /// Drops every offset of `group` (`removeOffset`); returns how many topics it had.
    pub fn remove_group(&mut self, group: &str) -> usize {
        let before = self.offset_table.len();
        self.offset_table
            .retain(|key, _| split_key(key).is_none_or(|(_, g)| g != group));
        let removed = before - self.offset_table.len();
        assert!(self.topics_of_group(group).next().is_none());
        removed
    }

    /// Drops every group's offsets of `topic` (a deleted topic, Java's `cleanOffsetByTopic`);
    /// returns how many groups had some.
    pub fn remove_topic(&mut self, topic: &str) -> usize {
        let before = self.offset_table.len();
        self.offset_table
            .retain(|key, _| split_key(key).is_none_or(|(t, _)| t != topic));
        before - self.offset_table.len()
    }

    /// The whole table, keyed by `topic@group`.
    pub fn table(&self) -> &BTreeMap<String, BTreeMap<i32, i64>> {
        &self.offset_table
    }

    pub fn is_empty(&self) -> bool {
        self.offset_table.is_empty()
    }
}

/// Splits `topic@group` the way Java's `split("@")` + `length == 2` check does: keys with no
/// separator or more than one are skipped.
fn split_key(key: &str) -> Option<(&str, &str)> {
    let (topic, group) = key.split_once(TOPIC_GROUP_SEPARATOR)?;
    if group.is_empty() || group.contains(TOPIC_GROUP_SEPARATOR) {
        return None;
    }
    Some((topic, group))
}

// ---------------------------------------------------------------------------------------------
// delayOffset.json

/// `ScheduleMessageService.offsetTable`: delay level → next `SCHEDULE_TOPIC_XXXX` queue offset
/// to deliver (queue id = level - 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelayOffsetTable {
    #[serde(default)]
    offset_table: BTreeMap<i32, i64>,
}

impl DelayOffsetTable {
    pub fn get(&self, level: i32) -> Option<i64> {
        self.offset_table.get(&level).copied()
    }

    /// Records the next offset to deliver for `level`; returns the previous one.
    pub fn set(&mut self, level: i32, offset: i64) -> Option<i64> {
        self.offset_table.insert(level, offset)
    }

    pub fn table(&self) -> &BTreeMap<i32, i64> {
        &self.offset_table
    }
}

// ---------------------------------------------------------------------------------------------
// subscriptionGroup.json

/// `SubscriptionGroupConfig` (4.9.x), fields in fastjson (alphabetical) order. Missing fields
/// take Java's defaults; unknown ones (5.x `attributes`, `groupSysFlag`, …) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SubscriptionGroupConfig {
    pub broker_id: i64,
    pub consume_broadcast_enable: bool,
    pub consume_enable: bool,
    pub consume_from_min_enable: bool,
    pub group_name: String,
    pub notify_consumer_ids_changed_enable: bool,
    pub retry_max_times: i32,
    pub retry_queue_nums: i32,
    /// Broker id to suggest when the consumer is slow (1 = first slave).
    pub which_broker_when_consume_slowly: i64,
}

impl SubscriptionGroupConfig {
    /// A group with Java's defaults.
    pub fn new(group_name: impl Into<String>) -> SubscriptionGroupConfig {
        SubscriptionGroupConfig {
            broker_id: 0,
            consume_broadcast_enable: true,
            consume_enable: true,
            consume_from_min_enable: true,
            group_name: group_name.into(),
            notify_consumer_ids_changed_enable: true,
            retry_max_times: 16,
            retry_queue_nums: 1,
            which_broker_when_consume_slowly: 1,
        }
    }
}

impl Default for SubscriptionGroupConfig {
    fn default() -> SubscriptionGroupConfig {
        SubscriptionGroupConfig::new(String::new())
    }
}

/// What [`SubscriptionGroupTable::get_or_auto_create`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupLookup<'a> {
    Found(&'a SubscriptionGroupConfig),
    /// Just created with the defaults; the data version moved and the table must be persisted.
    Created(&'a SubscriptionGroupConfig),
    /// Unknown and not auto-creatable (`SUBSCRIPTION_GROUP_NOT_EXIST`).
    Unknown,
}

impl<'a> GroupLookup<'a> {
    pub fn config(self) -> Option<&'a SubscriptionGroupConfig> {
        match self {
            GroupLookup::Found(c) | GroupLookup::Created(c) => Some(c),
            GroupLookup::Unknown => None,
        }
    }
}

/// `SubscriptionGroupManager`: `{"dataVersion":…,"subscriptionGroupTable":{name:config}}`.
/// Every change bumps the data version; persisting is the caller's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionGroupTable {
    #[serde(default = "fresh_data_version")]
    data_version: DataVersion,
    #[serde(default)]
    subscription_group_table: BTreeMap<String, SubscriptionGroupConfig>,
}

impl Default for SubscriptionGroupTable {
    fn default() -> SubscriptionGroupTable {
        SubscriptionGroupTable::new()
    }
}

impl SubscriptionGroupTable {
    /// The table a fresh broker starts with: the 7 pre-created groups, counter 0.
    pub fn new() -> SubscriptionGroupTable {
        let mut table = SubscriptionGroupTable {
            data_version: fresh_data_version(),
            subscription_group_table: BTreeMap::new(),
        };
        table.add_pre_created_groups();
        assert_eq!(
            table.subscription_group_table.len(),
            PRE_CREATED_GROUPS.len()
        );
        table
    }

    /// Adds the pre-created groups that are missing, without a version bump (Java creates them
    /// in the constructor and lets the file's entries override them).
    fn add_pre_created_groups(&mut self) {
        for name in PRE_CREATED_GROUPS {
            self.subscription_group_table
                .entry(name.to_string())
                .or_insert_with(|| SubscriptionGroupConfig::new(name));
        }
    }

    pub fn get(&self, name: &str) -> Option<&SubscriptionGroupConfig> {
        self.subscription_group_table.get(name)
    }

    /// `findSubscriptionGroupConfig`: an unknown group is created with the defaults when
    /// `auto_create` (`autoCreateSubscriptionGroup`) is on or its name starts with
    /// `CID_RMQ_SYS_`.
    pub fn get_or_auto_create(&mut self, name: &str, auto_create: bool) -> GroupLookup<'_> {
        if self.subscription_group_table.contains_key(name) {
            return self
                .get(name)
                .map_or(GroupLookup::Unknown, GroupLookup::Found);
        }
        if !(auto_create || name.starts_with(SYS_CONSUMER_GROUP_PREFIX)) {
            return GroupLookup::Unknown;
        }
        tracing::info!(group = name, "auto-creating subscription group");
        next_version(&mut self.data_version);
        let config = self
            .subscription_group_table
            .entry(name.to_string())
            .or_insert_with(|| SubscriptionGroupConfig::new(name));
        GroupLookup::Created(config)
    }

    /// `updateSubscriptionGroupConfig`: creates or replaces; returns the replaced config.
    pub fn update(&mut self, config: SubscriptionGroupConfig) -> Option<SubscriptionGroupConfig> {
        next_version(&mut self.data_version);
        self.subscription_group_table
            .insert(config.group_name.clone(), config)
    }

    /// `deleteSubscriptionGroupConfig`: bumps the version only if the group existed.
    pub fn delete(&mut self, name: &str) -> Option<SubscriptionGroupConfig> {
        let old = self.subscription_group_table.remove(name)?;
        next_version(&mut self.data_version);
        Some(old)
    }

    pub fn data_version(&self) -> DataVersion {
        self.data_version
    }

    pub fn groups(&self) -> &BTreeMap<String, SubscriptionGroupConfig> {
        &self.subscription_group_table
    }
}

// ---------------------------------------------------------------------------------------------
// topics.json

/// `TopicConfigManager`'s table, serialised as `TopicConfigSerializeWrapper`
/// (`{"dataVersion":…,"topicConfigTable":{name:TopicConfig}}`). Every change through
/// [`TopicTable::upsert`] or [`TopicTable::remove`] bumps the data version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TopicTable {
    wrapper: TopicConfigWrapper,
}

impl Default for TopicTable {
    fn default() -> TopicTable {
        TopicTable::new()
    }
}

impl TopicTable {
    /// An empty table, counter 0, stamped now.
    pub fn new() -> TopicTable {
        TopicTable::from_wrapper(TopicConfigWrapper {
            data_version: fresh_data_version(),
            topic_config_table: BTreeMap::new(),
        })
    }

    /// Takes a table as received (a slave syncing from its master); its version is kept.
    pub fn from_wrapper(wrapper: TopicConfigWrapper) -> TopicTable {
        TopicTable { wrapper }
    }

    /// The REGISTER_BROKER / GET_ALL_TOPIC_CONFIG form.
    pub fn wrapper(&self) -> &TopicConfigWrapper {
        &self.wrapper
    }

    pub fn get(&self, name: &str) -> Option<&TopicConfig> {
        self.wrapper.topic_config_table.get(name)
    }

    pub fn topics(&self) -> &BTreeMap<String, TopicConfig> {
        &self.wrapper.topic_config_table
    }

    pub fn data_version(&self) -> DataVersion {
        self.wrapper.data_version
    }

    /// Adds a topic at startup only if absent, without a version bump: Java builds its system
    /// topics in the constructor and the loaded file overrides them.
    pub fn seed(&mut self, config: TopicConfig) -> bool {
        let table = &mut self.wrapper.topic_config_table;
        if table.contains_key(&config.topic_name) {
            return false;
        }
        table.insert(config.topic_name.clone(), config);
        true
    }

    /// `updateTopicConfig`: creates or replaces (always bumping, as Java does); returns the
    /// replaced config.
    pub fn upsert(&mut self, config: TopicConfig) -> Option<TopicConfig> {
        assert!(!config.topic_name.is_empty(), "topic config without a name");
        next_version(&mut self.wrapper.data_version);
        self.wrapper
            .topic_config_table
            .insert(config.topic_name.clone(), config)
    }

    /// `deleteTopicConfig`: bumps the version only if the topic existed.
    pub fn remove(&mut self, name: &str) -> Option<TopicConfig> {
        let old = self.wrapper.topic_config_table.remove(name)?;
        next_version(&mut self.wrapper.data_version);
        Some(old)
    }
}

// ---------------------------------------------------------------------------------------------
// Files

/// A table stored in one metadata file.
pub trait MetadataFile: Serialize + DeserializeOwned {
    /// Names the content in logs and errors.
    const WHAT: &'static str;

    /// The table when neither the file nor its `.bak` exists (or both are empty).
    fn empty() -> Self;

    /// Applied to every decoded file before it is handed out.
    fn after_load(self) -> Self {
        self
    }
}

impl MetadataFile for ConsumerOffsetTable {
    const WHAT: &'static str = "consumer offset";

    fn empty() -> Self {
        ConsumerOffsetTable::default()
    }
}

impl MetadataFile for DelayOffsetTable {
    const WHAT: &'static str = "delay offset";

    fn empty() -> Self {
        DelayOffsetTable::default()
    }
}

impl MetadataFile for SubscriptionGroupTable {
    const WHAT: &'static str = "subscription group";

    fn empty() -> Self {
        SubscriptionGroupTable::new()
    }

    /// Java runs `init()` before `decode`'s `putAll`, so the pre-created groups are always
    /// there and the file's entries win.
    fn after_load(mut self) -> Self {
        self.add_pre_created_groups();
        self
    }
}

impl MetadataFile for TopicTable {
    const WHAT: &'static str = "topic config";

    fn empty() -> Self {
        TopicTable::new()
    }

    /// A hand-edited entry without `topicName` takes its key.
    fn after_load(mut self) -> Self {
        for (name, config) in self.wrapper.topic_config_table.iter_mut() {
            if config.topic_name.is_empty() {
                config.topic_name.clone_from(name);
            }
        }
        self
    }
}

/// Reads JSON as fastjson writes it (unquoted integer keys accepted) or as we write it.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(&fastjson::normalize(bytes))
}

/// Compact JSON for a remoting body (GET_ALL_* responses). Integer map keys are quoted, which
/// fastjson, and every client that reads these bodies, accepts.
pub fn encode_compact<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

/// Pretty JSON indented with tabs, as `ConfigManager.persist` writes (keys sorted by the types'
/// field order and `BTreeMap`s).
pub fn encode_pretty<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = Vec::with_capacity(4096);
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    value.serialize(&mut serializer)?;
    Ok(out)
}

/// One copy on disk, as `load` sees it.
enum DiskCopy<T> {
    Missing,
    Empty,
    Valid(T),
}

fn read_copy<T: MetadataFile>(path: &Path) -> Result<DiskCopy<T>, MetadataError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DiskCopy::Missing),
        Err(source) => {
            let path = path.to_path_buf();
            return Err(MetadataError::Io {
                path,
                op: "read",
                source,
            });
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(DiskCopy::Empty);
    }
    decode_json(&bytes)
        .map(DiskCopy::Valid)
        .map_err(|source| MetadataError::Parse {
            path: path.to_path_buf(),
            what: T::WHAT,
            source,
        })
}

/// Loads `path` like `ConfigManager.load`: the file if it holds a valid table, else
/// `<path>.bak`, else (both missing or empty) [`MetadataFile::empty`]. Unlike Java, a file that
/// exists but cannot be read is an error when no `.bak` can stand in for it, rather than a
/// silent start from an empty table.
pub fn load<T: MetadataFile>(path: &Path) -> Result<T, MetadataError> {
    let main = read_copy::<T>(path);
    let main_problem = match main {
        Ok(DiskCopy::Valid(table)) => {
            tracing::info!(file = %path.display(), what = T::WHAT, "loaded metadata");
            return Ok(table.after_load());
        }
        Ok(DiskCopy::Missing) => MetadataError::Missing {
            path: path.to_path_buf(),
        },
        Ok(DiskCopy::Empty) => MetadataError::Empty {
            path: path.to_path_buf(),
        },
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "metadata file unusable");
            e
        }
    };
    let bak = bak_path(path);
    let bak_problem = match read_copy::<T>(&bak) {
        Ok(DiskCopy::Valid(table)) => {
            tracing::warn!(file = %bak.display(), what = T::WHAT, reason = %main_problem,
                "loaded metadata from backup");
            return Ok(table.after_load());
        }
        Ok(DiskCopy::Missing) => MetadataError::Missing { path: bak },
        Ok(DiskCopy::Empty) => MetadataError::Empty { path: bak },
        Err(e) => e,
    };
    let nothing_there = |e: &MetadataError| {
        matches!(
            e,
            MetadataError::Missing { .. } | MetadataError::Empty { .. }
        )
    };
    if nothing_there(&main_problem) && nothing_there(&bak_problem) {
        tracing::info!(file = %path.display(), what = T::WHAT, "no metadata yet; starting empty");
        return Ok(T::empty());
    }
    Err(MetadataError::NoUsableCopy {
        path: path.to_path_buf(),
        what: T::WHAT,
        main: Box::new(main_problem),
        bak: Box::new(bak_problem),
    })
}

/// Writes `value` to `path` like `MixAll.string2File`, but crash-safe: the current content
/// (if it is well-formed JSON) is first written atomically to `<path>.bak`, then the new
/// content atomically replaces `path` (temp file + fsync + rename + directory fsync). At every
/// instant `path` holds the old or the new content and `<path>.bak` an older one, so [`load`]
/// always finds a valid copy.
pub fn persist<T: MetadataFile>(path: &Path, value: &T) -> Result<(), MetadataError> {
    let bytes = encode_for_persist(path, value)?;
    persist_encoded(path, &bytes)
}

/// The bytes [`persist`] writes for `value`: encoding is cheap and needs the value, so it can
/// happen where the value lives while [`persist_encoded`]'s blocking writes and fsyncs go to
/// another thread.
pub fn encode_for_persist<T: MetadataFile>(
    path: &Path,
    value: &T,
) -> Result<Vec<u8>, MetadataError> {
    let bytes = encode_pretty(value).map_err(|source| MetadataError::Encode {
        path: path.to_path_buf(),
        what: T::WHAT,
        source,
    })?;
    // The other side of the disk: what we write must read back.
    debug_assert!(
        decode_json::<T>(&bytes).is_ok(),
        "{} does not round-trip",
        T::WHAT
    );
    Ok(bytes)
}

/// The writing half of [`persist`]: `.bak` of the current content, then `bytes` atomically.
/// Blocks on file writes and fsyncs: call it from a blocking thread, not a shard's.
pub fn persist_encoded(path: &Path, bytes: &[u8]) -> Result<(), MetadataError> {
    backup_previous(path)?;
    write_atomically(path, bytes).map_err(|source| MetadataError::Io {
        path: path.to_path_buf(),
        op: "write",
        source,
    })
}

/// Copies the current content of `path` to `<path>.bak`. A missing, empty or malformed current
/// file leaves the existing `.bak` alone: it may be the only good copy left.
fn backup_previous(path: &Path) -> Result<(), MetadataError> {
    let previous = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            let path = path.to_path_buf();
            return Err(MetadataError::Io {
                path,
                op: "read",
                source,
            });
        }
    };
    let well_formed = !previous.iter().all(u8::is_ascii_whitespace)
        && serde_json::from_slice::<IgnoredAny>(&fastjson::normalize(&previous)).is_ok();
    if !well_formed {
        tracing::warn!(file = %path.display(), "current metadata file is malformed; keeping .bak");
        return Ok(());
    }
    let bak = bak_path(path);
    write_atomically(&bak, &previous).map_err(|source| MetadataError::Io {
        path: bak,
        op: "write",
        source,
    })
}

#[cfg(test)]
mod tests;
