//! Owns reading the RocketMQ-style `.properties` files (`ringmq namesrv -c …`,
//! `ringmq broker -c …`) into typed, validated configs whose field names carry their units:
//! [`NamesrvConfig`] and [`BrokerConfig`], plus the name-server address list
//! ([`resolve_namesrv_addrs`]: CLI `-n` > file `namesrvAddr` > env `NAMESRV_ADDR`).
//!
//! Runs once at startup on the main thread, before any shard exists; the values are handed to
//! constructors and never read as globals afterwards. Key names, defaults and Java's post-load
//! rules follow `spec/CONFIG.md`. Where Java is silent, ringmq speaks: an unknown or legacy key
//! is a [`ConfigWarning`] naming it, and a value Java would silently ignore is a [`ConfigError`]
//! naming key, value, file and line.
//!
//! Layout: [`properties`] (the text format), [`units`] (value parsers), [`host`] (host-derived
//! defaults), [`namesrv`] and [`broker`] (the structs), `broker_load` (key table, post-load
//! rules and `validate()` of the broker).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use properties::Entry;

/// One known key: its name in the file, how to set the field from text and how to print it.
pub(crate) struct Key<C> {
    pub name: &'static str,
    pub set: fn(&mut C, &str) -> Result<(), units::Reason>,
    pub get: fn(&C) -> String,
}

/// Declares a config struct in one place: per field its doc, its key in the file, its type,
/// its default (an expression that may use the `HostInfo` parameter), its parser
/// (`fn(&str) -> Result<Type, Reason>`), optionally a printer (`fmt = f`; default
/// [`units::ToProperty`]) and optionally inclusive integer bounds (`bounds(min, max)`).
/// Generates the struct, `for_host(&HostInfo) -> Self`, `bounds_checks()` for `validate()`
/// and a `KEYS` table driving `from_entries` and `to_properties`.
macro_rules! config_struct {
    (
        $(#[$struct_meta:meta])*
        pub struct $name:ident;
        fn $ctor:ident($host:ident: &HostInfo);
        $(
            $(#[$field_meta:meta])*
            $key:literal => $field:ident: $ty:ty = $default:expr, $parse:path
                $(, fmt = $fmt:path)? $(, bounds($min:expr, $max:expr))?;
        )*
    ) => {
        $(#[$struct_meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $name {
            /// Java's defaults on the given host (see each field's doc).
            pub fn $ctor($host: &$crate::config::HostInfo) -> Self {
                $name { $($field: $default,)* }
            }

            /// (key, value, min, max) of every field declared with `bounds`.
            pub(super) fn bounds_checks(&self) -> Vec<$crate::config::RangeCheck> {
                vec![$($(($key, u64::from(self.$field), $min, $max),)?)*]
            }
        }

        /// Every key of the struct, in declaration order.
        pub(super) const KEYS: &[$crate::config::Key<$name>] = &[$(
            $crate::config::Key::<$name> {
                name: $key,
                set: |c: &mut $name, v: &str| {
                    c.$field = $parse(v)?;
                    Ok(())
                },
                get: config_struct!(@get $name, $field $(, $fmt)?),
            },
        )*];
    };
    (@get $name:ident, $field:ident) => {
        |c: &$name| $crate::config::units::ToProperty::to_property(&c.$field)
    };
    (@get $name:ident, $field:ident, $fmt:path) => {
        |c: &$name| $fmt(&c.$field)
    };
}

pub mod broker;
mod broker_load;
pub mod controller;
pub mod host;
pub mod namesrv;
pub mod properties;
pub mod status;
pub mod units;

pub use broker::{BrokerConfig, BrokerRole, FlushDiskType, ShardColocation, ShardScheduling};
pub use controller::ControllerConfig;
pub use host::HostInfo;
pub use namesrv::NamesrvConfig;

/// Where a bad value came from: `file:line`, just `file` (a rule about a key the file did not
/// set), or nowhere (a config built in code and checked with `validate()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The file label given to the loader (usually the path as typed).
    pub file: Option<String>,
    /// 1-based line of the entry that set the key.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    /// Prints as a message prefix: `conf/broker.properties:7: `, `conf/broker.properties: ` or
    /// nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{file}:{line}: "),
            (Some(file), None) => write!(f, "{file}: "),
            (None, Some(line)) => write!(f, "line {line}: "),
            (None, None) => Ok(()),
        }
    }
}

