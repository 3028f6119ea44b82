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
    pub addr: std::net::SocketAddr,
}

impl TestDashboard {
    /// Sampling every 300 ms.
    pub fn start(namesrv: &str) -> TestDashboard {
        TestDashboard::start_with(namesrv, |_| {})
    }

    /// Sampling every 300 ms, with `adjust`'s changes to the options.
    pub fn start_with(namesrv: &str, adjust: impl FnOnce(&mut DashboardOptions)) -> TestDashboard {
        let mut options = DashboardOptions::new(namesrv, "127.0.0.1:0".parse().unwrap());
        options.interval = Duration::from_millis(300);
        options.history = Duration::from_secs(60);
        adjust(&mut options);
        let handle = ringmq::dashboard::start(options).expect("the dashboard starts");
        let base = format!("http://{}", handle.local_addr);
        TestDashboard {
            addr: handle.local_addr,
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

/// A blocking face of an async reqwest client that behaves like the dashboard's own pages: it
/// keeps the session cookie and sends every write as JSON with the dashboard's Origin and the
/// session's anti-CSRF token.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    /// `name=value` of the session cookie.
    pub cookie: String,
    pub csrf_token: String,
}

impl Http {
    pub fn new(base: &str) -> Http {
        let mut http = Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            // Redirects are looked at, not followed (the sign-in redirect is asserted).
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_string(),
            cookie: String::new(),
            csrf_token: String::new(),
        };
        http.refresh_session();
        http
    }

    /// Reads the session's token (and takes the cookie the dashboard sets, if any).
    pub fn refresh_session(&mut self) {
        let (status, _, text) = self.send("GET", "/api/session", None);
        assert_eq!(status, 200, "{text}");
        let session: Value = serde_json::from_str(&text).unwrap();
        self.csrf_token = session["csrfToken"].as_str().unwrap().to_string();
    }

    /// Status, Content-Type and body text.
    pub fn send(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, String, String) {
        let url = format!("{}{path}", self.base);
        let write = method != "GET";
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let (cookie, token, origin) = (self.cookie.clone(), self.csrf_token.clone(), &self.base);
        let (status, content_type, set_cookie, text) = self.rt.block_on(async {
            let mut req = self.client.request(method, &url);
            if !cookie.is_empty() {
                req = req.header("Cookie", cookie);
            }
            if write {
                req = req
                    .header("Content-Type", "application/json")
                    .header("Origin", origin.as_str())
                    .header("X-CSRF-Token", token);
            }
            if let Some(body) = body {
                req = req.body(body.to_string());
            }
            let res = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
            let status = res.status().as_u16();
            let content_type = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            let set_cookie = res
                .headers()
                .get("set-cookie")
                .map(|v| v.to_str().unwrap().to_string());
            (status, content_type, set_cookie, res.text().await.unwrap())
        });
        if let Some(set) = set_cookie {
            self.cookie = set.split(';').next().unwrap().to_string();
        }
        (status, content_type, text)
    }

    /// Status and JSON body; every answer under /api/ must be JSON.
    pub fn json(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, content_type, text) = self.send(method, path, body);
        assert_eq!(content_type, "application/json", "{path}: {text}");
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        (status, value)
    }

    /// A GET that must answer 200.
    pub fn get(&mut self, path: &str) -> Value {
        let (status, value) = self.json("GET", path, None);
        assert_eq!(status, 200, "{path}: {value}");
        value
    }

