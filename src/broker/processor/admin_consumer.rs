//! Consumer-side admin on the control shard: subscription groups (200, 201, 207, persisted to
//! subscriptionGroup.json), client connections from the registry (203, 204), consume stats (208,
//! per queue from the shards that own it), every shard's consumer and delay offsets merged (43,
//! 45), who consumes a topic (300) and CHECK_CLIENT_CONFIG (46). Codes, remarks and bodies are
//! Java 4.9.x's (`AdminBrokerProcessor`, `ClientManageProcessor`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::admin_shards::{
    encode_failure, encode_mq_map, message_queue, refuse_on_slave, AllShards,
};
use super::{field_failure, Failure};
use crate::broker::consumer_groups::{ClientChannel, ClientRegistry};
use crate::broker::control::groups_changed;
use crate::broker::live_config::LiveConfig;
use crate::broker::mesh_proto::{AdminAnswer, AdminQuery};
use crate::broker::services::group_book::GroupBook;
use crate::broker::services::mesh_client::MeshClient;
use crate::broker::services::subscriptions::SubscriptionReplica;
use crate::broker::services::topic_book::TopicBook;
use crate::config::BrokerConfig;
use crate::protocol::heartbeat::{ConsumeType, MessageModel, SubscriptionData};
use crate::protocol::{lenient, Fields};
use crate::remoting::{response as resp, RemotingCommand};
use crate::store::metadata::{self, SubscriptionGroupConfig};

/// `Connection` of ConsumerConnection / ProducerConnection bodies (fastjson field order), plus
/// ringmq's `refusedCount`: requests refused on this connection's peer address, summed over the
/// shards (crate::refusal; Java's readers ignore the extra key).
#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct Connection {
    client_addr: String,
    client_id: String,
    language: &'static str,
    refused_count: u64,
    version: i32,
}

/// Refused requests per peer address, over every shard.
type RefusedByPeer = HashMap<SocketAddr, u64>;

impl Connection {
    fn of(client: &ClientChannel, refused: &RefusedByPeer) -> Connection {
        Connection {
            client_addr: client.addr.to_string(),
            client_id: client.client_id.clone(),
            language: client.language.name(),
            refused_count: refused.get(&client.addr).copied().unwrap_or(0),
            version: client.version,
        }
    }
}

/// GET_CONSUMER_CONNECTION_LIST's body (`ConsumerConnection`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConsumerConnection<'a> {
    connection_set: Vec<Connection>,
    consume_from_where: &'a str,
    consume_type: ConsumeType,
    message_model: MessageModel,
    subscription_table: &'a BTreeMap<String, SubscriptionData>,
}

/// GET_PRODUCER_CONNECTION_LIST's body (`ProducerConnection`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProducerConnection {
    connection_set: Vec<Connection>,
}

/// `OffsetWrapper` of a ConsumeStats body (fastjson field order).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OffsetWrapper {
    broker_offset: i64,
    consumer_offset: i64,
    last_timestamp: i64,
}

/// QUERY_TOPIC_CONSUME_BY_WHO's body (`GroupList`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupList {
    group_list: BTreeSet<String>,
}

/// CHECK_CLIENT_CONFIG's body (`CheckClientRequestBody`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckClientRequest {
    #[serde(default)]
    subscription_data: Option<SubscriptionData>,
}

/// UPDATE_AND_CREATE_SUBSCRIPTIONGROUP (200): body = SubscriptionGroupConfig JSON.
pub(crate) async fn update_group(
    cfg: &BrokerConfig,
    groups: &GroupBook,
    subscriptions: &SubscriptionReplica,
    mesh: &MeshClient,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    refuse_on_slave(cfg)?;
    let config: SubscriptionGroupConfig = lenient::from_slice(&cmd.body).map_err(|e| {
        let remark = format!("the subscription group body does not parse: {e}");
        (resp::SYSTEM_ERROR, remark)
    })?;
    if config.group_name.trim().is_empty() {
        let remark = "the subscription group has no groupName".to_string();
        return Err((resp::SYSTEM_ERROR, remark));
    }
    tracing::info!(
        ?config,
        "subscription group created or updated by an admin request"
    );
    groups.update(config);
    groups_changed(subscriptions, mesh).await;
    persist_groups(groups).await?;
    Ok(cmd.success_to())
}

