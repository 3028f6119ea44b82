//! Commands the brokers answer by asking a consumer client over its connection:
//! `consumerStatus` (GET_CONSUMER_RUNNING_INFO), `getConsumerStatus`
//! (INVOKE_BROKER_TO_GET_CONSUMER_STATUS) and `queryMsgById -g -d` (CONSUME_MESSAGE_DIRECTLY,
//! in `query.rs`), with mqadmin's names, flags and output.

use clap::Args;
use serde::Serialize;
use serde_json::{Map, Value};

use super::fastjson_mq::{self, MqEntries};
use super::group::{consumer_connection_info, group_brokers};
use super::output::{self, left, out, Table};
use super::{broker, call, command, AdminError, Common};
use crate::remoting::request;

#[derive(Args, Debug)]
pub(super) struct ConsumerStatusArgs {
    #[command(flatten)]
    common: Common,
    /// Consumer group name.
    #[arg(short = 'g', long = "consumerGroup")]
    group: String,
    /// One client's id: print its whole running info.
    #[arg(short = 'i', long = "clientId")]
    client_id: Option<String>,
    /// Ask the client for its thread stacks too (jstack).
    #[arg(short = 's', long = "jstack")]
    jstack: bool,
}

#[derive(Args, Debug)]
pub(super) struct GetConsumerStatusArgs {
    #[command(flatten)]
    common: Common,
    /// Consumer group name.
    #[arg(short = 'g', long = "group")]
    group: String,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Only this client (its client id).
    #[arg(short = 'i', long = "originClientId")]
    client_id: Option<String>,
}

/// A client's `ConsumerRunningInfo`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunningInfo {
    pub properties: Map<String, Value>,
    pub subscription_set: Vec<Value>,
    /// Per queue: its `ProcessQueueInfo`.
    pub mq_table: Vec<QueueInfo>,
    /// Per topic: `ConsumeStatus` (pull and consume RT and TPS).
    pub status_table: Map<String, Value>,
    pub jstack: Option<String>,
}

/// One queue of a running info's `mqTable`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueInfo {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
    pub process_queue: Value,
}

