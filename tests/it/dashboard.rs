//! `ringmq dashboard` against an in-process 2-shard broker: the `/api/` JSON of every page
//! (cluster, topics, a topic, consumer groups, a group, message searches and details, sending,
//! resetting and resending), the errors as JSON with fitting statuses (400 bad input, 404
//! unknown topic or group, 502 unreachable nameserver or a broker refusing), the pages' HTML,
//! and `/metrics` parsed as the Prometheus text format (escaped label values included).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ringmq::client::Connection;
use ringmq::dashboard::{DashboardHandle, DashboardOptions};
use ringmq::remoting::request as code;
use serde_json::{json, Value};

use crate::harness::TestBroker;
use crate::rust_client_support::wait_registered;

/// A dashboard on a free loopback port, stopped when dropped.
pub struct TestDashboard {
    handle: Option<DashboardHandle>,
    pub base: String,
}

impl TestDashboard {
    /// Sampling every 300 ms.
    pub fn start(namesrv: &str) -> TestDashboard {
        let mut options = DashboardOptions::new(namesrv, "127.0.0.1:0".parse().unwrap());
        options.interval = Duration::from_millis(300);
        options.history = Duration::from_secs(60);
        let handle = ringmq::dashboard::start(options).expect("the dashboard starts");
        let base = format!("http://{}", handle.local_addr);
        TestDashboard {
            handle: Some(handle),
            base,
        }
    }
}

impl Drop for TestDashboard {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop();
        }
    }
}

/// A blocking face of an async reqwest client.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: reqwest::Client::new(),
            base: base.to_string(),
        }
    }

    /// Status, Content-Type and body text.
    pub fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String, String) {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.rt.block_on(async {
            let mut req = self.client.request(method, &url);
            if let Some(body) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(body.to_string());
            }
            let res = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = res.status().as_u16();
            let content_type = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            (status, content_type, res.text().await.unwrap())
        })
    }

    /// Status and JSON body; every answer under /api/ must be JSON.
    pub fn json(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, content_type, text) = self.send(method, path, body);
        assert_eq!(content_type, "application/json", "{path}: {text}");
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        (status, value)
    }

    /// A GET that must answer 200.
    pub fn get(&self, path: &str) -> Value {
        let (status, value) = self.json("GET", path, None);
        assert_eq!(status, 200, "{path}: {value}");
        value
    }

    /// A request that must fail with `status`; its error text.
    pub fn fails(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> String {
        let (got, value) = self.json(method, path, body);
        assert_eq!(got, status, "{method} {path}: {value}");
        assert_eq!(value["status"], status, "{value}");
        value["error"].as_str().unwrap().to_string()
    }
}

pub fn wait_until<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A consumer `client_id` of `group` on `topic`, on its own connection (kept open: the group is
/// online while it is).
pub fn consumer(broker: &TestBroker, group: &str, topic: &str, client_id: &str) -> Connection {
    let mut conn = broker.connection();
    let beat = crate::broker_basic::heartbeat(client_id, group, topic);
    conn.heartbeat(&beat).unwrap();
    conn
}

/// Commits `offset` for `group` on queue `queue` of `topic`.
pub fn commit(conn: &mut Connection, group: &str, topic: &str, queue: i32, offset: i64) {
    let (q, o) = (queue.to_string(), offset.to_string());
    let mut cmd = ringmq::remoting::RemotingCommand::request(code::UPDATE_CONSUMER_OFFSET);
    for (k, v) in [
        ("consumerGroup", group),
        ("topic", topic),
        ("queueId", &q),
        ("commitOffset", &o),
    ] {
        cmd.set_ext(k, v);
    }
    conn.call(cmd).unwrap();
}

/// One sample of a text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (0.0.4), with their families' TYPE; panics on
/// a line that is not of the format.
pub fn parse_exposition(text: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(!line.starts_with('#'), "an unknown comment line: {line}");
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = &line[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a bad metric name: {line}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            loop {
                let (start, c) = chars.next().expect("an unterminated label set");
                if c == '}' {
                    rest = &body[start + 1..];
                    break;
                }
                if c == ',' {
                    continue;
                }
                let eq = body[start..].find('=').expect("label=\"value\"") + start;
                let key = body[start..eq].to_string();
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("an unterminated label value") {
                        (_, '"') => break,
                        (_, '\\') => match chars.next().expect("an escape").1 {
                            'n' => value.push('\n'),
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            other => panic!("a bad escape \\{other} in {line}"),
                        },
                        (_, '\n') => panic!("a raw line feed in {line}"),
                        (_, c) => value.push(c),
                    }
                }
                labels.insert(key, value);
            }
        }
        let value: f64 = rest
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{e}: {line}"));
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    (samples, types)
}

