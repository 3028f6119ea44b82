//! `queryMsgTraceById`: a message's trace, as clients with trace enabled wrote it to the trace
//! topic (crate::message::trace): the trace messages keyed by the message id, decoded, and the
//! records about that id shown one per row — Pub (send), SubBefore / SubAfter (each consume),
//! EndTransaction — with time, cost, status and client host. A record that does not decode is
//! shown as such, with why, beside the others.

use clap::Args;
use serde::Serialize;

use super::output::{self, date_time_millis, left, Table};
use super::query::{messages_by_key_stored, Found};
use super::{AdminError, Common};
use crate::message::trace::{self, TraceEntry, TraceRecord, TraceType, DEFAULT_TRACE_TOPIC};

#[derive(Args, Debug)]
pub(super) struct TraceArgs {
    #[command(flatten)]
    common: Common,
    /// The message's id (its msgId / UNIQ_KEY, as the send result gives it).
    #[arg(short = 'i', long = "msgId")]
    msg_id: String,
    /// The trace topic the clients write to.
    #[arg(short = 't', long = "traceTopic", default_value = DEFAULT_TRACE_TOPIC)]
    trace_topic: String,
    /// Only trace messages stored at or after this time (ms since the epoch).
    #[arg(short = 'b', long = "beginTimestamp", default_value_t = 0)]
    begin: i64,
    /// Only trace messages stored at or before this time (ms since the epoch).
    #[arg(short = 'e', long = "endTimestamp", default_value_t = i64::MAX)]
    end: i64,
    /// At most this many trace messages from each broker (mqadmin's -num).
    #[arg(long = "maxNum", visible_alias = "num", default_value_t = 64)]
    max: i32,
}

/// One row of a message's trace.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceView {
    /// Pub, SubBefore, SubAfter, EndTransaction; `Invalid` for a record that does not decode.
    pub trace_type: String,
    /// Producer group, or the consumer group (a SubAfter's from its SubBefore).
    pub group: Option<String>,
    /// The client's host: written by the client, else the trace message's born host.
    pub client_host: String,
    /// When (ms since the epoch).
    pub timestamp: Option<i64>,
    pub cost_ms: Option<i64>,
    /// success / failed (Pub, SubAfter), the transaction state (EndTransaction), the retry
    /// count (SubBefore), or why the record does not decode.
    pub status: String,
    pub topic: Option<String>,
    pub tags: Option<String>,
    pub keys: Option<String>,
    pub store_host: Option<String>,
    pub offset_msg_id: Option<String>,
    pub request_id: Option<String>,
    /// The text of a record that does not decode.
    pub invalid_text: Option<String>,
    /// The trace message the record was in (its offsetMsgId).
    pub trace_message: String,
}

/// The trace of `msg_id` in `trace_topic`, oldest first. No trace message at all is
/// `AdminError::NotFound`.
pub(crate) fn message_trace(
    common: &Common,
    trace_topic: &str,
    msg_id: &str,
    max: i32,
    stored: (i64, i64),
) -> Result<Vec<TraceView>, AdminError> {
    let found = messages_by_key_stored(common, trace_topic, msg_id, max, stored).map_err(|e| {
        AdminError::NotFound(format!(
            "no trace of message {msg_id} in {trace_topic} (do the clients enable trace? does \
             the broker have the topic: traceTopicEnable=true?): {e}"
        ))
    })?;
    let mut views = Vec::new();
    for (_, message) in &found {
        views.extend(views_of(msg_id, message));
    }
    join_consumes(&mut views);
    views.sort_by_key(|v| (v.timestamp.unwrap_or(i64::MAX), order(&v.trace_type)));
    Ok(views)
}

fn order(trace_type: &str) -> u8 {
    match trace_type {
        "Pub" => 0,
        "EndTransaction" => 1,
        "SubBefore" => 2,
        "SubAfter" => 3,
        _ => 4,
    }
}

