//! Owns the controller's config (RocketMQ 5's `ControllerConfig` plus the listen port of its
//! `NettyServerConfig`): `ringmq controller -c controller.properties`, or the same keys in
//! namesrv.properties with `enableControllerInNamesrv=true`. Loaded once at startup.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::properties::Entry;
use super::units::{parse_bool, parse_ip, parse_path, parse_string, parse_u16, parse_u64, DAY_MS};
use super::{ConfigError, ConfigWarning, HostInfo, Warnings};

config_struct! {
    /// The controller's settings. Build with [`ControllerConfig::default`],
    /// [`ControllerConfig::load`] or [`ControllerConfig::with_entries`]; the loaders return a
    /// config that passed [`ControllerConfig::validate`].
    pub struct ControllerConfig;
    fn for_host(host: &HostInfo);

    /// `listenPort`: the remoting port of a standalone controller (brokers and mqadmin talk to
    /// it). Default 19876 (Java's ControllerStartup). Embedded in a nameserver, the
    /// nameserver's port serves the controller's requests instead.
    "listenPort" => listen_port: u16 = 19876, parse_u16, bounds(1, 65_535);
    /// `listenAddress` (ringmq-only): the address a standalone controller binds. Default
    /// `0.0.0.0`.
    "listenAddress" => listen_addr: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED), parse_ip;
    /// `controllerDLegerGroup`: the name of the controller group; every controller of a group
    /// and its store carry it (a store of another group is refused). Required.
    "controllerDLegerGroup" => group: String = String::new(), parse_string;
    /// `controllerDLegerPeers`: `n0-host:port;n1-host:port;…`, the Raft addresses of every
    /// controller of the group (not the remoting port). Required.
    "controllerDLegerPeers" => peers: String = String::new(), parse_string;
    /// `controllerDLegerSelfId`: which of the peers this controller is. Required.
    "controllerDLegerSelfId" => self_id: String = String::new(), parse_string;
    /// `controllerStorePath`: the Raft log and snapshots. Default `$HOME/DledgerController`.
    "controllerStorePath" => store_path: PathBuf = host.home.join("DledgerController"),
        parse_path;
    /// `enableElectUncleanMaster`: when no replica of the SyncStateSet is alive, elect any
    /// alive replica (may lose acknowledged messages). Default false.
    "enableElectUncleanMaster" => elect_unclean_master: bool = false, parse_bool;
    /// `notifyBrokerRoleChanged`: tell a group's replicas (NOTIFY_BROKER_ROLE_CHANGED) when
    /// the controller elected a new master. Default true.
    "notifyBrokerRoleChanged" => notify_broker_role_changed: bool = true, parse_bool;
    /// `scanNotActiveBrokerInterval`: how often the leader looks for masters that stopped
    /// heartbeating, in ms. Default 5000. 100..=86400000.
    "scanNotActiveBrokerInterval" => scan_not_active_broker_interval_ms: u64 = 5000, parse_u64,
        bounds(100, DAY_MS);
}