/// The sample of `name` whose labels include `with`.
fn sample<'a>(samples: &'a [Sample], name: &str, with: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && with
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

const TOPIC: &str = "DashTopic";
const GROUP: &str = "dash_group";
/// A client id that needs escaping in a label value.
const ODD_CLIENT: &str = "dash \"quoted\" \\ client\nline";

#[test]
fn the_api_serves_every_page_and_names_what_failed() {
    let broker = TestBroker::start(2);
    wait_registered(&broker);
    let dashboard = TestDashboard::start(&broker.namesrv.addr);
    let http = Http::new(&dashboard.base);

    let cluster = http.get("/api/cluster");
    let b = &cluster["brokers"][0];
    assert_eq!(
        (&b["brokerName"], &b["role"]),
        (&"broker-it".into(), &"MASTER".into())
    );
    assert_eq!(
        (&b["addr"], &b["version"]),
        (&broker.addr.clone().into(), &"V4_9_8".into())
    );
    assert_eq!(b["ha"]["haConnectionCount"], "0", "{cluster}");
    assert!(
        b["slaveLag"].as_str().unwrap().starts_with("0 slave(s)"),
        "{cluster}"
    );
    assert_eq!(cluster["clusters"], json!(["DefaultCluster"]));

    topics_are_created_and_refused(&http, &broker);
    let msg_id = messages_are_sent_found_and_shown(&http);
    let _online = groups_lag_and_reset(&http, &broker, &msg_id);
    metrics_parse_with_exporter_names(&http, &broker);
    pages_render_html(&http, &msg_id);

    let deleted = delete_the_topic(&http);
    assert_eq!(deleted["brokers"], json!([broker.addr]));
    let (status, _) = http.json("GET", &format!("/api/topics/{TOPIC}"), None);
    assert_eq!(status, 404);
}

/// DELETE of the topic: without a cluster (400), from an unknown one (404), then for real.
fn delete_the_topic(http: &Http) -> Value {
    let path = format!("/api/topics/{TOPIC}");
    let e = http.fails("DELETE", &path, None, 400);
    assert!(e.contains("cluster"), "{e}");
    let e = http.fails("DELETE", &format!("{path}?cluster=NoCluster"), None, 404);
    assert!(e.contains("cluster NoCluster is not known"), "{e}");
    let (status, value) = http.json("DELETE", &format!("{path}?cluster=DefaultCluster"), None);
    assert_eq!(status, 200, "{value}");
    value
}

fn topics_are_created_and_refused(http: &Http, broker: &TestBroker) {
    let form = json!({"topic": TOPIC, "cluster": "DefaultCluster", "readQueueNums": 2,
        "writeQueueNums": 2, "perm": 6});
    let (status, created) = http.json("POST", "/api/topics", Some(form));
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["brokers"], json!([broker.addr]));
    assert_eq!(created["topicConfig"]["writeQueueNums"], 2);
    let topic = wait_until("the new topic's route", Duration::from_secs(10), || {
        let (status, v) = http.json("GET", &format!("/api/topics/{TOPIC}"), None);
        (status == 200).then_some(v)
    });
    let queues: Vec<i64> = topic["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["queueId"].as_i64().unwrap())
        .collect();
    assert_eq!(queues, [0, 1]);
    assert_eq!(topic["clusters"], json!(["DefaultCluster"]));
    let listed = http.get("/api/topics");
    let kinds: BTreeMap<&str, &str> = listed["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["kind"].as_str().unwrap()))
        .collect();
    assert_eq!((kinds[TOPIC], kinds["TBW102"]), ("NORMAL", "SYSTEM"));

    let e = http.fails("GET", "/api/topics/NoSuchTopic", None, 404);
    assert!(e.contains("TOPIC_NOT_EXIST (17)"), "{e}");
    let e = http.fails("POST", "/api/topics", Some(json!({"topic": "T"})), 400);
    assert!(e.contains("name a cluster or a broker"), "{e}");
    let bad_perm = json!({"topic": "T", "cluster": "DefaultCluster", "perm": 5});
    let e = http.fails("POST", "/api/topics", Some(bad_perm), 400);
    assert!(e.contains("perm 5"), "{e}");
    let (status, _, text) = http.send("POST", "/api/topics", None);
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("the JSON body does not parse"), "{text}");
    // The broker refuses the name: its code and remark come back as a 502.
    let bad_name = json!({"topic": "bad topic!", "cluster": "DefaultCluster"});
    let e = http.fails("POST", "/api/topics", Some(bad_name), 502);
    assert!(
        e.contains("UPDATE_AND_CREATE_TOPIC (17)") && e.contains(&broker.addr),
        "{e}"
    );
    let e = http.fails("GET", "/api/nothing", None, 404);
    assert!(e.contains("no API GET /api/nothing"), "{e}");
}

