//! plain_acl.yml, RocketMQ 4.x's format, as data: parsing (with the line of a syntax error),
//! the merged rules of every loaded file, and writing a file back.
//!
//! ```yaml
//! globalWhiteRemoteAddresses:
//!   - 10.10.103.*
//! accounts:
//!   - accessKey: RocketMQ
//!     secretKey: 12345678
//!     whiteRemoteAddress:
//!     admin: false
//!     defaultTopicPerm: DENY
//!     defaultGroupPerm: SUB
//!     topicPerms: [topicA=DENY, topicB=PUB|SUB, topicC=SUB]
//!     groupPerms: [groupA=DENY, groupB=PUB|SUB, groupC=SUB]
//! ```
//!
//! Where Java silently reads a mistake as something else (an unknown permission as DENY, an
//! unknown key as nothing), ringmq refuses the file and says what is wrong: a rule the operator
//! wrote must never be dropped quietly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

use super::address::AddressPattern;
use super::error::AclError;

/// `Permission.DENY`.
pub const DENY: u8 = 1;
/// `Permission.ANY`: PUB or SUB will do.
pub const ANY: u8 = 1 << 1;
/// `Permission.PUB`.
pub const PUB: u8 = 1 << 2;
/// `Permission.SUB`.
pub const SUB: u8 = 1 << 3;

/// `%RETRY%`: a group is checked as its retry topic, as in Java.
pub use crate::names::RETRY_GROUP_TOPIC_PREFIX as RETRY_PREFIX;

/// Parses `DENY`, `PUB`, `SUB`, `PUB|SUB` (or `SUB|PUB`).
pub fn parse_perm(text: &str) -> Result<u8, AclError> {
    match text.trim() {
        "DENY" => Ok(DENY),
        "PUB" => Ok(PUB),
        "SUB" => Ok(SUB),
        "PUB|SUB" | "SUB|PUB" => Ok(PUB | SUB),
        other => Err(AclError::Perm(other.to_string())),
    }
}

/// The name of a permission as the file writes it.
pub fn perm_name(perm: u8) -> &'static str {
    match perm {
        p if p & DENY != 0 => "DENY",
        p if p & (PUB | SUB) == PUB | SUB => "PUB|SUB",
        p if p & PUB != 0 => "PUB",
        p if p & SUB != 0 => "SUB",
        _ => "DENY",
    }
}

/// `Permission.checkPermission`: does `owned` grant `needed`?
pub fn grants(needed: u8, owned: u8) -> bool {
    if owned & DENY != 0 {
        return false;
    }
    if needed & ANY != 0 {
        return owned & (PUB | SUB) != 0;
    }
    needed & owned != 0
}

/// `name=PERM` entries of topicPerms / groupPerms.
fn parse_resource_perm(entry: &str) -> Result<(String, u8), AclError> {
    let (name, perm) = entry
        .split_once('=')
        .ok_or_else(|| AclError::NotNamePerm(entry.to_string()))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(AclError::NoResourceName(entry.to_string()));
    }
    let perm = parse_perm(perm).map_err(|e| AclError::InEntry {
        entry: entry.to_string(),
        source: Box::new(e),
    })?;
    Ok((name.to_string(), perm))
}

/// One account of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub access_key: String,
    pub secret_key: String,
    /// As written (blank: none).
    pub white_remote_address: String,
    pub white: AddressPattern,
    pub admin: bool,
    /// DENY when the file does not say (as Java).
    pub default_topic_perm: u8,
    pub default_group_perm: u8,
    /// `topic=PERM`, in file order.
    pub topic_perms: Vec<(String, u8)>,
    /// `group=PERM`, in file order.
    pub group_perms: Vec<(String, u8)>,
}

impl Account {
    /// An account from its fields as text (the file's and the admin request's), validated.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        access_key: &str,
        secret_key: &str,
        white_remote_address: &str,
        admin: bool,
        default_topic_perm: Option<&str>,
        default_group_perm: Option<&str>,
        topic_perms: &[String],
        group_perms: &[String],
    ) -> Result<Account, AclError> {
        let access_key = access_key.trim();
        // Java: "The accessKey=%s and secretKey=%s cannot be null and length should longer
        // than 6".
        if access_key.len() <= 6 {
            return Err(AclError::ShortAccessKey(access_key.to_string()));
        }
        if secret_key.trim().len() <= 6 {
            return Err(AclError::ShortSecretKey(access_key.to_string()));
        }
        let in_account = |e: AclError| e.in_account(access_key);
        let perm = |p: Option<&str>| p.map_or(Ok(DENY), parse_perm).map_err(in_account);
        let perms = |list: &[String]| -> Result<Vec<(String, u8)>, AclError> {
            list.iter()
                .map(|e| parse_resource_perm(e).map_err(in_account))
                .collect()
        };
        Ok(Account {
            access_key: access_key.to_string(),
            secret_key: secret_key.trim().to_string(),
            white_remote_address: white_remote_address.trim().to_string(),
            white: AddressPattern::parse(white_remote_address).map_err(in_account)?,
            admin,
            default_topic_perm: perm(default_topic_perm)?,
            default_group_perm: perm(default_group_perm)?,
            topic_perms: perms(topic_perms)?,
            group_perms: perms(group_perms)?,
        })
    }

    /// The permission this account holds on `resource` (a topic, or `%RETRY%group` for a
    /// group); `None` for an admin account without any explicit permission, which Java lets
    /// through everywhere.
    pub fn owned(&self, resource: &str) -> Option<u8> {
        if self.admin && self.topic_perms.is_empty() && self.group_perms.is_empty() {
            return None;
        }
        Some(match resource.strip_prefix(RETRY_PREFIX) {
            Some(group) => lookup(&self.group_perms, group).unwrap_or(self.default_group_perm),
            None => lookup(&self.topic_perms, resource).unwrap_or(self.default_topic_perm),
        })
    }
}

