//! Message query commands: queryMsgById, queryMsgByKey, queryMsgByUniqueKey, queryMsgByOffset.
//!
//! A found message is printed as mqadmin's `printMsg` block (`%-20s %s` lines, properties as
//! Java's `HashMap.toString`, times as `yyyy-MM-dd HH:mm:ss,SSS`) and its body is written to
//! `/tmp/rocketmq/msgbodys/<msgId>`, as mqadmin does; `--printBody` also prints it.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};

use clap::Args;
use serde::Serialize;
use serde_json::{Map, Value};

use super::output::{self, date_time_millis, left, out, right, Table};
use super::topic::{route, select_addr};
use super::{broker, call, command, request_label, unparsable, AdminError, Common, Context};
use crate::client::{ClientError, Connection};
use crate::message::properties::{Properties, KEYS, KEY_SEPARATOR, TAGS, UNIQ_KEY};
use crate::message::record::{RecordError, RecordView};
use crate::message::{decode_offset_msg_id, java_string_hash, offset_msg_id, sysflag};
use crate::protocol::lenient;
use crate::remoting::{request, response};

/// Where mqadmin writes message bodies.
const BODY_DIR: &str = "/tmp/rocketmq/msgbodys";
/// mqadmin's pull consumer group (MixAll.TOOLS_CONSUMER_GROUP).
const TOOLS_CONSUMER: &str = "TOOLS_CONSUMER";

#[derive(Args, Debug)]
pub(super) struct ByIdArgs {
    #[command(flatten)]
    common: Common,
    /// Message ids: offsetMsgIds (the broker's msgId of a send), comma separated.
    #[arg(short = 'i', long = "msgId")]
    msg_id: String,
    /// Also print the body (as UTF-8 text) after each message.
    #[arg(long = "printBody")]
    print_body: bool,
    /// With `-d`: push each message to this group's client to consume at once
    /// (CONSUME_MESSAGE_DIRECTLY) instead of printing it.
    #[arg(short = 'g', long = "consumerGroup", requires = "client_id")]
    group: Option<String>,
    /// The consumer's client id (with `-g`).
    #[arg(short = 'd', long = "clientId", requires = "group")]
    client_id: Option<String>,
}

#[derive(Args, Debug)]
pub(super) struct ByKeyArgs {
    #[command(flatten)]
    common: Common,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Message key (one of the message's KEYS).
    #[arg(short = 'k', long = "msgKey")]
    key: String,
    /// Only messages stored at or after this time (ms since the epoch).
    #[arg(short = 'b', long = "beginTimestamp", default_value_t = 0)]
    begin: i64,
    /// Only messages stored at or before this time (ms since the epoch).
    #[arg(short = 'e', long = "endTimestamp", default_value_t = i64::MAX)]
    end: i64,
    /// At most this many messages from each broker.
    #[arg(short = 'm', long = "maxNum", default_value_t = 64)]
    max: i32,
}

#[derive(Args, Debug)]
pub(super) struct ByUniqueKeyArgs {
    #[command(flatten)]
    common: Common,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// The message's unique key (UNIQ_KEY, the producer's msgId).
    #[arg(short = 'i', long = "msgId")]
    msg_id: String,
    /// Also print the body (as UTF-8 text) after the message.
    #[arg(long = "printBody")]
    print_body: bool,
}

#[derive(Args, Debug)]
pub(super) struct ByOffsetArgs {
    #[command(flatten)]
    common: Common,
    /// Topic name.
    #[arg(short = 't', long = "topic")]
    topic: String,
    /// Broker name.
    #[arg(short = 'b', long = "brokerName")]
    broker: String,
    /// Queue id.
    #[arg(short = 'i', long = "queueId")]
    queue: i32,
    /// Queue offset.
    #[arg(short = 'o', long = "offset")]
    offset: i64,
    /// Also print the body (as UTF-8 text) after the message.
    #[arg(long = "printBody")]
    print_body: bool,
}

/// One stored message, as mqadmin shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Found {
    /// UNIQ_KEY when set, else the offsetMsgId (`MessageClientExt.getMsgId`).
    pub msg_id: String,
    pub offset_msg_id: String,
    pub topic: String,
    pub tags: Option<String>,
    pub keys: Option<String>,
    pub queue_id: i32,
    pub queue_offset: i64,
    pub commit_log_offset: i64,
    pub reconsume_times: i32,
    pub born_timestamp: i64,
    pub store_timestamp: i64,
    pub born_host: String,
    pub store_host: String,
    pub sys_flag: i32,
    pub flag: i32,
    #[serde(rename = "bodyCRC")]
    pub body_crc: u32,
    /// In `HashMap` order, as mqadmin prints them.
    pub properties: Map<String, Value>,
    /// The body as UTF-8 text (invalid sequences replaced).
    pub body: String,
    pub body_path: Option<String>,
    #[serde(skip)]
    pub raw_body: Vec<u8>,
}

