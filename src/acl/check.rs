//! The check a request passes before any processor sees it (RocketMQ's
//! `PlainAccessResource.parse` then `PlainPermissionManager.validate`): a globally white-listed
//! peer passes; otherwise the `AccessKey` must name an account, a peer matching the account's
//! `whiteRemoteAddress` passes, else the `Signature` must be the account's; then an admin-only
//! request code needs an `admin` account, and every resource the request touches needs the
//! permission its code implies.
//!
//! Resources per request code, as Java 4.9 (a group is checked as `%RETRY%group`):
//!
//! | request | needs |
//! |---|---|
//! | SEND_MESSAGE, SEND_MESSAGE_V2, SEND_BATCH_MESSAGE | PUB on the topic (SUB on the group when the topic is a group's `%RETRY%` topic) |
//! | CONSUMER_SEND_MSG_BACK | SUB on the group, PUB on `originTopic` |
//! | PULL_MESSAGE, UPDATE_CONSUMER_OFFSET, QUERY_CONSUMER_OFFSET | SUB on the topic and the group |
//! | QUERY_MESSAGE | SUB on the topic |
//! | HEART_BEAT | SUB on each consumer group and each subscribed topic |
//! | UNREGISTER_CLIENT, GET_CONSUMER_LIST_BY_GROUP | SUB on the group |
//!
//! ringmq checks two requests Java lets through with a signature alone: SEND_BATCH_MESSAGE
//! (Java's switch has no case for it, so any account could publish batches anywhere) and
//! QUERY_CONSUMER_OFFSET. Admin-only codes are Java's (UPDATE_AND_CREATE_TOPIC,
//! UPDATE_BROKER_CONFIG, DELETE_TOPIC_IN_BROKER, UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
//! DELETE_SUBSCRIPTIONGROUP) plus INVOKE_BROKER_TO_RESET_OFFSET and the ACL codes that change
//! or reveal accounts (50, 51, 53, 54: Java 4.9 lets any account rewrite the ACL file).

use std::net::IpAddr;

use super::error::AclError;
use super::rules::{grants, perm_name, Rules, PUB, RETRY_PREFIX, SUB};
use super::sign::{verify, ACCESS_KEY};
use crate::protocol::heartbeat::HeartbeatData;
use crate::remoting::{request as req, RemotingCommand};

/// Request codes only an `admin` account may send.
pub const ADMIN_CODES: [i32; 10] = [
    req::UPDATE_AND_CREATE_TOPIC,
    req::UPDATE_BROKER_CONFIG,
    req::DELETE_TOPIC_IN_BROKER,
    req::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
    req::DELETE_SUBSCRIPTIONGROUP,
    req::INVOKE_BROKER_TO_RESET_OFFSET,
    req::UPDATE_AND_CREATE_ACL_CONFIG,
    req::DELETE_ACL_CONFIG,
    req::UPDATE_GLOBAL_WHITE_ADDRS_CONFIG,
    req::GET_BROKER_CLUSTER_ACL_CONFIG,
];

/// Why a request was refused (answered NO_PERMISSION with `remark`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The account the request named (empty: none).
    pub access_key: String,
    /// Java's wording, with the account, resource and permission concerned.
    pub remark: String,
}

fn refuse(access_key: &str, remark: String) -> Refusal {
    Refusal {
        access_key: access_key.to_string(),
        remark,
    }
}

