//! Group commands: updateSubGroup, deleteSubGroup, consumerProgress, consumerConnection,
//! producerConnection.

use std::collections::BTreeMap;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cluster::{cluster_info, members_of, targets, Member};
use super::output::{self, left, out, Table};
use super::topic::{route, select_addr};
use super::{
    broker, call, command, fetch_json, fetch_mq_table, AdminError, Common, GroupArgs, Target,
};
use crate::protocol::lenient;
use crate::remoting::{request, response};

use crate::names::{DLQ_GROUP_TOPIC_PREFIX, RETRY_GROUP_TOPIC_PREFIX};

#[derive(Args, Debug)]
pub(super) struct UpdateSubGroupArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    target: Target,
    /// Consumer group name.
    #[arg(short = 'g', long = "groupName")]
    group: String,
    /// Consuming enabled (`true`/`false`).
    #[arg(short = 's', long = "consumeEnable", action = ArgAction::Set, default_value = "true",
        value_parser = BoolishValueParser::new())]
    consume_enable: bool,
    /// Start from the min offset (`true`/`false`).
    #[arg(short = 'm', long = "consumeFromMinEnable", action = ArgAction::Set,
        default_value = "false", value_parser = BoolishValueParser::new())]
    consume_from_min_enable: bool,
    /// Broadcasting allowed (`true`/`false`).
    #[arg(short = 'd', long = "consumeBroadcastEnable", action = ArgAction::Set,
        default_value = "false", value_parser = BoolishValueParser::new())]
    consume_broadcast_enable: bool,
    /// Retry queue count.
    #[arg(short = 'q', long = "retryQueueNums", default_value_t = 1)]
    retry_queue_nums: i32,
    /// Retries before a message goes to the DLQ.
    #[arg(short = 'r', long = "retryMaxTimes", default_value_t = 16)]
    retry_max_times: i32,
    /// Consume from this broker id.
    #[arg(short = 'i', long = "brokerId", default_value_t = 0)]
    broker_id: i64,
    /// Broker id to consume from when consuming slowly.
    #[arg(
        short = 'w',
        long = "whichBrokerWhenConsumeSlowly",
        default_value_t = 1
    )]
    which_broker_when_consume_slowly: i64,
    /// Notify the group's clients when its members change (`true`/`false`).
    #[arg(short = 'a', long = "notifyConsumerIdsChanged", action = ArgAction::Set,
        default_value = "true", value_parser = BoolishValueParser::new())]
    notify_consumer_ids_changed: bool,
}

#[derive(Args, Debug)]
pub(super) struct DeleteSubGroupArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    target: Target,
    /// Consumer group name.
    #[arg(short = 'g', long = "groupName")]
    group: String,
    /// Also remove the group's consumer offsets (`true`/`false`).
    #[arg(short = 'r', long = "removeOffset", action = ArgAction::Set, default_value = "false",
        value_parser = BoolishValueParser::new())]
    remove_offset: bool,
}

#[derive(Args, Debug)]
pub(super) struct ProgressArgs {
    #[command(flatten)]
    common: Common,
    /// Consumer group name; without it, every group (of every `%RETRY%` topic) is summed up.
    #[arg(short = 'g', long = "groupName", visible_alias = "consumerGroup")]
    group: Option<String>,
}

#[derive(Args, Debug)]
pub(super) struct ProducerArgs {
    #[command(flatten)]
    common: Common,
    /// Producer group name.
    #[arg(short = 'g', long = "producerGroup")]
    group: String,
    /// A topic the group sends to (its brokers are asked).
    #[arg(short = 't', long = "topic")]
    topic: String,
}

/// `SubscriptionGroupConfig` (fields in fastjson's order).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionGroupConfig {
    broker_id: i64,
    consume_broadcast_enable: bool,
    consume_enable: bool,
    consume_from_min_enable: bool,
    group_name: String,
    notify_consumer_ids_changed_enable: bool,
    retry_max_times: i32,
    retry_queue_nums: i32,
    which_broker_when_consume_slowly: i64,
}

