//! Every golden fixture read the way Java reads it, whatever form a client writes a field in
//! (`protocol::lenient`, PROTOCOL notes in docs/client-quirks.md): for each JSON body and each
//! JSON header of tests/golden, every number and boolean is turned into its string form and
//! every numeric or boolean string into a number or boolean, one field at a time and all at
//! once, and the decoded value must not change. A body type with a fixture that this test does
//! not know fails it, so a new fixture cannot go unchecked.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};

use ringmq::admin::fastjson_mq::parse_mq_table;
use ringmq::protocol::fastjson;
use ringmq::protocol::heartbeat::{
    ConsumerIdList, HeartbeatData, LockBatchRequest, LockBatchResponse, MessageQueue,
};
use ringmq::protocol::lenient::{self, LenientError};
use ringmq::protocol::register::RegisterBrokerBody;
use ringmq::protocol::route::{ClusterInfo, KvTable, TopicList, TopicRouteData};
use ringmq::remoting::{request as req, split_frame, RemotingCommand, SerializeType};
use ringmq::store::metadata::SubscriptionGroupTable;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::golden::{frame, index};

// --- mutations ---------------------------------------------------------------------------------

/// The other form of a scalar, as some client writes it: a number or boolean as its string, a
/// numeric or boolean string (in canonical form) as a number or boolean. `None` when the value
/// has no other form.
fn other_form(value: &Value) -> Option<Value> {
    match value {
        Value::Number(n) => Some(Value::String(n.to_string())),
        Value::Bool(b) => Some(Value::String(b.to_string())),
        Value::String(s) if s == "true" || s == "false" => Some(Value::Bool(s == "true")),
        Value::String(s) => {
            let n: Value = serde_json::from_str(s).ok()?;
            (n.is_i64() || n.is_u64()).then_some(())?;
            let canonical = n.to_string();
            (canonical == *s).then_some(n)
        }
        _ => None,
    }
}

/// Paths (object keys and array indexes) of every scalar that has another form.
fn mutable_leaves(value: &Value, path: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                path.push(Step::Key(k.clone()));
                mutable_leaves(v, path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                path.push(Step::Index(i));
                mutable_leaves(v, path, out);
                path.pop();
            }
        }
        scalar => {
            if other_form(scalar).is_some() {
                out.push(path.clone());
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn leaf_mut<'a>(value: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(value, |v, step| match step {
        Step::Key(k) => &mut v[k.as_str()],
        Step::Index(i) => &mut v[*i],
    })
}

fn mutate(value: &Value, path: &[Step]) -> Value {
    let mut copy = value.clone();
    let leaf = leaf_mut(&mut copy, path);
    *leaf = other_form(leaf).expect("a mutable leaf");
    copy
}

/// Every variant of a JSON document: each mutable leaf alone, then all of them at once.
fn variants(original: &Value) -> Vec<(String, Value)> {
    let mut leaves = Vec::new();
    mutable_leaves(original, &mut Vec::new(), &mut leaves);
    let mut out: Vec<(String, Value)> = leaves
        .iter()
        .map(|path| (format!("{path:?}"), mutate(original, path)))
        .collect();
    let mut all = original.clone();
    for path in &leaves {
        let leaf = leaf_mut(&mut all, path);
        *leaf = other_form(leaf).expect("a mutable leaf");
    }
    out.push(("every leaf".into(), all));
    out
}

// --- bodies ------------------------------------------------------------------------------------

/// Decodes a body as the type ringmq reads it with, back to JSON for comparison; `via_value`
/// forces the path through a parsed value (the one non-Java forms take) for typed bodies.
type Reader = fn(&[u8], bool) -> Result<Value, String>;

fn typed<T: serde::de::DeserializeOwned + Serialize>(
    body: &[u8],
    via_value: bool,
) -> Result<Value, String> {
    let decoded: Result<T, LenientError> = if via_value {
        let value: Value =
            serde_json::from_slice(&fastjson::normalize(body)).map_err(|e| e.to_string())?;
        lenient::from_value(&value)
    } else {
        lenient::from_slice(body)
    };
    serde_json::to_value(&decoded.map_err(|e| e.to_string())?).map_err(|e| e.to_string())
}

fn register_body(body: &[u8], via_value: bool) -> Result<Value, String> {
    if via_value {
        return typed::<RegisterBrokerBody>(body, true);
    }
    let decoded = RegisterBrokerBody::decode(body, false).map_err(|e| e.to_string())?;
    serde_json::to_value(&decoded).map_err(|e| e.to_string())
}

/// `OffsetWrapper` as `ringmq admin consumerProgress` reads GET_CONSUME_STATS (admin/group.rs).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OffsetWrapper {
    #[serde(default)]
    broker_offset: i64,
    #[serde(default)]
    consumer_offset: i64,
    #[serde(default)]
    last_timestamp: i64,
}