/// Sends one message; finds it by key, by id and by time; shows it. Returns its id.
fn messages_are_sent_found_and_shown(http: &Http) -> String {
    let form = json!({"topic": TOPIC, "body": "hello dashboard", "tags": "TagA",
        "keys": "dash-key"});
    let (status, sent) = http.json("POST", "/api/messages", Some(form));
    assert_eq!(
        (status, &sent["sendStatus"]),
        (200, &"SEND_OK".into()),
        "{sent}"
    );
    let msg_id = sent["msgId"].as_str().unwrap().to_string();

    let found = http.get(&format!("/api/messages?topic={TOPIC}&key=dash-key"));
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["offsetMsgId"], msg_id.as_str());
    assert_eq!(
        (&found[0]["keys"], &found[0]["tags"]),
        (&"dash-key".into(), &"TagA".into())
    );
    let now = ringmq_now_ms();
    let by_time = http.get(&format!(
        "/api/messages?topic={TOPIC}&begin={}&end={now}",
        now - 60_000
    ));
    assert!(by_time
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["offsetMsgId"] == msg_id.as_str()));
    let later = http.get(&format!(
        "/api/messages?topic={TOPIC}&begin={}&end={}",
        now + 1,
        now + 2
    ));
    assert_eq!(later, json!([]));
    let by_id = http.get(&format!("/api/messages?id={msg_id}"));
    assert_eq!(by_id[0]["topic"], TOPIC);

    let shown = http.get(&format!("/api/messages/{msg_id}"));
    assert_eq!(shown["message"]["body"], "hello dashboard");
    assert_eq!(shown["message"]["properties"]["KEYS"], "dash-key");
    assert_eq!(shown["bodySize"], 15);

    let e = http.fails("GET", &format!("/api/messages?topic={TOPIC}"), None, 400);
    assert!(e.contains("begin"), "{e}");
    let e = http.fails("GET", "/api/messages/zzz", None, 400);
    assert!(e.contains("zzz is not an offsetMsgId"), "{e}");
    let e = http.fails(
        "GET",
        &format!("/api/messages?topic={TOPIC}&key=none"),
        None,
        404,
    );
    assert!(
        e.contains("no message of topic DashTopic with key none"),
        "{e}"
    );
    let e = http.fails("POST", "/api/messages", Some(json!({"topic": " "})), 400);
    assert!(e.contains("no topic"), "{e}");
    msg_id
}

