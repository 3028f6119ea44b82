//! Owns the name server's config (`ringmq namesrv [-c namesrv.properties]`): the keys of
//! `spec/CONFIG.md` §3 (NamesrvConfig + the NettyServerConfig keys the same file feeds), plus
//! ringmq-only keys for the timers Java hard-codes. Loaded once at startup on the main thread.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::properties::Entry;
use super::units::{parse_bool, parse_ip, parse_opt_path, parse_path, parse_string};
use super::units::{parse_u16, parse_u32, parse_u64, DAY_MS};
use super::{ConfigError, ConfigWarning, HostInfo, Warnings};

config_struct! {
    /// The name server's settings. Build with [`NamesrvConfig::default`] (host-derived
    /// defaults), [`NamesrvConfig::load`] or [`NamesrvConfig::from_entries`]; both loaders
    /// return a config that passed [`NamesrvConfig::validate`].
    pub struct NamesrvConfig;
    fn for_host(host: &HostInfo);

    /// `listenPort`: remoting port. Default 9876 (set by Java's NamesrvStartup). 1..=65535.
    "listenPort" => listen_port: u16 = 9876, parse_u16, bounds(1, 65_535);
    /// `listenAddress` (ringmq-only): the address to bind. Default `0.0.0.0`.
    "listenAddress" => listen_addr: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED), parse_ip;
    /// `rocketmqHome`: default env `ROCKETMQ_HOME`; unused by ringmq, kept for `-p` parity.
    "rocketmqHome" => rocketmq_home: Option<PathBuf> = host.rocketmq_home.clone(),
        parse_opt_path;
    /// `kvConfigPath`: the KV store (`{"configTable":{namespace:{k:v}}}`). Default
    /// `$HOME/namesrv/kvConfig.json`.
    "kvConfigPath" => kv_config_path: PathBuf = host.home.join("namesrv/kvConfig.json"),
        parse_path;
    /// `configStorePath`: where Java persists config updates. Default
    /// `$HOME/namesrv/namesrv.properties`.
    "configStorePath" => config_store_path: PathBuf =
        host.home.join("namesrv/namesrv.properties"), parse_path;
    /// `orderMessageEnable`: put `orderTopicConf` (KV namespace `ORDER_TOPIC_CONFIG`) into
    /// routes. Default false.
    "orderMessageEnable" => order_message_enable: bool = false, parse_bool;
    /// `clusterTest`: Java's test-cluster routing switch. Default false. Accepted, unused.
    "clusterTest" => cluster_test: bool = false, parse_bool;
    /// `productEnvName`: Default `center`. Accepted, unused.
    "productEnvName" => product_env_name: String = "center".to_string(), parse_string;
    /// `brokerChannelExpiredTimeMs` (ringmq-only; Java hard-codes 120 s): a broker that has
    /// not re-registered for this long is dropped. Default 120000. 1..=86400000.
    "brokerChannelExpiredTimeMs" => broker_expiry_ms: u64 = 120_000, parse_u64, bounds(1, DAY_MS);
    /// `brokerScanIntervalMs` (ringmq-only; Java hard-codes 10 s): how often liveness is
    /// checked. Default 10000. 1..=`broker_expiry_ms`.
    "brokerScanIntervalMs" => broker_scan_interval_ms: u64 = 10_000, parse_u64;
    /// `serverWorkerThreads` (Netty). Default 8. 1..=4096. Accepted, unused.
    "serverWorkerThreads" => server_worker_threads: u32 = 8, parse_u32, bounds(1, 4096);
    /// `serverSelectorThreads` (Netty). Default 3. 1..=4096. Accepted, unused.
    "serverSelectorThreads" => server_selector_threads: u32 = 3, parse_u32, bounds(1, 4096);
    /// `serverChannelMaxIdleTimeSeconds`: idle connections are closed after this. Default 120.
    /// 0 (never)..=86400.
    "serverChannelMaxIdleTimeSeconds" => server_channel_max_idle_seconds: u32 = 120,
        parse_u32, bounds(0, 86_400);
    /// `enableControllerInNamesrv`: run a controller (RocketMQ 5's controller mode) inside this
    /// nameserver, configured by the controller keys of the same file
    /// ([`super::ControllerConfig`]); its requests are served on the nameserver's port.
    /// Default false.
    "enableControllerInNamesrv" => enable_controller_in_namesrv: bool = false, parse_bool;
}

