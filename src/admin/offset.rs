//! `resetOffsetByTime`: moves a consumer group's offsets on a topic to a point in time, as
//! mqadmin does. The brokers of the topic's route are asked to do it
//! (INVOKE_BROKER_TO_RESET_OFFSET, which also tells the group's online clients); when the group
//! has no client online (CONSUMER_NOT_ONLINE) mqadmin falls back to its old way, done here too:
//! per queue the offset by time (SEARCH_OFFSET_BY_TIMESTAMP, or GET_MAX_OFFSET for `now`) is
//! committed with UPDATE_CONSUMER_OFFSET, with the old table of broker, consumer, timestamp and
//! rollback offsets.

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args};
use serde::Serialize;

use super::output::{self, left, out, Table};
use super::topic::{route, select_addr};
use super::{broker, call, command, fetch_mq_table, AdminError, Common, Context};
use crate::protocol::route::TopicRouteData;
use crate::remoting::{request, response, LanguageCode};

#[derive(Args, Debug)]
pub(super) struct ResetArgs {
    #[command(flatten)]
    common: Common,
    /// Consumer group name.
    #[arg(short = 'g', long = "group")]
    group: String,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// The time to go back (or forward) to: `now`, milliseconds since the epoch, or local time
    /// `yyyy-MM-dd#HH:mm:ss:SSS`.
    #[arg(short = 's', long = "timestamp")]
    timestamp: String,
    /// Also move offsets forward (`false`: only back) (`true`/`false`).
    #[arg(short = 'f', long = "force", action = ArgAction::Set, default_value = "true",
        value_parser = BoolishValueParser::new())]
    force: bool,
    /// The group's clients are C++ clients (they are sent the list form of the offsets).
    #[arg(short = 'c', long = "cplus")]
    cplus: bool,
}

/// One queue after a reset.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueRollback {
    pub broker_name: String,
    pub queue_id: i32,
    /// The group's offset now.
    pub offset: i64,
    /// Offline reset only: the queue's max offset, the group's offset before and the offset of
    /// the time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_offset: Option<i64>,
}

/// What a reset did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OffsetReset {
    pub group: String,
    pub topic: String,
    pub force: bool,
    /// As given (`now`, ms or a date).
    pub timestamp_text: String,
    /// In ms since the epoch; -1 for `now`.
    pub timestamp: i64,
    /// `true`: the brokers reset the offsets and told the online clients; `false`: the group
    /// was offline and the offsets were committed one by one.
    pub online: bool,
    pub queues: Vec<QueueRollback>,
}

/// The `-s` value in ms since the epoch (-1 for `now`), as mqadmin reads it.
pub(crate) fn parse_timestamp(text: &str) -> Result<i64, AdminError> {
    let text = text.trim();
    if text == "now" {
        return Ok(-1);
    }
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    output::parse_date_time_millis(text).ok_or_else(|| {
        AdminError::Invalid(format!(
            "the timestamp {text:?} is not `now`, milliseconds since the epoch or \
             yyyy-MM-dd#HH:mm:ss:SSS"
        ))
    })
}

/// Resets `group`'s offsets on `topic` to `timestamp` (ms, -1 = the end) on every broker of
/// the topic's route, falling back to committing them one by one when the group is offline.
pub(crate) fn reset_offset_by_time(
    common: &Common,
    group: &str,
    topic: &str,
    timestamp_text: &str,
    force: bool,
    cplus: bool,
) -> Result<OffsetReset, AdminError> {
    let (group, topic) = (group.trim(), topic.trim());
    let timestamp = parse_timestamp(timestamp_text)?;
    let route = route(&mut common.namesrv()?, topic)?;
    let mut reset = OffsetReset {
        group: group.to_string(),
        topic: topic.to_string(),
        force,
        timestamp_text: timestamp_text.trim().to_string(),
        timestamp,
        online: true,
        queues: Vec::new(),
    };
    match reset_by_brokers(&route, group, topic, timestamp, force, cplus) {
        Ok(queues) => reset.queues = queues,
        Err(AdminError::Call { source, .. })
            if source.code() == Some(response::CONSUMER_NOT_ONLINE) =>
        {
            reset.online = false;
            reset.queues = reset_offline(&route, group, topic, timestamp, force)?;
        }
        Err(e) => return Err(e),
    }
    let key = |q: &QueueRollback| (q.broker_name.clone(), q.queue_id);
    reset.queues.sort_by_key(key);
    Ok(reset)
}