fn ringmq_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A group with the message unconsumed (lag 1) is reset to the end (lag 0); the message shows
/// it consumed; resent, it reaches the group's retry topic. Returns the group's client.
fn groups_lag_and_reset(http: &Http, broker: &TestBroker, msg_id: &str) -> Connection {
    let mut online = consumer(broker, GROUP, TOPIC, ODD_CLIENT);
    for q in 0..2 {
        commit(&mut online, GROUP, TOPIC, q, 0);
    }
    let groups = wait_until("the group in the list", Duration::from_secs(10), || {
        let groups = http.get("/api/groups");
        let found = groups
            .as_array()?
            .iter()
            .find(|g| g["group"] == GROUP)?
            .clone();
        Some(found)
    });
    assert_eq!(
        (&groups["count"], &groups["diffTotal"]),
        (&1.into(), &1.into())
    );
    assert_eq!(groups["versionDesc"], "V4_9_8");
    let group = http.get(&format!("/api/groups/{GROUP}"));
    assert_eq!(
        group["connection"]["connectionSet"][0]["clientId"],
        ODD_CLIENT
    );
    assert_eq!(group["row"]["diffTotal"], 1);
    let queues = group["progress"]["queues"].as_array().unwrap();
    assert!(
        queues.iter().any(|q| q["topic"] == TOPIC && q["diff"] == 1),
        "{group}"
    );

    let reset = json!({"topic": TOPIC, "timestamp": "now"});
    let (status, done) = http.json("POST", &format!("/api/groups/{GROUP}/reset"), Some(reset));
    assert_eq!((status, &done["online"]), (200, &true.into()), "{done}");
    let group = http.get(&format!("/api/groups/{GROUP}"));
    assert_eq!(group["row"]["diffTotal"], 0, "{group}");
    let bad = json!({"topic": TOPIC, "timestamp": "soon"});
    let e = http.fails(
        "POST",
        &format!("/api/groups/{GROUP}/reset"),
        Some(bad),
        400,
    );
    assert!(e.contains("\"soon\""), "{e}");
    let e = http.fails("GET", "/api/groups/no_such_group", None, 404);
    assert!(
        e.contains("consumer group no_such_group is not known"),
        "{e}"
    );

    let shown = http.get(&format!("/api/messages/{msg_id}"));
    let track = json!({"consumerGroup": GROUP, "trackType": "CONSUMED"});
    assert!(
        shown["tracks"].as_array().unwrap().contains(&track),
        "{shown}"
    );

    let (status, resent) = http.json(
        "POST",
        &format!("/api/messages/{msg_id}/resend"),
        Some(json!({"group": GROUP})),
    );
    assert_eq!((status, &resent["topic"]), (200, &TOPIC.into()), "{resent}");
    wait_for_retry_messages(http, 1);
    dead_letters_are_found_and_resent(http, broker, msg_id);
    online
}

/// Waits until the group's retry topic holds `n` messages.
fn wait_for_retry_messages(http: &Http, n: i64) {
    let retry = format!("/api/topics/%25RETRY%25{GROUP}");
    wait_until(
        "resent messages in the retry topic",
        Duration::from_secs(15),
        || {
            let (status, v) = http.json("GET", &retry, None);
            let queues = v["queues"].as_array()?.iter();
            let max = queues.map(|q| q["maxOffset"].as_i64()).sum::<Option<i64>>();
            (status == 200 && max? >= n).then_some(())
        },
    );
}

/// The message dead-lettered (CONSUMER_SEND_MSG_BACK, delay level -1) is found in the group's
/// DLQ by time, shown with its original topic, and resent to the group's retry topic.
fn dead_letters_are_found_and_resent(http: &Http, broker: &TestBroker, msg_id: &str) {
    let shown = http.get(&format!("/api/messages/{msg_id}"));
    let offset = shown["message"]["commitLogOffset"]
        .as_i64()
        .unwrap()
        .to_string();
    let mut conn = broker.connection();
    let mut back = ringmq::remoting::RemotingCommand::request(code::CONSUMER_SEND_MSG_BACK);
    for (k, v) in [
        ("offset", offset.as_str()),
        ("group", GROUP),
        ("delayLevel", "-1"),
    ] {
        back.set_ext(k, v);
    }
    conn.call(back).unwrap();
    let dlq = format!("%DLQ%{GROUP}");
    let search = format!(
        "/api/messages?topic=%25DLQ%25{GROUP}&begin=0&end={}",
        ringmq_now_ms() + 1000
    );
    let found = wait_until("the dead letter", Duration::from_secs(10), || {
        let (status, v) = http.json("GET", &search, None);
        (status == 200 && v.as_array()?.len() == 1).then_some(v)
    });
    assert_eq!(
        (&found[0]["topic"], &found[0]["keys"]),
        (&dlq.clone().into(), &"dash-key".into())
    );
    let dead_id = found[0]["offsetMsgId"].as_str().unwrap();
    let dead = http.get(&format!("/api/messages/{dead_id}"));
    assert_eq!(
        dead["message"]["properties"]["RETRY_TOPIC"], TOPIC,
        "{dead}"
    );
    let (status, resent) = http.json(
        "POST",
        &format!("/api/messages/{dead_id}/resend"),
        Some(json!({"group": GROUP})),
    );
    assert_eq!((status, &resent["topic"]), (200, &dlq.into()), "{resent}");
    wait_for_retry_messages(http, 2);
    let e = http.fails(
        "POST",
        &format!("/api/messages/{dead_id}/resend"),
        Some(json!({"group": " "})),
        400,
    );
    assert!(e.contains("no consumer group"), "{e}");
}