impl Found {
    /// A message from its stored record; `extra` properties are added after its own (as a
    /// pull consumer adds MIN_OFFSET and MAX_OFFSET).
    fn from_view(view: &RecordView<'_>, extra: &[(&str, String)]) -> Result<Found, RecordsError> {
        let props = Properties::parse(view.properties);
        let text = |k: &str| props.get(k).map(str::to_string);
        let offset_msg_id = offset_msg_id(view.store_host, view.physical_offset);
        let mut pairs: Vec<(String, String)> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (k, v) in extra {
            pairs.retain(|(key, _)| key != k);
            pairs.push((k.to_string(), v.clone()));
        }
        let properties = java_hash_map_order(pairs)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let raw_body = body_of(view)?;
        Ok(Found {
            msg_id: text(UNIQ_KEY).unwrap_or_else(|| offset_msg_id.clone()),
            offset_msg_id,
            topic: view.topic.to_string(),
            tags: text(TAGS),
            keys: text(KEYS),
            queue_id: view.queue_id,
            queue_offset: view.queue_offset,
            commit_log_offset: view.physical_offset,
            reconsume_times: view.reconsume_times,
            born_timestamp: view.born_timestamp,
            store_timestamp: view.store_timestamp,
            born_host: java_host(view.born_host),
            store_host: java_host(view.store_host),
            sys_flag: view.sys_flag,
            flag: view.flag,
            body_crc: view.body_crc,
            properties,
            body: String::from_utf8_lossy(&raw_body).into_owned(),
            body_path: None,
            raw_body,
        })
    }
}

/// Why the stored records of an answer could not be read.
#[derive(Debug, thiserror::Error)]
enum RecordsError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the compressed body does not inflate: {0}")]
    Inflate(std::io::Error),
}

/// The body, inflated when the record is compressed (as Java clients decode it).
fn body_of(view: &RecordView<'_>) -> Result<Vec<u8>, RecordsError> {
    if view.sys_flag & sysflag::COMPRESSED == 0 {
        return Ok(view.body.to_vec());
    }
    let mut body = Vec::new();
    flate2::read::ZlibDecoder::new(view.body)
        .take(crate::limits::FRAME_SIZE_MAX_BYTES as u64)
        .read_to_end(&mut body)
        .map_err(RecordsError::Inflate)?;
    Ok(body)
}

/// `RemotingHelper.parseSocketAddressAddr`: `InetSocketAddress.toString()` without its `/`.
fn java_host(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
        IpAddr::V6(ip) => {
            let groups: Vec<String> = ip.segments().iter().map(|s| format!("{s:x}")).collect();
            format!("{}:{}", groups.join(":"), addr.port())
        }
    }
}

/// The iteration order of a `java.util.HashMap` the pairs were put into in this order: by
/// bucket (`(h ^ h >>> 16) & (capacity - 1)`, capacity 16 doubled past 3/4 full), then in
/// insertion order.
fn java_hash_map_order(mut pairs: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut capacity = 16usize;
    while pairs.len() > capacity / 4 * 3 {
        capacity *= 2;
    }
    let bucket = |key: &str| {
        let h = java_string_hash(key) as u32;
        (h ^ (h >> 16)) as usize & (capacity - 1)
    };
    pairs.sort_by_key(|(k, _)| bucket(k));
    pairs
}

