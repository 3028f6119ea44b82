//! The broker settings that UPDATE_BROKER_CONFIG (25, mqadmin's `updateBrokerConfig`) may
//! change while the broker runs. `BrokerContext::cfg` stays the configuration the broker
//! started with; the keys of [`RUNTIME_KEYS`] are read through [`LiveConfig`] where they take
//! effect, so a change applies to the next request. Every shard holds its own copy (the control
//! shard changes them all over the mesh); reads borrow it for one field and never across an
//! await.
//!
//! The other keys are read once, when the store, the listeners or the timers start, or name
//! the broker itself; changing them means editing the config file and restarting, and an update
//! of one is refused with a remark that says so. Java accepts any key and lets most of them
//! silently take no effect.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};

use crate::config::properties::{self, Entry, ParseError};
use crate::config::{BrokerConfig, ConfigError};

/// The keys that can change at runtime, with where each takes effect.
pub const RUNTIME_KEYS: [(&str, &str); 13] = [
    (
        "brokerPermission",
        "sends and pulls at once; the nameservers are told at once",
    ),
    (
        "maxMessageSize",
        "the next send (at most the value the store was opened with)",
    ),
    ("longPollingEnable", "the next pull"),
    ("slaveReadEnable", "the next pull's suggested broker"),
    (
        "accessMessageInMemoryMaxRatio",
        "the next pull's suggested broker",
    ),
    ("rejectTransactionMessage", "the next transactional send"),
    (
        "enablePropertyFilter",
        "the next CHECK_CLIENT_CONFIG, heartbeat and pull",
    ),
    ("autoCreateSubscriptionGroup", "the next heartbeat and pull"),
    (
        "notifyConsumerIdsChangedEnable",
        "the next change of a group's members",
    ),
    ("transactionTimeOut", "the next transaction check pass"),
    ("transactionCheckMax", "the next transaction check pass"),
    (
        "transactionCheckInterval",
        "the wait after the current transaction check pass",
    ),
    ("defaultQueryMaxNum", "the next QUERY_MESSAGE"),
];

/// A shard's view of the runtime-changeable settings.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    current: RefCell<BrokerConfig>,
    /// Bumped by every accepted update (GET_BROKER_CONFIG's data version counter).
    version: Cell<i64>,
    /// The file the broker was started with (`-c`), where accepted changes are written.
    config_file: Option<PathBuf>,
}

/// Getters of single runtime keys (each borrows only for the copy).
macro_rules! live_fields {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("The current `", stringify!($field), "`.")]
            pub fn $field(&self) -> $ty {
                self.current.borrow().$field
            }
        )*
    };
}

impl LiveConfig {
    /// Starts from `cfg`; `config_file` is where updates are persisted.
    pub fn new(cfg: &BrokerConfig, config_file: Option<PathBuf>) -> LiveConfig {
        LiveConfig {
            current: RefCell::new(cfg.clone()),
            version: Cell::new(0),
            config_file,
        }
    }

    live_fields! {
        broker_permission: u8,
        max_message_size_bytes: u64,
        long_polling_enable: bool,
        slave_read_enable: bool,
        access_message_in_memory_max_ratio_percent: u32,
        reject_transaction_message: bool,
        enable_property_filter: bool,
        auto_create_subscription_group: bool,
        notify_consumer_ids_changed_enable: bool,
        transaction_timeout_ms: u64,
        transaction_check_max: u32,
        transaction_check_interval_ms: u64,
        default_query_max_num: u32,
    }

    /// The whole configuration as it is now.
    pub fn snapshot(&self) -> BrokerConfig {
        self.current.borrow().clone()
    }

    /// How many updates were applied.
    pub fn version(&self) -> i64 {
        self.version.get()
    }

    /// The config file updates are written to, if the broker was started with one.
    pub fn config_file(&self) -> Option<&Path> {
        self.config_file.as_deref()
    }

    /// Takes `cfg` (checked by [`updated`]) as the current configuration.
    pub fn apply(&self, cfg: BrokerConfig) {
        *self.current.borrow_mut() = cfg;
        self.version.set(self.version.get() + 1);
    }
}

/// Why an UPDATE_BROKER_CONFIG was refused (answered SYSTEM_ERROR with this text, as before).
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("the update names no key (an empty properties body)")]
    NoKey,
    #[error(
        "{key} cannot change while the broker runs: set it in the broker's config file and \
         restart (keys that can: {runtime})"
    )]
    NotAtRuntime { key: String, runtime: String },
    #[error("{key} is not a broker config key (keys that can: {runtime})")]
    UnknownKey { key: String, runtime: String },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(
        "maxMessageSize {asked} is larger than the {max} bytes the store was opened with: raise \
         it in the broker's config file and restart"
    )]
    LargerThanStore { asked: u64, max: u64 },
}