/// A config that cannot be used. Startup stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not a properties file Java would read (a malformed `\uXXXX` escape).
    #[error("{file}:{line}: {reason}")]
    Syntax {
        file: String,
        line: usize,
        reason: properties::EscapeError,
    },
    /// A value that does not parse or is out of bounds, e.g.
    /// `conf/broker.properties:7: brokerRole = "SYNC_MASTR": expected one of ASYNC_MASTER, …`.
    #[error("{location}{key} = {value:?}: {reason}")]
    Value {
        location: Location,
        key: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    /// A value error with no location yet (attached by the loader when it knows the line).
    pub(crate) fn value(key: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        ConfigError::Value {
            location: Location::default(),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Fills in the file, and the line of the key if the file set it.
    fn located(self, file: &str, seen: &Seen) -> Self {
        match self {
            ConfigError::Value {
                location,
                key,
                value,
                reason,
            } if location.file.is_none() => {
                let line = location.line.or_else(|| seen.line(&key));
                let location = Location {
                    file: Some(file.to_string()),
                    line,
                };
                ConfigError::Value {
                    location,
                    key,
                    value,
                    reason,
                }
            }
            other => other,
        }
    }
}

/// Something in a config file that ringmq accepts but the user should look at: an unknown key,
/// a key RocketMQ 4.9 ignores, a value with trailing whitespace, a value ringmq had to adjust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file label given to the loader.
    pub file: String,
    /// 1-based line of the entry concerned (0 only for a rule about a config built in code).
    pub line: usize,
    /// The key as written in the file.
    pub key: String,
    /// What RocketMQ does with it and what ringmq does instead.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.key, self.message
        )
    }
}

/// What a file set: for each key, the line of its last occurrence.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    lines: HashMap<String, usize>,
}

impl Seen {
    pub(crate) fn line(&self, key: &str) -> Option<usize> {
        self.lines.get(key).copied()
    }

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.lines.contains_key(key)
    }
}

/// Collects warnings for one file.
pub(crate) struct Warnings<'a> {
    pub file: &'a str,
    pub list: Vec<ConfigWarning>,
}

impl Warnings<'_> {
    pub(crate) fn push(&mut self, line: usize, key: &str, message: impl Into<String>) {
        self.list.push(ConfigWarning {
            file: self.file.to_string(),
            line,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// The warnings in file order.
    pub(crate) fn into_sorted(mut self) -> Vec<ConfigWarning> {
        self.list.sort_by_key(|w| w.line);
        self.list
    }
}

/// Applies every entry whose key is in `table`, in file order (a repeated key: the last wins, as
/// in Java). Warns about trailing whitespace and repeats; returns what was seen plus the entries
/// with keys not in the table, for the caller to classify (legacy or unknown).
pub(crate) fn apply_entries<'e, C>(
    cfg: &mut C,
    table: &[Key<C>],
    entries: &'e [Entry],
    warnings: &mut Warnings<'_>,
) -> Result<(Seen, Vec<&'e Entry>), ConfigError> {
    let mut seen = Seen::default();
    let mut others = Vec::new();
    for entry in entries {
        let value = entry.value.trim_end();
        if value.len() != entry.value.len() {
            warnings.push(
                entry.line,
                &entry.key,
                trailing_whitespace_note(&entry.value),
            );
        }
        if let Some(first) = seen.line(&entry.key) {
            let note = format!("also set on line {first}; this later value wins (as in RocketMQ)");
            warnings.push(entry.line, &entry.key, note);
        }
        seen.lines.insert(entry.key.clone(), entry.line);
        match table.iter().find(|k| k.name == entry.key) {
            Some(key) => (key.set)(cfg, value).map_err(|reason| ConfigError::Value {
                location: Location {
                    file: Some(warnings.file.to_string()),
                    line: Some(entry.line),
                },
                key: entry.key.clone(),
                value: value.to_string(),
                reason,
            })?,
            None => others.push(entry),
        }
    }
    Ok((seen, others))
}

fn trailing_whitespace_note(value: &str) -> String {
    format!(
        "value {value:?} ends in whitespace, which RocketMQ keeps as part of the value (a \
         number, boolean or enum then fails to parse and Java silently keeps the default); \
         ringmq ignores the trailing whitespace"
    )
}

/// The warning for a key no table knows, with a spelling suggestion when one is close.
pub(crate) fn unknown_key_note<C>(key: &str, table: &[Key<C>]) -> String {
    let close = table
        .iter()
        .map(|k| k.name)
        .find(|name| name.eq_ignore_ascii_case(key) || edit_distance(name, key) <= 2);
    match close {
        Some(name) => {
            format!("unknown key, ignored; did you mean {name}? (keys are case-sensitive)")
        }
        None => "unknown key, ignored".to_string(),
    }
}

/// Levenshtein distance, for "did you mean" (keys are short; quadratic is fine).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// One bound check: (key, value, min, max), all inclusive.
pub(crate) type RangeCheck = (&'static str, u64, u64, u64);

/// Fails on the first value outside its bounds, naming the key.
pub(crate) fn check_ranges(checks: &[RangeCheck]) -> Result<(), ConfigError> {
    for &(key, value, min, max) in checks {
        if !(min..=max).contains(&value) {
            return Err(ConfigError::value(
                key,
                value,
                format!("must be in {min}..={max}"),
            ));
        }
    }
    Ok(())
}

/// Prints every key of `table` as `key=value` lines (what `mqbroker -p` prints), in table order.
pub(crate) fn table_to_properties<C>(cfg: &C, table: &[Key<C>]) -> String {
    table
        .iter()
        .map(|k| format!("{}={}\n", k.name, (k.get)(cfg)))
        .collect()
}

/// Reads and parses a properties file. Like Java's `Properties.load(InputStream)`, bytes that
/// are not UTF-8 are read as ISO-8859-1; a UTF-8 byte-order mark is skipped.
pub(crate) fn read_entries(path: &Path) -> Result<Vec<Entry>, ConfigError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        file: file.clone(),
        source,
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => e.into_bytes().iter().map(|&b| char::from(b)).collect(),
    };
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
    properties::parse(text).map_err(|e| ConfigError::Syntax {
        file,
        line: e.line,
        reason: e.reason,
    })
}

