//! mqadmin's ACL commands: updateAclConfig, deleteAclConfig, updateGlobalWhiteAddr,
//! clusterAclConfigVersion, getAclConfig (UPDATE_AND_CREATE_ACL_CONFIG, DELETE_ACL_CONFIG,
//! UPDATE_GLOBAL_WHITE_ADDRS_CONFIG, GET_BROKER_CLUSTER_ACL_INFO, GET_BROKER_CLUSTER_ACL_CONFIG),
//! on one broker (`-b`) or every master of a cluster (`-c`). They need an admin account on a
//! ringmq broker (`--accessKey`/`--secretKey`, or conf/tools.yml).

use clap::Args;
use serde::Serialize;

use super::cluster::{partial_failure, targets};
use super::output::{self, left, out, Table};
use super::{broker, call, command, AdminError, Common, Target, Targeted};
use crate::remoting::request;

#[derive(Args, Debug)]
pub(super) struct UpdateAclArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    target: Target,
    /// The account's access key.
    #[arg(short = 'a', long = "accessKey")]
    access_key: String,
    /// Its secret key.
    #[arg(short = 's', long = "secretKey")]
    secret_key: String,
    /// Addresses that may use the account without a signature.
    #[arg(short = 'w', long = "whiteRemoteAddress")]
    white_remote_address: Option<String>,
    /// Permission on topics not listed: DENY, PUB, SUB or PUB|SUB.
    #[arg(short = 'i', long = "defaultTopicPerm")]
    default_topic_perm: Option<String>,
    /// Permission on groups not listed.
    #[arg(short = 'u', long = "defaultGroupPerm")]
    default_group_perm: Option<String>,
    /// Topic permissions, e.g. topicA=DENY,topicD=SUB.
    #[arg(short = 't', long = "topicPerms")]
    topic_perms: Option<String>,
    /// Group permissions, e.g. groupD=DENY,groupE=SUB.
    #[arg(short = 'g', long = "groupPerms")]
    group_perms: Option<String>,
    /// Admin account (may create topics and groups, change the broker and the ACL).
    #[arg(short = 'm', long = "admin")]
    admin: Option<bool>,
}

#[derive(Args, Debug)]
pub(super) struct DeleteAclArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    target: Target,
    /// The account to delete.
    #[arg(short = 'a', long = "accessKey")]
    access_key: String,
}

#[derive(Args, Debug)]
pub(super) struct GlobalWhiteArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    target: Target,
    /// The global white list, comma separated (it replaces the file's list).
    #[arg(short = 'g', long = "globalWhiteRemoteAddresses")]
    addresses: String,
    /// The ACL file to change (one of the broker's; default: its main file).
    #[arg(short = 'p', long = "aclFileFullPath")]
    file: Option<String>,
}

/// One broker's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    broker_addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Sends `cmd` to every target; prints `done` per success (text mode).
fn each_target(
    common: &Common,
    target: &Target,
    cmd: crate::remoting::RemotingCommand,
    done: impl Fn(&str) -> String,
) -> Result<(), AdminError> {
    let mut results = Vec::new();
    for m in targets(common, target, false)? {
        let answer = broker(&m.addr)
            .and_then(|mut conn| call(&mut conn, cmd.clone(), &format!("to broker {}", m.addr)));
        if answer.is_ok() && !common.json {
            out!("{}", done(&m.addr));
        }
        results.push(Outcome {
            broker_addr: m.addr,
            error: answer.err().map(|e| e.to_string()),
        });
    }
    if common.json {
        output::print_json(&results)?;
    }
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.error).collect();
    partial_failure(&failed)
}

/// `updateAclConfig`.
pub(super) fn update_acl(args: &UpdateAclArgs) -> Result<(), AdminError> {
    let mut fields = vec![
        ("accessKey", args.access_key.as_str()),
        ("secretKey", args.secret_key.as_str()),
    ];
    let optional = [
        ("whiteRemoteAddress", &args.white_remote_address),
        ("defaultTopicPerm", &args.default_topic_perm),
        ("defaultGroupPerm", &args.default_group_perm),
        ("topicPerms", &args.topic_perms),
        ("groupPerms", &args.group_perms),
    ];
    for (key, value) in &optional {
        if let Some(v) = value {
            fields.push((key, v.as_str()));
        }
    }
    let admin = args.admin.unwrap_or(false).to_string();
    fields.push(("admin", admin.as_str()));
    let cmd = command(request::UPDATE_AND_CREATE_ACL_CONFIG, &fields);
    each_target(&args.common, &args.target, cmd, |addr| {
        format!("create or update plain access config to {addr} success.")
    })
}

