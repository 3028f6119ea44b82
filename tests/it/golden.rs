//! Golden frames captured between the official Java, C++ and Rust clients and Apache RocketMQ
//! 4.9.8 (tests/golden/README.md): the codec decodes every one, re-encodes the Java ones byte for
//! byte, reads the C++ client's integer ext values as strings, and our nameserver accepts every
//! nameserver request in them and answers with the shape the Java nameserver answered with.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use ringmq::protocol::fastjson;
use ringmq::remoting::{split_frame, LanguageCode, RemotingCommand, SerializeType};
use serde_json::Value;

use ringmq::client::{Connection, NamesrvClient};

use crate::harness::{self, TestNamesrv};

/// The golden frames' folder (shared by every test that replays or reads them).
pub(crate) fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// One entry of index.json.
pub(crate) struct Golden {
    pub(crate) file: String,
    pub(crate) client: String,
    pub(crate) direction: String,
    pub(crate) request_code: i64,
    /// A response frame (`kind` = response); its code is the request it answers.
    pub(crate) response: bool,
    pub(crate) pair: Option<String>,
    pub(crate) oneway: bool,
}

/// Every entry of index.json, in capture order.
pub(crate) fn index() -> Vec<Golden> {
    let text = std::fs::read(golden_dir().join("index.json")).expect("golden index");
    let index: Value = serde_json::from_slice(&text).expect("index is JSON");
    let frames = index["frames"].as_array().expect("frames array");
    frames
        .iter()
        .map(|f| Golden {
            file: f["file"].as_str().unwrap().to_string(),
            client: f["client"].as_str().unwrap().to_string(),
            direction: f["direction"].as_str().unwrap().to_string(),
            request_code: f["request_code"].as_i64().unwrap(),
            response: f["kind"] == "response",
            pair: f["pair"].as_str().map(str::to_string),
            oneway: f["oneway"].as_bool().unwrap(),
        })
        .collect()
}

/// The bytes of one golden frame, by its path under tests/golden.
pub(crate) fn frame(file: &str) -> Bytes {
    Bytes::from(std::fs::read(golden_dir().join(file)).expect("golden frame"))
}