/// Parses a name-server list: `;`-separated `host:port`, blanks around an address and empty parts
/// ignored. Each address is checked as Java's `string2SocketAddress` would; at least one is
/// required.
pub fn parse_namesrv_addrs(s: &str) -> Result<Vec<String>, ConfigError> {
    parse_addrs_for("namesrvAddr", s)
}

/// The items of a RocketMQ address list (`namesrvAddr`, `controllerAddr`, `-n`): `;`-separated,
/// blanks around an item trimmed, empty items skipped. Unchecked; see [`parse_namesrv_addrs`].
pub fn addr_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(';').map(str::trim).filter(|a| !a.is_empty())
}

fn parse_addrs_for(source: &str, s: &str) -> Result<Vec<String>, ConfigError> {
    let mut addrs = Vec::new();
    for addr in addr_list(s) {
        units::check_host_port(addr).map_err(|reason| {
            ConfigError::value(source, s, format!("address {addr:?}: {reason}"))
        })?;
        addrs.push(addr.to_string());
    }
    if addrs.is_empty() {
        let reason = "expected host:port addresses separated by ';', e.g. \"ns1:9876;ns2:9876\"";
        return Err(ConfigError::value(source, s, reason));
    }
    Ok(addrs)
}

/// The name servers to use: the CLI `-n` value, else the config file's `namesrvAddr`, else the
/// environment's `NAMESRV_ADDR` (a blank value counts as unset). `Ok(vec![])` when none is set
/// (the broker then runs unregistered, as Java does). The error names the source (`-n`,
/// `namesrvAddr` or `NAMESRV_ADDR`).
pub fn resolve_namesrv_addrs(
    cli: Option<&str>,
    file: Option<&str>,
) -> Result<Vec<String>, ConfigError> {
    let env = std::env::var("NAMESRV_ADDR").ok();
    resolve_with_env(cli, file, env.as_deref())
}