fn consume_stats(body: &[u8], _via_value: bool) -> Result<Value, String> {
    let (entries, rest) = parse_mq_table(body, "offsetTable").map_err(|e| e.to_string())?;
    let tps: f64 = lenient::from_value(&rest["consumeTps"]).map_err(|e| e.to_string())?;
    let mut table: Vec<(MessageQueue, OffsetWrapper)> = Vec::new();
    for (mq, offsets) in entries {
        table.push((
            mq,
            lenient::from_value(&offsets).map_err(|e| e.to_string())?,
        ));
    }
    serde_json::to_value((tps, table)).map_err(|e| e.to_string())
}

/// A body as a JSON document to mutate, and the body text of a (mutated) document. Bodies are
/// JSON but for GET_CONSUME_STATS, whose `offsetTable` has MessageQueue objects for keys
/// (fastjson's `Map<MessageQueue, X>`): its document is `{"rest":…,"table":[[key,value],…]}`.
fn document(request_code: i32, body: &[u8]) -> (Value, fn(&Value) -> Vec<u8>) {
    if request_code != req::GET_CONSUME_STATS {
        let value = serde_json::from_slice(&fastjson::normalize(body)).expect("a JSON body");
        return (value, |v| serde_json::to_vec(v).unwrap());
    }
    let (entries, rest) = parse_mq_table(body, "offsetTable").expect("a consume stats body");
    let table: Vec<Value> = entries
        .into_iter()
        .map(|(mq, v)| serde_json::json!([mq, v]))
        .collect();
    let doc = serde_json::json!({ "rest": rest, "table": table });
    let write = |doc: &Value| {
        let pairs: Vec<String> = doc["table"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| format!("{}:{}", pair[0], pair[1]))
            .collect();
        let mut rest = doc["rest"].clone();
        rest["offsetTable"] = Value::String("TABLE".into());
        let text = serde_json::to_string(&rest).unwrap();
        text.replace("\"TABLE\"", &format!("{{{}}}", pairs.join(",")))
            .into_bytes()
    };
    (doc, write)
}

/// The type each JSON body with a fixture is read as; `None` for bodies that are not JSON.
fn body_reader(request_code: i32, response: bool) -> Option<Result<Reader, &'static str>> {
    let reader: Reader = match (request_code, response) {
        (req::HEART_BEAT, false) => typed::<HeartbeatData>,
        (req::LOCK_BATCH_MQ | req::UNLOCK_BATCH_MQ, false) => typed::<LockBatchRequest>,
        (req::LOCK_BATCH_MQ, true) => typed::<LockBatchResponse>,
        (req::REGISTER_BROKER, false) => register_body,
        (req::GET_ROUTEINFO_BY_TOPIC, true) => typed::<TopicRouteData>,
        (req::GET_BROKER_CLUSTER_INFO, true) => typed::<ClusterInfo>,
        (req::GET_CONSUMER_LIST_BY_GROUP, true) => typed::<ConsumerIdList>,
        (req::GET_ALL_TOPIC_LIST_FROM_NAMESERVER, true) => typed::<TopicList>,
        (req::GET_BROKER_RUNTIME_INFO, true) => typed::<KvTable>,
        (req::GET_ALL_SUBSCRIPTIONGROUP_CONFIG, true) => typed::<SubscriptionGroupTable>,
        (req::GET_CONSUME_STATS, true) => consume_stats,
        // Message records and batches (MESSAGE.md), not JSON.
        (req::SEND_MESSAGE | req::SEND_MESSAGE_V2 | req::SEND_BATCH_MESSAGE, false)
        | (req::PULL_MESSAGE | req::VIEW_MESSAGE_BY_ID, true)
        | (req::CHECK_TRANSACTION_STATE, false) => return None,
        // admin's private GroupList: a set of group names, no number or boolean to mutate.
        (req::QUERY_TOPIC_CONSUME_BY_WHO, true) => {
            return Some(Err("group names only: nothing to mutate"))
        }
        _ => panic!("a fixture body of request {request_code} (response {response}) has no reader"),
    };
    Some(Ok(reader))
}