/// The rows of one trace message about `msg_id`. A record that does not decode is shown if
/// its text names the id, or if nothing else in the message does (the message was found by
/// that id).
fn views_of(msg_id: &str, message: &Found) -> Vec<TraceView> {
    let host = message
        .born_host
        .rsplit_once(':')
        .map_or(message.born_host.as_str(), |(h, _)| h);
    let entries = trace::decode_body(&message.raw_body);
    let valid: Vec<TraceView> = entries
        .iter()
        .filter_map(|e| match e {
            TraceEntry::Record(r) if r.msg_id == msg_id => Some(view(r, host, message)),
            _ => None,
        })
        .collect();
    let invalid = entries.iter().filter_map(|e| match e {
        TraceEntry::Invalid { text, reason } if valid.is_empty() || text.contains(msg_id) => {
            Some(TraceView {
                trace_type: "Invalid".into(),
                group: None,
                client_host: host.to_string(),
                timestamp: None,
                cost_ms: None,
                status: reason.to_string(),
                topic: None,
                tags: None,
                keys: None,
                store_host: None,
                offset_msg_id: None,
                request_id: None,
                invalid_text: Some(text.clone()),
                trace_message: message.offset_msg_id.clone(),
            })
        }
        _ => None,
    });
    let invalid: Vec<TraceView> = invalid.collect();
    valid.into_iter().chain(invalid).collect()
}

fn view(r: &TraceRecord, host: &str, message: &Found) -> TraceView {
    let outcome = |ok: Option<bool>| match ok {
        Some(true) => "success".to_string(),
        _ => "failed".to_string(),
    };
    let status = match r.trace_type {
        TraceType::Pub | TraceType::SubAfter => outcome(r.success),
        TraceType::SubBefore => format!("retry {}", r.retry_times.unwrap_or(0)),
        TraceType::EndTransaction => r.transaction_state.clone().unwrap_or_default(),
    };
    TraceView {
        trace_type: r.trace_type.name().to_string(),
        group: r.group.clone(),
        client_host: r.client_host.clone().unwrap_or_else(|| host.to_string()),
        timestamp: r.timestamp,
        cost_ms: r.cost_ms,
        status,
        topic: r.topic.clone(),
        tags: r.tags.clone(),
        keys: r.keys.clone(),
        store_host: r.store_host.clone(),
        offset_msg_id: r.offset_msg_id.clone(),
        request_id: r.request_id.clone(),
        invalid_text: None,
        trace_message: message.offset_msg_id.clone(),
    }
}

/// A SubAfter carries no group (and older clients no time): both come from the SubBefore
/// of the same consume (same request id).
fn join_consumes(views: &mut [TraceView]) {
    let befores: Vec<(String, Option<String>, Option<i64>)> = views
        .iter()
        .filter(|v| v.trace_type == "SubBefore")
        .filter_map(|v| Some((v.request_id.clone()?, v.group.clone(), v.timestamp)))
        .collect();
    for v in views.iter_mut().filter(|v| v.trace_type == "SubAfter") {
        let Some((_, group, time)) = befores
            .iter()
            .find(|(id, _, _)| Some(id) == v.request_id.as_ref())
        else {
            continue;
        };
        if v.group.is_none() {
            v.group = group.clone();
        }
        if v.timestamp.is_none() {
            v.timestamp = *time;
        }
    }
}

/// `queryMsgTraceById`.
pub(super) fn query_msg_trace_by_id(args: &TraceArgs) -> Result<(), AdminError> {
    let msg_id = args.msg_id.trim();
    let views = message_trace(
        &args.common,
        args.trace_topic.trim(),
        msg_id,
        args.max,
        (args.begin, args.end),
    )?;
    if args.common.json {
        return output::print_json(&views);
    }
    // mqadmin: "%-10s %-20s %-20s %-20s %-10s %-10s".
    let mut table = Table::new(&[
        left("#Type", 14, " "),
        left("#Group", 20, " "),
        left("#ClientHost", 20, " "),
        left("#Time", 23, " "),
        left("#CostTimes", 10, " "),
        left("#Status", 10, ""),
    ]);
    for v in &views {
        table.row(vec![
            v.trace_type.clone(),
            v.group.clone().unwrap_or_else(|| "-".into()),
            v.client_host.clone(),
            v.timestamp.map_or("-".into(), date_time_millis),
            v.cost_ms.map_or("-".into(), |c| format!("{c}ms")),
            if v.invalid_text.is_some() {
                "invalid".into()
            } else {
                v.status.clone()
            },
        ]);
    }
    table.print();
    for v in views.iter().filter(|v| v.invalid_text.is_some()) {
        output::write_out(format_args!(
            "invalid trace record in trace message {}: {}: {}",
            v.trace_message,
            v.status,
            v.invalid_text.as_deref().unwrap_or_default()
        ));
    }
    Ok(())
}