/// Java's `AbstractMap.toString`: `{k=v, k2=v2}`.
fn java_map_string(map: &Map<String, Value>) -> String {
    let items: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    format!("{{{}}}", items.join(", "))
}

/// The stored records of a QUERY_MESSAGE or VIEW_MESSAGE_BY_ID body, back to back.
fn records(body: &[u8], extra: &[(&str, String)]) -> Result<Vec<Found>, RecordsError> {
    let mut found = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let view = RecordView::parse(rest)?;
        found.push(Found::from_view(&view, extra)?);
        rest = &rest[view.total_size..];
    }
    Ok(found)
}

/// Writes the body to mqadmin's `/tmp/rocketmq/msgbodys/<msgId>` and notes the path.
fn write_body(found: &mut Found) -> Result<(), AdminError> {
    let name: String = found
        .msg_id
        .chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    let path = format!("{BODY_DIR}/{name}");
    std::fs::create_dir_all(BODY_DIR)
        .and_then(|()| std::fs::write(&path, &found.raw_body))
        .map_err(|e| AdminError::Failed(format!("cannot write the message body to {path}: {e}")))?;
    found.body_path = Some(path);
    Ok(())
}

/// mqadmin's `printMsg` block (`OffsetID:` first for queryMsgById and queryMsgByOffset).
fn print_block(m: &Found, offset_id: bool, print_body: bool) {
    let line = |title: &str, value: &dyn std::fmt::Display| out!("{title:<20} {value}");
    let or_null = |v: &Option<String>| format!("[{}]", v.as_deref().unwrap_or("null"));
    if offset_id {
        line("OffsetID:", &m.offset_msg_id);
    }
    line("Topic:", &m.topic);
    line("Tags:", &or_null(&m.tags));
    line("Keys:", &or_null(&m.keys));
    line("Queue ID:", &m.queue_id);
    line("Queue Offset:", &m.queue_offset);
    line("CommitLog Offset:", &m.commit_log_offset);
    line("Reconsume Times:", &m.reconsume_times);
    line("Born Timestamp:", &date_time_millis(m.born_timestamp));
    line("Store Timestamp:", &date_time_millis(m.store_timestamp));
    line("Born Host:", &m.born_host);
    line("Store Host:", &m.store_host);
    line("System Flag:", &m.sys_flag);
    line("Properties:", &java_map_string(&m.properties));
    line("Message Body Path:", &m.body_path.as_deref().unwrap_or(""));
    if print_body {
        line("Message Body:", &m.body);
    }
}

/// Prints found messages as blocks, or as JSON (one object, or an array for `many`).
fn print_found(
    found: &[Found],
    json: bool,
    many: bool,
    offset_id: bool,
    print_body: bool,
) -> Result<(), AdminError> {
    if json {
        return match (many, found.first()) {
            (false, Some(one)) => output::print_json(one),
            _ => output::print_json(found),
        };
    }
    for (i, m) in found.iter().enumerate() {
        if i > 0 {
            out!();
        }
        print_block(m, offset_id, print_body);
    }
    Ok(())
}

/// VIEW_MESSAGE_BY_ID of the commit log offset `offset` on the open connection `conn`.
fn view(
    conn: &mut Connection,
    offset: i64,
    about: &str,
    extra: &[(&str, String)],
) -> Result<Found, AdminError> {
    let cmd = command(
        request::VIEW_MESSAGE_BY_ID,
        &[("offset", &offset.to_string())],
    );
    let label = request_label(cmd.code);
    let reply = call(conn, cmd, about)?;
    let addr = conn.addr().to_string();
    let mut found = records(&reply.body, extra).map_err(|e| unparsable(&label, &addr, e))?;
    if found.is_empty() {
        let e = format!("{label} {about}: {addr} answered with an empty body");
        return Err(AdminError::Failed(e));
    }
    Ok(found.swap_remove(0))
}