impl NamesrvConfig {
    /// Reads and parses `path`, then applies it over the defaults (see [`Self::from_entries`]).
    pub fn load(path: &Path) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let entries = super::read_entries(path)?;
        Self::from_entries(&entries, &path.display().to_string())
    }

    /// Applies `entries` over [`NamesrvConfig::default`]; `file` labels messages.
    pub fn from_entries(
        entries: &[Entry],
        file: &str,
    ) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        Self::default().with_entries(entries, file)
    }

    /// Applies `entries` over `self` and validates the result. Unknown keys are warnings.
    pub fn with_entries(
        mut self,
        entries: &[Entry],
        file: &str,
    ) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let mut warnings = Warnings {
            file,
            list: Vec::new(),
        };
        let (seen, others) = super::apply_entries(&mut self, KEYS, entries, &mut warnings)?;
        for entry in others {
            let note = if super::ControllerConfig::is_key(&entry.key) {
                if self.enable_controller_in_namesrv {
                    continue;
                }
                "a controller key, ignored because enableControllerInNamesrv is false".to_string()
            } else {
                super::unknown_key_note(&entry.key, KEYS)
            };
            warnings.push(entry.line, &entry.key, note);
        }
        super::broker_load::warn_ignored(&seen, super::status::NAMESRV_IGNORED, &mut warnings);
        self.validate().map_err(|e| e.located(file, &seen))?;
        Ok((self, warnings.into_sorted()))
    }

    /// Rejects values outside the bounds documented on each field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        super::check_ranges(&self.bounds_checks())?;
        let (scan, expiry) = (self.broker_scan_interval_ms, self.broker_expiry_ms);
        super::check_ranges(&[("brokerScanIntervalMs", scan, 1, expiry)])
    }

    /// Every key with its current value, one `key=value` line each (like `mqnamesrv -p`).
    pub fn to_properties(&self) -> String {
        super::table_to_properties(self, KEYS)
    }

    /// The keys this config understands, in `to_properties` order.
    pub fn known_keys() -> impl Iterator<Item = &'static str> {
        KEYS.iter().map(|k| k.name)
    }

    /// What `ringmq namesrv -p` prints: [`Self::to_properties`], then the keys ringmq accepts
    /// and ignores, as comments.
    pub fn print_config_item(&self) -> String {
        self.to_properties() + &super::status::ignored_trailer(super::status::NAMESRV_IGNORED)
    }
}

impl Default for NamesrvConfig {
    /// Java's defaults on this host ([`HostInfo::detect`]).
    fn default() -> Self {
        Self::for_host(&HostInfo::detect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::properties::parse;

    fn host() -> HostInfo {
        HostInfo {
            ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            name: "box".to_string(),
            home: PathBuf::from("/home/mq"),
            rocketmq_home: None,
            cpus: 4,
        }
    }

    fn load(text: &str) -> Result<(NamesrvConfig, Vec<ConfigWarning>), ConfigError> {
        let entries = parse(text).expect("parses");
        NamesrvConfig::for_host(&host()).with_entries(&entries, "namesrv.properties")
    }

    #[test]
    fn defaults_match_config_md() {
        let cfg = NamesrvConfig::for_host(&host());
        assert_eq!(cfg.listen_port, 9876);
        assert_eq!(cfg.listen_addr.to_string(), "0.0.0.0");
        assert_eq!(
            cfg.kv_config_path,
            PathBuf::from("/home/mq/namesrv/kvConfig.json")
        );
        assert_eq!(
            cfg.config_store_path,
            PathBuf::from("/home/mq/namesrv/namesrv.properties")
        );
        assert!(!cfg.order_message_enable && !cfg.cluster_test);
        assert_eq!(cfg.product_env_name, "center");
        assert_eq!(
            (cfg.broker_expiry_ms, cfg.broker_scan_interval_ms),
            (120_000, 10_000)
        );
        assert_eq!(cfg.validate().ok(), Some(()));
    }

    #[test]
    fn keys_override_defaults_and_netty_keys_are_warned_as_ignored() {
        let text = "listenPort=9877\norderMessageEnable=TRUE\nserverWorkerThreads=4\n\
                    brokerChannelExpiredTimeMs=3000\nbrokerScanIntervalMs=500\n";
        let (cfg, warnings) = load(text).expect("valid");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].key, "serverWorkerThreads");
        assert!(warnings[0]
            .message
            .starts_with("accepted and ignored by ringmq"));
        assert_eq!(cfg.listen_port, 9877);
        assert!(cfg.order_message_enable);
        assert_eq!(cfg.server_worker_threads, 4);
        assert_eq!(
            (cfg.broker_expiry_ms, cfg.broker_scan_interval_ms),
            (3000, 500)
        );
    }

    #[test]
    fn unknown_key_warns_with_a_suggestion() {
        let (_, warnings) = load("listenport=9877\nfoo=bar\n").expect("valid");
        assert_eq!(warnings.len(), 2);
        assert_eq!(warnings[0].key, "listenport");
        assert!(
            warnings[0].to_string().contains("did you mean listenPort?"),
            "{}",
            warnings[0]
        );
        assert_eq!(warnings[1].line, 2);
        assert!(warnings[1]
            .to_string()
            .starts_with("namesrv.properties:2: foo: unknown key"));
    }

    #[test]
    fn bad_values_are_errors_with_location() {
        let err = load("\nlistenPort=0\n").expect_err("port 0");
        assert_eq!(
            err.to_string(),
            "namesrv.properties:2: listenPort = \"0\": must be in 1..=65535"
        );
        let err = load("clusterTest=yes\n").expect_err("not a bool");
        assert_eq!(
            err.to_string(),
            "namesrv.properties:1: clusterTest = \"yes\": expected true or false"
        );
        assert!(load("brokerScanIntervalMs=200000\n").is_err());
    }

    #[test]
    fn printed_properties_load_back_identically() {
        let cfg = NamesrvConfig::for_host(&host());
        let (again, warnings) = load(&cfg.to_properties()).expect("round trip");
        // The only warnings: the keys ringmq accepts and ignores, one each.
        assert_eq!(warnings.len(), crate::config::status::NAMESRV_IGNORED.len());
        assert!(warnings
            .iter()
            .all(|w| w.message.starts_with("accepted and ignored")));
        assert_eq!(again, cfg);
    }
}