/// INVOKE_BROKER_TO_RESET_OFFSET on the master (else any broker) of each broker group.
fn reset_by_brokers(
    route: &TopicRouteData,
    group: &str,
    topic: &str,
    timestamp: i64,
    force: bool,
    cplus: bool,
) -> Result<Vec<QueueRollback>, AdminError> {
    let mut queues = Vec::new();
    let (ts, force) = (timestamp.to_string(), force.to_string());
    for data in &route.broker_datas {
        let Some(addr) = select_addr(data) else {
            continue;
        };
        let fields = [
            ("topic", topic),
            ("group", group),
            ("timestamp", ts.as_str()),
            ("isForce", force.as_str()),
        ];
        let mut cmd = command(request::INVOKE_BROKER_TO_RESET_OFFSET, &fields);
        if cplus {
            cmd.language = LanguageCode::Cpp;
        }
        let about = format!("of group {group} on topic {topic} to broker {addr}");
        let (entries, _) = fetch_mq_table(&mut broker(addr)?, cmd, &about)?;
        for (mq, offset) in entries {
            queues.push(QueueRollback {
                broker_name: mq.broker_name,
                queue_id: mq.queue_id,
                offset: offset.as_i64().unwrap_or(0),
                broker_offset: None,
                consumer_offset: None,
                timestamp_offset: None,
            });
        }
    }
    Ok(queues)
}

/// mqadmin's `resetOffsetByTimestampOld`: per queue of the group's consume stats on each broker
/// (or, when it has none of this topic there, of the topic's stats from its min offset), the
/// offset of the time, committed when forced or when it is not past the group's offset.
fn reset_offline(
    route: &TopicRouteData,
    group: &str,
    topic: &str,
    timestamp: i64,
    force: bool,
) -> Result<Vec<QueueRollback>, AdminError> {
    let mut queues = Vec::new();
    for data in &route.broker_datas {
        let Some(addr) = select_addr(data) else {
            continue;
        };
        let mut conn = broker(addr)?;
        let cmd = command(request::GET_CONSUME_STATS, &[("consumerGroup", group)]);
        let (entries, _) = fetch_mq_table(&mut conn, cmd, &format!("of group {group}"))?;
        // (queue, broker offset, consumer offset)
        let mut known: Vec<(i32, i64, i64)> = entries
            .iter()
            .filter(|(mq, _)| mq.topic == topic)
            .map(|(mq, o)| {
                let n = |k: &str| o[k].as_i64().unwrap_or(0);
                (mq.queue_id, n("brokerOffset"), n("consumerOffset"))
            })
            .collect();
        if known.is_empty() {
            let cmd = command(request::GET_TOPIC_STATS_INFO, &[("topic", topic)]);
            let (stats, _) = fetch_mq_table(&mut conn, cmd, &format!("of topic {topic}"))?;
            known = stats
                .iter()
                .map(|(mq, o)| {
                    let n = |k: &str| o[k].as_i64().unwrap_or(0);
                    (mq.queue_id, n("maxOffset"), n("minOffset"))
                })
                .collect();
        }
        for (queue_id, broker_offset, consumer_offset) in known {
            let q = queue_id.to_string();
            let target = match timestamp {
                -1 => conn
                    .offset_call(
                        request::GET_MAX_OFFSET,
                        &[("topic", topic), ("queueId", &q)],
                    )
                    .context(|| format!("GET_MAX_OFFSET (30) of {topic}:{q} from {addr}"))?,
                t => {
                    let t = t.to_string();
                    let fields = [("topic", topic), ("queueId", &q), ("timestamp", &t)];
                    conn.offset_call(request::SEARCH_OFFSET_BY_TIMESTAMP, &fields)
                        .context(|| {
                            format!("SEARCH_OFFSET_BY_TIMESTAMP (29) of {topic}:{q} from {addr}")
                        })?
                }
            };
            let mut offset = consumer_offset;
            if force || target <= consumer_offset {
                offset = target;
                let o = target.to_string();
                let fields = [
                    ("consumerGroup", group),
                    ("topic", topic),
                    ("queueId", &q),
                    ("commitOffset", &o),
                ];
                let cmd = command(request::UPDATE_CONSUMER_OFFSET, &fields);
                call(&mut conn, cmd, &format!("of group {group} on {topic}:{q}"))?;
            }
            queues.push(QueueRollback {
                broker_name: data.broker_name.clone(),
                queue_id,
                offset,
                broker_offset: Some(broker_offset),
                consumer_offset: Some(consumer_offset),
                timestamp_offset: Some(target),
            });
        }
    }
    Ok(queues)
}