impl RunningInfo {
    fn parse(body: &[u8]) -> Result<RunningInfo, fastjson_mq::MqTableError> {
        let (entries, rest): (MqEntries, Value) = fastjson_mq::parse_mq_table(body, "mqTable")?;
        let object = |key: &str| rest[key].as_object().cloned().unwrap_or_default();
        Ok(RunningInfo {
            properties: object("properties"),
            subscription_set: rest["subscriptionSet"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            mq_table: entries
                .into_iter()
                .map(|(mq, process_queue)| QueueInfo {
                    topic: mq.topic,
                    broker_name: mq.broker_name,
                    queue_id: mq.queue_id,
                    process_queue,
                })
                .collect(),
            status_table: object("statusTable"),
            jstack: rest["jstack"].as_str().map(str::to_string),
        })
    }

    /// Java's `ConsumerRunningInfo.isPushType`: the client consumes passively.
    pub fn is_push(&self) -> bool {
        self.properties
            .get("PROP_CONSUME_TYPE")
            .and_then(Value::as_str)
            == Some("CONSUME_PASSIVELY")
    }
}

/// GET_CONSUMER_RUNNING_INFO of `client_id` of `group`, through the first broker of the group
/// that reaches it (as `DefaultMQAdminExt.getConsumerRunningInfo`).
pub(crate) fn running_info(
    common: &Common,
    group: &str,
    client_id: &str,
    jstack: bool,
) -> Result<RunningInfo, AdminError> {
    let mut last = None;
    for addr in group_brokers(common, group)? {
        let cmd = command(
            request::GET_CONSUMER_RUNNING_INFO,
            &[
                ("consumerGroup", group),
                ("clientId", client_id),
                ("jstackEnable", if jstack { "true" } else { "false" }),
            ],
        );
        let about = format!("of client {client_id} of group {group}");
        match call(&mut broker(&addr)?, cmd, &about) {
            Ok(reply) => {
                return RunningInfo::parse(&reply.body).map_err(|e| {
                    AdminError::Failed(format!("the running info from {addr} does not parse: {e}"))
                })
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| AdminError::Failed(format!("no broker of group {group}"))))
}

/// `consumerStatus`: every client of the group (a line each and whether their subscriptions
/// agree), or one client's whole running info (`-i`).
pub(super) fn consumer_status(args: &ConsumerStatusArgs) -> Result<(), AdminError> {
    let group = args.group.trim();
    if let Some(client_id) = args.client_id.as_deref().map(str::trim) {
        let info = running_info(&args.common, group, client_id, args.jstack)?;
        if args.common.json {
            return output::print_json(&info);
        }
        print_running_info(&info);
        return Ok(());
    }
    let connections = consumer_connection_info(&args.common, group)?;
    let mut infos = Vec::new();
    for c in &connections.connection_set {
        let info = running_info(&args.common, group, &c.client_id, args.jstack)?;
        infos.push((c.client_id.clone(), c.version, info));
    }
    if args.common.json {
        let all: Map<String, Value> = infos
            .iter()
            .map(|(id, _, info)| (id.clone(), serde_json::to_value(info).unwrap_or_default()))
            .collect();
        return output::print_json(&all);
    }
    let mut table = Table::new(&[
        left("#Index", 6, "  "),
        left("#ClientId", 40, " "),
        left("#Version", 20, " "),
        left("#Queues", 8, " "),
        left("#Subscriptions", 0, ""),
    ]);
    for (i, (id, version, info)) in infos.iter().enumerate() {
        let topics: Vec<&str> = info
            .subscription_set
            .iter()
            .filter_map(|s| s["topic"].as_str())
            .collect();
        table.row(vec![
            format!("{:03}", i + 1),
            id.clone(),
            output::version_desc(*version),
            info.mq_table.len().to_string(),
            topics.join(","),
        ]);
    }
    table.print();
    out!();
    let same = infos
        .windows(2)
        .all(|w| same_subscriptions(&w[0].2, &w[1].2));
    match (infos.is_empty(), same) {
        (true, _) => out!("WARN: No consumer of group {group} online"),
        (false, true) => out!("Same subscription in the same group of consumer"),
        (false, false) => out!("WARN: Different subscription in the same group of consumer!!!"),
    }
    Ok(())
}

fn same_subscriptions(a: &RunningInfo, b: &RunningInfo) -> bool {
    let key = |i: &RunningInfo| {
        let mut subs: Vec<String> = i
            .subscription_set
            .iter()
            .map(|s| format!("{}|{}", s["topic"], s["subString"]))
            .collect();
        subs.sort();
        subs
    };
    key(a) == key(b)
}

/// The sections of Java's `ConsumerRunningInfo.formatString`.
fn print_running_info(info: &RunningInfo) {
    out!("#Consumer Properties#");
    let mut props: Vec<_> = info.properties.iter().collect();
    props.sort_by(|a, b| a.0.cmp(b.0));
    for (k, v) in props {
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        out!("{k:<40}: {v}");
    }
    out!();
    out!("#Consumer Subscription#");
    for (i, s) in info.subscription_set.iter().enumerate() {
        let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
        let class_filter = s["classFilterMode"].as_bool().unwrap_or(false);
        out!(
            "{:03} Topic: {:<40} ClassFilter: {:<8} SubExpression: {}",
            i + 1,
            text("topic"),
            class_filter,
            text("subString")
        );
    }
    out!();
    out!("#Consumer Offset#");
    let mut table = Table::new(&[
        left("#Topic", 32, "  "),
        left("#Broker Name", 24, "  "),
        left("#QID", 4, "  "),
        left("#Consumer Offset", 0, ""),
    ]);
    for q in &info.mq_table {
        let offset = &q.process_queue["commitOffset"];
        table.row(vec![
            q.topic.clone(),
            q.broker_name.clone(),
            q.queue_id.to_string(),
            offset.to_string(),
        ]);
    }
    table.print();
    out!();
    out!("#Consumer RT&TPS#");
    let mut table = Table::new(&[
        left("#Topic", 32, "  "),
        left("#Pull RT", 14, "  "),
        left("#Pull TPS", 14, "  "),
        left("#Consume RT", 14, "  "),
        left("#ConsumeOK TPS", 14, "  "),
        left("#ConsumeFailed TPS", 18, "  "),
        left("#ConsumeFailedMsgsInHour", 0, ""),
    ]);
    for (topic, s) in &info.status_table {
        let n = |k: &str| s[k].to_string();
        table.row(vec![
            topic.clone(),
            n("pullRT"),
            n("pullTPS"),
            n("consumeRT"),
            n("consumeOKTPS"),
            n("consumeFailedTPS"),
            n("consumeFailedMsgs"),
        ]);
    }
    table.print();
    if let Some(jstack) = &info.jstack {
        out!();
        out!("#Consumer jstack#");
        out!("{jstack}");
    }
}

/// `getConsumerStatus`: every client's offsets of the topic, as the clients hold them.
pub(super) fn get_consumer_status(args: &GetConsumerStatusArgs) -> Result<(), AdminError> {
    let (group, topic) = (args.group.trim(), args.topic.trim());
    let client = args.client_id.as_deref().unwrap_or("").trim();
    let mut all: Vec<(String, MqEntries)> = Vec::new();
    for addr in group_brokers(&args.common, group)? {
        let cmd = command(
            request::INVOKE_BROKER_TO_GET_CONSUMER_STATUS,
            &[("topic", topic), ("group", group), ("clientAddr", client)],
        );
        let reply = call(&mut broker(&addr)?, cmd, &format!("of group {group}"))?;
        let table = consumer_table(&reply.body)
            .map_err(|e| AdminError::Failed(format!("the status from {addr}: {e}")))?;
        all.extend(table);
    }
    if args.common.json {
        let json: Map<String, Value> = all
            .iter()
            .map(|(id, entries)| {
                let queues: Vec<Value> = entries
                    .iter()
                    .map(|(mq, offset)| {
                        serde_json::json!({"topic": mq.topic, "brokerName": mq.broker_name,
                            "queueId": mq.queue_id, "offset": offset})
                    })
                    .collect();
                (id.clone(), Value::Array(queues))
            })
            .collect();
        return output::print_json(&json);
    }
    out!("get consumer status from client. group={group}, topic={topic}, originClientId={client}");
    for (id, entries) in &all {
        out!();
        out!("ClientId={id}");
        let mut table = Table::new(&[
            left("#Topic", 50, "  "),
            left("#Broker Name", 15, "  "),
            left("#QID", 15, "  "),
            left("#Offset", 0, ""),
        ]);
        for (mq, offset) in entries {
            table.row(vec![
                mq.topic.clone(),
                mq.broker_name.clone(),
                mq.queue_id.to_string(),
                offset.to_string(),
            ]);
        }
        table.print();
    }
    Ok(())
}

/// `consumerTable` of a GetConsumerStatusBody: client id → MessageQueue-keyed offsets (each
/// inner table in fastjson's object-key form, so it is cut out of the raw body).
fn consumer_table(body: &[u8]) -> Result<Vec<(String, MqEntries)>, fastjson_mq::MqTableError> {
    let clients = fastjson_mq::raw_members(body, "consumerTable")?;
    let mut out = Vec::new();
    for (id, raw) in clients {
        let wrapped = [b"{\"t\":".as_slice(), raw, b"}"].concat();
        let (entries, _) = fastjson_mq::parse_mq_table(&wrapped, "t")?;
        out.push((id, entries));
    }
    Ok(out)
}
