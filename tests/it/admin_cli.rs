//! `ringmq admin` as an operator runs it: the real binary against an in-process 2-shard broker
//! and its nameserver. Each command's mqadmin text (aligned tables included) and its `--json`
//! output are checked, and the error paths: unknown topic, cluster or group, unreachable
//! nameserver or broker, a broker refusing a request.

use std::process::Command;
use std::time::{Duration, Instant};

use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::Properties;
use ringmq::protocol::fastjson;
use ringmq::protocol::heartbeat::{
    parse_tag_expression, ConsumeType, ConsumerData, HeartbeatData, MessageModel, ProducerData,
};
use ringmq::remoting::{request, RemotingCommand};
use serde_json::Value;

use crate::harness::TestBroker;

/// What one run of `ringmq admin` did.
pub(crate) struct Run {
    pub ok: bool,
    pub code: Option<i32>,
    pub out: String,
    pub err: String,
}

/// Runs `ringmq admin <args>` with NAMESRV_ADDR set to `namesrv`, or unset for `None`.
pub(crate) fn run(namesrv: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringmq"));
    cmd.arg("admin").args(args).env_remove("NAMESRV_ADDR");
    if let Some(namesrv) = namesrv {
        cmd.env("NAMESRV_ADDR", namesrv);
    }
    let out = cmd.output().expect("ringmq runs");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    Run {
        ok: out.status.success(),
        code: out.status.code(),
        out: text(out.stdout),
        err: text(out.stderr),
    }
}

pub(crate) fn admin(namesrv: &str, args: &[&str]) -> (bool, String, String) {
    let r = run(Some(namesrv), args);
    (r.ok, r.out, r.err)
}

/// Runs a command that must succeed; its stdout.
pub(crate) fn ok(namesrv: &str, args: &[&str]) -> String {
    let r = run(Some(namesrv), args);
    assert!(r.ok, "{args:?} failed: {}{}", r.err, r.out);
    r.out
}