/// `resetOffsetByTime`, printed as mqadmin prints it (the old table when the group was offline).
pub(super) fn reset_offset_command(args: &ResetArgs) -> Result<(), AdminError> {
    let reset = reset_offset_by_time(
        &args.common,
        &args.group,
        &args.topic,
        &args.timestamp,
        args.force,
        args.cplus,
    )?;
    if args.common.json {
        return output::print_json(&reset);
    }
    let group_word = if reset.online {
        "group"
    } else {
        "consumerGroup"
    };
    out!(
        "rollback consumer offset by specified {group_word}[{}], topic[{}], force[{}], \
         timestamp(string)[{}], timestamp(long)[{}]",
        reset.group,
        reset.topic,
        reset.force,
        reset.timestamp_text,
        reset.timestamp
    );
    let table = if reset.online {
        let mut table = Table::new(&[
            left("#brokerName", 40, "  "),
            left("#queueId", 40, "  "),
            left("#offset", 0, ""),
        ]);
        for q in &reset.queues {
            let cells = [q.queue_id.into(), q.offset].map(|n: i64| n.to_string());
            let [qid, offset] = cells;
            table.row(vec![q.broker_name.clone(), qid, offset]);
        }
        table
    } else {
        let mut table = Table::new(&[
            left("#brokerName", 20, "  "),
            left("#queueId", 20, "  "),
            left("#brokerOffset", 20, "  "),
            left("#consumerOffset", 20, "  "),
            left("#timestampOffset", 20, "  "),
            left("#rollbackOffset", 0, ""),
        ]);
        for q in &reset.queues {
            let n = |v: Option<i64>| v.unwrap_or(0).to_string();
            table.row(vec![
                q.broker_name.clone(),
                q.queue_id.to_string(),
                n(q.broker_offset),
                n(q.consumer_offset),
                n(q.timestamp_offset),
                q.offset.to_string(),
            ]);
        }
        table
    };
    table.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_like_mqadmin() {
        assert_eq!(parse_timestamp("now").unwrap(), -1);
        assert_eq!(
            parse_timestamp(" 1700000000123 ").unwrap(),
            1_700_000_000_123
        );
        let local = parse_timestamp("2023-11-14#22:13:20:123").unwrap();
        assert_eq!(output::date_time_millis(local), "2023-11-14 22:13:20,123");
        let e = parse_timestamp("yesterday").unwrap_err().to_string();
        assert!(
            e.contains("\"yesterday\"") && e.contains("yyyy-MM-dd#HH:mm:ss:SSS"),
            "{e}"
        );
        assert!(parse_timestamp("2023-13-14#22:13:20:123").is_err());
    }
}