impl SubscriptionGroupConfig {
    fn of(args: &UpdateSubGroupArgs) -> SubscriptionGroupConfig {
        SubscriptionGroupConfig {
            broker_id: args.broker_id,
            consume_broadcast_enable: args.consume_broadcast_enable,
            consume_enable: args.consume_enable,
            consume_from_min_enable: args.consume_from_min_enable,
            group_name: args.group.trim().to_string(),
            notify_consumer_ids_changed_enable: args.notify_consumer_ids_changed,
            retry_max_times: args.retry_max_times,
            retry_queue_nums: args.retry_queue_nums,
            which_broker_when_consume_slowly: args.which_broker_when_consume_slowly,
        }
    }

    /// Java's `toString()`.
    fn describe(&self) -> String {
        format!(
            "SubscriptionGroupConfig [groupName={}, consumeEnable={}, consumeFromMinEnable={}, \
             consumeBroadcastEnable={}, retryQueueNums={}, retryMaxTimes={}, brokerId={}, \
             whichBrokerWhenConsumeSlowly={}, notifyConsumerIdsChangedEnable={}]",
            self.group_name,
            self.consume_enable,
            self.consume_from_min_enable,
            self.consume_broadcast_enable,
            self.retry_queue_nums,
            self.retry_max_times,
            self.broker_id,
            self.which_broker_when_consume_slowly,
            self.notify_consumer_ids_changed_enable
        )
    }
}

/// What updateSubGroup / deleteSubGroup did (`--json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupChanged<'a> {
    group_name: &'a str,
    brokers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription_group_config: Option<&'a SubscriptionGroupConfig>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    deleted_topics: Vec<String>,
}

/// `updateSubGroup`: UPDATE_AND_CREATE_SUBSCRIPTIONGROUP on `-b` or every master of `-c`.
pub(super) fn update_sub_group(args: &UpdateSubGroupArgs) -> Result<(), AdminError> {
    let config = SubscriptionGroupConfig::of(args);
    let body = serde_json::to_vec(&config)
        .map_err(|e| AdminError::Failed(format!("cannot encode the group: {e}")))?;
    let mut brokers = Vec::new();
    for b in targets(&args.common, &args.target, false)? {
        let cmd =
            command(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, &[]).with_body(body.clone());
        call(
            &mut broker(&b.addr)?,
            cmd,
            &format!("of group {}", config.group_name),
        )?;
        if !args.common.json {
            out!("create subscription group to {} success.", b.addr);
        }
        brokers.push(b.addr);
    }
    if args.common.json {
        return output::print_json(&GroupChanged {
            group_name: &config.group_name,
            brokers,
            subscription_group_config: Some(&config),
            deleted_topics: Vec::new(),
        });
    }
    out!("{}", config.describe());
    Ok(())
}

/// `deleteSubGroup`: DELETE_SUBSCRIPTIONGROUP on `-b` or every master of `-c`; with `-c` the
/// group's retry and DLQ topics are deleted from the cluster too (best effort, as mqadmin).
pub(super) fn delete_sub_group(args: &DeleteSubGroupArgs) -> Result<(), AdminError> {
    let group = args.group.trim();
    let remove = args.remove_offset.to_string();
    let mut brokers = Vec::new();
    for b in targets(&args.common, &args.target, false)? {
        let fields = [("groupName", group), ("removeOffset", remove.as_str())];
        let cmd = command(request::DELETE_SUBSCRIPTIONGROUP, &fields);
        call(&mut broker(&b.addr)?, cmd, &format!("of group {group}"))?;
        if !args.common.json {
            let place = match &args.target.cluster {
                Some(cluster) => format!("broker [{}] in cluster [{cluster}]", b.addr),
                None => format!("broker [{}]", b.addr),
            };
            out!("delete subscription group [{group}] from {place} success.");
        }
        brokers.push(b);
    }
    let deleted_topics = match &args.target.cluster {
        Some(cluster) => delete_group_topics(args, cluster, &brokers),
        None => Vec::new(),
    };
    if args.common.json {
        return output::print_json(&GroupChanged {
            group_name: group,
            brokers: brokers.into_iter().map(|b| b.addr).collect(),
            subscription_group_config: None,
            deleted_topics,
        });
    }
    Ok(())
}