/// The last entry for `name` (a later entry of a list overrides an earlier one, as Java's map).
fn lookup(perms: &[(String, u8)], name: &str) -> Option<u8> {
    perms.iter().rev().find(|(n, _)| n == name).map(|(_, p)| *p)
}

/// One plain_acl.yml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFile {
    pub path: PathBuf,
    /// `globalWhiteRemoteAddresses` as written, with their patterns.
    pub global_white: Vec<(String, AddressPattern)>,
    pub accounts: Vec<Account>,
}

/// A scalar as text: Java reads the YAML into JSON and takes `toString`, so `secretKey:
/// 12345678` is the string "12345678".
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        Yaml::Null => Some(String::new()),
        _ => None,
    }
}

/// A list of scalars; a single scalar counts as a one-element list, null as empty.
fn scalar_list(value: &Yaml, what: &str) -> Result<Vec<String>, AclError> {
    let not_a_list = || AclError::NotAList {
        what: what.to_string(),
    };
    match value {
        Yaml::Array(items) => items
            .iter()
            .map(|v| scalar(v).ok_or_else(not_a_list))
            .collect(),
        Yaml::Null => Ok(Vec::new()),
        other => scalar(other).map(|s| vec![s]).ok_or_else(not_a_list),
    }
}

const ACCOUNT_KEYS: [&str; 9] = [
    "accessKey",
    "secretKey",
    "whiteRemoteAddress",
    "admin",
    "defaultTopicPerm",
    "defaultGroupPerm",
    "topicPerms",
    "groupPerms",
    "namespacePerms",
];

fn parse_account(value: &Yaml, index: usize) -> Result<Account, AclError> {
    parse_account_fields(value).map_err(|e| AclError::AtIndex {
        index,
        source: Box::new(e),
    })
}

