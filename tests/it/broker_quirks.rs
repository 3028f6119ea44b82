//! The per-client quirks of PROTOCOL.md §9 against an in-process broker: the C++ client's golden
//! requests (integer ext values, a newline after the JSON header, unmasked header word) get
//! answers whose ext values are all JSON strings; HEART_BEAT is answered with version 409;
//! ROCKETMQ binary requests get binary answers; Go's and Rust's SEND_MESSAGE (10, long names +
//! `bname`), Rust's batch 320 and C++'s batch-in-310 (`m`) are stored; pulls filter by tag
//! whether the subscription travels in the pull or comes from a heartbeat (a C++ one with
//! ordinal enums and a garbage `codeSet` included).

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ringmq::client::broker::{decode_messages, OutgoingMessage, PulledMessage};
use ringmq::message::batch::{self, BatchElement};
use ringmq::message::properties::{Properties, KEYS, TAGS};
use ringmq::protocol::heartbeat::{
    parse_tag_expression, ConsumeType, ConsumerData, HeartbeatData, MessageModel,
};
use ringmq::protocol::send::SendRequest;
use ringmq::remoting::{
    request, response, split_frame, LanguageCode, RemotingCommand, SerializeType,
};
use serde_json::{json, Value};

use crate::golden::{frame as golden_frame, golden_dir};
use crate::harness::TestBroker;

const WAIT: Duration = Duration::from_secs(5);

/// index.json's entries by file.
fn golden_index() -> HashMap<String, Value> {
    let text = std::fs::read(golden_dir().join("index.json")).expect("golden index");
    let index: Value = serde_json::from_slice(&text).expect("index is JSON");
    index["frames"]
        .as_array()
        .expect("frames array")
        .iter()
        .map(|f| (f["file"].as_str().unwrap().to_string(), f.clone()))
        .collect()
}

/// The c2s request files of `client` with the given codes, in capture order.
fn golden_requests(index: &HashMap<String, Value>, client: &str, codes: &[i64]) -> Vec<String> {
    let mut files: Vec<String> = index
        .values()
        .filter(|f| f["client"] == client && f["direction"] == "c2s")
        .filter(|f| codes.contains(&f["request_code"].as_i64().unwrap()))
        .map(|f| f["file"].as_str().unwrap().to_string())
        .collect();
    files.sort();
    files
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A plain socket that keeps every frame's bytes, so response headers can be checked as sent.
struct Raw {
    stream: TcpStream,
    next_opaque: i32,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect to broker");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            next_opaque: 1_000,
        }
    }

    /// The next whole frame (length prefix included), or why there is none: "closed" or
    /// "silence" (nothing within the deadline).
    fn read_frame(&mut self, deadline: Instant) -> Result<Bytes, String> {
        let mut prefix = [0u8; 4];
        self.read_exact_until(&mut prefix, deadline)?;
        let len = u32::from_be_bytes(prefix) as usize;
        if len > 16 << 20 {
            return Err(format!("frame length {len} over 16 MiB"));
        }
        let mut frame = vec![0u8; 4 + len];
        frame[..4].copy_from_slice(&prefix);
        self.read_exact_until(&mut frame[4..], deadline)?;
        Ok(Bytes::from(frame))
    }

    fn read_exact_until(&mut self, mut buf: &mut [u8], deadline: Instant) -> Result<(), String> {
        while !buf.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("silence: no response within the deadline".into());
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(buf) {
                Ok(0) => return Err("the broker closed the connection".into()),
                Ok(n) => buf = &mut buf[n..],
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read failed: {e}")),
            }
        }
        Ok(())
    }

    /// Writes a request frame and returns the response with its opaque (raw bytes and decoded),
    /// skipping requests the broker initiates in between (NOTIFY_CONSUMER_IDS_CHANGED).
    fn exchange(&mut self, frame: &[u8]) -> Result<(Bytes, RemotingCommand), String> {
        let opaque = RemotingCommand::decode(Bytes::copy_from_slice(frame))
            .map_err(|e| format!("the request does not decode: {e}"))?
            .opaque;
        self.stream
            .write_all(frame)
            .map_err(|e| format!("write failed: {e}"))?;
        let deadline = Instant::now() + WAIT;
        loop {
            let raw = self.read_frame(deadline)?;
            let cmd = RemotingCommand::decode(raw.clone())
                .map_err(|e| format!("the response does not decode: {e}"))?;
            if cmd.is_response() && cmd.opaque == opaque {
                return Ok((raw, cmd));
            }
        }
    }

    /// Sends `cmd` (a fresh opaque) in its own serialize type.
    fn call(&mut self, mut cmd: RemotingCommand) -> (Bytes, RemotingCommand) {
        cmd.opaque = self.next_opaque;
        self.next_opaque += 1;
        let frame = cmd.to_frame().expect("encode request");
        self.exchange(&frame)
            .unwrap_or_else(|e| panic!("request {}: {e}", cmd.code))
    }
}