/// Deletes the group's retry and DLQ topics from `brokers` and the nameservers, as mqadmin
/// does, skipping a topic wherever that fails (it usually does not exist).
fn delete_group_topics(
    args: &DeleteSubGroupArgs,
    cluster: &str,
    brokers: &[Member],
) -> Vec<String> {
    let group = args.group.trim();
    let mut deleted = Vec::new();
    for prefix in [RETRY_GROUP_TOPIC_PREFIX, DLQ_GROUP_TOPIC_PREFIX] {
        let topic = format!("{prefix}{group}");
        let in_brokers = brokers.iter().all(|b| {
            let cmd = command(request::DELETE_TOPIC_IN_BROKER, &[("topic", &topic)]);
            broker(&b.addr)
                .and_then(|mut c| call(&mut c, cmd, ""))
                .is_ok()
        });
        let namesrvs = args.common.namesrv_addrs().unwrap_or_default();
        let in_namesrvs = namesrvs.iter().all(|addr| {
            crate::client::NamesrvClient::connect(addr, super::TIMEOUT)
                .and_then(|mut ns| ns.delete_topic(&topic, Some(cluster)))
                .is_ok()
        });
        if in_brokers && in_namesrvs {
            if !args.common.json {
                out!("delete topic [{topic}] from cluster [{cluster}] success.");
                out!("delete topic [{topic}] from NameServer success.");
            }
            deleted.push(topic);
        }
    }
    deleted
}

/// The brokers to ask about a consumer group: those of its retry topic's route (as mqadmin),
/// or every master the nameserver knows when the group has no retry topic yet.
pub(crate) fn group_brokers(common: &Common, group: &str) -> Result<Vec<String>, AdminError> {
    let mut ns = common.namesrv()?;
    let retry = format!("{RETRY_GROUP_TOPIC_PREFIX}{group}");
    match route(&mut ns, &retry) {
        Ok(route) => Ok(route
            .broker_datas
            .iter()
            .filter_map(select_addr)
            .map(str::to_string)
            .collect()),
        Err(AdminError::Call { source, .. })
            if source.code() == Some(response::TOPIC_NOT_EXIST) =>
        {
            let info = cluster_info(&mut ns)?;
            let masters = members_of(&info, None)
                .into_iter()
                .filter(|m| m.broker_id == 0);
            Ok(masters.map(|m| m.addr).collect())
        }
        Err(e) => Err(e),
    }
}

/// One queue of consumerProgress.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueProgress {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
    pub broker_offset: i64,
    pub consumer_offset: i64,
    pub diff: i64,
    pub last_timestamp: i64,
}

/// consumerProgress's figures (`--json`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Progress {
    pub group: String,
    pub queues: Vec<QueueProgress>,
    pub consume_tps: f64,
    pub diff_total: i64,
}

