//! Where a broker request meets the ACL: [`gate`] runs before a request is routed to any
//! processor. A refused request is answered NO_PERMISSION (a oneway one is dropped) and logged
//! with its peer, at most one line per peer and account every [`REFUSAL_LOG_INTERVAL`]; the
//! ACL's own request codes (50–54) are answered here, from the shared rules.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use super::manager::Acl;
use super::rules::{perm_name, Account};
use crate::log_limit::{LogLimiter, Verdict};
use crate::remoting::{request as req, response as resp, RemotingCommand};

/// One log line per (peer, account) at most this often; the rest are counted.
pub use crate::refusal::REFUSAL_LOG_INTERVAL;

thread_local! {
    /// One limiter per executor thread (shards share nothing).
    static REFUSALS: RefCell<Option<LogLimiter<(IpAddr, String)>>> = const { RefCell::new(None) };
}

/// What the gate decided.
#[derive(Debug)]
pub enum Gate {
    /// Go on to the processors.
    Pass,
    /// Answer this (nothing for a oneway request).
    Answer(Option<RemotingCommand>),
}

/// The broker as GET_BROKER_CLUSTER_ACL_INFO describes it.
#[derive(Debug, Clone, Copy)]
pub struct BrokerIdentity<'a> {
    pub name: &'a str,
    pub addr: &'a str,
    pub cluster: &'a str,
}

fn answer(cmd: &RemotingCommand, code: i32, remark: String) -> Option<RemotingCommand> {
    (!cmd.is_oneway()).then(|| cmd.error_to(code, remark))
}

fn log_refusal(peer: SocketAddr, code: i32, access_key: &str, remark: &str) {
    REFUSALS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let limiter = cell.get_or_insert_with(|| LogLimiter::new(REFUSAL_LOG_INTERVAL, 4096));
        if let Verdict::Log { suppressed } = limiter.check((peer.ip(), access_key.to_string())) {
            tracing::warn!(%peer, code, access_key, remark, suppressed, "ACL refused a request");
        }
    });
}

/// Checks `cmd` from `peer`; answers the ACL's own request codes.
pub fn gate(
    acl: &Acl,
    peer: SocketAddr,
    cmd: &RemotingCommand,
    broker: BrokerIdentity<'_>,
) -> Gate {
    if let Err(refusal) = acl.check(peer, cmd) {
        log_refusal(peer, cmd.code, &refusal.access_key, &refusal.remark);
        return Gate::Answer(answer(cmd, resp::NO_PERMISSION, refusal.remark));
    }
    let reply = match cmd.code {
        req::UPDATE_AND_CREATE_ACL_CONFIG => update_account(acl, cmd),
        req::DELETE_ACL_CONFIG => delete_account(acl, cmd),
        req::UPDATE_GLOBAL_WHITE_ADDRS_CONFIG => update_global_white(acl, cmd),
        req::GET_BROKER_CLUSTER_ACL_INFO => versions(acl, cmd, broker),
        req::GET_BROKER_CLUSTER_ACL_CONFIG => config(acl, cmd),
        _ => return Gate::Pass,
    };
    Gate::Answer((!cmd.is_oneway()).then_some(reply))
}

/// Whether [`gate`] answers `code` by rewriting (and fsyncing) an ACL file: the caller runs
/// such a request on a blocking thread, never on a shard's.
pub fn writes_files(code: i32) -> bool {
    matches!(
        code,
        req::UPDATE_AND_CREATE_ACL_CONFIG
            | req::DELETE_ACL_CONFIG
            | req::UPDATE_GLOBAL_WHITE_ADDRS_CONFIG
    )
}

/// `a=PUB,b=SUB` → entries.
fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// UPDATE_AND_CREATE_ACL_CONFIG: Java's merge: fields the request leaves out keep the
/// account's current values; `admin` is always taken from the request.
fn update_account(acl: &Acl, cmd: &RemotingCommand) -> RemotingCommand {
    let failed = |e: String| cmd.error_to(resp::UPDATE_AND_CREATE_ACL_CONFIG_FAILED, e);
    let Some(access_key) = cmd.ext("accessKey").filter(|k| !k.trim().is_empty()) else {
        return failed("accessKey is required".into());
    };
    let rules = acl.rules();
    let old = rules.account(access_key);
    let given = |k: &str| cmd.ext(k).filter(|v| !v.is_empty());
    let secret = given("secretKey").or(old.map(|a| a.secret_key.as_str()));
    let white = cmd
        .ext("whiteRemoteAddress")
        .or(old.map(|a| a.white_remote_address.as_str()));
    let perm_text = |k: &str, old_perm: Option<u8>| {
        given(k)
            .map(str::to_string)
            .or(old_perm.map(|p| perm_name(p).to_string()))
    };
    let topic_default = perm_text("defaultTopicPerm", old.map(|a| a.default_topic_perm));
    let group_default = perm_text("defaultGroupPerm", old.map(|a| a.default_group_perm));
    let perms = |k: &str, old: Option<&[(String, u8)]>| match cmd.ext(k) {
        Some(list) => split_list(list),
        None => old
            .unwrap_or_default()
            .iter()
            .map(|(n, p)| format!("{n}={}", perm_name(*p)))
            .collect(),
    };
    let topic_perms = perms("topicPerms", old.map(|a| &a.topic_perms[..]));
    let group_perms = perms("groupPerms", old.map(|a| &a.group_perms[..]));
    let admin = cmd.ext("admin").is_some_and(|v| v.trim() == "true");
    let account = Account::build(
        access_key,
        secret.unwrap_or_default(),
        white.unwrap_or_default(),
        admin,
        topic_default.as_deref(),
        group_default.as_deref(),
        &topic_perms,
        &group_perms,
    );
    match account.and_then(|a| acl.upsert_account(a)) {
        Ok(()) => cmd.success_to(),
        Err(e) => failed(e.to_string()),
    }
}

