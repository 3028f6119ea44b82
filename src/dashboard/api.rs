//! What the pages show, as data: each function reads the cluster through the admin module's
//! data functions (the ones `ringmq admin` prints) and returns a serializable view, served as
//! JSON under `/api/` and rendered as HTML by `pages.rs`. All of them block on the cluster.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::http::{ApiError, Request};
use super::sampler::BrokerState;
use super::State;
use crate::admin::cluster::{broker_runtimes, cluster_info, members_of, ClusterRow};
use crate::admin::group::{
    consume_stats, consumer_connection_info, group_summaries, ConsumerConnection, GroupSummary,
    Progress,
};
use crate::admin::message::{send_one, NewMessage, Sent};
use crate::admin::offset::{reset_offset_by_time, OffsetReset};
use crate::admin::output::version_desc;
use crate::admin::query::{
    message_tracks, messages_by_key, messages_by_time, resend_to_group, view_by_id, Found,
    MessageTrack,
};
use crate::admin::topic::{
    delete_topic_in, route, topic_config, topic_consumers, topic_names, topic_queues,
    update_topic_config, QueueStatus, TopicDeleted, TopicUpdated,
};
use crate::admin::trace::{message_trace, TraceView};
use crate::admin::{AdminError, Target};
use crate::client::ClientError;
use crate::message::trace::DEFAULT_TRACE_TOPIC;
use crate::protocol::route::TopicRouteData;
use crate::remoting::response;

/// Body text shown of a message, at most.
const BODY_PREVIEW_CHARS: usize = 4096;
/// Messages a search returns at most.
const SEARCH_MAX: usize = 64;

/// One broker on the cluster page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerView {
    pub cluster_name: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub role: String,
    pub addr: String,
    pub version: String,
    pub in_tps: f64,
    pub out_tps: f64,
    /// How far the slaves are behind (on a master) or this slave is (`-` when unknown).
    pub slave_lag: String,
    /// The runtime table's replication keys (`ha…`).
    pub ha: BTreeMap<String, String>,
    /// Controller mode: the group's master epoch as the broker last read it (`-` otherwise).
    pub master_epoch: String,
    /// Controller mode: the SyncStateSet (controller ids) and its epoch, `{1,2}@3` (`-`
    /// otherwise).
    pub sync_state_set: String,
    pub error: Option<String>,
}