#[test]
fn every_body_fixture_reads_alike_with_numbers_and_booleans_in_either_form() {
    let mut checked: BTreeMap<(i32, bool), usize> = BTreeMap::new();
    let mut variants_read = 0;
    for f in index() {
        let cmd =
            RemotingCommand::decode(frame(&f.file)).unwrap_or_else(|e| panic!("{}: {e}", f.file));
        if cmd.body.is_empty() {
            continue;
        }
        let code = i32::try_from(f.request_code).expect("request codes fit an i32");
        let Some(reader) = body_reader(code, f.response) else {
            continue;
        };
        let Ok(read) = reader else { continue };
        let expected = read(&cmd.body, false).unwrap_or_else(|e| panic!("{}: {e}", f.file));
        // The direct read (Java's own form) and the read through a value agree.
        assert_eq!(read(&cmd.body, true), Ok(expected.clone()), "{}", f.file);
        let (original, write) = document(code, &cmd.body);
        assert_eq!(
            read(&write(&original), false),
            Ok(expected.clone()),
            "{}",
            f.file
        );
        for (what, variant) in variants(&original) {
            let text = write(&variant);
            let got = read(&text, false)
                .unwrap_or_else(|e| panic!("{} with {what} mutated: {e}", f.file));
            assert_eq!(got, expected, "{} with {what} mutated", f.file);
            variants_read += 1;
        }
        *checked.entry((code, f.response)).or_default() += 1;
    }
    let expected_types = [
        (req::HEART_BEAT, false),
        (req::LOCK_BATCH_MQ, false),
        (req::UNLOCK_BATCH_MQ, false),
        (req::LOCK_BATCH_MQ, true),
        (req::REGISTER_BROKER, false),
        (req::GET_ROUTEINFO_BY_TOPIC, true),
        (req::GET_BROKER_CLUSTER_INFO, true),
        (req::GET_CONSUMER_LIST_BY_GROUP, true),
        (req::GET_ALL_TOPIC_LIST_FROM_NAMESERVER, true),
        (req::GET_BROKER_RUNTIME_INFO, true),
        (req::GET_ALL_SUBSCRIPTIONGROUP_CONFIG, true),
        (req::GET_CONSUME_STATS, true),
    ];
    for key in expected_types {
        assert!(
            checked.contains_key(&key),
            "no fixture checked for {key:?}: {checked:?}"
        );
    }
    // The Go client's heartbeats (codeSet as strings) are among them.
    assert!(checked[&(req::HEART_BEAT, false)] >= 7, "{checked:?}");
    assert!(variants_read > 300, "only {variants_read} variants read");
}

// --- headers -----------------------------------------------------------------------------------

/// A JSON-header frame with `header` in place of the original one.
fn with_header(body: &[u8], header: &Value) -> Bytes {
    let header = serde_json::to_vec(header).unwrap();
    let mut out = BytesMut::new();
    out.put_u32((4 + header.len() + body.len()) as u32);
    out.put_u32(header.len() as u32);
    out.put_slice(&header);
    out.put_slice(body);
    out.freeze()
}

#[test]
fn every_json_header_fixture_reads_alike_with_numbers_and_booleans_in_either_form() {
    let mut headers = 0;
    for f in index() {
        let raw = split_frame(frame(&f.file)).unwrap();
        if raw.serialize_type != SerializeType::Json {
            continue;
        }
        let expected = RemotingCommand::decode(frame(&f.file)).unwrap();
        let original: Value = serde_json::from_slice(&raw.header)
            .unwrap_or_else(|e| panic!("{}: header {e}", f.file));
        for (what, variant) in variants(&original) {
            let got = RemotingCommand::decode(with_header(&raw.body, &variant))
                .unwrap_or_else(|e| panic!("{} with {what} mutated: {e}", f.file));
            assert_eq!(
                (got.code, got.language, got.version, got.opaque, got.flag),
                (
                    expected.code,
                    expected.language,
                    expected.version,
                    expected.opaque,
                    expected.flag
                ),
                "{} with {what} mutated",
                f.file
            );
            assert_eq!(
                got.remark, expected.remark,
                "{} with {what} mutated",
                f.file
            );
            assert_eq!(
                got.ext_fields, expected.ext_fields,
                "{} with {what} mutated",
                f.file
            );
            assert_eq!(got.body, expected.body, "{}", f.file);
        }
        headers += 1;
    }
    assert!(headers > 150, "only {headers} JSON headers checked");
}

#[test]
fn a_number_wider_than_its_field_is_refused_naming_the_field() {
    let go = RemotingCommand::decode(frame("go/0022-c2s-34-heartbeat.bin")).unwrap();
    let mut body: Value = serde_json::from_slice(&go.body).unwrap();
    body["consumerDataSet"][0]["subscriptionDataSet"][0]["subVersion"] =
        Value::String("99999999999999999999".into());
    let err =
        lenient::from_slice::<HeartbeatData>(&serde_json::to_vec(&body).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "consumerDataSet[0].subscriptionDataSet[0].subVersion: 99999999999999999999 does not \
         fit a 64-bit integer"
    );
    let lock = br#"{"clientId":"c","consumerGroup":"g","mqSet":[{"brokerName":"b","queueId":"4294967296","topic":"T"}]}"#;
    let err = lenient::from_slice::<LockBatchRequest>(lock).unwrap_err();
    assert_eq!(
        err.to_string(),
        "mqSet[0].queueId: 4294967296 does not fit a 32-bit integer"
    );
}