/// GET_ALL_SUBSCRIPTIONGROUP_CONFIG (201): the table as subscriptionGroup.json holds it.
pub(crate) fn all_groups(
    groups: &GroupBook,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let body = groups.encode_compact().map_err(encode_failure)?;
    Ok(cmd.success_to().with_body(body))
}

/// DELETE_SUBSCRIPTIONGROUP (207): header `groupName`, `removeOffset` (also drops the
/// group's consumer offsets on every shard).
pub(crate) async fn delete_group(
    cfg: &BrokerConfig,
    groups: &GroupBook,
    subscriptions: &SubscriptionReplica,
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    refuse_on_slave(cfg)?;
    let group = cmd.req_str("groupName").map_err(field_failure)?;
    if groups.delete(group) {
        tracing::info!(group, "subscription group deleted by an admin request");
        groups_changed(subscriptions, all.mesh).await;
        persist_groups(groups).await?;
    }
    if cmd.bool_or("removeOffset", false) {
        let remove = || AdminQuery::RemoveGroupOffsets {
            group: group.to_string(),
        };
        all.ask(remove).await?;
    }
    Ok(cmd.success_to())
}

/// Writes the subscription group table off the shard thread and waits for it.
async fn persist_groups(groups: &GroupBook) -> Result<(), Failure> {
    let job = groups.persist_job().map_err(|e| {
        let remark = format!("the subscription groups cannot be encoded: {e}");
        (resp::SYSTEM_ERROR, remark)
    })?;
    job.run().await.map_err(|e| {
        let remark = format!("the subscription groups are not persisted: {e}");
        (resp::SYSTEM_ERROR, remark)
    })
}

/// Refused requests per peer, summed over every shard.
async fn refused_by_peer(all: &AllShards<'_>) -> Result<RefusedByPeer, Failure> {
    let mut total = RefusedByPeer::new();
    for answer in all.ask(|| AdminQuery::Refusals).await? {
        if let AdminAnswer::Refusals(counts) = answer {
            for (peer, n) in counts {
                *total.entry(peer).or_default() += n;
            }
        }
    }
    Ok(total)
}

/// GET_CONSUMER_CONNECTION_LIST (203).
pub(crate) async fn consumer_connections(
    clients: &RefCell<ClientRegistry>,
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let group = cmd.req_str("consumerGroup").map_err(field_failure)?;
    let refused = refused_by_peer(all).await?;
    let clients = clients.borrow();
    let Some(info) = clients.consumer_group(group) else {
        let remark = format!("the consumer group[{group}] not online");
        return Err((resp::CONSUMER_NOT_ONLINE, remark));
    };
    let mut connection_set: Vec<Connection> = info
        .channels
        .values()
        .map(|c| Connection::of(c, &refused))
        .collect();
    connection_set.sort();
    let body = serde_json::to_vec(&ConsumerConnection {
        connection_set,
        consume_from_where: &info.consume_from_where,
        consume_type: info.consume_type,
        message_model: info.message_model,
        subscription_table: &info.subscriptions,
    })
    .map_err(encode_failure)?;
    Ok(cmd.success_to().with_body(body))
}

/// GET_PRODUCER_CONNECTION_LIST (204); Java answers SYSTEM_ERROR for an unknown group.
pub(crate) async fn producer_connections(
    clients: &RefCell<ClientRegistry>,
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let group = cmd.req_str("producerGroup").map_err(field_failure)?;
    let refused = refused_by_peer(all).await?;
    let clients = clients.borrow();
    let channels = clients.producer_channels(group);
    if channels.is_empty() {
        let remark = format!("the producer group[{group}] not exist");
        return Err((resp::SYSTEM_ERROR, remark));
    }
    let mut connection_set: Vec<Connection> = channels
        .into_iter()
        .map(|c| Connection::of(c, &refused))
        .collect();
    connection_set.sort();
    let body = serde_json::to_vec(&ProducerConnection { connection_set });
    Ok(cmd.success_to().with_body(body.map_err(encode_failure)?))
}