    /// A request that must fail with `status`; its error text.
    pub fn fails(&mut self, method: &str, path: &str, body: Option<Value>, status: u16) -> String {
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
    let mut http = Http::new(&dashboard.base);

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

    topics_are_created_and_refused(&mut http, &broker);
    let msg_id = messages_are_sent_found_and_shown(&mut http);
    let _online = groups_lag_and_reset(&mut http, &broker, &msg_id);
    metrics_parse_with_exporter_names(&mut http, &broker);
    pages_render_html(&mut http, &msg_id);

    let deleted = delete_the_topic(&mut http);
    assert_eq!(deleted["brokers"], json!([broker.addr]));
    let (status, _) = http.json("GET", &format!("/api/topics/{TOPIC}"), None);
    assert_eq!(status, 404);
}

/// DELETE of the topic: without a cluster (400), from an unknown one (404), then for real.
fn delete_the_topic(http: &mut Http) -> Value {
    let path = format!("/api/topics/{TOPIC}");
    let e = http.fails("DELETE", &path, None, 400);
    assert!(e.contains("cluster"), "{e}");
    let e = http.fails("DELETE", &format!("{path}?cluster=NoCluster"), None, 404);
    assert!(e.contains("cluster NoCluster is not known"), "{e}");
    let (status, value) = http.json("DELETE", &format!("{path}?cluster=DefaultCluster"), None);
    assert_eq!(status, 200, "{value}");
    value
}

fn topics_are_created_and_refused(http: &mut Http, broker: &TestBroker) {
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
fn messages_are_sent_found_and_shown(http: &mut Http) -> String {
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
fn groups_lag_and_reset(http: &mut Http, broker: &TestBroker, msg_id: &str) -> Connection {
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
fn wait_for_retry_messages(http: &mut Http, n: i64) {
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
fn dead_letters_are_found_and_resent(http: &mut Http, broker: &TestBroker, msg_id: &str) {
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

fn metrics_parse_with_exporter_names(http: &mut Http, broker: &TestBroker) {
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
    stats_gauges_are_the_brokers_statistics(http, broker);
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

/// The producer and consumer TPS and size gauges are the broker's own statistics
/// (VIEW_BROKER_STATS_DATA), not offsets: a pull that commits nothing moves the consumer's
/// gauges while its offset stays where it was.
fn stats_gauges_are_the_brokers_statistics(http: &mut Http, broker: &TestBroker) {
    let mut conn = broker.connection();
    let mut pulled = 0;
    for q in 0..8 {
        if let Ok(r) = conn.pull(GROUP, TOPIC, q, 0, 32, "*", 0) {
            pulled += r.messages.len();
        }
    }
    assert!(pulled >= 1, "the topic's message was not pulled");
    let topic = [("topic", TOPIC)];
    let group = [("group", GROUP), ("topic", TOPIC)];
    wait_until("the statistics gauges", Duration::from_secs(10), || {
        let (_, _, text) = http.send("GET", "/metrics", None);
        let (samples, _) = parse_exposition(&text);
        let value =
            |name: &str, with: &[(&str, &str)]| sample(&samples, name, with).map(|s| s.value);
        let moved = value("rocketmq_producer_tps", &topic)? > 0.0
            && value("rocketmq_producer_message_size", &topic)? > 0.0
            && value("rocketmq_consumer_tps", &group)? > 0.0
            && value("rocketmq_consumer_message_size", &group)? > 0.0;
        let offset_stayed = value("rocketmq_consumer_offset", &group)? == 1.0;
        (moved && offset_stayed).then_some(())
    });
}

fn pages_render_html(http: &mut Http, msg_id: &str) {
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
    let mut http = Http::new(&dashboard.base);
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

/// `ringmq dashboard -n namesrv --listen listen` and its start-up line.
fn spawn_dashboard(namesrv: &str, listen: &str) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["dashboard", "-n", namesrv, "--listen", listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

#[test]
fn the_dashboard_command_serves_until_sigterm_and_refuses_bad_flags() {
    use std::process::Command;
    let namesrv = crate::harness::TestNamesrv::start();
    let bin = env!("CARGO_BIN_EXE_ringmq");
    let (mut child, line) = spawn_dashboard(&namesrv.addr, "127.0.0.1:0");
    let base = line
        .strip_prefix("ringmq dashboard: ")
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the start line: {line}"))
        .to_string();
    let mut http = Http::new(&base);
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

/// An answer read off the wire.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON with its status inside, as every refusal under /api/ is.
    pub fn error(&self) -> String {
        let v: Value = serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"));
        assert_eq!(v["status"], self.status, "{v}");
        v["error"].as_str().unwrap().to_string()
    }
}

/// One HTTP/1.1 exchange written by hand, the way curl or a hostile page would send it: the
/// request line, exactly `headers` (no Host unless given), `Connection: close` and the body.
pub fn raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawReply {
    use std::io::{Read, Write};
    let mut text = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!(
        "Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(text.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {answer:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawReply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Whether the broker itself (not the nameserver's route, which lags) has `topic`.
pub fn broker_has_topic(broker: &TestBroker, topic: &str) -> bool {
    let mut conn = broker.connection();
    let answer = conn
        .call(ringmq::remoting::RemotingCommand::request(
            code::GET_ALL_TOPIC_CONFIG,
        ))
        .unwrap();
    String::from_utf8_lossy(&answer.body).contains(&format!("\"{topic}\""))
}

#[test]
fn cross_site_writes_are_refused_and_change_nothing() {
    let broker = TestBroker::start(2);
    wait_registered(&broker);
    let dashboard = TestDashboard::start(&broker.namesrv.addr);
    let mut http = Http::new(&dashboard.base);
    let addr = dashboard.addr;
    let host = addr.to_string();
    let own = format!("http://{host}");

    // The two requests: what any page the operator visits can make their browser send.
    let topic = json!({"topic": "CsrfTopic", "cluster": "DefaultCluster"}).to_string();
    let evil = [
        ("Host", host.as_str()),
        ("Content-Type", "text/plain"),
        ("Origin", "http://evil.example"),
    ];
    let r = raw(addr, "POST", "/api/topics", &evil, &topic);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(
        r.error().contains("needs Content-Type: application/json"),
        "{r:?}"
    );
    let message = json!({"topic": "CsrfTopic", "body": "from evil page"}).to_string();
    let r = raw(addr, "POST", "/api/messages", &evil, &message);
    assert_eq!(r.status, 403, "{r:?}");

    // Each check on its own, everything else right. A write that passes them all but names an
    // unknown cluster answers 404: it got past the guard and changed nothing either.
    let cookie = http.cookie.clone();
    let token = http.csrf_token.clone();
    let other_token = Http::new(&dashboard.base).csrf_token;
    let probe = json!({"topic": "CsrfTopic", "cluster": "NoCluster"}).to_string();
    let with = |extra: &[(&'static str, &str)], skip: &[&str]| -> RawReply {
        let mut headers: Vec<(&str, &str)> = vec![
            ("Host", host.as_str()),
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
            ("Origin", own.as_str()),
            ("X-CSRF-Token", token.as_str()),
        ];
        headers.retain(|(n, _)| !skip.contains(n) && !extra.iter().any(|(e, _)| e == n));
        headers.extend_from_slice(extra);
        raw(addr, "POST", "/api/topics", &headers, &probe)
    };
    let r = with(&[], &[]);
    assert_eq!(r.status, 404, "all right: past the guard: {r:?}");
    assert!(
        r.error().contains("cluster NoCluster is not known"),
        "{r:?}"
    );
    for (extra, skip, expect) in [
        (
            vec![("Origin", "http://evil.example")],
            vec![],
            "comes from http://evil.example",
        ),
        (vec![("Origin", "null")], vec![], "comes from null"),
        (
            vec![("Origin", "https://evil.example")],
            vec![],
            "comes from https://evil.example",
        ),
        (
            vec![("Referer", "http://evil.example/x")],
            vec!["Origin"],
            "comes from http://evil.example",
        ),
        (vec![], vec!["Origin"], "needs an Origin (or Referer)"),
        (
            vec![("Content-Type", "application/x-www-form-urlencoded")],
            vec![],
            "application/json",
        ),
        (
            vec![("Content-Type", "multipart/form-data; boundary=x")],
            vec![],
            "application/json",
        ),
        (vec![], vec!["Content-Type"], "got none"),
        (
            vec![],
            vec!["X-CSRF-Token"],
            "X-CSRF-Token header is missing or not this session's",
        ),
        (
            vec![("X-CSRF-Token", other_token.as_str())],
            vec![],
            "not this session's",
        ),
        (vec![], vec!["Cookie"], "not this session's"),
    ] {
        let r = with(&extra, &skip);
        assert_eq!(r.status, 403, "{extra:?} without {skip:?}: {r:?}");
        assert!(
            r.error().contains(expect),
            "{extra:?} without {skip:?}: {r:?}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    // A Referer of the dashboard stands in for a missing Origin.
    let referer = format!("{own}/topics");
    let r = with(&[("Referer", &referer)], &["Origin"]);
    assert_eq!(r.status, 404, "{r:?}");

    // Deleting, resetting and resending from elsewhere: refused too.
    for (method, path) in [
        (
            "DELETE",
            "/api/topics/TBW102?cluster=DefaultCluster".to_string(),
        ),
        ("POST", format!("/api/groups/{GROUP}/reset")),
        (
            "POST",
            "/api/messages/0A0000010000000000000000/resend".to_string(),
        ),
        ("PUT", "/api/topics".to_string()),
    ] {
        let headers = [
            ("Host", host.as_str()),
            ("Cookie", cookie.as_str()),
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
            ("X-CSRF-Token", token.as_str()),
        ];
        let r = raw(
            addr,
            method,
            &path,
            &headers,
            "{\"topic\":\"TBW102\",\"group\":\"g\"}",
        );
        assert_eq!(r.status, 403, "{method} {path}: {r:?}");
    }

    // Nothing was created or sent; TBW102 is still there. GET never changes anything.
    assert!(!broker_has_topic(&broker, "CsrfTopic"));
    assert!(broker_has_topic(&broker, "TBW102"));
    let (status, _) = http.json("GET", "/api/topics/CsrfTopic", None);
    assert_eq!(status, 404);
    // The dashboard's own way (same origin, JSON, the session's token) works.
    let (status, created) = http.json(
        "POST",
        "/api/topics",
        Some(json!({"topic": "OwnTopic",
        "cluster": "DefaultCluster"})),
    );
    assert_eq!(status, 200, "{created}");
    assert!(broker_has_topic(&broker, "OwnTopic"));
}

/// The security headers every answer must carry.
fn assert_security_headers(what: &str, r: &RawReply) {
    let csp = r
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    for part in [
        "frame-ancestors 'none'",
        "script-src 'self'",
        "default-src 'self'",
    ] {
        assert!(csp.contains(part), "{what}: {csp}");
    }
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{what}: {csp}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("referrer-policy"), Some("same-origin"), "{what}");
}

#[test]
fn other_host_names_are_refused_and_every_answer_carries_the_headers() {
    let namesrv = crate::harness::TestNamesrv::start();
    let dashboard = TestDashboard::start_with(&namesrv.addr, |o| {
        o.allowed_hosts = vec!["dash.example".into()];
    });
    let addr = dashboard.addr;
    let host = addr.to_string();
    let port = addr.port();

    // A DNS-rebinding page comes under its own name: refused, pages and API alike.
    let evil = format!("evil.example:{port}");
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/topics"),
        ("GET", "/api/cluster"),
        ("GET", "/api/session"),
        ("GET", "/metrics"),
        ("GET", "/assets/app.js"),
        ("POST", "/api/topics"),
    ] {
        let r = raw(addr, method, path, &[("Host", &evil)], "");
        assert_eq!(r.status, 421, "{method} {path}: {r:?}");
        assert!(r.body.contains("Host evil.example"), "{r:?}");
        assert_security_headers(path, &r);
    }
    let r = raw(addr, "GET", "/api/cluster", &[], "");
    assert_eq!(r.status, 421, "no Host: {r:?}");
    for ok in [
        host.clone(),
        format!("localhost:{port}"),
        "dash.example".to_string(),
        format!("DASH.example:{port}"),
    ] {
        let r = raw(addr, "GET", "/api/cluster", &[("Host", &ok)], "");
        assert_eq!(r.status, 200, "{ok}: {r:?}");
    }

    // Every kind of answer carries the headers: pages, API, assets, metrics, errors, refusals.
    let h = [("Host", host.as_str())];
    for (method, path, status) in [
        ("GET", "/", 200),
        ("GET", "/topics", 200),
        ("GET", "/producer", 200),
        ("GET", "/nowhere", 404),
        ("GET", "/api/cluster", 200),
        ("GET", "/api/nothing", 404),
        ("GET", "/api/session", 200),
        ("GET", "/assets/app.js", 200),
        ("GET", "/assets/style.css", 200),
        ("GET", "/metrics", 200),
        ("GET", "/login", 303),
        ("POST", "/api/topics", 403),
        ("POST", "/api/login", 403),
    ] {
        let r = raw(addr, method, path, &h, "");
        assert_eq!(r.status, status, "{method} {path}: {r:?}");
        assert_security_headers(path, &r);
        if r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
        {
            // No inline script or style for the policy to refuse.
            let scripts: Vec<&str> = r
                .body
                .match_indices("<script")
                .map(|(i, _)| &r.body[i..])
                .collect();
            assert!(
                scripts
                    .iter()
                    .all(|s| s.starts_with("<script src=\"/assets/app.js\">")),
                "{path}"
            );
            assert!(
                !r.body.contains(" style=") && !r.body.contains("<style"),
                "{path}"
            );
            assert!(
                !r.body.contains(" onclick=") && !r.body.contains("javascript:"),
                "{path}"
            );
        }
    }
    // The session cookie: HttpOnly, SameSite=Strict, per port; Secure when TLS came through a
    // proxy.
    let r = raw(addr, "GET", "/", &h, "");
    let cookie = r.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.starts_with(&format!("ringmq_dashboard_{port}=")),
        "{cookie}"
    );
    assert!(
        cookie.contains("; Path=/; HttpOnly; SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
    let r = raw(
        addr,
        "GET",
        "/",
        &[h[0], ("X-Forwarded-Proto", "https")],
        "",
    );
    assert!(
        r.header("set-cookie").unwrap().ends_with("; Secure"),
        "{r:?}"
    );
}

const USERS: &str = "# as rocketmq-dashboard's users.properties\nsuper=admin,1\nuser1=user\n";

/// Signs `http` in; the answer.
fn sign_in(http: &mut Http, user: &str, password: &str) -> (u16, Value) {
    let before = http.cookie.clone();
    let form = json!({"username": user, "password": password});
    let (status, answer) = http.json("POST", "/api/login", Some(form));
    if status == 200 {
        assert_ne!(http.cookie, before, "a new session id at sign-in");
        http.csrf_token = answer["csrfToken"].as_str().unwrap().to_string();
    }
    (status, answer)
}

#[test]
fn a_users_file_asks_for_a_sign_in_and_admins_write() {
    let namesrv = crate::harness::TestNamesrv::start();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.properties");
    std::fs::write(&users, USERS).unwrap();
    let dashboard = TestDashboard::start_with(&namesrv.addr, |o| {
        o.users_file = Some(users.clone());
    });
    let (addr, host) = (dashboard.addr, dashboard.addr.to_string());
    let cluster_status = |cookie: &str| {
        let headers = [("Host", host.as_str()), ("Cookie", cookie)];
        raw(addr, "GET", "/api/cluster", &headers, "").status
    };
    let mut anonymous = Http::new(&dashboard.base);
    let session = anonymous.get("/api/session");
    assert_eq!(
        (&session["login"], &session["user"]),
        (&json!(true), &Value::Null)
    );

    // Pages go to the sign-in page (and come back), the API answers 401, /metrics asks for
    // Basic credentials; the sign-in page, the assets and the session are open.
    let (status, _, _) = anonymous.send("GET", "/topics?x=1", None);
    assert_eq!(status, 303);
    let r = raw(addr, "GET", "/topics?x=1", &[("Host", &host)], "");
    assert_eq!(
        r.header("location"),
        Some("/login?next=%2Ftopics%3Fx%3D1"),
        "{r:?}"
    );
    let e = anonymous.fails("GET", "/api/cluster", None, 401);
    assert!(e.contains("sign in first"), "{e}");
    let e = anonymous.fails("POST", "/api/topics", Some(json!({"topic": "T"})), 401);
    assert!(e.contains("sign in first"), "{e}");
    let r = raw(addr, "GET", "/metrics", &[("Host", &host)], "");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"ringmq dashboard\"")
    );
    let (status, _, page) = anonymous.send("GET", "/login?next=/groups", None);
    assert_eq!(status, 200);
    assert!(page.contains("data-url=\"/api/login\"") && page.contains("data-then=\"/groups\""));
    let (status, _, page) = anonymous.send("GET", "/login?next=//evil.example/", None);
    assert_eq!(status, 200);
    assert!(
        page.contains("data-then=\"/\""),
        "no redirect elsewhere: {page}"
    );

    // Wrong passwords and unknown users; a sign-in from another origin.
    let (status, e) = sign_in(&mut anonymous, "super", "wrong");
    assert_eq!(status, 401, "{e}");
    assert_eq!(e["error"], "wrong user name or password");
    assert_eq!(sign_in(&mut anonymous, "nobody", "admin").0, 401);
    let body = json!({"username": "super", "password": "admin"}).to_string();
    let r = raw(
        addr,
        "POST",
        "/api/login",
        &[
            ("Host", &host),
            ("Cookie", &anonymous.cookie),
            ("Content-Type", "application/json"),
            ("Origin", "http://evil.example"),
            ("X-CSRF-Token", &anonymous.csrf_token),
        ],
        &body,
    );
    assert_eq!(r.status, 403, "{r:?}");

    // A user (role 0) reads and may not write.
    let mut user = Http::new(&dashboard.base);
    let anonymous_cookie = user.cookie.clone();
    let (status, answer) = sign_in(&mut user, "user1", "user");
    assert_eq!((status, &answer["admin"]), (200, &json!(false)), "{answer}");
    assert_eq!(user.get("/api/session")["user"], "user1");
    assert_eq!(user.get("/api/cluster")["brokers"], json!([]));
    let (status, _, _) = user.send("GET", "/", None);
    assert_eq!(status, 200);
    let probe = json!({"topic": "T", "cluster": "NoCluster"});
    let e = user.fails("POST", "/api/topics", Some(probe.clone()), 403);
    assert!(e.contains("user user1 may only read"), "{e}");
    // The session id from before the sign-in is not signed in.
    assert_eq!(cluster_status(&anonymous_cookie), 401);

    // An admin (role 1) writes; the cookie is HttpOnly, SameSite=Strict and bounded.
    let r = raw(addr, "GET", "/api/session", &[("Host", &host)], "");
    let cookie = r
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let token: Value = serde_json::from_str(&r.body).unwrap();
    let r = raw(
        addr,
        "POST",
        "/api/login",
        &[
            ("Host", &host),
            ("Cookie", &cookie),
            ("Content-Type", "application/json"),
            ("Origin", &dashboard.base),
            ("X-CSRF-Token", token["csrfToken"].as_str().unwrap()),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{r:?}");
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.contains("; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"),
        "{set}"
    );
    let mut admin = Http::new(&dashboard.base);
    assert_eq!(sign_in(&mut admin, "super", "admin").0, 200);
    let e = admin.fails("POST", "/api/topics", Some(probe.clone()), 404);
    assert!(
        e.contains("cluster NoCluster is not known"),
        "past the guard: {e}"
    );
    // Over TLS (a proxy says so, and the page's origin is https), the cookie is Secure.
    let https_origin = format!("https://{host}");
    let other = Http::new(&dashboard.base);
    let r = raw(
        addr,
        "POST",
        "/api/login",
        &[
            ("Host", &host),
            ("Cookie", &other.cookie),
            ("Content-Type", "application/json"),
            ("Origin", &https_origin),
            ("X-Forwarded-Proto", "https"),
            ("X-CSRF-Token", &other.csrf_token),
        ],
        &body,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("set-cookie").unwrap().ends_with("; Secure"),
        "{r:?}"
    );

    // /metrics takes the users' credentials as Basic.
    for (credentials, status) in [("super:admin", 200), ("user1:user", 200), ("super:x", 401)] {
        use base64::Engine;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        );
        let r = raw(
            addr,
            "GET",
            "/metrics",
            &[("Host", &host), ("Authorization", &basic)],
            "",
        );
        assert_eq!(r.status, status, "{credentials}");
    }

    // The file is re-read when it changes: super demoted writes no more, user1 is gone.
    std::fs::write(&users, "super=admin,0\nuser2=other\n").unwrap();
    let e = admin.fails("POST", "/api/topics", Some(probe.clone()), 403);
    assert!(e.contains("user super may only read"), "{e}");
    user.fails("GET", "/api/cluster", None, 401);

    // Signing out ends the session: its old cookie is worth nothing.
    let signed_in = admin.cookie.clone();
    let (status, _) = admin.json("POST", "/api/logout", Some(json!({})));
    assert_eq!(status, 200);
    assert_ne!(admin.cookie, signed_in);
    admin.fails("GET", "/api/cluster", None, 401);
    assert_eq!(cluster_status(&signed_in), 401);
}

#[test]
fn a_dashboard_beyond_loopback_without_users_is_read_only() {
    use std::process::Command;
    let namesrv = crate::harness::TestNamesrv::start();
    let bin = env!("CARGO_BIN_EXE_ringmq");
    // Every address, for as long as the test takes; it answers only reads.
    let (mut child, line) = spawn_dashboard(&namesrv.addr, "0.0.0.0:0");
    assert!(
        line.contains("read-only: beyond loopback without --users-file"),
        "{line}"
    );
    let port = line
        .split_whitespace()
        .nth(2)
        .and_then(|url| url.rsplit(':').next())
        .unwrap_or_else(|| panic!("the start line: {line}"))
        .to_string();
    let mut http = Http::new(&format!("http://127.0.0.1:{port}"));
    assert_eq!(http.get("/api/cluster")["brokers"], json!([]));
    let session = http.get("/api/session");
    assert!(
        session["readOnly"].as_str().unwrap().contains("read-only"),
        "{session}"
    );
    let probe = json!({"topic": "T", "cluster": "NoCluster"});
    let e = http.fails("POST", "/api/topics", Some(probe.clone()), 403);
    assert!(
        e.contains("read-only") && e.contains("0.0.0.0") && e.contains("--users-file"),
        "{e}"
    );
    http.fails(
        "DELETE",
        "/api/topics/TBW102?cluster=DefaultCluster",
        None,
        403,
    );
    // SAFETY: kill(2) of our own unreaped child.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    assert!(child.wait().unwrap().success());

    // --allow-anonymous-writes opens them (said at start); with a users file it means nothing
    // and is refused, as is a users file that does not parse.
    let open = TestDashboard::start_with(&namesrv.addr, |o| {
        o.listen = "0.0.0.0:0".parse().unwrap();
        o.allow_anonymous_writes = true;
    });
    let mut http = Http::new(&format!("http://127.0.0.1:{}", open.addr.port()));
    http.fails("POST", "/api/topics", Some(probe), 404);
    drop(open);
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.properties");
    std::fs::write(&users, "super=admin,1\nbad=pw,9\n").unwrap();
    let users = users.to_str().unwrap();
    for (args, expect) in [
        (
            vec!["--users-file", users, "--allow-anonymous-writes"],
            "no meaning with --users-file",
        ),
        (
            vec!["--users-file", users],
            "line 2: user bad has role \"9\"",
        ),
    ] {
        let out = Command::new(bin)
            .args(["dashboard", "-n", &namesrv.addr, "--listen", "127.0.0.1:0"])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}
