//! Message commands: sendMessage, consumeMessage.

use clap::Args;
use serde::Serialize;

use super::output::{self, left, out, Table};
use super::topic::route;
use super::{broker, AdminError, Common, Context};
use crate::client::broker::OutgoingMessage;
use crate::message::properties::{Properties, KEYS, TAGS};
use crate::protocol::route::TopicRouteData;
use crate::remoting::response;

#[derive(Args, Debug)]
pub(super) struct SendArgs {
    #[command(flatten)]
    common: Common,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Message body.
    #[arg(short = 'p', long = "body")]
    body: String,
    /// Message keys (space separated).
    #[arg(short = 'k', long = "key")]
    keys: Option<String>,
    /// Message tag.
    #[arg(short = 'c', long = "tags")]
    tags: Option<String>,
    /// Send to this broker name only.
    #[arg(short = 'b', long = "broker")]
    broker: Option<String>,
    /// Send to this queue.
    #[arg(short = 'i', long = "qid")]
    queue: Option<i32>,
}

#[derive(Args, Debug)]
pub(super) struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Only this broker name.
    #[arg(short = 'b', long = "brokerName")]
    broker: Option<String>,
    /// Only this queue.
    #[arg(short = 'i', long = "queueId")]
    queue: Option<i32>,
    /// Start offset (default 0).
    #[arg(short = 'o', long = "offset", default_value_t = 0)]
    offset: i64,
    /// Consumer group named in the pulls.
    #[arg(short = 'g', long = "consumerGroup", default_value = "TOOLS_CONSUMER")]
    group: String,
    /// At most this many messages.
    #[arg(short = 'c', long = "MessageNumber", default_value_t = 128)]
    count: usize,
}

/// (broker name, master address, queue count) of the writable or readable queues of a route.
fn queues(route: &TopicRouteData, write: bool, broker: Option<&str>) -> Vec<(String, String, i32)> {
    let bit = if write { 2 } else { 4 };
    route
        .queue_datas
        .iter()
        .filter(|q| q.perm & bit != 0 && broker.is_none_or(|b| b == q.broker_name))
        .filter_map(|q| {
            let data = route
                .broker_datas
                .iter()
                .find(|b| b.broker_name == q.broker_name)?;
            let addr = data.broker_addrs.get(&0)?.clone();
            let n = if write {
                q.write_queue_nums
            } else {
                q.read_queue_nums
            };
            Some((q.broker_name.clone(), addr, n))
        })
        .collect()
}

/// What sendMessage did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sent {
    pub broker_name: String,
    pub queue_id: i32,
    pub send_status: String,
    pub msg_id: String,
    pub queue_offset: i64,
}

/// A message for [`send_one`].
#[derive(Debug, Clone, Default)]
pub(crate) struct NewMessage {
    pub topic: String,
    pub body: String,
    pub tags: Option<String>,
    pub keys: Option<String>,
    /// Only this broker name.
    pub broker: Option<String>,
    pub queue: Option<i32>,
}