/// `deleteAclConfig`.
pub(super) fn delete_acl(args: &DeleteAclArgs) -> Result<(), AdminError> {
    let ak = args.access_key.as_str();
    let cmd = command(request::DELETE_ACL_CONFIG, &[("accessKey", ak)]);
    each_target(&args.common, &args.target, cmd, |addr| {
        format!(
            "delete plain access config account from {addr} success.\naccount's accesskey is:{ak}"
        )
    })
}

/// `updateGlobalWhiteAddr`.
pub(super) fn update_global_white(args: &GlobalWhiteArgs) -> Result<(), AdminError> {
    let mut fields = vec![("globalWhiteAddrs", args.addresses.as_str())];
    if let Some(file) = &args.file {
        fields.push(("aclFileFullPath", file.as_str()));
    }
    let cmd = command(request::UPDATE_GLOBAL_WHITE_ADDRS_CONFIG, &fields);
    each_target(&args.common, &args.target, cmd, |addr| {
        format!("update global white remote addresses to {addr} success.")
    })
}

/// One ACL file's version on one broker.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileVersion {
    cluster_name: String,
    broker_name: String,
    broker_addr: String,
    acl_file_path: String,
    counter: i64,
    timestamp: i64,
}

/// `clusterAclConfigVersion`: every ACL file of every broker, its version and update time.
pub(super) fn cluster_acl_version(args: &Targeted) -> Result<(), AdminError> {
    let mut rows = Vec::new();
    for m in targets(&args.common, &args.target, false)? {
        let mut conn = broker(&m.addr)?;
        let cmd = command(request::GET_BROKER_CLUSTER_ACL_INFO, &[]);
        let reply = call(&mut conn, cmd, &format!("to broker {}", m.addr))?;
        let field = |k: &str| reply.ext(k).unwrap_or_default().to_string();
        let all: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&field("allAclFileVersion")).unwrap_or_default();
        for (path, version) in all {
            rows.push(FileVersion {
                cluster_name: field("clusterName"),
                broker_name: field("brokerName"),
                broker_addr: field("brokerAddr"),
                acl_file_path: path,
                counter: version["counter"].as_i64().unwrap_or(0),
                timestamp: version["timestamp"].as_i64().unwrap_or(0),
            });
        }
    }
    if args.common.json {
        return output::print_json(&rows);
    }
    let mut table = Table::new(&[
        left("#Cluster Name", 20, "  "),
        left("#Broker Name", 20, "  "),
        left("#Broker Addr", 22, "  "),
        left("#AclFilePath", 40, "  "),
        left("#AclConfigVersionNum", 20, "  "),
        left("#AclLastUpdateTime", 23, ""),
    ]);
    for r in rows {
        table.row(vec![
            r.cluster_name,
            r.broker_name,
            r.broker_addr,
            r.acl_file_path,
            r.counter.to_string(),
            output::date_time_millis(r.timestamp),
        ]);
    }
    table.print();
    Ok(())
}

/// `getAclConfig`: each broker's global white list and accounts (secrets included: admin
/// accounts only).
pub(super) fn get_acl_config(args: &Targeted) -> Result<(), AdminError> {
    let mut all = serde_json::Map::new();
    for m in targets(&args.common, &args.target, false)? {
        let mut conn = broker(&m.addr)?;
        let cmd = command(request::GET_BROKER_CLUSTER_ACL_CONFIG, &[]);
        let reply = call(&mut conn, cmd, &format!("to broker {}", m.addr))?;
        let body: serde_json::Value = serde_json::from_slice(&reply.body).map_err(|e| {
            AdminError::Failed(format!(
                "the ACL config from {} does not parse: {e}",
                m.addr
            ))
        })?;
        all.insert(m.addr, body);
    }
    if args.common.json {
        return output::print_json(&all);
    }
    for (addr, body) in &all {
        out!("broker {addr}:");
        out!("globalWhiteRemoteAddresses: {}", body["globalWhiteAddrs"]);
        for account in body["plainAccessConfigs"].as_array().into_iter().flatten() {
            out!("{account}");
        }
    }
    Ok(())
}