fn retry(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The resources `cmd` touches with the permission each needs; a heartbeat whose body does not
/// parse is refused here (its processor would refuse it too).
pub fn resources(cmd: &RemotingCommand) -> Result<Vec<(String, u8)>, AclError> {
    let ext = |k: &str| cmd.ext(k).unwrap_or_default().to_string();
    let mut out = Vec::new();
    let send = |topic: String, group: String, out: &mut Vec<(String, u8)>| {
        if topic.starts_with(RETRY_PREFIX) {
            out.push((retry(&group), SUB));
        } else {
            out.push((topic, PUB));
        }
    };
    match cmd.code {
        req::SEND_MESSAGE => send(ext("topic"), ext("producerGroup"), &mut out),
        req::SEND_MESSAGE_V2 | req::SEND_BATCH_MESSAGE => send(ext("b"), ext("a"), &mut out),
        req::CONSUMER_SEND_MSG_BACK => {
            out.push((retry(&ext("group")), SUB));
            out.push((ext("originTopic"), PUB));
        }
        req::PULL_MESSAGE | req::UPDATE_CONSUMER_OFFSET | req::QUERY_CONSUMER_OFFSET => {
            out.push((ext("topic"), SUB));
            out.push((retry(&ext("consumerGroup")), SUB));
        }
        req::QUERY_MESSAGE => out.push((ext("topic"), SUB)),
        req::HEART_BEAT => {
            let data: HeartbeatData =
                serde_json::from_slice(&cmd.body).map_err(AclError::HeartbeatBody)?;
            for consumer in &data.consumer_data_set {
                out.push((retry(&consumer.group_name), SUB));
                for sub in &consumer.subscription_data_set {
                    out.push((sub.topic.clone(), SUB));
                }
            }
        }
        req::UNREGISTER_CLIENT | req::GET_CONSUMER_LIST_BY_GROUP => {
            if let Some(group) = cmd.ext("consumerGroup").filter(|g| !g.is_empty()) {
                out.push((retry(group), SUB));
            }
        }
        _ => {}
    }
    Ok(out)
}

/// `group:NAME` or `topic:NAME`, as Java's `printStr`.
fn describe(resource: &str) -> String {
    match resource.strip_prefix(RETRY_PREFIX) {
        Some(group) => format!("group:{group}"),
        None => format!("topic:{resource}"),
    }
}

/// Checks `cmd` from `peer` against `rules`.
pub fn check(rules: &Rules, peer: IpAddr, cmd: &RemotingCommand) -> Result<(), Refusal> {
    if rules.globally_white(peer) {
        return Ok(());
    }
    let Some(access_key) = cmd.ext(ACCESS_KEY).filter(|k| !k.is_empty()) else {
        return Err(refuse(
            "",
            format!(
                "No accessKey is configured: request code {} from {peer} is not signed and the \
                 address is not white-listed",
                cmd.code
            ),
        ));
    };
    let Some(account) = rules.account(access_key) else {
        return Err(refuse(
            access_key,
            format!("No acl config for {access_key}"),
        ));
    };
    if account.white.matches(peer) {
        return Ok(());
    }
    if !verify(cmd, &account.secret_key) {
        return Err(refuse(
            access_key,
            format!("Check signature failed for accessKey={access_key}"),
        ));
    }
    if ADMIN_CODES.contains(&cmd.code) && !account.admin {
        return Err(refuse(
            access_key,
            format!(
                "Need admin permission for request code={}, but accessKey={access_key} is not",
                cmd.code
            ),
        ));
    }
    let needed = resources(cmd).map_err(|e| refuse(access_key, e.to_string()))?;
    for (resource, perm) in needed {
        let Some(owned) = account.owned(&resource) else {
            continue;
        };
        if !grants(perm, owned) {
            return Err(refuse(
                access_key,
                format!(
                    "No permission for {}: accessKey={access_key} has {}, the request needs {}",
                    describe(&resource),
                    perm_name(owned),
                    perm_name(perm)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::acl::rules::AclFile;
    use crate::acl::sign::{sign, Credentials};

    const FILE: &str = "\
globalWhiteRemoteAddresses: [10.9.9.*]
accounts:
  - accessKey: producer1
    secretKey: secret-p
    defaultTopicPerm: DENY
    defaultGroupPerm: DENY
    topicPerms: [orders=PUB, audit=SUB]
  - accessKey: consumer1
    secretKey: secret-c
    defaultTopicPerm: SUB
    defaultGroupPerm: SUB
    groupPerms: [blocked=DENY]
  - accessKey: adminacct
    secretKey: secret-a
    whiteRemoteAddress: 10.1.1.1
    admin: true
";

    fn rules() -> Rules {
        Rules::new(vec![AclFile::parse(Path::new("p.yml"), FILE).unwrap()]).unwrap()
    }

    fn peer() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    fn signed(mut cmd: RemotingCommand, ak: &str, sk: &str) -> RemotingCommand {
        sign(&mut cmd, &Credentials::new(ak, sk));
        cmd
    }

    fn send(topic: &str) -> RemotingCommand {
        RemotingCommand::request(req::SEND_MESSAGE_V2)
            .with_ext("a", "PG")
            .with_ext("b", topic)
            .with_body(&b"x"[..])
    }

    fn remark(r: Result<(), Refusal>) -> String {
        r.expect_err("refused").remark
    }

    #[test]
    fn signature_and_account_are_checked_first() {
        let rules = rules();
        assert!(check(
            &rules,
            peer(),
            &signed(send("orders"), "producer1", "secret-p")
        )
        .is_ok());
        let wrong = remark(check(
            &rules,
            peer(),
            &signed(send("orders"), "producer1", "nope"),
        ));
        assert_eq!(wrong, "Check signature failed for accessKey=producer1");
        let unknown = remark(check(
            &rules,
            peer(),
            &signed(send("orders"), "stranger", "x"),
        ));
        assert_eq!(unknown, "No acl config for stranger");
        let unsigned = remark(check(&rules, peer(), &send("orders")));
        assert!(
            unsigned.starts_with("No accessKey is configured"),
            "{unsigned}"
        );
        // White-listed: globally, or the account's own address.
        assert!(check(&rules, "10.9.9.3".parse().unwrap(), &send("orders")).is_ok());
        let unsigned_admin = send("any").with_ext(ACCESS_KEY, "adminacct");
        assert!(check(&rules, "10.1.1.1".parse().unwrap(), &unsigned_admin).is_ok());
        assert!(check(&rules, peer(), &unsigned_admin).is_err());
    }

    #[test]
    fn permissions_follow_the_request_code() {
        let rules = rules();
        let p = |cmd| check(&rules, peer(), &signed(cmd, "producer1", "secret-p"));
        let denied = remark(p(send("elsewhere")));
        assert_eq!(
            denied,
            "No permission for topic:elsewhere: accessKey=producer1 has DENY, the request needs PUB"
        );
        assert!(remark(p(send("audit"))).contains("has SUB, the request needs PUB"));
        let pull = RemotingCommand::request(req::PULL_MESSAGE)
            .with_ext("consumerGroup", "g1")
            .with_ext("topic", "orders");
        assert!(p(pull.clone()).is_err(), "producer1 has no SUB");
        let c = |cmd| check(&rules, peer(), &signed(cmd, "consumer1", "secret-c"));
        assert!(c(pull.clone()).is_ok());
        let blocked = pull.with_ext("consumerGroup", "blocked");
        assert!(remark(c(blocked)).contains("group:blocked"));
        let create = RemotingCommand::request(req::UPDATE_AND_CREATE_TOPIC).with_ext("topic", "t");
        assert!(remark(c(create.clone())).starts_with("Need admin permission for request code=17"));
        assert!(check(&rules, peer(), &signed(create, "adminacct", "secret-a")).is_ok());
        let heartbeat = RemotingCommand::request(req::HEART_BEAT).with_body(
            &br#"{"clientID":"c","consumerDataSet":[{"groupName":"blocked","subscriptionDataSet":[{"topic":"orders","subString":"*"}]}],"producerDataSet":[]}"#[..],
        );
        assert!(remark(c(heartbeat)).contains("group:blocked"));
        // A resend to a group's retry topic needs SUB on the group, not PUB.
        assert!(c(send("%RETRY%g1").with_ext("a", "g1")).is_ok());
    }
}