impl ControllerConfig {
    /// Reads `path` and applies it over the defaults.
    pub fn load(path: &Path) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let entries = super::read_entries(path)?;
        Self::default().with_entries(&entries, &path.display().to_string(), &|_| false)
    }

    /// Reads the controller keys of a namesrv.properties (`enableControllerInNamesrv=true`);
    /// its other keys are the nameserver loader's to check.
    pub fn load_embedded(path: &Path) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let entries = super::read_entries(path)?;
        Self::default().with_entries(&entries, &path.display().to_string(), &|_| true)
    }

    /// Applies `entries` over `self` and validates. Keys neither in this table nor accepted by
    /// `also_known` (the nameserver's, when embedded) are warned about as unknown.
    pub fn with_entries(
        mut self,
        entries: &[Entry],
        file: &str,
        also_known: &dyn Fn(&str) -> bool,
    ) -> Result<(Self, Vec<ConfigWarning>), ConfigError> {
        let mut warnings = Warnings {
            file,
            list: Vec::new(),
        };
        let (seen, others) = super::apply_entries(&mut self, KEYS, entries, &mut warnings)?;
        for entry in others.into_iter().filter(|e| !also_known(&e.key)) {
            warnings.push(
                entry.line,
                &entry.key,
                super::unknown_key_note(&entry.key, KEYS),
            );
        }
        self.validate().map_err(|e| e.located(file, &seen))?;
        Ok((self, warnings.into_sorted()))
    }

    /// Whether `key` is a controller key (the nameserver accepts them in its file).
    pub fn is_key(key: &str) -> bool {
        KEYS.iter().any(|k| k.name == key)
    }

    /// Rejects values outside their bounds and a group, peer list or self id that is missing
    /// or does not fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        super::check_ranges(&self.bounds_checks())?;
        if self.group.is_empty() {
            return Err(ConfigError::value(
                "controllerDLegerGroup",
                "",
                "required: the name of the controller group",
            ));
        }
        let mut names = Vec::new();
        for item in super::addr_list(&self.peers) {
            let Some((name, addr)) = item.split_once('-') else {
                return Err(ConfigError::value(
                    "controllerDLegerPeers",
                    &self.peers,
                    format!("{item:?} is not name-host:port"),
                ));
            };
            if !addr.contains(':') || names.contains(&name) {
                return Err(ConfigError::value(
                    "controllerDLegerPeers",
                    &self.peers,
                    format!("{item:?}: a peer is name-host:port, each name once"),
                ));
            }
            names.push(name);
        }
        if names.is_empty() {
            return Err(ConfigError::value(
                "controllerDLegerPeers",
                &self.peers,
                "required: n0-host:port;n1-host:port;…",
            ));
        }
        if !names.contains(&self.self_id.as_str()) {
            return Err(ConfigError::value(
                "controllerDLegerSelfId",
                &self.self_id,
                format!("must be one of the peers' names {names:?}"),
            ));
        }
        Ok(())
    }

    /// Every key with its current value, one `key=value` line each.
    pub fn to_properties(&self) -> String {
        super::table_to_properties(self, KEYS)
    }
}

impl Default for ControllerConfig {
    /// Java's defaults on this host ([`HostInfo::detect`]).
    fn default() -> Self {
        Self::for_host(&HostInfo::detect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::properties::parse;

    fn load(text: &str) -> Result<(ControllerConfig, Vec<ConfigWarning>), ConfigError> {
        let entries = parse(text).expect("parses");
        ControllerConfig::default().with_entries(&entries, "controller.properties", &|_| false)
    }

    const GOOD: &str = "controllerDLegerGroup=g\ncontrollerDLegerPeers=n0-127.0.0.1:9878;n1-127.0.0.1:9868\ncontrollerDLegerSelfId=n1\n";

    #[test]
    fn every_key_loads_back_silently_and_is_honoured() {
        let (cfg, warnings) = load(GOOD).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(cfg.listen_port, 19876);
        assert!(cfg.notify_broker_role_changed && !cfg.elect_unclean_master);
        let (again, warnings) = load(&cfg.to_properties()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again, cfg);
    }

    #[test]
    fn missing_or_inconsistent_membership_is_an_error_naming_the_key() {
        let err = load("controllerDLegerGroup=g\n").unwrap_err().to_string();
        assert!(err.contains("controllerDLegerPeers"), "{err}");
        let err = load(&GOOD.replace("SelfId=n1", "SelfId=n7"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("controllerDLegerSelfId") && err.contains("n7"),
            "{err}"
        );
        let err = load(&GOOD.replace("n1-127", "n0-127"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("each name once"), "{err}");
        let err = load(&format!("{GOOD}scanNotActiveBrokerInterval=5\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scanNotActiveBrokerInterval"), "{err}");
        let (_, warnings) = load(&format!("{GOOD}controllerType=jRaft\n")).unwrap();
        assert_eq!(warnings[0].key, "controllerType");
    }
}