/// GET_CONSUME_STATS of `group` from every broker of the group, merged.
pub(crate) fn consume_stats(common: &Common, group: &str) -> Result<Progress, AdminError> {
    let mut progress = Progress {
        group: group.to_string(),
        queues: Vec::new(),
        consume_tps: 0.0,
        diff_total: 0,
    };
    for addr in group_brokers(common, group)? {
        let cmd = command(request::GET_CONSUME_STATS, &[("consumerGroup", group)]);
        let about = format!("of group {group}");
        let (entries, rest) = fetch_mq_table(&mut broker(&addr)?, cmd, &about)?;
        progress.consume_tps += lenient::from_value::<f64>(&rest["consumeTps"]).unwrap_or(0.0);
        for (mq, offsets) in entries {
            let number = |k: &str| lenient::from_value::<i64>(&offsets[k]).unwrap_or(0);
            let (broker_offset, consumer_offset) =
                (number("brokerOffset"), number("consumerOffset"));
            progress.queues.push(QueueProgress {
                topic: mq.topic,
                broker_name: mq.broker_name,
                queue_id: mq.queue_id,
                broker_offset,
                consumer_offset,
                diff: broker_offset - consumer_offset,
                last_timestamp: number("lastTimestamp"),
            });
        }
    }
    if progress.queues.is_empty() {
        return Err(AdminError::NotFound(format!(
            "no consume stats of group {group}: no broker has offsets of it (the group may not \
             have consumed anything yet)"
        )));
    }
    let key = |q: &QueueProgress| (q.topic.clone(), q.broker_name.clone(), q.queue_id);
    progress.queues.sort_by_key(key);
    progress.diff_total = progress.queues.iter().map(|q| q.diff).sum();
    Ok(progress)
}

/// One group of consumerProgress without `-g` (mqadmin's `GroupConsumeInfo`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupSummary {
    pub group: String,
    /// Online clients.
    pub count: usize,
    /// The lowest client version ordinal, when a client is online.
    pub version: Option<i32>,
    /// `PUSH` or `PULL`, when a client is online.
    pub consume_type: Option<String>,
    /// `CLUSTERING` or `BROADCASTING`, for online push consumers.
    pub message_model: Option<String>,
    pub consume_tps: f64,
    pub diff_total: i64,
}

/// The consumer groups of the `%RETRY%` topics among `topics` (every group has one).
pub(crate) fn retry_groups(topics: &[String]) -> Vec<String> {
    let groups = topics
        .iter()
        .filter_map(|t| t.strip_prefix(RETRY_GROUP_TOPIC_PREFIX));
    groups.map(str::to_string).collect()
}

/// A group's summary from its consume stats and its clients (either may be missing).
pub(crate) fn group_summary(
    group: &str,
    stats: Option<&Progress>,
    connection: Option<&ConsumerConnection>,
) -> GroupSummary {
    let online = connection.filter(|c| !c.connection_set.is_empty());
    let name = |v: &Value| v.as_str().map(str::to_string);
    let consume_type = online.and_then(|c| name(&c.consume_type));
    let push = consume_type.as_deref() == Some("CONSUME_PASSIVELY");
    GroupSummary {
        group: group.to_string(),
        count: online.map_or(0, |c| c.connection_set.len()),
        version: online.and_then(|c| c.connection_set.iter().map(|c| c.version).min()),
        consume_type: consume_type.map(|_| if push { "PUSH" } else { "PULL" }.to_string()),
        message_model: online.filter(|_| push).and_then(|c| name(&c.message_model)),
        consume_tps: stats.map_or(0.0, |s| s.consume_tps),
        diff_total: stats.map_or(0, |s| s.diff_total),
    }
}

/// Most clients first, then most lag, then by name.
pub(crate) fn sort_summaries(summaries: &mut [GroupSummary]) {
    summaries
        .sort_by(|a, b| (b.count, b.diff_total, &a.group).cmp(&(a.count, a.diff_total, &b.group)));
}

/// Every consumer group (one per `%RETRY%` topic the nameserver knows) with its online clients
/// and total lag, most clients first, then most lag. A group whose stats or connections cannot
/// be read counts as having none (as mqadmin).
pub(crate) fn group_summaries(common: &Common) -> Result<Vec<GroupSummary>, AdminError> {
    let topics = super::topic::topic_names(common)?;
    let mut summaries: Vec<GroupSummary> = retry_groups(&topics)
        .iter()
        .map(|group| {
            let stats = consume_stats(common, group).ok();
            let connection = consumer_connection_info(common, group).ok();
            group_summary(group, stats.as_ref(), connection.as_ref())
        })
        .collect();
    sort_summaries(&mut summaries);
    Ok(summaries)
}