/// Why the config file could not be rewritten with an update.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("{0}")]
    Read(std::io::Error),
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("{0}")]
    Write(std::io::Error),
}

/// `current` with `changes` (`key`, `value`) applied, if every key may change at runtime and
/// every value parses and passes the config's checks; `max_message_bytes` is the largest
/// message the store (opened at start) can hold.
pub fn updated(
    current: &BrokerConfig,
    changes: &[(String, String)],
    max_message_bytes: u64,
) -> Result<BrokerConfig, UpdateError> {
    if changes.is_empty() {
        return Err(UpdateError::NoKey);
    }
    let runtime: Vec<&str> = RUNTIME_KEYS.iter().map(|(k, _)| *k).collect();
    for (key, _) in changes {
        if runtime.contains(&key.as_str()) {
            continue;
        }
        let (key, runtime) = (key.clone(), runtime.join(", "));
        return Err(match BrokerConfig::known_keys().any(|k| k == key) {
            true => UpdateError::NotAtRuntime { key, runtime },
            false => UpdateError::UnknownKey { key, runtime },
        });
    }
    let entries: Vec<Entry> = changes
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Entry {
            key: key.clone(),
            value: value.clone(),
            line: i + 1,
        })
        .collect();
    let (cfg, _warnings) = current
        .clone()
        .with_entries(&entries, "the UPDATE_BROKER_CONFIG body")?;
    if cfg.max_message_size_bytes > max_message_bytes {
        return Err(UpdateError::LargerThanStore {
            asked: cfg.max_message_size_bytes,
            max: max_message_bytes,
        });
    }
    Ok(cfg)
}

/// `text` (a properties file) with each of `changes` set: the last line that sets the key is
/// replaced (Java keeps the last), or a `key=value` line is added; comments and the other lines
/// stay as they are.
pub fn rewrite_properties(text: &str, changes: &[(String, String)]) -> Result<String, ParseError> {
    let entries = properties::parse(text)?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (key, value) in changes {
        let line = format!("{key}={value}");
        match entries.iter().rev().find(|e| &e.key == key) {
            Some(entry) => {
                // A continued value spans more lines: they are emptied (the line numbers of
                // the other entries stay right).
                let first = entry.line - 1;
                let mut last = first;
                while last + 1 < lines.len() && continues(&lines[last]) {
                    last += 1;
                }
                lines[first] = line;
                lines[first + 1..=last].iter_mut().for_each(String::clear);
            }
            None => lines.push(line),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    Ok(out)
}

/// A physical line ending in an odd number of backslashes continues on the next one.
fn continues(line: &str) -> bool {
    line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, value: &str) -> Vec<(String, String)> {
        vec![(key.to_string(), value.to_string())]
    }

    #[test]
    fn runtime_keys_parse_and_others_are_refused_by_name() {
        let cfg = BrokerConfig::default();
        let max = cfg.max_message_size_bytes;
        let new = updated(&cfg, &change("brokerPermission", "4"), max).unwrap();
        assert_eq!(new.broker_permission, 4);
        let new = updated(&cfg, &change("maxMessageSize", "1024"), max).unwrap();
        assert_eq!(new.max_message_size_bytes, 1024);
        let e = updated(&cfg, &change("maxMessageSize", &(max + 1).to_string()), max);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("the store was opened with"));
        let e = updated(&cfg, &change("brokerName", "b"), max)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("brokerName cannot change while the broker runs"),
            "{e}"
        );
        assert!(
            e.contains("keys that can: brokerPermission, maxMessageSize"),
            "{e}"
        );
        let e = updated(&cfg, &change("noSuchKey", "1"), max)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("noSuchKey is not a broker config key"), "{e}");
        let e = updated(&cfg, &change("transactionCheckMax", "many"), max)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("transactionCheckMax") && e.contains("many"),
            "{e}"
        );
        assert!(updated(&cfg, &[], max).is_err());
        for (key, _) in RUNTIME_KEYS {
            assert!(BrokerConfig::known_keys().any(|k| k == key), "{key}");
        }
    }

    #[test]
    fn the_file_keeps_its_comments_and_last_setting_wins() {
        let text = "# broker\nbrokerName=b\nmaxMessageSize=100\nmaxMessageSize = 200\n";
        let changes = [
            change("maxMessageSize", "300"),
            change("slaveReadEnable", "true"),
        ];
        let out = rewrite_properties(text, &changes.concat()).unwrap();
        assert_eq!(
            out,
            "# broker\nbrokerName=b\nmaxMessageSize=100\nmaxMessageSize=300\nslaveReadEnable=true\n"
        );
        let continued = "a=1\nlongPollingEnable=tr\\\n  ue\nb=2\n";
        let out = rewrite_properties(continued, &change("longPollingEnable", "false")).unwrap();
        assert_eq!(out, "a=1\nlongPollingEnable=false\n\nb=2\n");
    }
}
