//! The broker's plain ACL: where the files are, the rules loaded from them (shared by every
//! shard, read without a lock), reloading when a file changes, and the admin updates that
//! rewrite a file.
//!
//! Files, as Java 4.9 looks for them: `$ROCKETMQ_HOME/conf/plain_acl.yml` (`rocketmqHome`, from
//! the environment's ROCKETMQ_HOME by default), or the file named by the JVM property
//! `rocketmq.acl.plain.file` (read from `-Drocketmq.acl.plain.file=…` in the JAVA_OPT
//! environment variable that RocketMQ's start scripts pass, relative to the home), plus every
//! `*.yml` of `$ROCKETMQ_HOME/conf/acl/`. The ringmq key `aclPlainFile` names one file instead
//! of all of these. A broker with `aclEnable=true` and none of these files refuses to start.
//!
//! Reload: [`Acl::poll`] compares each file's modification time and size (and the `conf/acl/`
//! listing) with the last load; the control shard calls it every second on a background task,
//! never on a request. A file that no longer parses is refused with the line (or the account)
//! that is wrong, and the rules in force stay.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::check::{check, Refusal};
use super::error::AclError;
use super::rules::{Account, AclFile, Rules};
use crate::config::BrokerConfig;
use crate::remoting::RemotingCommand;

/// How often the control shard looks at the files.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The Java property naming the main file (`-Drocketmq.acl.plain.file=…`).
pub const JAVA_FILE_PROPERTY: &str = "rocketmq.acl.plain.file";

/// A file's `DataVersion`: load time and a counter bumped by every load or update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataVersion {
    pub timestamp_ms: i64,
    pub counter: i64,
}

impl DataVersion {
    /// Java's JSON form.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({"counter": self.counter, "timestamp": self.timestamp_ms})
    }
}

/// What a file looked like when it was read: modification time and length (`None`: absent).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Where the files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The main file: new accounts are written here (created if absent).
    pub main: PathBuf,
    /// The directory of extra `*.yml` files (`conf/acl/`), if any.
    pub dir: Option<PathBuf>,
}

impl Sources {
    /// The files of `cfg` (see the module doc); `java_opt` is the JAVA_OPT environment value.
    pub fn resolve(cfg: &BrokerConfig, java_opt: Option<&str>) -> Result<Sources, AclError> {
        if let Some(file) = &cfg.acl_plain_file {
            return Ok(Sources {
                main: file.clone(),
                dir: None,
            });
        }
        let Some(home) = &cfg.rocketmq_home else {
            return Err(AclError::NoHome);
        };
        let property = java_opt.and_then(|opts| {
            opts.split_whitespace()
                .find_map(|o| o.strip_prefix(&format!("-D{JAVA_FILE_PROPERTY}=")))
                .map(str::to_string)
        });
        let relative = property.unwrap_or_else(|| "conf/plain_acl.yml".to_string());
        Ok(Sources {
            main: home.join(relative.trim_start_matches('/')),
            dir: Some(home.join("conf/acl")),
        })
    }

    /// Every file to load, main first, then the directory's `*.yml` in name order.
    fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.main.clone()];
        if let Some(dir) = &self.dir {
            let mut extra: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
                        .filter(|p| *p != self.main)
                        .collect()
                })
                .unwrap_or_default();
            extra.sort();
            files.extend(extra);
        }
        files
    }
}

/// What the last successful load saw.
struct Loaded {
    stamps: Vec<(PathBuf, Stamp)>,
    versions: BTreeMap<PathBuf, DataVersion>,
    /// The last refused state, so a broken file is reported once, not every second.
    refused: Option<Vec<(PathBuf, Stamp)>>,
}

/// The ACL of one broker, shared by its shards.
pub struct Acl {
    sources: Sources,
    rules: ArcSwap<Rules>,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acl")
            .field("sources", &self.sources)
            .finish()
    }
}

/// Reads and parses `files` (absent ones skipped); the error names the file.
fn read_all(files: &[PathBuf]) -> Result<(Rules, Vec<(PathBuf, Stamp)>), AclError> {
    let mut parsed = Vec::new();
    let mut stamps = Vec::new();
    for path in files {
        let before = stamp(path);
        stamps.push((path.clone(), before));
        if before.is_none() {
            continue;
        }
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Read {
            path: path.clone(),
            source,
        })?;
        parsed.push(AclFile::parse(path, &text).map_err(|e| e.in_file(path))?);
    }
    Ok((Rules::new(parsed)?, stamps))
}

impl Acl {
    /// Loads the files of `sources`; at least one must exist and every one must parse.
    pub fn load(sources: Sources) -> Result<Acl, AclError> {
        let files = sources.files();
        let (rules, stamps) = read_all(&files)?;
        if rules.files.is_empty() {
            return Err(AclError::NoFile {
                main: sources.main.clone(),
                dir: sources.dir.clone(),
            });
        }
        let version = DataVersion {
            timestamp_ms: now_ms(),
            counter: 1,
        };
        let versions = rules
            .files
            .iter()
            .map(|f| (f.path.clone(), version))
            .collect();
        Ok(Acl {
            sources,
            rules: ArcSwap::from_pointee(rules),
            loaded: Mutex::new(Loaded {
                stamps,
                versions,
                refused: None,
            }),
        })
    }