/// `consumerProgress` without `-g`: mqadmin's one line per group.
fn print_group_summaries(common: &Common) -> Result<(), AdminError> {
    let summaries = group_summaries(common)?;
    if common.json {
        return output::print_json(&summaries);
    }
    let mut table = Table::new(&[
        left("#Group", 64, "  "),
        left("#Count", 6, "  "),
        left("#Version", 24, " "),
        left("#Type", 5, "  "),
        left("#Model", 14, "  "),
        left("#TPS", 7, "  "),
        left("#Diff Total", 0, ""),
    ]);
    for g in &summaries {
        let version = match g.version {
            Some(v) if g.count > 0 => output::version_desc(v),
            _ => "OFFLINE".to_string(),
        };
        table.row(vec![
            g.group.clone(),
            g.count.to_string(),
            version,
            g.consume_type.clone().unwrap_or_default(),
            g.message_model.clone().unwrap_or_default(),
            (g.consume_tps as i64).to_string(),
            g.diff_total.to_string(),
        ]);
    }
    table.print();
    Ok(())
}

/// `consumerProgress`: the group's offsets per queue against the brokers' and the totals; every
/// group's summary without `-g`.
pub(super) fn consumer_progress(args: &ProgressArgs) -> Result<(), AdminError> {
    let Some(group) = &args.group else {
        return print_group_summaries(&args.common);
    };
    let progress = consume_stats(&args.common, group.trim())?;
    if args.common.json {
        return output::print_json(&progress);
    }
    let mut table = Table::new(&[
        left("#Topic", 64, "  "),
        left("#Broker Name", 32, "  "),
        left("#QID", 4, "  "),
        left("#Broker Offset", 20, "  "),
        left("#Consumer Offset", 20, "  "),
        left("#Diff", 20, "  "),
        left("#LastTime", 0, ""),
    ]);
    for q in &progress.queues {
        let last = match q.last_timestamp {
            0 => "N/A".to_string(),
            t => output::date_time(t),
        };
        let numbers = [
            q.queue_id.into(),
            q.broker_offset,
            q.consumer_offset,
            q.diff,
        ];
        let [qid, broker_offset, consumer_offset, diff] = numbers.map(|n| n.to_string());
        let (topic, name) = (q.topic.clone(), q.broker_name.clone());
        table.row(vec![
            topic,
            name,
            qid,
            broker_offset,
            consumer_offset,
            diff,
            last,
        ]);
    }
    table.print();
    out!();
    out!("Consume TPS: {:.2}", progress.consume_tps);
    out!("Diff Total: {}", progress.diff_total);
    Ok(())
}

/// A client connection (`Connection`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ClientConnection {
    pub client_id: String,
    pub client_addr: String,
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub version: i32,
    /// Requests the broker refused from this connection's address (ringmq only; 0 from Java).
    #[serde(default)]
    pub refused_count: u64,
}

/// GET_CONSUMER_CONNECTION_LIST's body (`ConsumerConnection`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConsumerConnection {
    pub connection_set: Vec<ClientConnection>,
    #[serde(default)]
    pub subscription_table: BTreeMap<String, Value>,
    #[serde(default)]
    pub consume_type: Value,
    #[serde(default)]
    pub message_model: Value,
    #[serde(default)]
    pub consume_from_where: Value,
}

/// GET_PRODUCER_CONNECTION_LIST's body (`ProducerConnection`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProducerConnection {
    connection_set: Vec<ClientConnection>,
}