fn resolve_with_env(
    cli: Option<&str>,
    file: Option<&str>,
    env: Option<&str>,
) -> Result<Vec<String>, ConfigError> {
    let sources = [("-n", cli), ("namesrvAddr", file), ("NAMESRV_ADDR", env)];
    for (source, value) in sources {
        if let Some(value) = value.filter(|v| !v.trim().is_empty()) {
            return parse_addrs_for(source, value);
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namesrv_addrs_split_and_skip_blanks() {
        let addrs = parse_namesrv_addrs(" ns1:9876;;ns2:9876 ; ").expect("valid");
        assert_eq!(addrs, vec!["ns1:9876", "ns2:9876"]);
    }

    #[test]
    fn namesrv_addrs_reject_bad_entries_naming_them() {
        let err = parse_namesrv_addrs("ns1:9876;ns2").expect_err("no port");
        let text = err.to_string();
        assert!(text.starts_with("namesrvAddr = \"ns1:9876;ns2\""), "{text}");
        assert!(text.contains("\"ns2\""), "{text}");
        assert!(parse_namesrv_addrs(" ; ").is_err());
        assert!(parse_namesrv_addrs("ns1:98765").is_err());
    }

    #[test]
    fn namesrv_precedence_is_cli_then_file_then_env() {
        let all = resolve_with_env(Some("cli:1"), Some("file:2"), Some("env:3"));
        assert_eq!(all.expect("valid"), vec!["cli:1"]);
        let no_cli = resolve_with_env(None, Some("file:2"), Some("env:3"));
        assert_eq!(no_cli.expect("valid"), vec!["file:2"]);
        let env_only = resolve_with_env(Some("  "), None, Some("env:3;env:4"));
        assert_eq!(env_only.expect("valid"), vec!["env:3", "env:4"]);
        assert_eq!(
            resolve_with_env(None, None, None).expect("valid"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn namesrv_errors_name_their_source() {
        let err = resolve_with_env(Some("bad"), None, None).expect_err("bad cli");
        assert!(err.to_string().starts_with("-n = \"bad\""), "{err}");
        let err = resolve_with_env(None, None, Some("x:y")).expect_err("bad env");
        assert!(
            err.to_string().starts_with("NAMESRV_ADDR = \"x:y\""),
            "{err}"
        );
    }

    /// Every `*.properties` under `conf/`, recursively.
    fn conf_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        let entries = std::fs::read_dir(dir).expect("conf/ is readable");
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                conf_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "properties") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_conf_example_loads_without_errors_or_warnings() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let mut files = Vec::new();
        conf_files(&root, &mut files);
        files.sort();
        assert!(
            files.iter().any(|f| f.ends_with("conf/broker.properties")),
            "{files:?}"
        );
        assert!(
            files.iter().any(|f| f.ends_with("conf/namesrv.properties")),
            "{files:?}"
        );
        for file in files {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let warnings = if name.starts_with("namesrv") {
                NamesrvConfig::load(&file).map(|(_, w)| w)
            } else if name.starts_with("controller") {
                ControllerConfig::load(&file).map(|(_, w)| w)
            } else {
                BrokerConfig::load(&file).map(|(_, w)| w)
            };
            match warnings {
                Ok(warnings) => assert_eq!(warnings, vec![], "{}", file.display()),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn load_reports_a_missing_file_by_name() {
        let err = BrokerConfig::load(Path::new("/nonexistent/broker.properties"));
        let text = err.expect_err("missing").to_string();
        assert!(
            text.starts_with("/nonexistent/broker.properties: cannot read"),
            "{text}"
        );
    }

    #[test]
    fn load_reads_latin1_and_skips_a_utf8_bom() {
        let dir = tempfile::tempdir().expect("temp dir");
        let latin1 = dir.path().join("latin1.properties");
        std::fs::write(&latin1, b"regionId=R\xE9gion\n").expect("write");
        let (cfg, warnings) = BrokerConfig::load(&latin1).expect("loads");
        assert_eq!((warnings, cfg.region_id.as_str()), (vec![], "R\u{e9}gion"));
        let bom = dir.path().join("bom.properties");
        std::fs::write(&bom, b"\xEF\xBB\xBFregionId=caf\xC3\xA9\n").expect("write");
        let (cfg, warnings) = BrokerConfig::load(&bom).expect("loads");
        assert_eq!((warnings, cfg.region_id.as_str()), (vec![], "caf\u{e9}"));
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("brokerRole", "brokerRole"), 0);
        assert_eq!(edit_distance("brokerRole", "brokerRol"), 1);
        assert_eq!(edit_distance("listenPort", "listenport"), 1);
        assert_eq!(edit_distance("abc", "xyz"), 3);
    }

    #[test]
    fn location_prints_as_a_prefix() {
        let full = Location {
            file: Some("b.properties".into()),
            line: Some(7),
        };
        assert_eq!(full.to_string(), "b.properties:7: ");
        let file_only = Location {
            file: Some("b.properties".into()),
            line: None,
        };
        assert_eq!(file_only.to_string(), "b.properties: ");
        assert_eq!(Location::default().to_string(), "");
    }
}