/// The response's header word and header, checked the way the C++ client reads them:
/// serialize byte exactly 0 (it does not mask it), a JSON header, and every ext value a JSON
/// string (it reads only `isString()` values). Returns the header.
fn cpp_readable(frame: &Bytes) -> Result<Value, String> {
    let word = u32::from_be_bytes(frame[4..8].try_into().unwrap());
    if word >> 24 != 0 {
        return Err(format!("header word {word:#x} is not plain JSON"));
    }
    let raw = split_frame(frame.clone()).map_err(|e| e.to_string())?;
    let header: Value = serde_json::from_slice(&raw.header)
        .map_err(|e| format!("the response header is not JSON: {e}"))?;
    if let Some(ext) = header.get("extFields") {
        let ext = ext
            .as_object()
            .ok_or_else(|| format!("extFields is {ext}, not an object"))?;
        for (k, v) in ext {
            if !v.is_string() {
                return Err(format!("ext field {k} is {v}, not a JSON string"));
            }
        }
    }
    if header["serializeTypeCurrentRPC"] != "JSON" {
        return Err(format!("header without serializeTypeCurrentRPC: {header}"));
    }
    Ok(header)
}

fn assert_cpp_readable(frame: &Bytes, what: &str) -> Value {
    cpp_readable(frame).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Every ext key of the golden response is in ours (shape, not values), and a golden body
/// means ours has one too.
fn golden_shape(golden_file: &str, ours: &RemotingCommand) -> Result<(), String> {
    let golden = RemotingCommand::decode(golden_frame(golden_file)).unwrap();
    let keys = |c: &RemotingCommand| -> BTreeSet<String> {
        c.ext_fields
            .iter()
            .flat_map(|f| f.iter().map(|(k, _)| k.to_string()))
            .collect()
    };
    let missing: Vec<String> = keys(&golden).difference(&keys(ours)).cloned().collect();
    if !missing.is_empty() {
        return Err(format!("our response lacks ext fields {missing:?}"));
    }
    if !golden.body.is_empty() && ours.body.is_empty() {
        return Err("Java answered with a body, we without".into());
    }
    Ok(())
}

fn assert_golden_shape(golden_file: &str, ours: &RemotingCommand) {
    golden_shape(golden_file, ours).unwrap_or_else(|e| panic!("{golden_file}: {e}"));
}

/// A frame as the C++ client builds one: JSON header with its fields in jsoncpp's (sorted)
/// order, ext values as given (integers stay integers), `remark: ""`, a trailing newline
/// counted in the header length.
fn cpp_frame(code: i32, opaque: i32, ext: Value, body: &[u8]) -> Vec<u8> {
    let mut ext_fields = json!({"AccessKey": "", "OnsChannel": "ALIYUN", "Signature": "c2ln"});
    for (k, v) in ext.as_object().unwrap() {
        ext_fields[k] = v.clone();
    }
    let header = json!({
        "code": code,
        "extFields": ext_fields,
        "flag": 0,
        "language": "CPP",
        "opaque": opaque,
        "remark": "",
        "version": 333,
    });
    let mut header = serde_json::to_vec(&header).unwrap();
    header.push(b'\n');
    let mut frame = Vec::with_capacity(8 + header.len() + body.len());
    frame.extend_from_slice(&((4 + header.len() + body.len()) as u32).to_be_bytes());
    frame.extend_from_slice(&(header.len() as u32).to_be_bytes());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(body);
    frame
}

/// `frame` with `from` replaced by `to` in its JSON header (lengths fixed up).
fn patch_json_header(frame: &Bytes, from: &str, to: &str) -> Vec<u8> {
    let raw = split_frame(frame.clone()).unwrap();
    assert_eq!(raw.serialize_type, SerializeType::Json);
    let text = std::str::from_utf8(&raw.header).unwrap();
    assert!(text.contains(from), "{from} not in {text}");
    let header = text.replacen(from, to, 1).into_bytes();
    let mut out = Vec::new();
    out.extend_from_slice(&((4 + header.len() + raw.body.len()) as u32).to_be_bytes());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&raw.body);
    out
}

