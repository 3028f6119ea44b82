//! VIEW_BROKER_STATS_DATA (315) and GET_BROKER_CONSUME_STATS (317) on the control shard, over
//! the per-topic and per-group items the shards count ([`crate::broker::stats`]).

use std::cell::RefCell;

use super::admin_consumer::{consume_stats_body, consumed_topics};
use super::admin_shards::{encode_failure, AllShards};
use super::{field_failure, Failure};
use crate::broker::consumer_groups::ClientRegistry;
use crate::broker::context::BrokerContext;
use crate::broker::services::group_book::GroupBook;
use crate::broker::services::topic_book::TopicBook;
use crate::config::BrokerConfig;
use crate::protocol::Fields;
use crate::remoting::{response as resp, RemotingCommand};

/// VIEW_BROKER_STATS_DATA (315): header `statsName`, `statsKey` (a topic, `topic@group`,
/// or the cluster name for BROKER_*); a `BrokerStatsData` body. An item nothing counted
/// yet gets Java's SYSTEM_ERROR "The stats <name> <key> not exist".
pub(crate) async fn view_stats(
    cfg: &BrokerConfig,
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let name = cmd.req_str("statsName").map_err(field_failure)?;
    let key = cmd.req_str("statsKey").map_err(field_failure)?;
    let not_exist = || {
        (
            resp::SYSTEM_ERROR,
            format!("The stats <{name}> <{key}> not exist"),
        )
    };
    let wrong_cluster = name.starts_with("BROKER_") && key != cfg.broker_cluster_name;
    if wrong_cluster {
        return Err(not_exist());
    }
    let data = all.measured(name, key).await?.ok_or_else(not_exist)?;
    let body = serde_json::to_vec(&data).map_err(encode_failure)?;
    Ok(cmd.success_to().with_body(body))
}

/// GET_BROKER_CONSUME_STATS (317, mqadmin `brokerConsumeStats`): a `ConsumeStatsList` of
/// every subscription group's topics with offsets here (`isOrder`: order topics only).
pub(crate) async fn broker_consume_stats(
    ctx: &BrokerContext,
    topics: &TopicBook,
    groups: &GroupBook,
    clients: &RefCell<ClientRegistry>,
    all: &AllShards<'_>,
    cmd: &RemotingCommand,
) -> Result<RemotingCommand, Failure> {
    let only_order = cmd.bool_or("isOrder", false);
    let names = groups.names();
    let offsets = all.offsets().await?;
    let mut list = Vec::new();
    let mut total_diff = 0i64;
    for group in names {
        let mut stats = Vec::new();
        for topic in offsets.consumer.topics_of_group(&group) {
            let one = [topic.to_string()];
            let consumed = consumed_topics(topics, clients, &group, &one);
            let (body, diff) =
                consume_stats_body(&ctx.cfg, all, &group, consumed, only_order).await?;
            if body.ends_with(r#""offsetTable":{}}"#) {
                continue;
            }
            total_diff += diff;
            stats.push(body);
        }
        let name = serde_json::to_string(&group).map_err(encode_failure)?;
        list.push(format!("{{{name}:[{}]}}", stats.join(",")));
    }
    let addr = serde_json::to_string(&ctx.broker_addr).map_err(encode_failure)?;
    let body = format!(
        r#"{{"brokerAddr":{addr},"consumeStatsList":[{}],"totalDiff":{total_diff}}}"#,
        list.join(",")
    );
    Ok(cmd.success_to().with_body(body.into_bytes()))
}