/// Sends one message to the topic's first writable broker (or `broker`), queue `queue` (0).
pub(crate) fn send_one(common: &Common, new: &NewMessage) -> Result<Sent, AdminError> {
    if new.topic.trim().is_empty() {
        return Err(AdminError::Invalid("no topic to send to".into()));
    }
    let mut ns = common.namesrv()?;
    // A topic the nameserver does not know is sent through TBW102's brokers, which create it
    // (what RocketMQ producers do when autoCreateTopicEnable is on).
    let route = match route(&mut ns, &new.topic) {
        Err(AdminError::Call { source, .. })
            if source.code() == Some(response::TOPIC_NOT_EXIST) =>
        {
            super::topic::route(&mut ns, "TBW102")?
        }
        other => other?,
    };
    let targets = queues(&route, true, new.broker.as_deref());
    let Some((broker_name, addr, n)) = targets.first() else {
        let e = format!("no writable queue of topic {} in its route", new.topic);
        return Err(AdminError::Failed(e));
    };
    let mut properties = Properties::default();
    for (name, value) in [(TAGS, &new.tags), (KEYS, &new.keys)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            properties.set(name, value);
        }
    }
    let queue_id = new.queue.unwrap_or(0).clamp(0, (*n - 1).max(0));
    let msg = OutgoingMessage {
        topic: new.topic.clone(),
        queue_id,
        body: new.body.clone().into_bytes(),
        properties,
        flag: 0,
    };
    let sent = broker(addr)?
        .send_message("TOOLS_PRODUCER", &msg)
        .context(|| format!("SEND_MESSAGE_V2 (310) to topic {}", new.topic))?;
    // mqadmin prints the producer's SendStatus.
    let status = match sent.code {
        response::SUCCESS => "SEND_OK",
        code => response::name(code).unwrap_or("UNKNOWN"),
    };
    Ok(Sent {
        broker_name: broker_name.clone(),
        queue_id: sent.queue_id,
        send_status: status.to_string(),
        msg_id: sent.msg_id,
        queue_offset: sent.queue_offset,
    })
}

/// `sendMessage`: one message to the topic's first writable broker (or `-b`), queue `-i`.
pub(super) fn send_message(args: &SendArgs) -> Result<(), AdminError> {
    let new = NewMessage {
        topic: args.topic.clone(),
        body: args.body.clone(),
        tags: args.tags.clone(),
        keys: args.keys.clone(),
        broker: args.broker.clone(),
        queue: args.queue,
    };
    let sent = send_one(&args.common, &new)?;
    if args.common.json {
        return output::print_json(&sent);
    }
    let mut table = Table::new(&[
        left("#Broker Name", 32, "  "),
        left("#QID", 4, "  "),
        left("#Send Result", 20, "    "),
        left("#MsgId", 0, ""),
    ]);
    let qid = sent.queue_id.to_string();
    table.row(vec![sent.broker_name, qid, sent.send_status, sent.msg_id]);
    table.print();
    Ok(())
}

/// One message consumeMessage read.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Consumed {
    broker_name: String,
    queue_id: i32,
    queue_offset: i64,
    store_timestamp: i64,
    tags: String,
    keys: String,
    body: String,
}

/// `consumeMessage`: pulls up to `-c` messages from `-o` of every readable queue (or `-b`/`-i`).
pub(super) fn consume_message(args: &ConsumeArgs) -> Result<(), AdminError> {
    let route = route(&mut args.common.namesrv()?, &args.topic)?;
    let mut consumed = Vec::new();
    for (broker_name, addr, n) in queues(&route, false, args.broker.as_deref()) {
        let mut conn = broker(&addr)?;
        for queue in (0..n).filter(|q| args.queue.is_none_or(|only| only == *q)) {
            let mut offset = args.offset;
            while consumed.len() < args.count {
                let max = (args.count - consumed.len()).min(32) as i32;
                let pulled = conn
                    .pull(&args.group, &args.topic, queue, offset, max, "*", 0)
                    .context(|| format!("PULL_MESSAGE (11) of {}:{queue}", args.topic))?;
                if pulled.messages.is_empty() {
                    break;
                }
                for m in pulled.messages {
                    let text = |k: &str| m.properties.get(k).unwrap_or("").to_string();
                    consumed.push(Consumed {
                        broker_name: broker_name.clone(),
                        queue_id: queue,
                        queue_offset: m.queue_offset,
                        store_timestamp: m.store_timestamp,
                        tags: text(TAGS),
                        keys: text(KEYS),
                        body: String::from_utf8_lossy(&m.body).into_owned(),
                    });
                }
                offset = pulled.next_begin_offset;
            }
        }
    }
    if args.common.json {
        return output::print_json(&consumed);
    }
    for m in &consumed {
        out!(
            "Consume ok, broker={} queueId={} queueOffset={} tags={} keys={} body={}",
            m.broker_name,
            m.queue_id,
            m.queue_offset,
            m.tags,
            m.keys,
            m.body
        );
    }
    Ok(())
}