/// One offsetMsgId: its store host is asked for the record at its commit log offset.
pub(crate) fn view_by_id(msg_id: &str) -> Result<Found, AdminError> {
    let Some((addr, offset)) = decode_offset_msg_id(msg_id) else {
        return Err(AdminError::Invalid(format!(
            "{msg_id} is not an offsetMsgId (32 or 56 hex characters: store host and commit \
             log offset); for a UNIQ_KEY use queryMsgByUniqueKey -t <topic> -i {msg_id}"
        )));
    };
    let mut conn = broker(&addr.to_string())?;
    view(
        &mut conn,
        offset,
        &format!("of commit log offset {offset} (msgId {msg_id})"),
        &[],
    )
}

/// `queryMsgById`: every comma separated offsetMsgId of `-i`; the ones not found fail the
/// command after the others are printed.
pub(super) fn query_msg_by_id(args: &ByIdArgs) -> Result<(), AdminError> {
    let ids: Vec<&str> = args
        .msg_id
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .collect();
    if ids.is_empty() {
        return Err(AdminError::Invalid("no message id given (-i)".into()));
    }
    if let (Some(group), Some(client_id)) = (&args.group, &args.client_id) {
        return consume_directly(&args.common, &ids, group.trim(), client_id.trim());
    }
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for id in &ids {
        match view_by_id(id).and_then(|mut m| write_body(&mut m).map(|()| m)) {
            Ok(m) => found.push(m),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if !found.is_empty() || args.common.json {
        print_found(&found, args.common.json, true, true, args.print_body)?;
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(AdminError::Failed(errors.swap_remove(0))),
        _ => Err(AdminError::Failed(errors.join("; "))),
    }
}

/// `queryMsgById -g -d` (mqadmin's `pushMsg`): each message to the client to consume at once,
/// if it is a push consumer; prints Java's `ConsumeMessageDirectlyResult` line per message.
fn consume_directly(
    common: &Common,
    ids: &[&str],
    group: &str,
    client_id: &str,
) -> Result<(), AdminError> {
    let info = super::client_relay::running_info(common, group, client_id, false)?;
    if !info.is_push() {
        out!("this {client_id} client is not push consumer ,not support direct push ");
        return Ok(());
    }
    let mut results = Vec::new();
    for id in ids {
        let m = view_by_id(id)?;
        let cmd = command(
            request::CONSUME_MESSAGE_DIRECTLY,
            &[
                ("consumerGroup", group),
                ("clientId", client_id),
                ("msgId", &m.offset_msg_id),
                ("topic", &m.topic),
            ],
        );
        let about = format!("of message {id} to client {client_id} of group {group}");
        let reply = call(&mut broker(&m.store_host)?, cmd, &about)?;
        let result: Value = lenient::from_slice(&reply.body)
            .map_err(|e| AdminError::Failed(format!("the result of {id} does not parse: {e}")))?;
        results.push(result);
    }
    if common.json {
        return output::print_json(&results);
    }
    for r in &results {
        // Read as fastjson's smart match does: `autoCommit` or `auto_commit` (the Rust
        // client writes its fields in snake case).
        let text = |k: &str| {
            let snake: String = k
                .chars()
                .flat_map(|c| match c.is_ascii_uppercase() {
                    true => vec!['_', c.to_ascii_lowercase()],
                    false => vec![c],
                })
                .collect();
            match r.get(k).or_else(|| r.get(&snake)).unwrap_or(&Value::Null) {
                Value::Null => "null".to_string(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            }
        };
        out!(
            "ConsumeMessageDirectlyResult [order={}, autoCommit={}, consumeResult={}, remark={}, \
             spentTimeMills={}]",
            text("order"),
            text("autoCommit"),
            text("consumeResult"),
            text("remark"),
            text("spentTimeMills")
        );
    }
    Ok(())
}

/// A QUERY_MESSAGE lookup on every broker of a topic's route.
struct KeyLookup<'a> {
    topic: &'a str,
    key: &'a str,
    unique: bool,
    max: i32,
    begin: i64,
    end: i64,
}

/// What every broker answered: messages matching the key (broker name first), and why each
/// broker without any found none.
struct Answers {
    found: Vec<(String, Found)>,
    misses: Vec<String>,
}

impl KeyLookup<'_> {
    /// Asks the master (else any broker) of every broker group of the topic's route.
    fn run(&self, common: &Common) -> Result<Answers, AdminError> {
        let route = route(&mut common.namesrv()?, self.topic)?;
        let mut answers = Answers {
            found: Vec::new(),
            misses: Vec::new(),
        };
        for data in &route.broker_datas {
            let name = &data.broker_name;
            let Some(addr) = select_addr(data) else {
                answers.misses.push(format!("{name} has no address"));
                continue;
            };
            match self.ask(addr) {
                Ok(found) if found.is_empty() => answers
                    .misses
                    .push(format!("{name}: {addr} found no message with this key")),
                Ok(found) => answers
                    .found
                    .extend(found.into_iter().map(|m| (name.clone(), m))),
                Err(e) => answers.misses.push(format!("{name}: {e}")),
            }
        }
        if answers.found.is_empty() {
            let what = if self.unique { "unique key" } else { "key" };
            return Err(AdminError::NotFound(format!(
                "no message of topic {} with {what} {}: {}",
                self.topic,
                self.key,
                answers.misses.join("; ")
            )));
        }
        Ok(answers)
    }

    /// One broker's matching messages; QUERY_NOT_FOUND is an error naming the broker.
    fn ask(&self, addr: &str) -> Result<Vec<Found>, AdminError> {
        let max = self.max.to_string();
        let (begin, end) = (self.begin.to_string(), self.end.to_string());
        let unique = self.unique.to_string();
        let cmd = command(
            request::QUERY_MESSAGE,
            &[
                ("topic", self.topic),
                ("key", self.key),
                ("maxNum", &max),
                ("beginTimestamp", &begin),
                ("endTimestamp", &end),
                ("_UNIQUE_KEY_QUERY", &unique),
            ],
        );
        let label = request_label(cmd.code);
        let mut conn = broker(addr)?;
        let reply = call(&mut conn, cmd, &format!("of key {}", self.key))?;
        let found = records(&reply.body, &[]).map_err(|e| unparsable(&label, addr, e))?;
        Ok(found.into_iter().filter(|m| self.matches(m)).collect())
    }

    /// The client-side filter of `MQAdminImpl.queryMessage`: the index is hashed.
    fn matches(&self, m: &Found) -> bool {
        if m.topic != self.topic {
            return false;
        }
        if self.unique {
            return m.msg_id == self.key;
        }
        m.keys
            .as_deref()
            .is_some_and(|keys| keys.split(KEY_SEPARATOR).any(|k| k == self.key))
    }
}

/// Messages of `topic` with `key` among their KEYS on every broker of its route, with the
/// name of the broker each was found on.
pub(crate) fn messages_by_key(
    common: &Common,
    topic: &str,
    key: &str,
    max: i32,
) -> Result<Vec<(String, Found)>, AdminError> {
    messages_by_key_stored(common, topic, key, max, (0, i64::MAX))
}

/// [`messages_by_key`] stored between `begin` and `end` (ms since the epoch).
pub(crate) fn messages_by_key_stored(
    common: &Common,
    topic: &str,
    key: &str,
    max: i32,
    (begin, end): (i64, i64),
) -> Result<Vec<(String, Found)>, AdminError> {
    let lookup = KeyLookup {
        topic,
        key,
        unique: false,
        max,
        begin,
        end,
    };
    Ok(lookup.run(common)?.found)
}

/// PULL_MESSAGE of up to `max` stored records of a queue from `offset` (as TOOLS_CONSUMER,
/// without committing): the records and the next offset.
fn pull_records(
    conn: &mut Connection,
    topic: &str,
    queue: i32,
    offset: i64,
    max: i64,
) -> Result<(Vec<Found>, i64), AdminError> {
    let (q, o, n) = (queue.to_string(), offset.to_string(), max.to_string());
    let cmd = command(
        request::PULL_MESSAGE,
        &[
            ("consumerGroup", TOOLS_CONSUMER),
            ("topic", topic),
            ("queueId", &q),
            ("queueOffset", &o),
            ("maxMsgNums", &n),
            ("sysFlag", "4"),
            ("commitOffset", "0"),
            ("suspendTimeoutMillis", "0"),
            ("subscription", "*"),
            ("subVersion", "0"),
            ("expressionType", "TAG"),
        ],
    );
    let label = request_label(cmd.code);
    let reply = conn
        .invoke(cmd)
        .context(|| format!("{label} of {topic}:{queue} at {offset}"))?;
    let next = reply.ext("nextBeginOffset").and_then(|n| n.parse().ok());
    if reply.code != response::SUCCESS {
        return Ok((Vec::new(), next.unwrap_or(offset)));
    }
    let addr = conn.addr().to_string();
    let found = records(&reply.body, &[]).map_err(|e| unparsable(&label, &addr, e))?;
    Ok((found, next.unwrap_or(offset)))
}

/// The message at a queue offset on the broker at `addr`, if there is one.
pub(crate) fn message_at(
    addr: &str,
    topic: &str,
    queue: i32,
    offset: i64,
) -> Result<Option<Found>, AdminError> {
    let (records, _) = pull_records(&mut broker(addr)?, topic, queue, offset, 1)?;
    Ok(records.into_iter().find(|m| m.queue_offset == offset))
}

/// Messages of `topic` stored between `begin` and `end` (ms, inclusive) on every broker of its
/// route, newest first, at most `max`: per read queue, the offsets of the two times
/// (SEARCH_OFFSET_BY_TIMESTAMP) and the records between them.
pub(crate) fn messages_by_time(
    common: &Common,
    topic: &str,
    begin: i64,
    end: i64,
    max: usize,
) -> Result<Vec<(String, Found)>, AdminError> {
    if begin > end {
        let e = format!("the time range ends ({end}) before it begins ({begin})");
        return Err(AdminError::Invalid(e));
    }
    let route = route(&mut common.namesrv()?, topic)?;
    let mut found = Vec::new();
    for data in &route.broker_datas {
        let Some(addr) = select_addr(data) else {
            continue;
        };
        let name = &data.broker_name;
        let queues = route
            .queue_datas
            .iter()
            .find(|q| &q.broker_name == name)
            .map_or(0, |q| q.read_queue_nums);
        let mut conn = broker(addr)?;
        for queue in 0..queues {
            let q = queue.to_string();
            let mut search = |at: i64| {
                let at = at.to_string();
                let fields = [("topic", topic), ("queueId", &q), ("timestamp", &at)];
                conn.offset_call(request::SEARCH_OFFSET_BY_TIMESTAMP, &fields)
                    .context(|| format!("SEARCH_OFFSET_BY_TIMESTAMP (29) of {topic}:{q}"))
            };
            let (from, to) = (search(begin)?, search(end.saturating_add(1))?);
            // The newest `max` of the range are enough.
            let mut offset = from.max(to - max as i64);
            while offset < to {
                let (records, next) = pull_records(&mut conn, topic, queue, offset, 32)?;
                if records.is_empty() || next <= offset {
                    break;
                }
                let in_range = records
                    .into_iter()
                    .filter(|m| m.queue_offset < to)
                    .filter(|m| (begin..=end).contains(&m.store_timestamp));
                found.extend(in_range.map(|m| (name.clone(), m)));
                offset = next;
            }
        }
    }
    found.sort_by_key(|(_, m)| std::cmp::Reverse(m.store_timestamp));
    found.truncate(max);
    Ok(found)
}

/// Whether a consumer group got to a message (rocketmq's `TrackType` names).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageTrack {
    pub consumer_group: String,
    /// `CONSUMED` (the group's offset is past the message), `NOT_CONSUME_YET` or
    /// `NOT_ONLINE` (no client of the group is connected).
    pub track_type: String,
}