/// Asks each of `addrs` with `cmd()`; answers refused by a broker (the group is not there) are
/// skipped, and the last refusal is the error when every broker refused.
fn ask_each<T: serde::de::DeserializeOwned>(
    addrs: &[String],
    cmd: impl Fn() -> crate::remoting::RemotingCommand,
    about: &str,
) -> Result<Vec<T>, AdminError> {
    let mut found = Vec::new();
    let mut refused = None;
    for addr in addrs {
        match fetch_json::<T>(&mut broker(addr)?, cmd(), about) {
            Ok(body) => found.push(body),
            Err(e @ AdminError::Call { .. }) => refused = Some(e),
            Err(e) => return Err(e),
        }
    }
    match (found.is_empty(), refused) {
        (true, Some(e)) => Err(e),
        (true, None) => Err(AdminError::Failed(format!("no broker to ask {about}"))),
        _ => Ok(found),
    }
}

/// The group's clients on every broker of the group, merged, with their subscriptions.
pub(crate) fn consumer_connection_info(
    common: &Common,
    group: &str,
) -> Result<ConsumerConnection, AdminError> {
    let addrs = group_brokers(common, group)?;
    let cmd = || {
        command(
            request::GET_CONSUMER_CONNECTION_LIST,
            &[("consumerGroup", group)],
        )
    };
    let mut answers = ask_each::<ConsumerConnection>(&addrs, cmd, &format!("of group {group}"))?;
    let mut merged = answers.remove(0);
    for other in answers {
        merged.connection_set.extend(other.connection_set);
        merged.subscription_table.extend(other.subscription_table);
    }
    merged.connection_set.sort();
    merged.connection_set.dedup();
    Ok(merged)
}

/// `consumerConnection`: the group's clients on every broker and their subscriptions.
pub(super) fn consumer_connection(args: &GroupArgs) -> Result<(), AdminError> {
    let merged = consumer_connection_info(&args.common, args.group.trim())?;
    if args.common.json {
        return output::print_json(&merged);
    }
    print_connections(&merged.connection_set, 3);
    out!();
    out!("Below is subscription:");
    for (i, sub) in merged.subscription_table.values().enumerate() {
        let topic = sub["topic"].as_str().unwrap_or_default();
        let expression = sub["subString"].as_str().unwrap_or_default();
        out!(
            "{:03}  Topic: {topic:<40} SubExpression: {expression}",
            i + 1
        );
    }
    out!();
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    out!("ConsumeType: {}", text(&merged.consume_type));
    out!("MessageModel: {}", text(&merged.message_model));
    out!("ConsumeFromWhere: {}", text(&merged.consume_from_where));
    Ok(())
}

/// mqadmin's numbered connection lines (`%03d` or `%04d`, id, address, language, version).
fn print_connections(connections: &[ClientConnection], digits: usize) {
    let mut table = Table::new(&[
        left("#", digits, "  "),
        left("#ClientId", 32, " "),
        left("#ClientAddr", 22, " "),
        left("#Language", 8, " "),
        left("#Version", 0, ""),
    ]);
    table.titles = false;
    for (i, c) in connections.iter().enumerate() {
        table.row(vec![
            format!("{:0digits$}", i + 1),
            c.client_id.clone(),
            c.client_addr.clone(),
            c.language.clone(),
            output::version_desc(c.version),
        ]);
    }
    table.print();
}

/// `producerConnection`: the producer group's clients on the brokers of the topic's route.
pub(super) fn producer_connection(args: &ProducerArgs) -> Result<(), AdminError> {
    let (group, topic) = (args.group.trim(), args.topic.trim());
    let route = route(&mut args.common.namesrv()?, topic)?;
    let addrs: Vec<String> = route
        .broker_datas
        .iter()
        .filter_map(select_addr)
        .map(str::to_string)
        .collect();
    let cmd = || {
        command(
            request::GET_PRODUCER_CONNECTION_LIST,
            &[("producerGroup", group)],
        )
    };
    let answers = ask_each::<ProducerConnection>(&addrs, cmd, &format!("of group {group}"))?;
    let mut connections: Vec<ClientConnection> =
        answers.into_iter().flat_map(|a| a.connection_set).collect();
    connections.sort();
    connections.dedup();
    if args.common.json {
        return output::print_json(&connections);
    }
    print_connections(&connections, 4);
    Ok(())
}