fn parse_account_fields(value: &Yaml) -> Result<Account, AclError> {
    let Yaml::Hash(map) = value else {
        return Err(AclError::AccountNotMapping);
    };
    let mut field: HashMap<&str, &Yaml> = HashMap::new();
    for (k, v) in map {
        let key = k.as_str().unwrap_or_default();
        if !ACCOUNT_KEYS.contains(&key) || key == "namespacePerms" {
            return Err(AclError::UnknownAccountKey(format!("{k:?}")));
        }
        field.insert(key, v);
    }
    let text = |key: &str| -> Result<Option<String>, AclError> {
        match field.get(key) {
            None => Ok(None),
            Some(v) => scalar(v).map(Some).ok_or_else(|| AclError::NotAScalar {
                key: key.to_string(),
            }),
        }
    };
    let access_key = text("accessKey")?.unwrap_or_default();
    let admin = match field.get("admin") {
        None | Some(Yaml::Null) => false,
        Some(Yaml::Boolean(b)) => *b,
        Some(Yaml::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Yaml::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(other) => return Err(AclError::BadAdmin(format!("{other:?}")).in_account(&access_key)),
    };
    let list = |key: &str| match field.get(key) {
        None => Ok(Vec::new()),
        Some(v) => scalar_list(v, &format!("account {access_key}: {key}")),
    };
    let default_topic = text("defaultTopicPerm")?.filter(|s| !s.is_empty());
    let default_group = text("defaultGroupPerm")?.filter(|s| !s.is_empty());
    Account::build(
        &access_key,
        &text("secretKey")?.unwrap_or_default(),
        &text("whiteRemoteAddress")?.unwrap_or_default(),
        admin,
        default_topic.as_deref(),
        default_group.as_deref(),
        &list("topicPerms")?,
        &list("groupPerms")?,
    )
}

impl AclFile {
    /// An empty file at `path` (a new default file the first account is written to).
    pub fn empty(path: &Path) -> AclFile {
        AclFile {
            path: path.to_path_buf(),
            global_white: Vec::new(),
            accounts: Vec::new(),
        }
    }

    /// Parses the text of `path`. A syntax error names its line; other errors name the key or
    /// the account.
    pub fn parse(path: &Path, text: &str) -> Result<AclFile, AclError> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| AclError::yaml(&e))?;
        let mut file = AclFile::empty(path);
        let root = match docs.into_iter().next() {
            None | Some(Yaml::Null) => return Ok(file),
            Some(Yaml::Hash(root)) => root,
            Some(_) => return Err(AclError::TopNotMapping),
        };
        for (k, v) in &root {
            match k.as_str().unwrap_or_default() {
                "globalWhiteRemoteAddresses" => {
                    for pattern in scalar_list(v, "globalWhiteRemoteAddresses")? {
                        let parsed = AddressPattern::parse(&pattern)
                            .map_err(|e| AclError::InGlobalWhite(Box::new(e)))?;
                        file.global_white.push((pattern, parsed));
                    }
                }
                "accounts" => match v {
                    Yaml::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            file.accounts.push(parse_account(item, i)?);
                        }
                    }
                    Yaml::Null => {}
                    _ => return Err(AclError::AccountsNotList),
                },
                // Written by Java's admin updates; the version ringmq reports is its own.
                "dataVersion" => {}
                other => return Err(AclError::UnknownTopKey(other.to_string())),
            }
        }
        let mut seen = HashMap::new();
        for (i, account) in file.accounts.iter().enumerate() {
            if let Some(first) = seen.insert(account.access_key.as_str(), i) {
                return Err(AclError::DefinedTwice {
                    access_key: account.access_key.clone(),
                    first,
                    second: i,
                });
            }
        }
        Ok(file)
    }

    /// The file as YAML, in the layout above.
    pub fn to_yaml(&self) -> String {
        let s = |v: &str| Yaml::String(v.to_string());
        let mut root = Hash::new();
        root.insert(
            s("globalWhiteRemoteAddresses"),
            Yaml::Array(self.global_white.iter().map(|(p, _)| s(p)).collect()),
        );
        let accounts = self
            .accounts
            .iter()
            .map(|a| {
                let perms = |list: &[(String, u8)]| {
                    Yaml::Array(
                        list.iter()
                            .map(|(n, p)| s(&format!("{n}={}", perm_name(*p))))
                            .collect(),
                    )
                };
                let mut m = Hash::new();
                m.insert(s("accessKey"), s(&a.access_key));
                m.insert(s("secretKey"), s(&a.secret_key));
                m.insert(s("whiteRemoteAddress"), s(&a.white_remote_address));
                m.insert(s("admin"), Yaml::Boolean(a.admin));
                m.insert(s("defaultTopicPerm"), s(perm_name(a.default_topic_perm)));
                m.insert(s("defaultGroupPerm"), s(perm_name(a.default_group_perm)));
                m.insert(s("topicPerms"), perms(&a.topic_perms));
                m.insert(s("groupPerms"), perms(&a.group_perms));
                Yaml::Hash(m)
            })
            .collect();
        root.insert(s("accounts"), Yaml::Array(accounts));
        let mut out = String::new();
        let mut emitter = YamlEmitter::new(&mut out);
        // Emitting into a String cannot fail.
        let _ = emitter.dump(&Yaml::Hash(root));
        out.push('\n');
        out
    }
}

/// The rules of every loaded file, merged: what a request is checked against.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub files: Vec<AclFile>,
    /// access key → (file index, account index).
    index: HashMap<String, (usize, usize)>,
}

impl Rules {
    /// Merges `files`; an access key defined in two files is an error naming both.
    pub fn new(files: Vec<AclFile>) -> Result<Rules, AclError> {
        let mut index = HashMap::new();
        for (f, file) in files.iter().enumerate() {
            for (a, account) in file.accounts.iter().enumerate() {
                if let Some((other, _)) = index.insert(account.access_key.clone(), (f, a)) {
                    return Err(AclError::DefinedInTwoFiles {
                        access_key: account.access_key.clone(),
                        first: files[other].path.clone(),
                        second: file.path.clone(),
                    });
                }
            }
        }
        Ok(Rules { files, index })
    }

    /// The account of `access_key`.
    pub fn account(&self, access_key: &str) -> Option<&Account> {
        let &(f, a) = self.index.get(access_key)?;
        Some(&self.files[f].accounts[a])
    }

    /// The index of the file holding `access_key`.
    pub fn file_of(&self, access_key: &str) -> Option<usize> {
        self.index.get(access_key).map(|&(f, _)| f)
    }