/// The consumer groups of the message's topic and whether each consumed it, from the
/// group's offset on the message's queue.
pub(crate) fn message_tracks(common: &Common, m: &Found) -> Result<Vec<MessageTrack>, AdminError> {
    let route = route(&mut common.namesrv()?, &m.topic)?;
    let broker_name = route
        .broker_datas
        .iter()
        .find(|b| b.broker_addrs.values().any(|a| *a == m.store_host))
        .map(|b| b.broker_name.clone());
    let mut tracks = Vec::new();
    for group in super::topic::topic_consumers(&route, &m.topic)? {
        let online = super::group::consumer_connection_info(common, &group)
            .is_ok_and(|c| !c.connection_set.is_empty());
        let consumed = super::group::consume_stats(common, &group)
            .ok()
            .and_then(|p| {
                let queue = p.queues.into_iter().find(|q| {
                    q.topic == m.topic
                        && Some(&q.broker_name) == broker_name.as_ref()
                        && q.queue_id == m.queue_id
                });
                queue.map(|q| q.consumer_offset > m.queue_offset)
            });
        let track_type = match (consumed, online) {
            (Some(true), _) => "CONSUMED",
            (_, false) => "NOT_ONLINE",
            _ => "NOT_CONSUME_YET",
        };
        tracks.push(MessageTrack {
            consumer_group: group,
            track_type: track_type.to_string(),
        });
    }
    Ok(tracks)
}