impl BrokerView {
    pub fn of(b: &BrokerState) -> BrokerView {
        let row: ClusterRow = crate::admin::cluster::cluster_row(b.member.clone(), &b.runtime);
        let (master_epoch, sync_state_set) = row.epochs();
        let ha: BTreeMap<String, String> = b
            .runtime
            .iter()
            .filter(|(k, _)| k.starts_with("ha"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        BrokerView {
            cluster_name: b.member.cluster_name.clone(),
            broker_name: b.member.broker_name.clone(),
            broker_id: b.member.broker_id,
            role: b.role().to_string(),
            addr: b.member.addr.clone(),
            version: row.version,
            in_tps: row.in_tps,
            out_tps: row.out_tps,
            slave_lag: slave_lag(&ha),
            ha,
            master_epoch,
            sync_state_set,
            error: b.error.clone(),
        }
    }
}

/// The lag of the GET_BROKER_RUNTIME_INFO replication keys, `-` without them.
pub fn slave_lag(ha: &BTreeMap<String, String>) -> String {
    let get = |k: &str| ha.get(k).map(String::as_str);
    if let (Some(bytes), Some(ms)) = (get("haFallBehindBytes"), get("haFallBehindMillis")) {
        let master = get("haMasterAddr").filter(|m| !m.is_empty()).unwrap_or("?");
        return format!("{bytes} B, {ms} ms behind master {master}");
    }
    match (
        get("haConnectionCount"),
        get("haSlaveFallBehindBytes"),
        get("haSlaveFallBehindMillis"),
    ) {
        (Some(n), Some(bytes), Some(ms)) => {
            format!("{n} slave(s), {bytes} B, {ms} ms behind")
        }
        (Some(n), _, _) => format!("{n} slave(s)"),
        _ => "-".into(),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    pub brokers: Vec<BrokerView>,
    pub clusters: Vec<String>,
}

/// Every broker with its role, version, TPS and slave lag.
pub fn cluster(state: &State) -> Result<ClusterView, ApiError> {
    let mut brokers = Vec::new();
    for b in broker_runtimes(&state.common)? {
        let (runtime, error) = match b.runtime {
            Ok(kv) => (kv, None),
            Err(e) => (BTreeMap::new(), Some(e.to_string())),
        };
        let b = BrokerState {
            member: b.member,
            runtime,
            error,
        };
        brokers.push(BrokerView::of(&b));
    }
    let clusters: BTreeSet<String> = brokers.iter().map(|b| b.cluster_name.clone()).collect();
    Ok(ClusterView {
        brokers,
        clusters: clusters.into_iter().collect(),
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicItem {
    pub name: String,
    /// `NORMAL`, `RETRY`, `DLQ` or `SYSTEM`.
    pub kind: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicsView {
    pub topics: Vec<TopicItem>,
    pub clusters: Vec<String>,
}

/// Topics the broker keeps for itself (besides ones named after a cluster or a broker).
const SYSTEM_TOPICS: [&str; 6] = [
    "TBW102",
    "SCHEDULE_TOPIC_XXXX",
    "OFFSET_MOVED_EVENT",
    "SELF_TEST_TOPIC",
    "BenchmarkTest",
    "TRANS_CHECK_MAX_TIME_TOPIC",
];

fn topic_kind(name: &str, system: &BTreeSet<String>) -> &'static str {
    if name.starts_with("%RETRY%") {
        "RETRY"
    } else if name.starts_with("%DLQ%") {
        "DLQ"
    } else if system.contains(name)
        || name.starts_with("RMQ_SYS_")
        || name.ends_with("_REPLY_TOPIC")
        || SYSTEM_TOPICS.contains(&name)
    {
        "SYSTEM"
    } else {
        "NORMAL"
    }
}

/// Every topic, by kind and name.
pub fn topics(state: &State) -> Result<TopicsView, ApiError> {
    let info = cluster_info(&mut state.common.namesrv()?)?;
    let mut system: BTreeSet<String> = info.cluster_addr_table.keys().cloned().collect();
    system.extend(info.broker_addr_table.keys().cloned());
    let mut topics: Vec<TopicItem> = topic_names(&state.common)?
        .into_iter()
        .map(|name| TopicItem {
            kind: topic_kind(&name, &system),
            name,
        })
        .collect();
    let order = |k: &str| {
        ["NORMAL", "RETRY", "DLQ", "SYSTEM"]
            .iter()
            .position(|o| *o == k)
    };
    topics.sort_by(|a, b| (order(a.kind), &a.name).cmp(&(order(b.kind), &b.name)));
    Ok(TopicsView {
        topics,
        clusters: info.cluster_addr_table.keys().cloned().collect(),
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicView {
    pub topic: String,
    pub route: TopicRouteData,
    /// The clusters of the route's brokers (where a delete goes).
    pub clusters: Vec<String>,
    pub queues: Vec<QueueStatus>,
    pub consumer_groups: Vec<String>,
}

/// A topic's route, queues and consumer groups.
pub fn topic(state: &State, name: &str) -> Result<TopicView, ApiError> {
    let mut ns = state.common.namesrv()?;
    let route = route(&mut ns, name)?;
    let info = cluster_info(&mut ns)?;
    let names: BTreeSet<&str> = route
        .broker_datas
        .iter()
        .map(|b| b.broker_name.as_str())
        .collect();
    let clusters = members_of(&info, None)
        .into_iter()
        .filter(|m| names.contains(m.broker_name.as_str()))
        .map(|m| m.cluster_name)
        .collect::<BTreeSet<_>>();
    Ok(TopicView {
        topic: name.to_string(),
        queues: topic_queues(&route, name)?,
        consumer_groups: topic_consumers(&route, name)?.into_iter().collect(),
        clusters: clusters.into_iter().collect(),
        route,
    })
}

/// POST /api/topics.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicForm {
    pub topic: String,
    #[serde(default)]
    pub cluster: Option<String>,
    #[serde(default)]
    pub broker: Option<String>,
    #[serde(default = "eight")]
    pub read_queue_nums: i32,
    #[serde(default = "eight")]
    pub write_queue_nums: i32,
    #[serde(default = "read_write")]
    pub perm: i32,
    #[serde(default)]
    pub order: bool,
}

fn eight() -> i32 {
    8
}

fn read_write() -> i32 {
    6
}

/// Creates or updates a topic on a broker or every master of a cluster.
pub fn create_topic(state: &State, form: TopicForm) -> Result<TopicUpdated, ApiError> {
    let blank = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let target = Target {
        broker: blank(form.broker),
        cluster: blank(form.cluster),
    };
    if target.broker.is_none() && target.cluster.is_none() {
        return Err(ApiError::bad_request("name a cluster or a broker address"));
    }
    if form.topic.trim().is_empty() {
        return Err(ApiError::bad_request("the topic has no name"));
    }
    for (what, n) in [
        ("readQueueNums", form.read_queue_nums),
        ("writeQueueNums", form.write_queue_nums),
    ] {
        if !(1..=1024).contains(&n) {
            return Err(ApiError::bad_request(format!(
                "{what} {n} is not in 1..=1024"
            )));
        }
    }
    if ![2, 4, 6].contains(&form.perm) {
        let e = format!("perm {} is not 2 (write), 4 (read) or 6 (both)", form.perm);
        return Err(ApiError::bad_request(e));
    }
    let config = topic_config(
        &form.topic,
        form.read_queue_nums,
        form.write_queue_nums,
        form.perm,
        form.order,
    );
    Ok(update_topic_config(&state.common, &target, config)?)
}

/// DELETE /api/topics/{name}?cluster=…
pub fn delete_topic(state: &State, name: &str, req: &Request) -> Result<TopicDeleted, ApiError> {
    let cluster = req.required("cluster")?;
    Ok(delete_topic_in(&state.common, name, cluster)?)
}

/// A group summary with its clients' version named.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupRow {
    #[serde(flatten)]
    pub summary: GroupSummary,
    pub version_desc: String,
}

impl GroupRow {
    pub fn of(summary: GroupSummary) -> GroupRow {
        let version_desc = match summary.version {
            Some(v) if summary.count > 0 => version_desc(v),
            _ => "OFFLINE".into(),
        };
        GroupRow {
            summary,
            version_desc,
        }
    }
}

/// Every consumer group with its clients and lag.
pub fn groups(state: &State) -> Result<Vec<GroupRow>, ApiError> {
    let summaries = group_summaries(&state.common)?;
    Ok(summaries.into_iter().map(GroupRow::of).collect())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    pub group: String,
    pub row: GroupRow,
    /// Per queue offsets and lag (`None`: the group has no offsets yet).
    pub progress: Option<Progress>,
    /// The clients (`None`: none online).
    pub connection: Option<ConsumerConnection>,
}

/// True for the answer of a group with no client online.
fn offline(e: &AdminError) -> bool {
    matches!(
        e,
        AdminError::Call {
            source: ClientError::Server { code, .. },
            ..
        } if *code == response::CONSUMER_NOT_ONLINE
    )
}

/// A consumer group's members, progress and lag.
pub fn group(state: &State, name: &str) -> Result<GroupView, ApiError> {
    let progress = match consume_stats(&state.common, name) {
        Ok(p) => Some(p),
        Err(AdminError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let connection = match consumer_connection_info(&state.common, name) {
        Ok(c) => Some(c),
        Err(e) if offline(&e) => None,
        Err(e) => return Err(e.into()),
    };
    if progress.is_none() && connection.is_none() {
        let retry = format!("%RETRY%{name}");
        if !topic_names(&state.common)?.contains(&retry) {
            let e = format!("consumer group {name} is not known: it has no {retry} topic, no offsets and no client online");
            return Err(ApiError::not_found(e));
        }
    }
    let summary = crate::admin::group::group_summary(name, progress.as_ref(), connection.as_ref());
    Ok(GroupView {
        group: name.to_string(),
        row: GroupRow::of(summary),
        progress,
        connection,
    })
}

/// GET /api/groups/{name}/clients/{id}: the client's own running info (relayed by a broker
/// of the group: GET_CONSUMER_RUNNING_INFO).
pub fn client(
    state: &State,
    group: &str,
    client_id: &str,
) -> Result<crate::admin::client_relay::RunningInfo, ApiError> {
    Ok(crate::admin::client_relay::running_info(
        &state.common,
        group,
        client_id,
        false,
    )?)
}

/// POST /api/groups/{name}/reset.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetForm {
    pub topic: String,
    /// `now`, ms since the epoch, or `yyyy-MM-dd#HH:mm:ss:SSS`.
    pub timestamp: serde_json::Value,
    #[serde(default = "yes")]
    pub force: bool,
}

fn yes() -> bool {
    true
}

/// Resets a group's offsets on a topic to a time (see `resetOffsetByTime`).
pub fn reset(state: &State, group: &str, form: ResetForm) -> Result<OffsetReset, ApiError> {
    let at = match &form.timestamp {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        other => {
            let e = format!("timestamp {other} is not `now`, milliseconds or a date");
            return Err(ApiError::bad_request(e));
        }
    };
    let reset = reset_offset_by_time(&state.common, group, &form.topic, &at, form.force, false)?;
    Ok(reset)
}

/// One message of a search (its body left out: the message page shows it).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRow {
    pub broker_name: String,
    #[serde(flatten)]
    pub message: Found,
}

impl MessageRow {
    fn of(broker_name: String, mut message: Found) -> MessageRow {
        message.body.clear();
        MessageRow {
            broker_name,
            message,
        }
    }
}

fn time_param(req: &Request, name: &str) -> Result<i64, ApiError> {
    let text = req.required(name)?;
    text.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{name} = {text:?} is not milliseconds since the epoch"
        ))
    })
}

/// GET /api/messages: by `topic` and `key`, by `id` (offsetMsgId), or by `topic`, `begin` and
/// `end` (ms).
pub fn search_messages(state: &State, req: &Request) -> Result<Vec<MessageRow>, ApiError> {
    if let Some(id) = req.param("id") {
        let m = view_by_id(id)?;
        return Ok(vec![MessageRow::of(String::new(), m)]);
    }
    let topic = req.required("topic")?;
    let found = match req.param("key") {
        Some(key) => messages_by_key(&state.common, topic, key, SEARCH_MAX as i32)?,
        None => {
            let (begin, end) = (time_param(req, "begin")?, time_param(req, "end")?);
            messages_by_time(&state.common, topic, begin, end, SEARCH_MAX)?
        }
    };
    Ok(found
        .into_iter()
        .map(|(broker, m)| MessageRow::of(broker, m))
        .collect())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub message: Found,
    pub body_size: usize,
    pub body_truncated: bool,
    pub tracks: Vec<MessageTrack>,
    /// Why the tracks could not be read, if they could not.
    pub tracks_error: Option<String>,
    /// The message's trace (RMQ_SYS_TRACE_TOPIC), oldest first.
    pub trace: Vec<TraceView>,
    /// Why there is no trace, if there is none.
    pub trace_error: Option<String>,
}

/// A message by offsetMsgId with its properties, body preview and consuming groups.
pub fn message(state: &State, id: &str) -> Result<MessageView, ApiError> {
    let mut message = view_by_id(id)?;
    let body_size = message.raw_body.len();
    let body_truncated = message.body.chars().count() > BODY_PREVIEW_CHARS;
    if body_truncated {
        message.body = message.body.chars().take(BODY_PREVIEW_CHARS).collect();
    }
    let (tracks, tracks_error) = match message_tracks(&state.common, &message) {
        Ok(t) => (t, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let (trace, trace_error) = match message_trace(
        &state.common,
        DEFAULT_TRACE_TOPIC,
        &message.msg_id,
        SEARCH_MAX as i32,
        (0, i64::MAX),
    ) {
        Ok(t) => (t, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(MessageView {
        message,
        body_size,
        body_truncated,
        tracks,
        tracks_error,
        trace,
        trace_error,
    })
}

/// POST /api/messages.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendForm {
    pub topic: String,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub tags: Option<String>,
    #[serde(default)]
    pub keys: Option<String>,
}

/// Sends a test message.
pub fn send(state: &State, form: SendForm) -> Result<Sent, ApiError> {
    let new = NewMessage {
        topic: form.topic.trim().to_string(),
        body: form.body,
        tags: form.tags,
        keys: form.keys,
        broker: None,
        queue: None,
    };
    Ok(send_one(&state.common, &new)?)
}

/// POST /api/messages/{id}/resend.
#[derive(Debug, Deserialize)]
pub struct ResendForm {
    pub group: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resent {
    pub msg_id: String,
    pub group: String,
    pub topic: String,
}

/// Sends a message back to a consumer group (through its retry topic).
pub fn resend(id: &str, form: ResendForm) -> Result<Resent, ApiError> {
    let m = resend_to_group(id, &form.group)?;
    Ok(Resent {
        msg_id: id.to_string(),
        group: form.group.trim().to_string(),
        topic: m.topic,
    })
}

/// One line of a chart: `[time ms, value, …]` points.
#[derive(Debug, Serialize)]
pub struct Series {
    pub name: String,
    pub points: Vec<Vec<f64>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesView {
    pub interval_ms: u128,
    /// Per broker: `[t, in TPS, out TPS]`.
    pub brokers: Vec<Series>,
    /// Per consumer group: `[t, total lag]`.
    pub groups: Vec<Series>,
}

/// The sampler's history as chart lines.
pub fn series(state: &State) -> SeriesView {
    let history = state.history();
    let mut brokers: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    for snap in &history {
        let t = snap.at_ms as f64;
        for b in snap.brokers.iter().filter(|b| b.error.is_none()) {
            let name = format!("{} {}", b.member.broker_name, b.member.addr);
            brokers
                .entry(name)
                .or_default()
                .push(vec![t, b.in_tps(), b.out_tps()]);
        }
        for g in &snap.groups {
            let lag = g.summary.diff_total as f64;
            groups
                .entry(g.summary.group.clone())
                .or_default()
                .push(vec![t, lag]);
        }
    }
    let lines = |m: BTreeMap<String, Vec<Vec<f64>>>| {
        m.into_iter()
            .map(|(name, points)| Series { name, points })
            .collect()
    };
    SeriesView {
        interval_ms: state.interval.as_millis(),
        brokers: lines(brokers),
        groups: lines(groups),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slave_lag_reads_the_ha_keys() {
        let ha = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(slave_lag(&ha(&[])), "-");
        let master = ha(&[
            ("haConnectionCount", "1"),
            ("haSlaveFallBehindBytes", "0"),
            ("haSlaveFallBehindMillis", "0"),
        ]);
        assert_eq!(slave_lag(&master), "1 slave(s), 0 B, 0 ms behind");
        let slave = ha(&[
            ("haMasterAddr", "10.0.0.1:10912"),
            ("haFallBehindBytes", "512"),
            ("haFallBehindMillis", "20"),
        ]);
        assert_eq!(
            slave_lag(&slave),
            "512 B, 20 ms behind master 10.0.0.1:10912"
        );
    }

    #[test]
    fn topics_are_sorted_into_kinds() {
        let system: BTreeSet<String> = ["DefaultCluster".to_string()].into();
        assert_eq!(topic_kind("%RETRY%g", &system), "RETRY");
        assert_eq!(topic_kind("%DLQ%g", &system), "DLQ");
        assert_eq!(topic_kind("TBW102", &system), "SYSTEM");
        assert_eq!(topic_kind("RMQ_SYS_TRANS_HALF_TOPIC", &system), "SYSTEM");
        assert_eq!(topic_kind("DefaultCluster", &system), "SYSTEM");
        assert_eq!(topic_kind("Orders", &system), "NORMAL");
    }
}