/// GET_CONSUME_STATS (208): header `consumerGroup`, optional `topic`. Per read queue of
/// each topic the group has offsets on (or of `topic`): the queue's max offset, the group's
/// offset and the store time of the last consumed message; topics the group's online
/// members do not subscribe to are left out. `consumeTps` is measured (see
/// [`consume_stats_body`]).
pub(crate) async fn consume_stats(
    cfg: &BrokerConfig,
    topics: &TopicBook,
    clients: &RefCell<ClientRegistry>,
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let group = cmd.req_str("consumerGroup").map_err(field_failure)?;
    let candidates: Vec<String> = match cmd.opt_str("topic").filter(|t| !t.trim().is_empty()) {
        Some(topic) => vec![topic.to_string()],
        None => {
            let offsets = all.offsets().await?;
            let topics = offsets.consumer.topics_of_group(group);
            topics.map(str::to_string).collect()
        }
    };
    let consumed = consumed_topics(topics, clients, group, &candidates);
    let (body, _) = consume_stats_body(cfg, all, group, consumed, false).await?;
    Ok(cmd.success_to().with_body(body.into_bytes()))
}

/// A `ConsumeStats` body of `group` over `topics` (from [`consumed_topics`]; with
/// `only_order`, order topics only), and its total diff. `consumeTps` is the group's measured
/// GROUP_GET_NUMS rate over the last minute, summed over the topics (Java's
/// `tpsGroupGetNums`).
pub(crate) async fn consume_stats_body(
    cfg: &BrokerConfig,
    all: &AllShards<'_>,
    group: &str,
    topics: Vec<(String, i32)>,
    only_order: bool,
) -> Result<(String, i64), Failure> {
    let mut entries = Vec::new();
    let (mut tps, mut diff) = (0.0, 0i64);
    for (topic, queues) in topics {
        if only_order && !all.here.topics.get(&topic).is_some_and(|t| t.order) {
            continue;
        }
        for s in all.queue_stats(&topic, queues, Some(group)).await? {
            let wrapper = OffsetWrapper {
                broker_offset: s.max_offset,
                consumer_offset: s.consumer_offset.unwrap_or(0).max(0),
                last_timestamp: s.consumer_timestamp,
            };
            diff += wrapper.broker_offset - wrapper.consumer_offset;
            entries.push((message_queue(cfg, &topic, s.queue_id), wrapper));
        }
        tps += all.group_get_tps(&topic, group).await?;
    }
    let table = encode_mq_map(&entries).map_err(encode_failure)?;
    let tps = super::admin_runtime::java_double(tps);
    Ok((
        format!(r#"{{"consumeTps":{tps},"offsetTable":{table}}}"#),
        diff,
    ))
}

/// The topics of `candidates` that exist, with their read queue counts, minus those the
/// group's online members do not subscribe to (Java's checks in `getConsumeStats`).
pub(crate) fn consumed_topics(
    topics: &TopicBook,
    clients: &RefCell<ClientRegistry>,
    group: &str,
    candidates: &[String],
) -> Vec<(String, i32)> {
    let clients = clients.borrow();
    let subscribed = clients.consumer_group(group).map(|g| &g.subscriptions);
    let mut found = Vec::new();
    for topic in candidates {
        let Some(config) = topics.get(topic) else {
            tracing::warn!(group, topic, "consume stats: the topic does not exist");
            continue;
        };
        if subscribed.is_some_and(|s| !s.is_empty() && !s.contains_key(topic)) {
            continue;
        }
        found.push((topic.clone(), config.read_queue_nums));
    }
    found
}

/// GET_ALL_CONSUMER_OFFSET (43): `{"offsetTable":{"T@g":{"0":12}}}` of every shard.
pub(crate) async fn all_consumer_offsets(
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let offsets = all.offsets().await?;
    let body = metadata::encode_compact(&offsets.consumer).map_err(encode_failure)?;
    Ok(cmd.success_to().with_body(body))
}

/// GET_ALL_DELAY_OFFSET (45): `{"offsetTable":{"1":0}}` of every shard.
pub(crate) async fn all_delay_offsets(
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let offsets = all.offsets().await?;
    let body = metadata::encode_compact(&offsets.delay).map_err(encode_failure)?;
    Ok(cmd.success_to().with_body(body))
}

/// QUERY_TOPIC_CONSUME_BY_WHO (300): online groups subscribed to the topic and groups
/// with offsets on it.
pub(crate) async fn topic_consumed_by(
    clients: &RefCell<ClientRegistry>,
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let topic = cmd.req_str("topic").map_err(field_failure)?;
    let mut group_list: BTreeSet<String> = {
        let clients = clients.borrow();
        let groups = clients.consumer_groups();
        let subscribed = groups.filter(|g| clients.subscription(g, topic).is_some());
        subscribed.map(str::to_string).collect()
    };
    let offsets = all.offsets().await?;
    group_list.extend(offsets.consumer.groups_of_topic(topic).map(str::to_string));
    let body = serde_json::to_vec(&GroupList { group_list }).map_err(encode_failure)?;
    Ok(cmd.success_to().with_body(body))
}

/// CHECK_CLIENT_CONFIG (46): TAG subscriptions pass; SQL92 ones are compiled, and refused
/// as Java does without `enablePropertyFilter` (SYSTEM_ERROR), or with
/// SUBSCRIPTION_PARSE_FAILED and what is wrong when the expression does not compile.
pub(crate) fn check_client_config(
    live: &LiveConfig,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    if cmd.body.is_empty() {
        return Ok(cmd.success_to());
    }
    let request: CheckClientRequest = lenient::from_slice(&cmd.body).map_err(|e| {
        let remark = format!("the check client body does not parse: {e}");
        (resp::SYSTEM_ERROR, remark)
    })?;
    let Some(subscription) = request.subscription_data else {
        return Ok(cmd.success_to());
    };
    let kind = subscription.expression_type.as_str();
    if super::filter::is_tag_type(kind) {
        return Ok(cmd.success_to());
    }
    let enabled = live.enable_property_filter();
    super::filter::sql_selector(enabled, kind, &subscription.sub_string)?;
    Ok(cmd.success_to())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_json_has_javas_field_order() {
        let conn = Connection {
            client_addr: "10.0.0.5:53412".into(),
            client_id: "c1".into(),
            language: "JAVA",
            refused_count: 2,
            version: 409,
        };
        let body = serde_json::to_string(&ProducerConnection {
            connection_set: vec![conn],
        })
        .unwrap();
        assert_eq!(
            body,
            concat!(
                r#"{"connectionSet":[{"clientAddr":"10.0.0.5:53412","clientId":"c1","#,
                r#""language":"JAVA","refusedCount":2,"version":409}]}"#
            )
        );
        let groups = GroupList {
            group_list: ["b".to_string(), "a".to_string()].into(),
        };
        assert_eq!(
            serde_json::to_string(&groups).unwrap(),
            r#"{"groupList":["a","b"]}"#
        );
    }

    #[test]
    fn check_client_bodies_parse() {
        let sql = br#"{"clientId":"c","group":"g","subscriptionData":{"classFilterMode":false,
            "codeSet":[],"expressionType":"SQL92","subString":"a > 1","subVersion":1,
            "tagsSet":[],"topic":"T"}}"#;
        let parsed: CheckClientRequest = metadata::decode_json(sql).unwrap();
        assert_eq!(parsed.subscription_data.unwrap().expression_type, "SQL92");
        let none: CheckClientRequest = metadata::decode_json(br#"{"clientId":"c"}"#).unwrap();
        assert!(none.subscription_data.is_none());
    }
}