fn metrics_parse_with_exporter_names(http: &Http, broker: &TestBroker) {
    // The sampler catches up with the reset and the send within a few snapshots.
    let (samples, types) = wait_until("the metrics of the topic", Duration::from_secs(10), || {
        let (status, content_type, text) = http.send("GET", "/metrics", None);
        assert_eq!(status, 200);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let (samples, types) = parse_exposition(&text);
        let offset = sample(&samples, "rocketmq_producer_offset", &[("topic", TOPIC)])?;
        let group = [("group", GROUP), ("topic", TOPIC)];
        let consumed = sample(&samples, "rocketmq_consumer_offset", &group)?;
        let retry = [("topic", "%RETRY%dash_group")];
        let resent = sample(&samples, "rocketmq_topic_retry_offset", &retry)?;
        let settled = offset.value == 1.0 && consumed.value == 1.0 && resent.value >= 1.0;
        settled.then_some((samples, types))
    });
    assert!(types.values().all(|t| t == "gauge"), "{types:?}");
    let broker_labels = [
        ("cluster", "DefaultCluster"),
        ("brokerIP", broker.addr.as_str()),
        ("broker", "broker-it"),
    ];
    for name in ["rocketmq_broker_tps", "rocketmq_broker_qps"] {
        let s = sample(&samples, name, &broker_labels).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(s.labels.len(), 3, "{s:?}");
    }
    let offset = sample(&samples, "rocketmq_producer_offset", &[("topic", TOPIC)]).unwrap();
    let expect: BTreeMap<String, String> = [
        ("cluster", "DefaultCluster"),
        ("broker", "broker-it"),
        ("topic", TOPIC),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(offset.labels, expect);
    assert!(sample(&samples, "rocketmq_producer_tps", &[("topic", TOPIC)]).is_some());
    let group = [("group", GROUP), ("topic", TOPIC)];
    let diff = sample(&samples, "rocketmq_group_diff", &group).expect("rocketmq_group_diff");
    assert_eq!((diff.value, diff.labels["msgModel"].as_str()), (0.0, "1"));
    assert_eq!(diff.labels["countOfOnlineConsumers"], "1");
    let consumed = sample(&samples, "rocketmq_consumer_offset", &group).expect("consumer offset");
    assert_eq!(consumed.value, 1.0);
    assert!(sample(&samples, "rocketmq_consumer_tps", &group).is_some());
    assert!(sample(&samples, "rocketmq_group_get_latency_by_storetime", &group).is_some());
    // The odd client id comes back intact from its escaped label value.
    let count = sample(&samples, "rocketmq_group_count", &[("group", GROUP)]).expect("count");
    assert_eq!(
        (count.value, count.labels["localaddr"].as_str()),
        (1.0, ODD_CLIENT)
    );
    let retry = [("topic", "%RETRY%dash_group")];
    assert!(sample(&samples, "rocketmq_topic_retry_offset", &retry).is_some());
    let runtime = [
        ("brokerIP", broker.addr.as_str()),
        ("broker_version", "409"),
    ];
    for name in [
        "rocketmq_brokeruntime_put_tps10",
        "rocketmq_brokeruntime_msg_put_total_today_now",
        "rocketmq_brokeruntime_commitlog_maxoffset",
        "rocketmq_brokeruntime_commitlogdir_capacity_total",
    ] {
        let s = sample(&samples, name, &runtime).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(s.labels.len(), 6, "{s:?}");
    }
    let put = sample(
        &samples,
        "rocketmq_brokeruntime_msg_put_total_today_now",
        &runtime,
    );
    assert!(put.unwrap().value >= 1.0, "{put:?}");
}

fn pages_render_html(http: &Http, msg_id: &str) {
    for (path, needle) in [
        ("/".to_string(), "broker-it".to_string()),
        ("/topics".to_string(), TOPIC.to_string()),
        (format!("/topics/{TOPIC}"), "Delete topic".to_string()),
        ("/groups".to_string(), GROUP.to_string()),
        (format!("/groups/{GROUP}"), "Reset offsets".to_string()),
        ("/messages".to_string(), "By topic and key".to_string()),
        (format!("/messages/{msg_id}"), "hello dashboard".to_string()),
        ("/producer?topic=X".to_string(), "value=\"X\"".to_string()),
    ] {
        let (status, content_type, text) = http.send("GET", &path, None);
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert!(text.contains(&needle), "{path} lacks {needle}");
        assert!(text.contains("<script src=\"/assets/app.js\">"), "{path}");
    }
    let (status, _, text) = http.send("GET", "/topics/NoSuchTopic", None);
    assert_eq!(status, 404);
    assert!(text.contains("TOPIC_NOT_EXIST"), "{text}");
    let (status, _, text) = http.send("GET", "/nowhere", None);
    assert_eq!(status, 404);
    assert!(text.contains("no page at /nowhere"), "{text}");
    for asset in ["/assets/app.js", "/assets/style.css"] {
        let (status, _, text) = http.send("GET", asset, None);
        assert!(status == 200 && !text.is_empty(), "{asset}");
    }
}

#[test]
fn an_unreachable_nameserver_is_a_502_naming_it_never_a_blank_page() {
    // A port nobody listens on.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let namesrv = format!("127.0.0.1:{port}");
    let dashboard = TestDashboard::start(&namesrv);
    let http = Http::new(&dashboard.base);
    for path in [
        "/api/cluster",
        "/api/topics",
        "/api/groups",
        "/api/topics/T",
    ] {
        let e = http.fails("GET", path, None, 502);
        assert!(
            e.contains(&namesrv) && e.contains("cannot reach"),
            "{path}: {e}"
        );
    }
    let (status, content_type, page) = http.send("GET", "/", None);
    assert_eq!(
        (status, content_type.as_str()),
        (502, "text/html; charset=utf-8")
    );
    assert!(
        page.contains("<h1>Cluster</h1>") && page.contains(&namesrv),
        "{page}"
    );
    let (status, _, text) = http.send("GET", "/metrics", None);
    assert_eq!(status, 200);
    let (samples, _) = parse_exposition(&text);
    let errors = sample(&samples, "ringmq_dashboard_snapshot_errors", &[]).expect("errors");
    assert!(errors.value >= 1.0, "{text}");
}

#[test]
fn the_exposition_parser_reads_escapes_and_refuses_garbage() {
    let (samples, types) =
        parse_exposition("# HELP m h\n# TYPE m gauge\nm{a=\"x\\\"y\\\\z\\n\",b=\"\"} 2.5\nn 1\n");
    assert_eq!(types["m"], "gauge");
    assert_eq!(samples[0].labels["a"], "x\"y\\z\n");
    assert_eq!((samples[0].value, samples[1].value), (2.5, 1.0));
    let garbage = std::panic::catch_unwind(|| parse_exposition("m{a=\"x} 1\n"));
    assert!(garbage.is_err());
}

#[test]
fn the_dashboard_command_serves_until_sigterm_and_refuses_bad_flags() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let namesrv = crate::harness::TestNamesrv::start();
    let bin = env!("CARGO_BIN_EXE_ringmq");
    let mut child = Command::new(bin)
        .args(["dashboard", "-n", &namesrv.addr, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .strip_prefix("ringmq dashboard: ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the start line: {line}"))
        .to_string();
    let http = Http::new(&base);
    assert_eq!(http.get("/api/cluster")["brokers"], json!([]));
    // SAFETY: kill(2) of our own unreaped child.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");

    let refused = |args: &[&str]| {
        let out = Command::new(bin)
            .arg("dashboard")
            .args(args)
            .env_remove("NAMESRV_ADDR")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&[]);
    assert!(err.contains("no nameserver given"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = refused(&["-n", &namesrv.addr, "--listen", &addr]);
    assert!(err.contains(&format!("cannot serve on {addr}")), "{err}");
}