/// Runs a command with `--json` that must succeed; its stdout parsed.
pub(crate) fn json(namesrv: &str, args: &[&str]) -> Value {
    let args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let out = ok(namesrv, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Runs a command that must fail with exit code 1; its stderr.
pub(crate) fn fails(namesrv: Option<&str>, args: &[&str]) -> String {
    let r = run(namesrv, args);
    assert_eq!(r.code, Some(1), "{args:?}: {}{}", r.out, r.err);
    assert!(r.err.starts_with("ringmq admin: "), "{}", r.err);
    r.err
}

/// Asserts that in the table `text` starts with (up to a blank line), every row's cell under
/// each of `titles` starts in the title's column, after a blank (mqadmin's left-aligned
/// columns).
pub(crate) fn assert_aligned(text: &str, titles: &[&str]) {
    let rows: Vec<&str> = text.lines().take_while(|l| !l.is_empty()).collect();
    let header = rows[0];
    for title in titles {
        let at = header
            .find(title)
            .unwrap_or_else(|| panic!("{title} in {header}"));
        for line in &rows[1..] {
            let bytes = line.as_bytes();
            let starts = bytes.get(at).is_some_and(|c| *c != b' ') && bytes[at - 1] == b' ';
            assert!(starts, "{title} is not aligned in:\n{text}");
        }
    }
}

pub(crate) fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn send(conn: &mut Connection, topic: &str, queue_id: i32) {
    let msg = OutgoingMessage {
        topic: topic.into(),
        queue_id,
        body: b"cli".to_vec(),
        properties: Properties::default(),
        flag: 0,
    };
    conn.send_message("cli_pg", &msg).unwrap();
}

pub(crate) fn request(code: i32, fields: &[(&str, &str)]) -> RemotingCommand {
    let mut cmd = RemotingCommand::request(code);
    for (k, v) in fields {
        cmd.set_ext(*k, *v);
    }
    cmd
}

/// The broker's subscription group table.
fn groups(conn: &mut Connection) -> Value {
    let all = request(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG, &[]);
    let body = conn.call(all).unwrap().body;
    serde_json::from_slice::<Value>(&fastjson::normalize(&body)).unwrap()["subscriptionGroupTable"]
        .clone()
}

// ---------------------------------------------------------------------------------------------
// Messages, topics and the cluster

#[test]
fn send_then_consume_a_message_and_list_the_cluster() {
    let broker = TestBroker::start(2);
    let ns = broker.namesrv.addr.clone();
    let send = [
        "sendMessage",
        "-t",
        "AdminTopic",
        "-p",
        "hello",
        "-c",
        "TagA",
        "-k",
        "k1",
    ];
    let out = ok(&ns, &send);
    assert!(out.contains("SEND_OK"), "{out}");
    assert_aligned(&out, &["#QID", "#Send Result", "#MsgId"]);
    let sent = json(&ns, &send);
    assert_eq!(
        (&sent["sendStatus"], &sent["brokerName"]),
        (&"SEND_OK".into(), &"broker-it".into())
    );
    assert_eq!(sent["queueId"], 0);
    assert_eq!(sent["queueOffset"], 1);
    let out = ok(&ns, &["consumeMessage", "-t", "AdminTopic"]);
    assert!(out.contains("tags=TagA keys=k1 body=hello"), "{out}");
    let consumed = json(&ns, &["consumeMessage", "-t", "AdminTopic", "-c", "1"]);
    assert_eq!(consumed.as_array().unwrap().len(), 1);
    assert_eq!(
        (&consumed[0]["body"], &consumed[0]["tags"]),
        (&"hello".into(), &"TagA".into())
    );

    let out = ok(&ns, &["clusterList"]);
    assert!(out.starts_with("#Cluster Name"), "{out}");
    let row = out.lines().nth(1).unwrap();
    assert!(row.starts_with("DefaultCluster    broker-it"), "{out}");
    assert!(
        row.contains(&broker.addr) && row.contains("V4_9_8"),
        "{out}"
    );
    assert_aligned(&out, &["#Broker Name", "#BID", "#Addr", "#Version"]);
    let clusters = json(&ns, &["clusterList"]);
    assert_eq!(clusters[0]["clusterName"], "DefaultCluster");
    assert_eq!(
        (&clusters[0]["brokerId"], &clusters[0]["addr"]),
        (&0.into(), &broker.addr.clone().into())
    );
    assert_eq!(clusters[0]["version"], "V4_9_8");
    assert!(ok(&ns, &["topicList"]).lines().any(|l| l == "AdminTopic"));
    let topics = json(&ns, &["topicList"]);
    assert!(topics.as_array().unwrap().contains(&"AdminTopic".into()));
    let route = json(&ns, &["topicRoute", "-t", "AdminTopic"]);
    assert_eq!(route["brokerDatas"][0]["brokerName"], "broker-it");
}

/// Waits until the nameserver's route of `topic` has `queues` write queues.
fn wait_for_route(ns: &str, topic: &str, queues: i64) {
    wait_for("the route of the topic", || {
        let r = run(Some(ns), &["topicRoute", "-t", topic, "--json"]);
        let route: Value = serde_json::from_str(&r.out).ok()?;
        (route["queueDatas"][0]["writeQueueNums"].as_i64() == Some(queues)).then_some(())
    });
}

#[test]
fn a_topic_is_created_inspected_and_deleted() {
    let broker = TestBroker::start(2);
    let ns = broker.namesrv.addr.clone();
    let create = [
        "updateTopic",
        "-t",
        "CliTopic",
        "-c",
        "DefaultCluster",
        "-r",
        "4",
        "-w",
        "4",
    ];
    let out = ok(&ns, &create);
    let expected = format!(
        "create topic to {} success.\nTopicConfig [topicName=CliTopic, readQueueNums=4, \
         writeQueueNums=4, perm=RW-, topicFilterType=SINGLE_TAG, topicSysFlag=0, order=false]\n",
        broker.addr
    );
    assert_eq!(out, expected);
    wait_for_route(&ns, "CliTopic", 4);
    let mut conn = broker.connection();
    for q in 0..4 {
        for _ in 0..=q {
            send(&mut conn, "CliTopic", q);
        }
    }

    assert_topic_status(&ns);

    assert_eq!(
        ok(&ns, &["topicClusterList", "-t", "CliTopic"]),
        "DefaultCluster\n"
    );
    let clusters = json(&ns, &["topicClusterList", "-t", "CliTopic"]);
    assert_eq!(clusters, serde_json::json!(["DefaultCluster"]));
    update_an_ordered_topic(&broker, &ns);

    let delete = ["deleteTopic", "-t", "CliTopic", "-c", "DefaultCluster"];
    let out = ok(&ns, &delete);
    assert_eq!(
        out,
        "delete topic [CliTopic] from cluster [DefaultCluster] success.\n\
         delete topic [CliTopic] from NameServer success.\n"
    );
    let err = fails(Some(&ns), &["topicStatus", "-t", "CliTopic"]);
    assert!(err.contains("TOPIC_NOT_EXIST (17)"), "{err}");
    let deleted = json(&ns, &delete);
    assert_eq!(deleted["brokers"], serde_json::json!([broker.addr]));
    assert_eq!(deleted["namesrvs"], serde_json::json!([ns]));
}

/// topicStatus of CliTopic, whose queue q holds q + 1 messages.
fn assert_topic_status(ns: &str) {
    let out = ok(ns, &["topicStatus", "-t", "CliTopic"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "#Broker Name                      #QID  #Min Offset           #Max Offset             \
         #Last Updated"
    );
    assert_eq!(lines.len(), 5, "{out}");
    for (q, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells[..4],
            ["broker-it", &q.to_string(), "0", &(q + 1).to_string()]
        );
        // yyyy-MM-dd HH:mm:ss,SSS
        let (date, time) = (cells[4], cells[5]);
        assert!(
            date.len() == 10 && date.starts_with("20") && time.len() == 12,
            "{line}"
        );
    }
    assert_aligned(
        &out,
        &["#QID", "#Min Offset", "#Max Offset", "#Last Updated"],
    );
    let status = json(ns, &["topicStatus", "-t", "CliTopic"]);
    let maxima: Vec<i64> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["maxOffset"].as_i64().unwrap())
        .collect();
    assert_eq!(maxima, [1, 2, 3, 4]);
    assert!(status[3]["lastUpdateTimestamp"].as_i64().unwrap() > 1_600_000_000_000);
}

/// updateTopic -b with -o true: the topic on that broker, and its order conf in the nameserver.
fn update_an_ordered_topic(broker: &TestBroker, ns: &str) {
    let args = [
        "updateTopic",
        "-t",
        "CliTopic",
        "-b",
        &broker.addr,
        "-w",
        "8",
        "-o",
        "true",
    ];
    let updated = json(ns, &args);
    assert_eq!(updated["brokers"], serde_json::json!([broker.addr]));
    assert_eq!(updated["orderConf"], "broker-it:8");
    let config = &updated["topicConfig"];
    assert_eq!(
        (&config["order"], &config["writeQueueNums"]),
        (&true.into(), &8.into())
    );
    assert_eq!(config["readQueueNums"], 8);
    let kv = broker
        .namesrv
        .client()
        .get_kv("ORDER_TOPIC_CONFIG", "CliTopic");
    assert_eq!(kv.unwrap().as_deref(), Some("broker-it:8"));
    wait_for_route(ns, "CliTopic", 8);
    let out = ok(ns, &args);
    assert!(
        out.contains("set broker orderConf. isOrder=true, orderConf=[broker-it:8]"),
        "{out}"
    );
    assert!(out.contains("order=true]"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Subscription groups, consumers and producers

/// A consumer `client-1` of `group` on `topic`, also in producer group `cli_pg`.
pub(crate) fn heartbeat(group: &str, topic: &str) -> HeartbeatData {
    HeartbeatData {
        client_id: "client-1".into(),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
            consume_type: ConsumeType::Passively,
            group_name: group.into(),
            message_model: MessageModel::Clustering,
            subscription_data_set: vec![parse_tag_expression(topic, "TagA || TagB", 1)],
            unit_mode: false,
        }],
        producer_data_set: vec![ProducerData {
            group_name: "cli_pg".into(),
        }],
    }
}

#[test]
fn subscription_groups_are_created_and_deleted() {
    let broker = TestBroker::start(2);
    let ns = broker.namesrv.addr.clone();
    let mut conn = broker.connection();
    let create = [
        "updateSubGroup",
        "-g",
        "cli_group",
        "-c",
        "DefaultCluster",
        "-r",
        "3",
        "-q",
        "2",
    ];
    let out = ok(&ns, &create);
    assert!(out.starts_with(&format!(
        "create subscription group to {} success.\n",
        broker.addr
    )));
    assert!(out.contains("SubscriptionGroupConfig [groupName=cli_group, consumeEnable=true"));
    assert!(
        out.contains("retryQueueNums=2, retryMaxTimes=3, brokerId=0"),
        "{out}"
    );
    let group = &groups(&mut conn)["cli_group"];
    assert_eq!(
        (&group["retryMaxTimes"], &group["retryQueueNums"]),
        (&3.into(), &2.into())
    );
    assert_eq!(group["consumeBroadcastEnable"], false);

    let update = [
        "updateSubGroup",
        "-g",
        "cli_group",
        "-b",
        &broker.addr,
        "-s",
        "false",
    ];
    let updated = json(&ns, &update);
    assert_eq!(updated["brokers"], serde_json::json!([broker.addr]));
    assert_eq!(updated["subscriptionGroupConfig"]["consumeEnable"], false);
    assert_eq!(groups(&mut conn)["cli_group"]["consumeEnable"], false);

    let out = ok(
        &ns,
        &["deleteSubGroup", "-g", "cli_group", "-c", "DefaultCluster"],
    );
    let line = format!(
        "delete subscription group [cli_group] from broker [{}] in cluster [DefaultCluster] \
         success.",
        broker.addr
    );
    assert!(out.starts_with(&line), "{out}");
    assert!(out.contains("delete topic [%RETRY%cli_group] from cluster [DefaultCluster]"));
    assert!(groups(&mut conn)["cli_group"].is_null());
    ok(&ns, &create);
    let deleted = json(
        &ns,
        &["deleteSubGroup", "-g", "cli_group", "-b", &broker.addr],
    );
    assert_eq!(deleted["brokers"], serde_json::json!([broker.addr]));
    assert!(groups(&mut conn)["cli_group"].is_null());
}

/// ProgressTopic's queue q holds q + 1 messages; cli_group committed offset q there.
fn consume_some(conn: &mut Connection) {
    for q in 0..4 {
        for _ in 0..=q {
            send(conn, "ProgressTopic", q);
        }
        let (queue, offset) = (q.to_string(), q.to_string());
        let fields = [
            ("consumerGroup", "cli_group"),
            ("topic", "ProgressTopic"),
            ("queueId", queue.as_str()),
            ("commitOffset", offset.as_str()),
        ];
        conn.call(request(request::UPDATE_CONSUMER_OFFSET, &fields))
            .unwrap();
    }
}

/// consumerProgress of cli_group after [`consume_some`].
fn assert_progress(ns: &str) {
    let out = ok(ns, &["consumerProgress", "-g", "cli_group"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("#Topic"), "{out}");
    assert!(
        lines[0].ends_with(&format!("{:<22}#LastTime", "#Diff")),
        "{out}"
    );
    for (q, line) in lines[1..5].iter().enumerate() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let (broker_offset, consumer_offset) = ((q + 1).to_string(), q.to_string());
        let expected = ["ProgressTopic", "broker-it", &q.to_string(), &broker_offset];
        assert_eq!(cells[..4], expected, "{line}");
        assert_eq!(cells[4..6], [consumer_offset.as_str(), "1"], "{line}");
        let last_is_date = cells[6].starts_with("20") && cells[7].len() == 8;
        assert!(
            if q == 0 {
                cells[6] == "N/A"
            } else {
                last_is_date
            },
            "{line}"
        );
    }
    assert_aligned(
        &out,
        &[
            "#Broker Name",
            "#QID",
            "#Consumer Offset",
            "#Diff",
            "#LastTime",
        ],
    );
    assert!(
        out.ends_with("\nConsume TPS: 0.00\nDiff Total: 4\n"),
        "{out}"
    );
    let progress = json(ns, &["consumerProgress", "-g", "cli_group"]);
    assert_eq!(progress["diffTotal"], 4);
    assert_eq!(progress["queues"].as_array().unwrap().len(), 4);
    assert_eq!(progress["queues"][3]["brokerOffset"], 4);
}

/// consumerConnection and producerConnection of client-1 (see [`heartbeat`]).
fn assert_connections(ns: &str) {
    let out = ok(ns, &["consumerConnection", "-g", "cli_group"]);
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("001  client-1 "), "{out}");
    assert!(first.contains(" 127.0.0.1:") && first.contains(" JAVA ") && first.ends_with("V4_9_8"));
    assert!(
        out.contains("\nBelow is subscription:\n001  Topic: ProgressTopic"),
        "{out}"
    );
    assert!(out.contains("SubExpression: TagA || TagB\n"), "{out}");
    assert!(out.ends_with(
        "ConsumeType: CONSUME_PASSIVELY\nMessageModel: CLUSTERING\n\
         ConsumeFromWhere: CONSUME_FROM_FIRST_OFFSET\n"
    ));
    let connection = json(ns, &["consumerConnection", "-g", "cli_group"]);
    assert_eq!(connection["connectionSet"][0]["clientId"], "client-1");
    assert_eq!(
        connection["subscriptionTable"]["ProgressTopic"]["subString"],
        "TagA || TagB"
    );

    let producers = ["producerConnection", "-g", "cli_pg", "-t", "ProgressTopic"];
    let out = ok(ns, &producers);
    assert!(
        out.starts_with("0001  client-1 ") && out.lines().count() == 1,
        "{out}"
    );
    let producers = json(ns, &producers);
    assert_eq!(producers[0]["language"], "JAVA");
}

#[test]
fn consumer_progress_and_connections() {
    let broker = TestBroker::start(2);
    let ns = broker.namesrv.addr.clone();
    let mut conn = broker.connection();
    consume_some(&mut conn);
    // Kept open: a closed connection takes its clients out of the registry.
    let mut client = broker.connection();
    client
        .heartbeat(&heartbeat("cli_group", "ProgressTopic"))
        .unwrap();

    assert_progress(&ns);
    assert_connections(&ns);

    let err = fails(Some(&ns), &["consumerConnection", "-g", "nobody"]);
    let named = err.contains("GET_CONSUMER_CONNECTION_LIST (203)") && err.contains(&broker.addr);
    assert!(named && err.contains("CONSUMER_NOT_ONLINE (206)"), "{err}");
    let err = fails(Some(&ns), &["consumerProgress", "-g", "nobody"]);
    assert!(err.contains("no consume stats of group nobody"), "{err}");
    let producers = ["producerConnection", "-g", "nobody", "-t", "ProgressTopic"];
    let err = fails(Some(&ns), &producers);
    assert!(
        err.contains("the producer group[nobody] not exist"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Broker and nameserver status

#[test]
fn broker_status_and_config() {
    let broker = TestBroker::start(2);
    let ns = broker.namesrv.addr.clone();
    let out = ok(&ns, &["brokerStatus", "-b", &broker.addr]);
    let keys: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let version = format!("\n{:<32}: V4_9_8\n", "brokerVersionDesc");
    assert!(out.contains(&version), "{out}");
    let status = json(&ns, &["brokerStatus", "-b", &broker.addr]);
    assert_eq!(status[&broker.addr]["brokerVersion"], "409");
    let out = ok(&ns, &["brokerStatus", "-c", "DefaultCluster"]);
    let prefix = format!("{:<24} brokerVersion ", broker.addr);
    assert!(out.lines().all(|l| l.starts_with(&broker.addr)), "{out}");
    assert!(out.lines().any(|l| l.starts_with(&prefix)), "{out}");

    let out = ok(&ns, &["getBrokerConfig", "-b", &broker.addr]);
    assert!(out.starts_with(&format!("============{}============\n", broker.addr)));
    assert!(
        out.contains(&format!("\n{:<50}=  broker-it\n", "brokerName")),
        "{out}"
    );
    let out = ok(&ns, &["getBrokerConfig", "-c", "DefaultCluster"]);
    assert!(out.starts_with(&format!(
        "============Master: {}============\n",
        broker.addr
    )));
    let config = json(&ns, &["getBrokerConfig", "-c", "DefaultCluster"]);
    assert_eq!(config[&broker.addr]["brokerClusterName"], "DefaultCluster");
}

/// The perm of broker-it's queues of `topic` in the nameserver's route.
fn route_perm(ns: &str, topic: &str) -> i64 {
    let route = json(ns, &["topicRoute", "-t", topic]);
    route["queueDatas"][0]["perm"].as_i64().unwrap()
}

#[test]
fn write_perm_and_namesrv_config() {
    let broker = TestBroker::start(2);
    let ns = broker.namesrv.addr.clone();
    ok(&ns, &["updateTopic", "-t", "PermTopic", "-b", &broker.addr]);
    wait_for_route(&ns, "PermTopic", 8);
    let out = ok(&ns, &["wipeWritePerm", "-b", "broker-it"]);
    let prefix = format!("wipe write perm of broker[broker-it] in name server[{ns}] OK, ");
    assert!(out.starts_with(&prefix), "{out}");
    assert!(
        out.trim_end()[prefix.len()..].parse::<u32>().unwrap() >= 1,
        "{out}"
    );
    assert_eq!(route_perm(&ns, "PermTopic") & 2, 0);
    let added = json(&ns, &["addWritePerm", "-b", "broker-it"]);
    assert_eq!(
        (&added[0]["namesrv"], &added[0]["brokerName"]),
        (&ns.clone().into(), &"broker-it".into())
    );
    assert!(added[0]["topicCount"].as_i64().unwrap() >= 1, "{added}");
    assert_eq!(route_perm(&ns, "PermTopic") & 2, 2);

    // One nameserver of the list is down: the other is still changed, and the command fails.
    let two = format!("{ns};127.0.0.1:1");
    let r = run(Some(&two), &["addWritePerm", "-b", "broker-it"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.out.contains(&format!("in name server[{ns}] OK")),
        "{}",
        r.out
    );
    assert!(
        r.out.contains("in name server[127.0.0.1:1] Failed"),
        "{}",
        r.out
    );
    assert!(r.err.contains("cannot reach 127.0.0.1:1"), "{}", r.err);

    let out = ok(&ns, &["getNamesrvConfig"]);
    assert!(
        out.starts_with(&format!("============{ns}============\n")),
        "{out}"
    );
    let config = json(&ns, &["getNamesrvConfig"]);
    assert!(config[&ns].is_object(), "{config}");
}

// ---------------------------------------------------------------------------------------------
// Errors and help

#[test]
fn errors_name_what_failed_and_exit_non_zero() {
    let broker = TestBroker::start(2);
    let ns = broker.namesrv.addr.clone();
    let (ok, out, err) = admin(&ns, &["topicRoute", "-t", "NoSuchTopic"]);
    assert!(!ok && out.is_empty());
    assert!(
        err.contains("TOPIC_NOT_EXIST (17)") && err.contains(&ns),
        "{err}"
    );
    let err = fails(Some(&ns), &["topicStatus", "-t", "NoSuchTopic", "--json"]);
    assert!(
        err.contains("GET_ROUTEINFO_BY_TOPIC (105) of topic NoSuchTopic"),
        "{err}"
    );
    let err = fails(Some("127.0.0.1:1"), &["topicList"]);
    assert!(err.contains("cannot reach 127.0.0.1:1"), "{err}");
    let err = fails(Some("127.0.0.1:1"), &["clusterList", "--json"]);
    assert!(err.contains("cannot reach 127.0.0.1:1"), "{err}");
    let err = fails(None, &["topicList"]);
    assert!(err.contains("no nameserver given"), "{err}");

    // The broker refuses: its code and remark, and which broker and request.
    let bad = ["updateTopic", "-t", "bad topic", "-b", &broker.addr];
    let err = fails(Some(&ns), &bad);
    let named = err.contains("UPDATE_AND_CREATE_TOPIC (17)") && err.contains(&broker.addr);
    assert!(named && err.contains("SYSTEM_ERROR (1)"), "{err}");
    assert!(err.contains("contains illegal characters"), "{err}");
    let err = fails(Some(&ns), &["updateTopic", "-t", "T", "-c", "NoCluster"]);
    assert!(err.contains("cluster NoCluster is not known") && err.contains("DefaultCluster"));
    let err = fails(Some(&ns), &["brokerStatus", "-b", "127.0.0.1:1"]);
    assert!(err.contains("connecting to broker 127.0.0.1:1"), "{err}");

    // -b and -c: one is required, not both.
    let r = run(Some(&ns), &["updateTopic", "-t", "T"]);
    assert_eq!(r.code, Some(2), "{}", r.err);
    let both = [
        "deleteSubGroup",
        "-g",
        "g",
        "-b",
        &broker.addr,
        "-c",
        "DefaultCluster",
    ];
    assert_eq!(run(Some(&ns), &both).code, Some(2));
}

#[test]
fn every_command_has_help() {
    let commands = [
        ("topicList", "--namesrvAddr"),
        ("topicRoute", "--topic"),
        ("topicStatus", "--topic"),
        ("topicClusterList", "--topic"),
        ("updateTopic", "--writeQueueNums"),
        ("deleteTopic", "--clusterName"),
        ("clusterList", "--json"),
        ("sendMessage", "--body"),
        ("consumeMessage", "--offset"),
        ("updateSubGroup", "--retryMaxTimes"),
        ("deleteSubGroup", "--removeOffset"),
        ("consumerProgress", "--groupName"),
        ("consumerConnection", "--groupName"),
        ("producerConnection", "--producerGroup"),
        ("brokerStatus", "--brokerAddr"),
        ("getBrokerConfig", "--clusterName"),
        ("updateBrokerConfig", "--value"),
        ("resetOffsetByTime", "--timestamp"),
        ("wipeWritePerm", "--brokerName"),
        ("addWritePerm", "--brokerName"),
        ("getNamesrvConfig", "--json"),
    ];
    let overview = run(None, &["--help"]);
    assert!(overview.ok);
    for (command, flag) in commands {
        assert!(
            overview.out.contains(command),
            "{command} in {}",
            overview.out
        );
        let help = run(None, &[command, "--help"]);
        assert!(help.ok, "{command}: {}", help.err);
        let usage = format!("Usage: ringmq admin {command}");
        assert!(
            help.out.contains(&usage) && help.out.contains(flag),
            "{}",
            help.out
        );
        assert!(help.out.contains("--json"), "{command}");
    }
}