    /// True when a global white-list pattern of any file matches `peer`.
    pub fn globally_white(&self, peer: std::net::IpAddr) -> bool {
        self.files
            .iter()
            .flat_map(|f| f.global_white.iter())
            .any(|(_, p)| p.matches(peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
globalWhiteRemoteAddresses:
  - 10.10.103.*
  - 192.168.0.*

accounts:
  - accessKey: RocketMQ
    secretKey: 12345678
    whiteRemoteAddress:
    admin: false
    defaultTopicPerm: DENY
    defaultGroupPerm: SUB
    topicPerms:
      - topicA=DENY
      - topicB=PUB|SUB
      - topicC=SUB
    groupPerms:
      # the group should convert to retry topic
      - groupA=DENY
      - groupB=PUB|SUB
      - groupC=SUB

  - accessKey: rocketmq2
    secretKey: 12345678
    whiteRemoteAddress: 192.168.1.*
    # if it is admin, it could access all resources
    admin: true
";

    fn parse(text: &str) -> Result<AclFile, AclError> {
        AclFile::parse(Path::new("plain_acl.yml"), text)
    }

    #[test]
    fn rocketmq_sample_file_parses() {
        let file = parse(SAMPLE).expect("sample");
        assert_eq!(file.global_white.len(), 2);
        let rq = &file.accounts[0];
        assert_eq!(
            (rq.access_key.as_str(), rq.secret_key.as_str()),
            ("RocketMQ", "12345678")
        );
        assert_eq!((rq.default_topic_perm, rq.default_group_perm), (DENY, SUB));
        assert_eq!(rq.owned("topicB"), Some(PUB | SUB));
        assert_eq!(rq.owned("topicZ"), Some(DENY));
        assert_eq!(rq.owned("%RETRY%groupA"), Some(DENY));
        assert_eq!(rq.owned("%RETRY%groupZ"), Some(SUB));
        assert_eq!(rq.white, AddressPattern::Nothing);
        let admin = &file.accounts[1];
        assert!(admin.admin);
        assert_eq!(admin.owned("anything"), None);
        assert!(admin.white.matches("192.168.1.7".parse().unwrap()));
    }

    #[test]
    fn written_files_read_back_identically() {
        let file = parse(SAMPLE).expect("sample");
        let again = parse(&file.to_yaml()).expect("round trip");
        assert_eq!(again, file);
    }

    #[test]
    fn permission_checks_follow_java() {
        assert!(grants(PUB, PUB | SUB));
        assert!(!grants(PUB, SUB));
        assert!(!grants(SUB, DENY));
        assert!(grants(ANY, SUB));
        assert!(!grants(ANY, DENY));
    }

    #[test]
    fn mistakes_are_refused_with_where() {
        let err = parse("accounts:\n  - accessKey: abcdefg\n    secretKey: [unclosed\n")
            .expect_err("syntax");
        assert!(matches!(err, AclError::Yaml { .. }), "{err}");
        assert!(err.to_string().starts_with("line "), "{err}");
        let bad_perm = "accounts:\n  - accessKey: abcdefg\n    secretKey: 1234567\n    topicPerms: [t=PUBLISH]\n";
        assert!(parse(bad_perm)
            .expect_err("perm")
            .to_string()
            .contains("PUBLISH"));
        let short = "accounts:\n  - accessKey: abc\n    secretKey: 1234567\n";
        assert!(parse(short)
            .expect_err("short")
            .to_string()
            .contains("longer than 6"));
        let unknown =
            "accounts:\n  - accessKey: abcdefg\n    secretKey: 1234567\n    topicPerm: [t=PUB]\n";
        assert!(parse(unknown)
            .expect_err("unknown")
            .to_string()
            .contains("topicPerm"));
        let twice = "accounts:\n  - {accessKey: abcdefg, secretKey: 1234567}\n  - {accessKey: abcdefg, secretKey: 7654321}\n";
        assert!(parse(twice)
            .expect_err("twice")
            .to_string()
            .contains("twice"));
        assert!(parse("globalWhiteRemoteAddresses: [300.1.1.1]\n").is_err());
        assert!(parse("whitelist: []\n")
            .expect_err("top")
            .to_string()
            .contains("whitelist"));
        assert_eq!(parse("").expect("empty").accounts, vec![]);
    }

    #[test]
    fn an_access_key_in_two_files_is_refused() {
        let a = parse("accounts:\n  - {accessKey: abcdefg, secretKey: 1234567}\n").unwrap();
        let mut b = a.clone();
        b.path = PathBuf::from("other.yml");
        let err = Rules::new(vec![a.clone(), b]).expect_err("twice");
        assert!(matches!(err, AclError::DefinedInTwoFiles { .. }), "{err}");
        assert!(err.to_string().contains("other.yml"), "{err}");
        let rules = Rules::new(vec![a]).expect("one");
        assert!(rules.account("abcdefg").is_some() && rules.account("nobody").is_none());
    }
}