/// Sends the message with this offsetMsgId back to `group` (CONSUMER_SEND_MSG_BACK, delay
/// level 1): its consumers get it again from the group's retry topic, under its original
/// topic, after a second. A message of the group's DLQ goes back the same way (allowed two
/// more attempts than it has had).
pub(crate) fn resend_to_group(msg_id: &str, group: &str) -> Result<Found, AdminError> {
    let m = view_by_id(msg_id)?;
    let group = group.trim();
    if group.is_empty() {
        return Err(AdminError::Invalid("no consumer group to resend to".into()));
    }
    let (offset, max) = (
        m.commit_log_offset.to_string(),
        (m.reconsume_times + 2).to_string(),
    );
    let cmd = command(
        request::CONSUMER_SEND_MSG_BACK,
        &[
            ("offset", &offset),
            ("group", group),
            ("delayLevel", "1"),
            ("originMsgId", &m.msg_id),
            ("originTopic", &m.topic),
            ("unitMode", "false"),
            ("maxReconsumeTimes", &max),
        ],
    );
    let mut conn = broker(&m.store_host)?;
    call(
        &mut conn,
        cmd,
        &format!("of message {msg_id} to group {group}"),
    )?;
    Ok(m)
}

/// What queryMsgByKey prints per message with `--json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyRow {
    broker_name: String,
    msg_id: String,
    offset_msg_id: String,
    queue_id: i32,
    queue_offset: i64,
    store_timestamp: i64,
    tags: Option<String>,
    keys: Option<String>,
}