fn message(topic: &str, queue_id: i32, body: &str, tag: &str) -> OutgoingMessage {
    let mut properties = Properties::default();
    properties.set(TAGS, tag);
    properties.set(KEYS, &format!("key-{body}"));
    OutgoingMessage {
        topic: topic.into(),
        queue_id,
        body: body.as_bytes().to_vec(),
        properties,
        flag: 0,
    }
}

fn bodies(messages: &[PulledMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

/// Everything in a queue from offset 0 (subscription `*` in the pull).
fn pull_all(conn: &mut ringmq::client::Connection, topic: &str, queue: i32) -> Vec<PulledMessage> {
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(
            Instant::now() < deadline,
            "pulling {topic}/{queue} does not end"
        );
        let pulled = conn
            .pull("quirk_reader", topic, queue, out.len() as i64, 32, "*", 0)
            .unwrap();
        match pulled.code {
            response::SUCCESS => out.extend(pulled.messages),
            response::PULL_NOT_FOUND => return out,
            code => panic!("pull {topic}/{queue} answered {code}"),
        }
    }
}

// --- the C++ client ---------------------------------------------------------------------------

/// The heartbeat of a C++ push consumer of `cpp_golden_push` (the capture holds no heartbeat of
/// that group): ordinal enums, `subVersion` a string, empty sets omitted.
fn cpp_push_member_heartbeat() -> Vec<u8> {
    let body = json!({
        "clientID": "5378-127.0.0.1@DEFAULT",
        "consumerDataSet": [{
            "consumeFromWhere": 4,
            "consumeType": 1,
            "groupName": "cpp_golden_push",
            "messageModel": 1,
            "subscriptionDataSet": [{
                "subString": "*",
                "subVersion": "1795243811204",
                "topic": "GoldenTopic",
            }],
        }],
    });
    let mut body = serde_json::to_vec(&body).unwrap();
    body.push(b'\n');
    cpp_frame(request::HEART_BEAT, 1, json!({}), &body)
}

#[test]
fn cpp_golden_broker_requests_are_answered_like_java_with_string_ext_values() {
    let broker = TestBroker::start(2);
    let index = golden_index();
    let codes = [10, 34, 35, 38, 14, 15, 41, 42, 11];
    let files = golden_requests(&index, "cpp", &codes);
    let replayed: BTreeSet<i64> = files
        .iter()
        .map(|f| index[f]["request_code"].as_i64().unwrap())
        .collect();
    assert_eq!(
        replayed,
        codes.iter().copied().collect(),
        "golden C++ broker requests"
    );
    let mut member = Some(Raw::connect(&broker.addr));
    let (frame, answer) = member
        .as_mut()
        .unwrap()
        .exchange(&cpp_push_member_heartbeat())
        .unwrap();
    assert_cpp_readable(&frame, "member heartbeat");
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    let mut filler = broker.connection();
    let mut raw = Raw::connect(&broker.addr);
    // Every frame is replayed and checked; what is wrong is collected and reported at the end.
    let mut problems: Vec<String> = Vec::new();
    for file in &files {
        let golden = &index[file];
        let code = golden["request_code"].as_i64().unwrap();
        let pair = golden["pair"].as_str();
        // The second GET_CONSUMER_LIST_BY_GROUP was answered SYSTEM_ERROR ("no consumer for this
        // group") after the push consumer had gone: make it go.
        let consumer_gone = code == 38 && pair.is_some_and(|p| index[p]["response_code"] == 1);
        if consumer_gone {
            member = None;
        }
        let mut frame = golden_frame(file).to_vec();
        let long_poll = "\"suspendTimeoutMillis\":\"15000\"";
        if code == 11 && String::from_utf8_lossy(&frame).contains(long_poll) {
            // Long-polled pulls: 15 s in the capture, 300 ms here (same answer, PULL_NOT_FOUND).
            frame = patch_json_header(
                &golden_frame(file),
                long_poll,
                "\"suspendTimeoutMillis\":\"300\"",
            );
        }
        let expected = match pair {
            Some(p) => index[p]["response_code"].as_i64().unwrap() as i32,
            // Not answered in the capture (the client shut down first); Java's answer to the
            // same state: PULL_NOT_FOUND after the hold, SUCCESS for the offset update.
            None if code == 11 => response::PULL_NOT_FOUND,
            None => response::SUCCESS,
        };
        let deadline = Instant::now() + WAIT;
        let exchanged = loop {
            let exchanged = raw.exchange(&frame);
            // The membership change of a closed connection is asynchronous.
            let settled = match &exchanged {
                Ok((_, resp)) => !consumer_gone || resp.code == expected,
                Err(_) => true,
            };
            if settled || Instant::now() > deadline {
                break exchanged;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (resp_frame, resp) = match exchanged {
            Ok(answer) => answer,
            Err(e) => {
                problems.push(format!("{file}: {e}"));
                raw = Raw::connect(&broker.addr);
                continue;
            }
        };
        if let Err(e) = check_cpp_answer(code, &resp_frame, &resp, expected, pair) {
            problems.push(format!("{file}: {e}"));
        }
        if code == 10 {
            // The send created GoldenTopic (queue 0 now holds 1 message). Fill queue 0 to 6 and
            // queue 1 to 5 messages, as in the capture.
            for i in 0..5 {
                for q in [0, 1] {
                    let msg = message("GoldenTopic", q, &i.to_string(), "TagA");
                    filler.send_message("fill_pg", &msg).unwrap();
                }
            }
        }
    }
    // The C++ integer queueId reached the queue's owner: the committed offset is there.
    let offset = filler.offset_call(
        request::QUERY_CONSUMER_OFFSET,
        &[
            ("consumerGroup", "cpp_golden_push"),
            ("topic", "GoldenTopic"),
            ("queueId", "0"),
        ],
    );
    if offset.as_ref().ok() != Some(&6) {
        problems.push(format!(
            "UPDATE_CONSUMER_OFFSET 6 from the C++ client, then QUERY_CONSUMER_OFFSET: {offset:?}"
        ));
    }
    drop(member);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// What a C++ client needs of the answer to a golden request, and what Java answered.
fn check_cpp_answer(
    code: i64,
    frame: &Bytes,
    resp: &RemotingCommand,
    expected: i32,
    pair: Option<&str>,
) -> Result<(), String> {
    cpp_readable(frame)?;
    if resp.code != expected {
        return Err(format!(
            "answered {} ({:?}); Java answered {expected}",
            resp.code, resp.remark
        ));
    }
    if let Some(p) = pair {
        golden_shape(p, resp)?;
    }
    let body_json = || -> Result<Value, String> {
        serde_json::from_slice(&resp.body).map_err(|e| format!("body is not JSON: {e}"))
    };
    let ext = |key: &str| resp.ext(key).map(str::to_string);
    let want = |key: &str, value: &str| -> Result<(), String> {
        match ext(key) {
            Some(v) if v == value => Ok(()),
            other => Err(format!("{key} is {other:?}, want {value}")),
        }
    };
    match code {
        11 if resp.code == response::SUCCESS => {
            let messages = decode_messages(&resp.body).map_err(|e| e.to_string())?;
            if messages.len() != 3 || messages.iter().any(|m| m.queue_id != 0) {
                return Err(format!("want 3 messages of queue 0, got {messages:?}"));
            }
            want("nextBeginOffset", "6")
        }
        11 => want("nextBeginOffset", "5"),
        14 => want("offset", "0"),
        38 if resp.code == response::SUCCESS => {
            let list = body_json()?;
            if list["consumerIdList"] != json!(["5378-127.0.0.1@DEFAULT"]) {
                return Err(format!("consumer list body {list}"));
            }
            Ok(())
        }
        41 => {
            // LockBatchResponseBody.lockOKMQSet, as fastjson names it (Java and C++ read it).
            let locked = body_json()?;
            let want = json!([{"brokerName": "broker-a", "queueId": 0, "topic": "GoldenTopic"}]);
            if locked["lockOKMQSet"] != want {
                return Err(format!(
                    "lock body {locked}, want {{\"lockOKMQSet\":{want}}}"
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

// --- HEART_BEAT's version -----------------------------------------------------------------------

#[test]
fn heart_beat_is_answered_with_version_409() {
    let broker = TestBroker::start(2);
    let data = HeartbeatData {
        client_id: "10.0.0.5@4242#1".into(),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: "CONSUME_FROM_LAST_OFFSET".into(),
            consume_type: ConsumeType::Passively,
            group_name: "version_cg".into(),
            message_model: MessageModel::Clustering,
            subscription_data_set: vec![parse_tag_expression("VersionTopic", "*", 1)],
            unit_mode: false,
        }],
        producer_data_set: vec![],
    };
    let body = serde_json::to_vec(&data).unwrap();
    for serialize_type in [SerializeType::Json, SerializeType::RocketMq] {
        let mut raw = Raw::connect(&broker.addr);
        let mut beat = RemotingCommand::request(request::HEART_BEAT).with_body(body.clone());
        beat.version = 409;
        beat.serialize_type = serialize_type;
        let (frame, answer) = raw.call(beat);
        assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
        assert_eq!(
            answer.version, 409,
            "{serialize_type:?} HEART_BEAT answered with version {}",
            answer.version
        );
        if serialize_type == SerializeType::Json {
            let header: Value =
                serde_json::from_slice(&split_frame(frame).unwrap().header).unwrap();
            assert_eq!(header["version"], 409);
        }
    }
    // Clients of other versions get the broker's version, not their own.
    let mut raw = Raw::connect(&broker.addr);
    let (_, answer) = raw
        .exchange(&golden_frame("cpp/0031-c2s-34-heartbeat.bin"))
        .unwrap();
    assert_eq!((answer.code, answer.version), (response::SUCCESS, 409));
}

// --- ROCKETMQ binary serialization --------------------------------------------------------------

#[test]
fn rocketmq_binary_requests_get_binary_responses() {
    let broker = TestBroker::start(2);
    let index = golden_index();
    let files = golden_requests(
        &index,
        "java-rocketmq-serialize",
        &[310, 35, 30, 31, 29, 11],
    );
    assert_eq!(files.len(), 6, "{files:?}");
    // As in the capture, queue 0 of GoldenTopic holds 3 messages before the golden send.
    let mut filler = broker.connection();
    for i in 0..3 {
        filler
            .send_message(
                "fill_pg",
                &message("GoldenTopic", 0, &i.to_string(), "TagA"),
            )
            .unwrap();
    }
    let mut raw = Raw::connect(&broker.addr);
    for file in &files {
        let golden = &index[file];
        let request_frame = golden_frame(file);
        assert_eq!(request_frame[4], 1, "{file} is a ROCKETMQ request");
        let request = RemotingCommand::decode(request_frame.clone()).unwrap();
        let (frame, resp) = raw
            .exchange(&request_frame)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(
            frame[4], 1,
            "{file}: answered with serialize type {}, not ROCKETMQ",
            frame[4]
        );
        assert_eq!(resp.serialize_type, SerializeType::RocketMq);
        // The fixed part of a binary header, read by hand: code i16, language u8, version i16,
        // opaque i32, flag i32.
        let header = &frame[8..];
        let code = i16::from_be_bytes([header[0], header[1]]);
        let version = i16::from_be_bytes([header[3], header[4]]);
        let opaque = i32::from_be_bytes(header[5..9].try_into().unwrap());
        let flag = i32::from_be_bytes(header[9..13].try_into().unwrap());
        let pair = golden["pair"].as_str().expect("answered in the capture");
        let expected = index[pair]["response_code"].as_i64().unwrap();
        assert_eq!(
            i64::from(code),
            expected,
            "{file}: answered {code} ({:?})",
            resp.remark
        );
        assert_eq!((opaque, flag & 1), (request.opaque, 1), "{file}");
        assert_eq!(version, 409, "{file}");
        assert_golden_shape(pair, &resp);
        match request.code {
            30 => assert_eq!(resp.ext("offset"), Some("4"), "{file}"),
            31 => assert_eq!(resp.ext("offset"), Some("0"), "{file}"),
            11 => {
                assert_eq!(resp.remark.as_deref(), Some("FOUND"));
                assert_eq!(resp.ext("nextBeginOffset"), Some("3"));
                assert_eq!(resp.ext("maxOffset"), Some("4"));
                assert_eq!(decode_messages(&resp.body).unwrap().len(), 3);
            }
            _ => {}
        }
    }
}

// --- sends: Go and Rust single (10), Rust batch (320), C++ batch in 310 -------------------------

fn single_send(
    language: LanguageCode,
    version: i32,
    topic: &str,
    queue_id: i32,
) -> RemotingCommand {
    let properties = format!(
        "UNIQ_KEY\u{1}{language:?}0001\u{2}TAGS\u{1}{language:?}Tag\u{2}KEYS\u{1}{language:?}Key\u{2}WAIT\u{1}true"
    );
    let header = SendRequest {
        producer_group: format!("{language:?}_pg"),
        topic: topic.into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id,
        sys_flag: 0,
        born_timestamp: now_ms(),
        flag: 0,
        properties,
        reconsume_times: 0,
        unit_mode: false,
        // Go sends strconv.Itoa(MaxReconsumeTimes): "0" for a plain message.
        max_reconsume_times: Some(0),
        batch: false,
    };
    let mut cmd = header
        .to_command(request::SEND_MESSAGE)
        .with_ext("bname", "broker-it")
        .with_body(format!("{language:?} body").into_bytes());
    cmd.language = language;
    cmd.version = version;
    cmd.remark = Some(String::new());
    cmd
}

#[test]
fn go_and_rust_send_message_10_with_long_names_and_bname_is_stored() {
    let broker = TestBroker::start(2);
    let mut raw = Raw::connect(&broker.addr);
    let mut conn = broker.connection();
    for (language, version, queue) in [(LanguageCode::Go, 317, 1), (LanguageCode::Rust, 474, 2)] {
        let send = single_send(language, version, "QuirkSend", queue);
        assert!(send.ext("producerGroup").is_some() && send.ext("a").is_none());
        let (frame, answer) = raw.call(send);
        assert_cpp_readable(&frame, "send 10");
        assert_eq!(
            answer.code,
            response::SUCCESS,
            "{language:?} SEND_MESSAGE: {:?}",
            answer.remark
        );
        assert_eq!(answer.ext("queueId"), Some(queue.to_string().as_str()));
        assert_eq!(answer.ext("queueOffset"), Some("0"));
        assert_eq!(answer.ext("msgId").map(str::len), Some(32));
        let stored = pull_all(&mut conn, "QuirkSend", queue);
        assert_eq!(bodies(&stored), [format!("{language:?} body")]);
        let p = &stored[0].properties;
        assert_eq!(p.get(TAGS), Some(format!("{language:?}Tag").as_str()));
        assert_eq!(p.get(KEYS), Some(format!("{language:?}Key").as_str()));
        assert_eq!(
            p.get("UNIQ_KEY"),
            Some(format!("{language:?}0001").as_str())
        );
        assert_eq!(p.get("WAIT"), None, "WAIT is not stored");
        assert_eq!(p.get("bname"), None);
    }
}

fn batch_body(prefix: &str, n: usize) -> Vec<u8> {
    let bodies: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let props: Vec<String> = (0..n)
        .map(|i| {
            format!("UNIQ_KEY\u{1}{prefix}U{i}\u{2}KEYS\u{1}{prefix}K{i}\u{2}TAGS\u{1}{prefix}")
        })
        .collect();
    let elements: Vec<BatchElement<'_>> = (0..n)
        .map(|i| BatchElement {
            flag: i as i32,
            body: bodies[i].as_bytes(),
            properties: &props[i],
        })
        .collect();
    batch::encode(&elements)
}

fn assert_batch_stored(stored: &[PulledMessage], prefix: &str, n: usize) {
    let want: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    assert_eq!(bodies(stored), want, "{prefix} batch");
    for (i, m) in stored.iter().enumerate() {
        assert_eq!(
            m.properties.get("UNIQ_KEY"),
            Some(format!("{prefix}U{i}").as_str())
        );
        assert_eq!(
            m.properties.get(KEYS),
            Some(format!("{prefix}K{i}").as_str())
        );
        assert_eq!(m.properties.get(TAGS), Some(prefix));
        assert_eq!(m.properties.get("WAIT"), None);
    }
}

#[test]
fn rust_batch_320_and_cpp_batch_in_310_are_stored_and_pulled_back() {
    let broker = TestBroker::start(2);
    let mut raw = Raw::connect(&broker.addr);
    let mut conn = broker.connection();
    // Rust (and Go, Java): SEND_BATCH_MESSAGE with V2 names.
    let header = SendRequest {
        producer_group: "rust_pg".into(),
        topic: "QuirkBatch".into(),
        default_topic: "TBW102".into(),
        default_topic_queue_nums: 4,
        queue_id: 1,
        sys_flag: 0,
        born_timestamp: now_ms(),
        flag: 0,
        properties: "WAIT\u{1}true".into(),
        reconsume_times: 0,
        unit_mode: false,
        max_reconsume_times: None,
        batch: true,
    };
    let mut send = header
        .to_command(request::SEND_BATCH_MESSAGE)
        .with_ext("n", "broker-it")
        .with_body(batch_body("rust", 3));
    send.language = LanguageCode::Rust;
    send.version = 474;
    let (frame, answer) = raw.call(send);
    assert_cpp_readable(&frame, "batch 320");
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    assert_eq!(answer.ext("queueOffset"), Some("0"));
    assert_eq!(
        answer.ext("msgId").unwrap().split(',').count(),
        3,
        "one msgId per message"
    );
    assert_batch_stored(&pull_all(&mut conn, "QuirkBatch", 1), "rust", 3);

    // C++: SEND_MESSAGE_V2 carrying a batch (`m`), integer ext values, in both spellings of
    // its bool ("true" from 2.x, "1" from 1.x's to_string).
    let mut expected_offset = 0;
    for (n, m) in [("cpptrue", "true"), ("cppone", "1")] {
        let ext = json!({
            "a": "cpp_pg", "b": "QuirkBatch", "c": "TBW102", "d": 4, "e": 3, "f": 0,
            "g": now_ms().to_string(), "h": 0, "i": "WAIT\u{1}true\u{2}", "j": "0",
            "k": "false", "l": 16, "m": m,
        });
        let frame = cpp_frame(request::SEND_MESSAGE_V2, 77, ext, &batch_body(n, 2));
        let (resp_frame, answer) = raw.exchange(&frame).unwrap();
        assert_cpp_readable(&resp_frame, "C++ batch 310");
        assert_eq!(answer.code, response::SUCCESS, "m={m}: {:?}", answer.remark);
        assert_eq!(
            answer.ext("queueOffset"),
            Some(expected_offset.to_string().as_str()),
            "m={m}"
        );
        assert_eq!(answer.ext("msgId").unwrap().split(',').count(), 2, "m={m}");
        expected_offset += 2;
    }
    let stored = pull_all(&mut conn, "QuirkBatch", 3);
    assert_eq!(
        stored.len(),
        4,
        "two C++ batches of 2: {:?}",
        bodies(&stored)
    );
    assert_batch_stored(&stored[..2], "cpptrue", 2);
    assert_batch_stored(&stored[2..], "cppone", 2);
}

// --- tag filtering: subscription in the pull, from a heartbeat, from a C++ heartbeat ------------

const TAG_TOPIC: &str = "QuirkTags";
const TAGS_SENT: [&str; 6] = ["A", "B", "C", "A", "B", "C"];

/// A pull whose filter comes from the group's heartbeat (sysFlag without SUBSCRIPTION).
fn pull_by_heartbeat(
    conn: &mut ringmq::client::Connection,
    group: &str,
    queue: i32,
    sub_version: i64,
) -> RemotingCommand {
    let pull = RemotingCommand::request(request::PULL_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", TAG_TOPIC)
        .with_ext("queueId", queue.to_string())
        .with_ext("queueOffset", "0")
        .with_ext("maxMsgNums", "32")
        .with_ext("sysFlag", "0")
        .with_ext("commitOffset", "0")
        .with_ext("suspendTimeoutMillis", "0")
        .with_ext("subVersion", sub_version.to_string())
        .with_ext("expressionType", "TAG");
    conn.invoke(pull).unwrap()
}

/// The bodies of queue `queue` whose tag is in `tags`.
fn expected(queue: i32, tags: &[&str]) -> Vec<String> {
    TAGS_SENT
        .iter()
        .enumerate()
        .filter(|(_, t)| tags.contains(t))
        .map(|(i, _)| format!("{queue}-{i}"))
        .collect()
}

fn filtered_bodies(answer: &RemotingCommand, what: &str) -> Vec<String> {
    assert_eq!(
        answer.code,
        response::SUCCESS,
        "{what}: answered {} ({:?})",
        answer.code,
        answer.remark
    );
    assert_eq!(answer.ext("nextBeginOffset"), Some("6"), "{what}");
    bodies(&decode_messages(&answer.body).unwrap())
}

#[test]
fn pulls_filter_by_tag_with_the_pulls_or_the_heartbeats_subscription() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    // Every queue, so both shards (and the control shard's replica path) are exercised.
    for queue in 0..4 {
        for (i, tag) in TAGS_SENT.iter().enumerate() {
            conn.send_message(
                "pg",
                &message(TAG_TOPIC, queue, &format!("{queue}-{i}"), tag),
            )
            .unwrap();
        }
    }
    // 1. SUBSCRIPTION flag: the pull's own expression.
    for queue in 0..4 {
        let pulled = conn
            .pull("flag_cg", TAG_TOPIC, queue, 0, 32, "A", 0)
            .unwrap();
        assert_eq!(pulled.code, response::SUCCESS);
        assert_eq!(
            bodies(&pulled.messages),
            expected(queue, &["A"]),
            "queue {queue}"
        );
    }
    // 2. No flag, no heartbeat: SUBSCRIPTION_NOT_EXIST.
    let none = pull_by_heartbeat(&mut conn, "nobody_cg", 1, 1);
    assert_eq!(
        none.code,
        response::SUBSCRIPTION_NOT_EXIST,
        "{:?}",
        none.remark
    );
    // 3. No flag: the heartbeat's subscription (Java shape, enum names).
    let version = now_ms();
    let mut member = broker.connection();
    member
        .heartbeat(&HeartbeatData {
            client_id: "10.0.0.5@77#1".into(),
            consumer_data_set: vec![ConsumerData {
                consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
                consume_type: ConsumeType::Passively,
                group_name: "hb_cg".into(),
                message_model: MessageModel::Clustering,
                subscription_data_set: vec![parse_tag_expression(TAG_TOPIC, "B || C", version)],
                unit_mode: false,
            }],
            producer_data_set: vec![],
        })
        .unwrap();
    for queue in 0..4 {
        let answer = pull_by_heartbeat(&mut conn, "hb_cg", queue, version);
        let what = format!("heartbeat subscription, queue {queue}");
        assert_eq!(
            filtered_bodies(&answer, &what),
            expected(queue, &["B", "C"]),
            "{what}"
        );
    }
    let newer = pull_by_heartbeat(&mut conn, "hb_cg", 2, version + 1);
    assert_eq!(
        newer.code,
        response::SUBSCRIPTION_NOT_LATEST,
        "{:?}",
        newer.remark
    );
    // 4. A C++ heartbeat: ordinal enums, subVersion a string, and codeSet = atoi(tag) garbage
    // (0 for "C"); the broker recomputes the tag hashes, so only C comes back.
    let cpp_version = version + 10;
    let body = json!({
        "clientID": "6000-127.0.0.1@DEFAULT",
        "consumerDataSet": [{
            "consumeFromWhere": 0,
            "consumeType": 1,
            "groupName": "cpp_tags_cg",
            "messageModel": 1,
            "subscriptionDataSet": [{
                "codeSet": [0],
                "subString": "C",
                "subVersion": cpp_version.to_string(),
                "tagsSet": ["C"],
                "topic": TAG_TOPIC,
            }],
        }],
    });
    let mut body = serde_json::to_vec(&body).unwrap();
    body.push(b'\n');
    let mut cpp = Raw::connect(&broker.addr);
    let (frame, answer) = cpp
        .exchange(&cpp_frame(request::HEART_BEAT, 5, json!({}), &body))
        .unwrap();
    assert_cpp_readable(&frame, "C++ heartbeat");
    assert_eq!(answer.code, response::SUCCESS, "{:?}", answer.remark);
    let list = conn
        .call(
            RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP)
                .with_ext("consumerGroup", "cpp_tags_cg"),
        )
        .unwrap();
    assert_eq!(
        &list.body[..],
        br#"{"consumerIdList":["6000-127.0.0.1@DEFAULT"]}"#
    );
    for queue in 0..4 {
        let answer = pull_by_heartbeat(&mut conn, "cpp_tags_cg", queue, cpp_version);
        let what = format!("C++ heartbeat subscription, queue {queue}");
        assert_eq!(
            filtered_bodies(&answer, &what),
            expected(queue, &["C"]),
            "{what}"
        );
    }
    // And the C++ pull itself (SUBSCRIPTION flag always set, integer ext values).
    for queue in 0..4 {
        let ext = json!({
            "commitOffset": "0", "consumerGroup": "cpp_tags_cg", "maxMsgNums": 32,
            "queueId": queue, "queueOffset": "0", "subVersion": cpp_version.to_string(),
            "subscription": "A || C", "suspendTimeoutMillis": "0", "sysFlag": 4,
            "topic": TAG_TOPIC,
        });
        let (frame, answer) = cpp
            .exchange(&cpp_frame(request::PULL_MESSAGE, 100 + queue, ext, &[]))
            .unwrap();
        assert_cpp_readable(&frame, "C++ pull");
        let what = format!("C++ pull, queue {queue}");
        assert_eq!(
            filtered_bodies(&answer, &what),
            expected(queue, &["A", "C"]),
            "{what}"
        );
    }
    drop(member);
}