/// DELETE_ACL_CONFIG.
fn delete_account(acl: &Acl, cmd: &RemotingCommand) -> RemotingCommand {
    match acl.delete_account(cmd.ext("accessKey").unwrap_or_default()) {
        Ok(()) => cmd.success_to(),
        Err(e) => cmd.error_to(resp::DELETE_ACL_CONFIG_FAILED, e.to_string()),
    }
}

/// UPDATE_GLOBAL_WHITE_ADDRS_CONFIG: `globalWhiteAddrs` comma-separated, `aclFileFullPath`
/// optional.
fn update_global_white(acl: &Acl, cmd: &RemotingCommand) -> RemotingCommand {
    let patterns = split_list(cmd.ext("globalWhiteAddrs").unwrap_or_default());
    let file = cmd
        .ext("aclFileFullPath")
        .filter(|p| !p.is_empty())
        .map(Path::new);
    match acl.set_global_white(&patterns, file) {
        Ok(()) => cmd.success_to(),
        Err(e) => cmd.error_to(resp::UPDATE_GLOBAL_WHITE_ADDRS_CONFIG_FAILED, e.to_string()),
    }
}

/// GET_BROKER_CLUSTER_ACL_INFO: Java's GetBrokerAclConfigResponseHeader.
fn versions(acl: &Acl, cmd: &RemotingCommand, broker: BrokerIdentity<'_>) -> RemotingCommand {
    let versions = acl.versions();
    let main = versions
        .get(&acl.sources().main)
        .or_else(|| versions.values().next())
        .map(|v| v.to_json())
        .unwrap_or_default();
    let all: serde_json::Map<String, serde_json::Value> = versions
        .iter()
        .map(|(path, v)| (path.display().to_string(), v.to_json()))
        .collect();
    let mut reply = cmd.success_to();
    reply.set_ext("version", main.to_string());
    reply.set_ext("brokerName", broker.name);
    reply.set_ext("brokerAddr", broker.addr);
    reply.set_ext("clusterName", broker.cluster);
    reply.set_ext(
        "allAclFileVersion",
        serde_json::Value::Object(all).to_string(),
    );
    reply
}

/// An account as Java's `PlainAccessConfig` JSON.
pub fn account_json(a: &Account) -> serde_json::Value {
    let perms = |list: &[(String, u8)]| -> Vec<String> {
        list.iter()
            .map(|(n, p)| format!("{n}={}", perm_name(*p)))
            .collect()
    };
    serde_json::json!({
        "accessKey": a.access_key,
        "secretKey": a.secret_key,
        "whiteRemoteAddress": a.white_remote_address,
        "admin": a.admin,
        "defaultTopicPerm": perm_name(a.default_topic_perm),
        "defaultGroupPerm": perm_name(a.default_group_perm),
        "topicPerms": perms(&a.topic_perms),
        "groupPerms": perms(&a.group_perms),
    })
}

/// GET_BROKER_CLUSTER_ACL_CONFIG: every file's global white list and accounts
/// (GetBrokerClusterAclConfigResponseBody). Admin accounts only: it carries the secrets.
fn config(acl: &Acl, cmd: &RemotingCommand) -> RemotingCommand {
    let rules = acl.rules();
    let white: Vec<&str> = rules
        .files
        .iter()
        .flat_map(|f| f.global_white.iter().map(|(p, _)| p.as_str()))
        .collect();
    let accounts: Vec<serde_json::Value> = rules
        .files
        .iter()
        .flat_map(|f| f.accounts.iter().map(account_json))
        .collect();
    let body = serde_json::json!({"globalWhiteAddrs": white, "plainAccessConfigs": accounts});
    cmd.success_to().with_body(body.to_string().into_bytes())
}