/// `queryMsgByKey`: messages with the key on every broker of the topic, as mqadmin's table.
pub(super) fn query_msg_by_key(args: &ByKeyArgs) -> Result<(), AdminError> {
    let lookup = KeyLookup {
        topic: &args.topic,
        key: &args.key,
        unique: false,
        max: args.max,
        begin: args.begin,
        end: args.end,
    };
    let answers = lookup.run(&args.common)?;
    let rows: Vec<KeyRow> = answers
        .found
        .into_iter()
        .map(|(broker_name, m)| KeyRow {
            broker_name,
            msg_id: m.msg_id,
            offset_msg_id: m.offset_msg_id,
            queue_id: m.queue_id,
            queue_offset: m.queue_offset,
            store_timestamp: m.store_timestamp,
            tags: m.tags,
            keys: m.keys,
        })
        .collect();
    if args.common.json {
        return output::print_json(&rows);
    }
    // mqadmin: "%-50s %4s %40s".
    let mut table = Table::new(&[
        left("#Message ID", 50, " "),
        right("#QID", 4, " "),
        right("#Offset", 40, ""),
    ]);
    for r in rows {
        table.row(vec![
            r.msg_id,
            r.queue_id.to_string(),
            r.queue_offset.to_string(),
        ]);
    }
    table.print();
    Ok(())
}