    /// The broker's ACL when `aclEnable=true` (`None` otherwise).
    pub fn for_broker(cfg: &BrokerConfig) -> Result<Option<Arc<Acl>>, AclError> {
        if !cfg.acl_enable {
            return Ok(None);
        }
        let java_opt = std::env::var("JAVA_OPT").ok();
        let acl = Acl::load(Sources::resolve(cfg, java_opt.as_deref())?)?;
        Ok(Some(Arc::new(acl)))
    }

    /// Where the files are.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.load_full()
    }

    /// Checks a request from `peer` against the rules in force.
    pub fn check(&self, peer: SocketAddr, cmd: &RemotingCommand) -> Result<(), Refusal> {
        check(&self.rules.load(), peer.ip(), cmd)
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reloads when a file changed since the last load: `None` when nothing changed,
    /// `Some(Ok(files))` after a reload, `Some(Err(why))` when the changed files were refused
    /// (the rules in force stay; the same broken state is reported once).
    pub fn poll(&self) -> Option<Result<usize, AclError>> {
        let files = self.sources.files();
        let now: Vec<(PathBuf, Stamp)> = files.iter().map(|p| (p.clone(), stamp(p))).collect();
        let mut loaded = self.lock();
        if now == loaded.stamps || loaded.refused.as_ref() == Some(&now) {
            return None;
        }
        match read_all(&files) {
            Ok((rules, stamps)) => {
                let counter = loaded
                    .versions
                    .values()
                    .map(|v| v.counter)
                    .max()
                    .unwrap_or(0);
                let version = DataVersion {
                    timestamp_ms: now_ms(),
                    counter: counter + 1,
                };
                loaded.versions = rules
                    .files
                    .iter()
                    .map(|f| (f.path.clone(), version))
                    .collect();
                loaded.stamps = stamps;
                loaded.refused = None;
                let count = rules.files.len();
                self.rules.store(Arc::new(rules));
                Some(Ok(count))
            }
            Err(e) => {
                loaded.refused = Some(now);
                Some(Err(e))
            }
        }
    }

    /// Every file's data version.
    pub fn versions(&self) -> BTreeMap<PathBuf, DataVersion> {
        self.lock().versions.clone()
    }

    /// Applies `change` to a copy of the file at `index` (`None`: the main file, created when
    /// absent), writes it atomically and puts the new rules in force.
    fn update(
        &self,
        index: Option<usize>,
        change: impl FnOnce(&mut AclFile) -> Result<(), AclError>,
    ) -> Result<(), AclError> {
        let mut loaded = self.lock();
        let rules = self.rules.load_full();
        let mut files = rules.files.clone();
        let index = match index.or_else(|| files.iter().position(|f| f.path == self.sources.main)) {
            Some(i) => i,
            None => {
                files.insert(0, AclFile::empty(&self.sources.main));
                0
            }
        };
        change(&mut files[index])?;
        let new_rules = Rules::new(files)?;
        let file = &new_rules.files[index];
        if let Some(parent) = file.path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| AclError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        crate::fsutil::write_atomically(&file.path, file.to_yaml().as_bytes()).map_err(
            |source| AclError::Write {
                path: file.path.clone(),
                source,
            },
        )?;
        let counter = loaded.versions.get(&file.path).map_or(0, |v| v.counter);
        let version = DataVersion {
            timestamp_ms: now_ms(),
            counter: counter + 1,
        };
        loaded.versions.insert(file.path.clone(), version);
        loaded.stamps = self
            .sources
            .files()
            .iter()
            .map(|p| (p.clone(), stamp(p)))
            .collect();
        loaded.refused = None;
        self.rules.store(Arc::new(new_rules));
        Ok(())
    }

    /// Creates or replaces an account (UPDATE_AND_CREATE_ACL_CONFIG) in the file that holds it,
    /// or the main file for a new one.
    pub fn upsert_account(&self, account: Account) -> Result<(), AclError> {
        let file = self.rules().file_of(&account.access_key);
        self.update(file, |f| {
            match f
                .accounts
                .iter_mut()
                .find(|a| a.access_key == account.access_key)
            {
                Some(existing) => *existing = account,
                None => f.accounts.push(account),
            }
            Ok(())
        })
    }

    /// Deletes an account (DELETE_ACL_CONFIG).
    pub fn delete_account(&self, access_key: &str) -> Result<(), AclError> {
        let Some(file) = self.rules().file_of(access_key) else {
            return Err(AclError::NoAccount(access_key.to_string()));
        };
        self.update(Some(file), |f| {
            f.accounts.retain(|a| a.access_key != access_key);
            Ok(())
        })
    }

    /// Replaces the global white list of one file (UPDATE_GLOBAL_WHITE_ADDRS_CONFIG): the file
    /// named (it must be one of the loaded files), else the main file.
    pub fn set_global_white(
        &self,
        patterns: &[String],
        file: Option<&Path>,
    ) -> Result<(), AclError> {
        let parsed = patterns
            .iter()
            .map(|p| super::address::AddressPattern::parse(p).map(|a| (p.trim().to_string(), a)))
            .collect::<Result<Vec<_>, AclError>>()?;
        let index = match file {
            None => None,
            Some(path) => Some(
                self.rules()
                    .files
                    .iter()
                    .position(|f| f.path == path)
                    .ok_or_else(|| AclError::NotAnAclFile(path.to_path_buf()))?,
            ),
        };
        self.update(index, |f| {
            f.global_white = parsed;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const ONE: &str = "accounts:\n  - {accessKey: account1, secretKey: secret01}\n";

    #[test]
    fn files_are_found_where_java_looks() {
        let mut cfg = BrokerConfig {
            rocketmq_home: Some(PathBuf::from("/opt/rmq")),
            ..BrokerConfig::default()
        };
        let s = Sources::resolve(&cfg, None).unwrap();
        assert_eq!(s.main, PathBuf::from("/opt/rmq/conf/plain_acl.yml"));
        assert_eq!(s.dir, Some(PathBuf::from("/opt/rmq/conf/acl")));
        let opt = "-server -Xms1g -Drocketmq.acl.plain.file=conf/other.yml -Dx=y";
        let s = Sources::resolve(&cfg, Some(opt)).unwrap();
        assert_eq!(s.main, PathBuf::from("/opt/rmq/conf/other.yml"));
        cfg.acl_plain_file = Some(PathBuf::from("/etc/ringmq/acl.yml"));
        let s = Sources::resolve(&cfg, Some(opt)).unwrap();
        assert_eq!(
            (s.main, s.dir),
            (PathBuf::from("/etc/ringmq/acl.yml"), None)
        );
        cfg.acl_plain_file = None;
        cfg.rocketmq_home = None;
        let err = Sources::resolve(&cfg, None).unwrap_err();
        assert!(matches!(err, AclError::NoHome), "{err}");
        assert!(err.to_string().contains("ROCKETMQ_HOME"));
    }

    #[test]
    fn loads_reloads_and_keeps_old_rules_on_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("conf/plain_acl.yml");
        let sources = Sources {
            main: main.clone(),
            dir: Some(dir.path().join("conf/acl")),
        };
        let err = Acl::load(sources.clone()).unwrap_err();
        assert!(matches!(err, AclError::NoFile { .. }), "{err}");
        assert!(err.to_string().contains("no ACL file"));
        write(&main, ONE);
        write(
            &dir.path().join("conf/acl/extra.yml"),
            "accounts:\n  - {accessKey: account2, secretKey: secret02}\n",
        );
        let acl = Acl::load(sources).unwrap();
        assert!(
            acl.rules().account("account1").is_some() && acl.rules().account("account2").is_some()
        );
        assert!(acl.poll().is_none());
        // A change of length is seen whatever the clock's granularity.
        write(
            &main,
            "accounts:\n  - {accessKey: account3, secretKey: secret03}\n",
        );
        assert!(matches!(acl.poll(), Some(Ok(2))));
        assert!(
            acl.rules().account("account3").is_some() && acl.rules().account("account1").is_none()
        );
        write(
            &main,
            "accounts:\n  - {accessKey: account4, secretKey: [broken\n",
        );
        let err = acl.poll().expect("changed").expect_err("broken");
        assert!(
            matches!(&err, AclError::InFile { source, .. } if matches!(**source, AclError::Yaml { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("plain_acl.yml: line"), "{err}");
        assert!(acl.poll().is_none(), "a broken state is reported once");
        assert!(acl.rules().account("account3").is_some(), "old rules kept");
        assert_eq!(acl.versions().values().map(|v| v.counter).max(), Some(2));
    }

    #[test]
    fn updates_rewrite_the_file_that_holds_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("plain_acl.yml");
        write(&main, ONE);
        let acl = Acl::load(Sources {
            main: main.clone(),
            dir: None,
        })
        .unwrap();
        let account = Account::build(
            "account9",
            "secret09",
            "",
            true,
            Some("PUB"),
            None,
            &["t1=SUB".into()],
            &[],
        )
        .unwrap();
        acl.upsert_account(account.clone()).unwrap();
        acl.set_global_white(&["10.0.0.*".into()], None).unwrap();
        acl.delete_account("account1").unwrap();
        assert!(acl.delete_account("account1").is_err());
        let again = AclFile::parse(&main, &std::fs::read_to_string(&main).unwrap()).unwrap();
        assert_eq!(again.accounts, vec![account]);
        assert_eq!(again.global_white[0].0, "10.0.0.*");
        assert!(acl.poll().is_none(), "its own writes are not reloaded");
        assert!(acl.set_global_white(&["nonsense".into()], None).is_err());
    }
}
