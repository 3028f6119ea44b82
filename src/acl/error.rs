//! The ACL's errors: what is wrong with a plain_acl.yml file, an admin update or a tool's
//! credentials. Each names the file, account, key or pattern at fault; the broker logs them,
//! answers the ACL admin requests with them as remarks, and refuses to start on them.

use std::path::PathBuf;

/// What is wrong with an address pattern (the pattern itself is in [`AclError::Address`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressProblem {
    #[error("{0:?} is not an IP address")]
    NotAnIp(String),
    #[error("{0:?} is not an octet (0..=255)")]
    NotAnOctet(String),
    #[error(
        "IPv6 ranges and {{…}} lists are not supported by ringmq; list the addresses separated \
         by ',' instead"
    )]
    Ipv6Range,
    #[error("'}}' without '{{'")]
    BraceWithoutOpen,
    #[error("a {{…}} list must be the fourth octet, e.g. 192.168.1.{{1,2}}")]
    BraceNotFourth,
    #[error("expected four octets, e.g. 192.168.1.* or 10.0.0.1-9")]
    NotFourOctets,
    #[error("'*' or a range is allowed only after the first octet")]
    WildcardFirst,
    #[error("bad range {0:?}")]
    BadRange(String),
    #[error("range {0}-{1} is empty")]
    EmptyRange(u8, u8),
    #[error("the octets after a '*' or a range must be '*'")]
    AfterWildcard,
}

/// An ACL error. Context (the file, the account, the entry) wraps the cause it was found in.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("address pattern {pattern:?}: {problem}")]
    Address {
        pattern: String,
        problem: AddressProblem,
    },
    #[error("permission {0:?} is not one of DENY, PUB, SUB, PUB|SUB")]
    Perm(String),
    #[error("{0:?} is not name=PERM")]
    NotNamePerm(String),
    #[error("{0:?} has no name before '='")]
    NoResourceName(String),
    #[error("{entry:?}: {source}")]
    InEntry {
        entry: String,
        source: Box<AclError>,
    },
    #[error("accessKey {0:?} must be longer than 6 characters (as RocketMQ requires)")]
    ShortAccessKey(String),
    #[error("account {0}: secretKey must be longer than 6 characters (as RocketMQ requires)")]
    ShortSecretKey(String),
    #[error("account {access_key}: {source}")]
    InAccount {
        access_key: String,
        source: Box<AclError>,
    },
    #[error("accounts[{index}]: {source}")]
    AtIndex { index: usize, source: Box<AclError> },
    #[error("expected a mapping of account fields")]
    AccountNotMapping,
    #[error(
        "key {0} is not one ringmq implements (accessKey, secretKey, whiteRemoteAddress, admin, \
         defaultTopicPerm, defaultGroupPerm, topicPerms, groupPerms); a permission it would have \
         set cannot be ignored"
    )]
    UnknownAccountKey(String),
    #[error("{key}: expected a single value")]
    NotAScalar { key: String },
    #[error("{what}: expected a list of values")]
    NotAList { what: String },
    #[error("admin {0} is not true or false")]
    BadAdmin(String),
    #[error("line {line}, column {column}: {info}")]
    Yaml {
        line: usize,
        column: usize,
        info: String,
    },
    #[error("expected a mapping at the top (globalWhiteRemoteAddresses, accounts)")]
    TopNotMapping,
    #[error("globalWhiteRemoteAddresses: {0}")]
    InGlobalWhite(Box<AclError>),
    #[error("accounts: expected a list of accounts")]
    AccountsNotList,
    #[error("top-level key {0:?} is not one of globalWhiteRemoteAddresses, accounts, dataVersion")]
    UnknownTopKey(String),
    #[error("accessKey {access_key} is defined twice (accounts[{first}] and accounts[{second}])")]
    DefinedTwice {
        access_key: String,
        first: usize,
        second: usize,
    },
    #[error("accessKey {access_key} is defined in both {} and {}", first.display(), second.display())]
    DefinedInTwoFiles {
        access_key: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "aclEnable=true needs plain_acl.yml: set rocketmqHome (or ROCKETMQ_HOME) to the \
         directory whose conf/plain_acl.yml holds it, or aclPlainFile to the file"
    )]
    NoHome,
    #[error("aclEnable=true but there is no ACL file: {} does not exist{}", main.display(),
        dir.as_ref().map(|d| format!(" and {} holds no *.yml", d.display())).unwrap_or_default())]
    NoFile { main: PathBuf, dir: Option<PathBuf> },
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot create: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        source: Box<AclError>,
    },
    #[error("No acl config for {0}")]
    NoAccount(String),
    #[error("{} is not one of the broker's ACL files", .0.display())]
    NotAnAclFile(PathBuf),
    #[error("an access key was given without its secret key")]
    KeyWithoutSecret,
    #[error("a secret key was given without its access key")]
    SecretWithoutKey,
    #[error("the heartbeat body does not parse: {0}")]
    HeartbeatBody(#[source] serde_json::Error),
}

impl AclError {
    /// `self` found in account `access_key`.
    pub(crate) fn in_account(self, access_key: &str) -> AclError {
        AclError::InAccount {
            access_key: access_key.to_string(),
            source: Box::new(self),
        }
    }

    /// `self` found in `path`.
    pub(crate) fn in_file(self, path: &std::path::Path) -> AclError {
        AclError::InFile {
            path: path.to_path_buf(),
            source: Box::new(self),
        }
    }

    /// A YAML syntax error, by line and column (1-based column as editors show it).
    pub(crate) fn yaml(e: &yaml_rust2::ScanError) -> AclError {
        AclError::Yaml {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            info: e.info().to_string(),
        }
    }
}