/// `queryMsgByUniqueKey`: the earliest stored message of the topic with this UNIQ_KEY.
pub(super) fn query_msg_by_unique_key(args: &ByUniqueKeyArgs) -> Result<(), AdminError> {
    let lookup = KeyLookup {
        topic: &args.topic,
        key: args.msg_id.trim(),
        unique: true,
        max: 32,
        begin: 0,
        end: i64::MAX,
    };
    let answers = lookup.run(&args.common)?;
    let earliest = answers
        .found
        .into_iter()
        .map(|(_, m)| m)
        .min_by_key(|m| m.store_timestamp);
    let Some(mut found) = earliest else {
        return Err(AdminError::NotFound(format!(
            "no message of topic {} with unique key {}",
            args.topic, args.msg_id
        )));
    };
    write_body(&mut found)?;
    print_found(&[found], args.common.json, false, false, args.print_body)
}

/// `queryMsgByOffset`: pulls the message at a queue offset (as TOOLS_CONSUMER) and views it.
pub(super) fn query_msg_by_offset(args: &ByOffsetArgs) -> Result<(), AdminError> {
    let (topic, name, queue, offset) = (&args.topic, &args.broker, args.queue, args.offset);
    let route = route(&mut args.common.namesrv()?, topic)?;
    let Some(data) = route.broker_datas.iter().find(|b| &b.broker_name == name) else {
        let known: Vec<&str> = route
            .broker_datas
            .iter()
            .map(|b| b.broker_name.as_str())
            .collect();
        return Err(AdminError::NotFound(format!(
            "broker {name} is not in the route of topic {topic} (its brokers: {})",
            known.join(", ")
        )));
    };
    let addr = select_addr(data)
        .ok_or_else(|| AdminError::Failed(format!("broker {name} has no address")))?;
    let mut conn = broker(addr)?;
    let about = format!("of topic {topic} queue {queue} offset {offset} from {name}");
    let pulled = conn
        .pull(TOOLS_CONSUMER, topic, queue, offset, 1, "*", 0)
        .context(|| format!("PULL_MESSAGE (11) {about}"))?;
    let Some(m) = pulled.messages.iter().find(|m| m.queue_offset == offset) else {
        let answer = ClientError::Server {
            addr: addr.to_string(),
            code: pulled.code,
            name: response::name(pulled.code).unwrap_or("UNKNOWN"),
            remark: Some(format!(
                "queue offsets {}..{}, next {}",
                pulled.min_offset, pulled.max_offset, pulled.next_begin_offset
            )),
        };
        let e = format!("no message at offset {offset} of topic {topic} queue {queue}: {answer}");
        return Err(AdminError::Failed(e));
    };
    // What a pull consumer adds to every message it pulls.
    let extra = [
        ("MIN_OFFSET", pulled.min_offset.to_string()),
        ("MAX_OFFSET", pulled.max_offset.to_string()),
    ];
    let physical = m.physical_offset;
    let about = format!("of commit log offset {physical} ({topic}:{queue}:{offset})");
    let mut found = view(&mut conn, physical, &about, &extra)?;
    write_body(&mut found)?;
    print_found(&[found], args.common.json, false, true, args.print_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_iterate_like_a_java_hash_map() {
        let pairs = |keys: &[&str]| -> Vec<(String, String)> {
            keys.iter()
                .map(|k| (k.to_string(), "v".to_string()))
                .collect()
        };
        // Java 8: new HashMap<>() with these puts prints
        // {KEYS=v, UNIQ_KEY=v, WAIT=v, TAGS=v}.
        let ordered = java_hash_map_order(pairs(&["TAGS", "KEYS", "UNIQ_KEY", "WAIT"]));
        let keys: Vec<&str> = ordered.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["KEYS", "UNIQ_KEY", "WAIT", "TAGS"]);
    }

    #[test]
    fn hosts_print_like_java() {
        assert_eq!(
            java_host("127.0.0.1:10911".parse().unwrap()),
            "127.0.0.1:10911"
        );
        assert_eq!(
            java_host("[::1]:9876".parse().unwrap()),
            "0:0:0:0:0:0:0:1:9876"
        );
    }
}