fn decode(file: &str) -> RemotingCommand {
    RemotingCommand::decode(frame(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn reencode(cmd: &RemotingCommand) -> Bytes {
    let mut buf = BytesMut::new();
    cmd.encode(&mut buf).unwrap();
    buf.freeze()
}

#[test]
fn every_golden_frame_decodes_and_reencodes_to_the_same_command() {
    let all = index();
    assert!(all.len() >= 100, "golden index has {} frames", all.len());
    for g in &all {
        let cmd = decode(&g.file);
        let server_request = g.file.contains("-s2c-39-") || g.file.contains("-s2c-40-");
        let from_server = g.direction == "s2c" || g.direction == "n2b";
        assert_eq!(
            cmd.is_response(),
            from_server && !server_request,
            "{}",
            g.file
        );
        let again = RemotingCommand::decode(reencode(&cmd)).unwrap();
        assert_eq!(again, cmd, "{}", g.file);
    }
}

#[test]
fn java_and_broker_frames_reencode_byte_for_byte() {
    let mut checked = 0;
    for g in index()
        .iter()
        .filter(|g| ["java", "java-rocketmq-serialize", "broker"].contains(&g.client.as_str()))
    {
        let original = frame(&g.file);
        assert_eq!(reencode(&decode(&g.file)), original, "{}", g.file);
        checked += 1;
    }
    assert!(checked > 60, "only {checked} frames checked");
}

#[test]
fn rocketmq_binary_headers_decode() {
    let pull = decode("java-rocketmq-serialize/0015-c2s-11-pull.bin");
    assert_eq!(pull.serialize_type, SerializeType::RocketMq);
    assert_eq!(pull.code, 11);
    assert_eq!(pull.ext("consumerGroup"), Some("golden_pull_group"));
    let resp = decode("java-rocketmq-serialize/0016-s2c-11-pull_resp.bin");
    assert_eq!(resp.remark.as_deref(), Some("FOUND"));
    assert!(resp.ext("nextBeginOffset").is_some());
}

#[test]
fn cpp_integer_ext_values_decode_as_strings_and_encode_as_strings() {
    let pull = decode("cpp/0018-c2s-11-pull.bin");
    assert_eq!(pull.language, LanguageCode::Cpp);
    assert_eq!(pull.version, 63);
    assert_eq!(pull.remark.as_deref(), Some(""));
    assert_eq!(pull.ext("queueId"), Some("1"));
    assert_eq!(pull.ext("maxMsgNums"), Some("32"));
    assert_eq!(pull.ext("sysFlag"), Some("6"));
    assert_eq!(pull.ext("queueOffset"), Some("5"));
    let send = decode("cpp/0003-c2s-10-send.bin");
    assert_eq!(send.ext("defaultTopicQueueNums"), Some("4"));
    assert_eq!(send.ext("flag"), Some("0"));
    // Strict encoding: every ext value a JSON string.
    let raw = split_frame(reencode(&pull)).unwrap();
    let header: Value = serde_json::from_slice(&raw.header).unwrap();
    for (k, v) in header["extFields"].as_object().unwrap() {
        assert!(v.is_string(), "ext {k} encoded as {v}");
    }
}

#[test]
fn rust_client_header_decodes_with_null_remark() {
    let route = decode("rust/0001-c2s-105-route.bin");
    assert_eq!(route.language, LanguageCode::Rust);
    assert_eq!(route.version, 474);
    assert_eq!(route.remark, None);
    assert_eq!(route.ext("topic"), Some("accR2_tx_43845248"));
}

#[test]
fn our_json_headers_carry_every_field_the_rust_client_requires() {
    let request = decode("rust/0003-c2s-105-route.bin");
    let response = request.success_to().with_ext("offset", "5");
    let raw = split_frame(response.to_frame().unwrap()).unwrap();
    let header: Value = serde_json::from_slice(&raw.header).unwrap();
    for key in [
        "code",
        "language",
        "version",
        "opaque",
        "flag",
        "serializeTypeCurrentRPC",
    ] {
        assert!(header.get(key).is_some(), "missing {key} in {header}");
    }
    assert_eq!(header["language"], "JAVA");
    assert_eq!(header["serializeTypeCurrentRPC"], "JSON");
    assert_eq!(header["extFields"]["offset"], "5");
}

/// Every key of `golden` (recursively, objects only) also appears in `ours`.
fn assert_shape_superset(golden: &Value, ours: &Value, path: &str) {
    match (golden, ours) {
        (Value::Object(g), Value::Object(o)) => {
            for (k, gv) in g {
                let ov = o
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} missing in ours: {ours}"));
                assert_shape_superset(gv, ov, &format!("{path}.{k}"));
            }
        }
        (Value::Array(g), Value::Array(o)) => {
            if let (Some(gv), Some(ov)) = (g.first(), o.first()) {
                assert_shape_superset(gv, ov, &format!("{path}[0]"));
            }
        }
        (g, o) => assert_eq!(
            std::mem::discriminant(g),
            std::mem::discriminant(o),
            "{path}: golden {g} vs ours {o}"
        ),
    }
}

fn body_json(cmd: &RemotingCommand) -> Value {
    serde_json::from_slice(&fastjson::normalize(&cmd.body)).expect("body is (fast)JSON")
}

/// Replays a golden request on `conn` and checks our answer against the golden answer's shape.
fn replay(conn: &mut Connection, g: &Golden) {
    conn.write_all(&frame(&g.file)).unwrap();
    if g.oneway {
        return;
    }
    let ours = conn
        .read_command()
        .unwrap_or_else(|e| panic!("{}: {e}", g.file));
    let theirs = decode(g.pair.as_deref().expect("a request with a response"));
    assert_eq!(ours.opaque, theirs.opaque, "{}", g.file);
    assert_eq!(ours.serialize_type, theirs.serialize_type, "{}", g.file);
    assert_eq!(
        ours.code, theirs.code,
        "{}: remark {:?}",
        g.file, ours.remark
    );
    assert_eq!(ours.remark, theirs.remark, "{}", g.file);
    for (k, _) in theirs.ext_fields.iter().flat_map(|f| f.iter()) {
        assert!(ours.ext(k).is_some(), "{}: ext {k} missing", g.file);
    }
    if !theirs.body.is_empty() {
        assert_shape_superset(&body_json(&theirs), &body_json(&ours), &g.file);
    }
}

/// Topics whose routes the capture shows but whose registration it does not (the broker created
/// them after a consumer heartbeat): register them the way that broker would have.
fn register_topics_of_route(
    broker: &mut NamesrvClient,
    route_response: &RemotingCommand,
    topic: &str,
) {
    let body = body_json(route_response);
    let queue = &body["queueDatas"][0];
    let queues = queue["readQueueNums"].as_i64().unwrap() as i32;
    let perm = queue["perm"].as_i64().unwrap() as i32;
    let mut registration = harness::broker(
        "DefaultCluster",
        "broker-a",
        0,
        "127.0.0.1:10911",
        &[harness::topic(topic, queues, perm)],
    );
    // A new data version each time, so the nameserver takes the topic table.
    static VERSION: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(1000);
    registration
        .body
        .topic_config_serialize_wrapper
        .data_version
        .counter = VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    broker.register_broker(&registration).unwrap();
}

#[test]
fn nameserver_answers_every_golden_nameserver_request_like_java() {
    let ns = TestNamesrv::start();
    // Brokers keep their registration connection open (closing it unregisters them).
    let mut broker = ns.client();
    let mut client = ns.connection();
    let namesrv_codes = [103, 104, 105, 106, 206, 216];
    let mut replayed = 0;
    for g in index()
        .iter()
        .filter(|g| matches!(g.direction.as_str(), "c2s" | "b2n"))
        .filter(|g| namesrv_codes.contains(&g.request_code))
    {
        if g.request_code == 105 {
            let answer = decode(g.pair.as_deref().unwrap());
            if answer.code == 0 {
                let topic = decode(&g.file).ext("topic").unwrap().to_string();
                register_topics_of_route(&mut broker, &answer, &topic);
            }
        }
        let conn = if g.direction == "b2n" {
            &mut broker.conn
        } else {
            &mut client
        };
        replay(conn, g);
        replayed += 1;
    }
    assert!(replayed >= 12, "replayed {replayed}");
}

#[test]
fn binary_request_gets_a_binary_response_with_the_route() {
    let ns = TestNamesrv::start();
    let mut conn = ns.connection();
    conn.write_all(&frame("broker/0004-b2n-103-register_broker.bin"))
        .unwrap();
    assert_eq!(conn.read_command().unwrap().code, 0);
    conn.write_all(&frame("java-rocketmq-serialize/0001-c2s-105-route.bin"))
        .unwrap();
    let route = conn.read_command().unwrap();
    assert_eq!(route.serialize_type, SerializeType::RocketMq);
    assert_eq!(route.code, 0);
    let body = body_json(&route);
    assert_eq!(body["queueDatas"][0]["readQueueNums"], 2);
    assert_eq!(
        body["brokerDatas"][0]["brokerAddrs"]["0"],
        "127.0.0.1:10911"
    );
    assert_eq!(body["brokerDatas"][0]["enableActingMaster"], false);
}

#[test]
fn stored_records_in_golden_pull_bodies_parse_with_valid_crcs() {
    use ringmq::message::record::RecordView;
    let mut records = 0;
    for file in [
        "cpp/0032-s2c-11-pull_resp.bin",
        "java-rocketmq-serialize/0016-s2c-11-pull_resp.bin",
    ] {
        let pull = decode(file);
        let mut rest = &pull.body[..];
        while !rest.is_empty() {
            let view = RecordView::parse(rest).unwrap_or_else(|e| panic!("{file}: {e}"));
            view.check_crc().unwrap();
            assert!(!view.topic.is_empty());
            assert_eq!(view.store_host.port(), 10911, "{file}");
            rest = &rest[view.total_size..];
            records += 1;
        }
    }
    assert!(records >= 2, "only {records} records");
}

#[test]
fn golden_send_and_heartbeat_requests_parse() {
    use ringmq::protocol::heartbeat::{HeartbeatData, LockBatchRequest};
    use ringmq::protocol::lenient;
    use ringmq::protocol::send::SendRequest;
    for g in index().iter().filter(|g| g.direction == "c2s") {
        let cmd = decode(&g.file);
        match g.request_code {
            10 | 310 | 320 => {
                let send =
                    SendRequest::from_command(&cmd).unwrap_or_else(|e| panic!("{}: {e}", g.file));
                assert!(!send.topic.is_empty());
                assert_eq!(send.batch, g.request_code == 320, "{}", g.file);
            }
            34 => {
                let hb: HeartbeatData =
                    lenient::from_slice(&cmd.body).unwrap_or_else(|e| panic!("{}: {e}", g.file));
                assert!(!hb.client_id.is_empty());
            }
            41 | 42 => {
                let lock: LockBatchRequest =
                    lenient::from_slice(&cmd.body).unwrap_or_else(|e| panic!("{}: {e}", g.file));
                assert!(!lock.mq_set.is_empty());
            }
            _ => {}
        }
    }
}
