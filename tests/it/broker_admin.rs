//! The broker's admin and stats requests (PROTOCOL.md §7.15) on a 2-shard broker: topics,
//! subscription groups, connections, consume stats, offsets, runtime info and config, with
//! bodies parsed (fastjson MessageQueue-object keys included) and compared in shape with the
//! golden Java frames, and the error paths with Java's codes and remarks.

use std::path::Path;
use std::time::{Duration, Instant};

use ringmq::broker::placement::owner_shard;
use ringmq::client::broker::OutgoingMessage;
use ringmq::client::Connection;
use ringmq::message::properties::{Properties, TAGS};
use ringmq::protocol::fastjson;
use ringmq::protocol::heartbeat::{
    parse_tag_expression, ConsumeType, ConsumerData, HeartbeatData, MessageModel, MessageQueue,
    ProducerData,
};
use ringmq::remoting::{request, response, RemotingCommand};
use ringmq::store::metadata::{self, MetadataPaths, SubscriptionGroupTable};
use serde_json::Value;

use crate::harness::{TestBroker, TestNamesrv};

const SLAVE_REMARK: &str = "Can't modify topic or subscription group from slave broker, \
                            please execute it from master broker.";

// ---------------------------------------------------------------------------------------------
// Helpers

/// A 2-shard broker in a fresh store after `tweak`. The directory comes first so that a
/// `let (dir, broker) = …` drops (stops) the broker before it removes the directory.
fn broker_with(
    tweak: impl FnOnce(&mut ringmq::config::BrokerConfig),
) -> (tempfile::TempDir, TestBroker) {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-admin-")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = TestBroker::start_in(TestNamesrv::start(), dir.path(), 2, tweak);
    (dir, broker)
}

fn command(code: i32, fields: &[(&str, &str)]) -> RemotingCommand {
    let mut cmd = RemotingCommand::request(code);
    for (k, v) in fields {
        cmd.set_ext(*k, *v);
    }
    cmd
}

/// Sends an admin request and returns the response whatever its code.
fn admin(conn: &mut Connection, code: i32, fields: &[(&str, &str)]) -> RemotingCommand {
    conn.invoke(command(code, fields)).unwrap()
}

/// Asserts the response failed with `code` and `remark`.
fn assert_refused(reply: &RemotingCommand, code: i32, remark: &str) {
    assert_eq!(reply.code, code, "{:?}", reply.remark);
    assert_eq!(reply.remark.as_deref(), Some(remark));
}

fn create_topic(conn: &mut Connection, topic: &str, queues: i32) -> RemotingCommand {
    let queues = queues.to_string();
    admin(
        conn,
        request::UPDATE_AND_CREATE_TOPIC,
        &[
            ("topic", topic),
            ("defaultTopic", "TBW102"),
            ("readQueueNums", &queues),
            ("writeQueueNums", &queues),
            ("perm", "6"),
            ("topicFilterType", "SINGLE_TAG"),
            ("topicSysFlag", "0"),
            ("order", "false"),
        ],
    )
}

fn message(topic: &str, queue_id: i32) -> OutgoingMessage {
    let mut properties = Properties::default();
    properties.set(TAGS, "t");
    OutgoingMessage {
        topic: topic.into(),
        queue_id,
        body: b"admin".to_vec(),
        properties,
        flag: 0,
    }
}

fn commit_offset(conn: &mut Connection, group: &str, topic: &str, queue: i32, offset: i64) {
    let (queue, offset) = (queue.to_string(), offset.to_string());
    let fields = [
        ("consumerGroup", group),
        ("topic", topic),
        ("queueId", queue.as_str()),
        ("commitOffset", offset.as_str()),
    ];
    conn.call(command(request::UPDATE_CONSUMER_OFFSET, &fields))
        .unwrap();
}

fn heartbeat(client_id: &str, group: &str, topic: &str, producer: Option<&str>) -> HeartbeatData {
    HeartbeatData {
        client_id: client_id.into(),
        consumer_data_set: vec![ConsumerData {
            consume_from_where: "CONSUME_FROM_FIRST_OFFSET".into(),
            consume_type: ConsumeType::Passively,
            group_name: group.into(),
            message_model: MessageModel::Clustering,
            subscription_data_set: vec![parse_tag_expression(topic, "*", 1)],
            unit_mode: false,
        }],
        producer_data_set: producer
            .map(|g| ProducerData {
                group_name: g.into(),
            })
            .into_iter()
            .collect(),
    }
}

/// A JSON body (fastjson's unquoted integer keys accepted).
fn json(body: &[u8]) -> Value {
    serde_json::from_slice(&fastjson::normalize(body))
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// The index just past the JSON object or string starting at `start`.
fn value_end(text: &[u8], start: usize) -> usize {
    let (mut depth, mut in_string, mut escaped) = (0, false, false);
    for (i, c) in text.iter().enumerate().skip(start) {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => depth += 1,
            (false, _, b'}' | b']') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced JSON: {}", String::from_utf8_lossy(text))
}

/// Parses a body holding `"offsetTable":{<MessageQueue object>:<value>,…}` as fastjson writes
/// it (PROTOCOL.md §6.2): the entries, and the rest of the body with `offsetTable` emptied.
fn mq_table(body: &[u8]) -> (Vec<(MessageQueue, Value)>, Value) {
    let marker = br#""offsetTable":"#;
    let at = body
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("an offsetTable")
        + marker.len();
    let table_end = value_end(body, at);
    let mut entries = Vec::new();
    let mut i = at + 1;
    while body[i] != b'}' {
        let key_end = value_end(body, i);
        let key: MessageQueue = serde_json::from_slice(&body[i..key_end]).unwrap();
        assert_eq!(body[key_end], b':');
        let value_end_at = value_end(body, key_end + 1);
        entries.push((key, json(&body[key_end + 1..value_end_at])));
        i = value_end_at;
        if body[i] == b',' {
            i += 1;
        }
    }
    let rest = [&body[..at], b"{}", &body[table_end..]].concat();
    (entries, json(&rest))
}

fn golden(file: &str) -> RemotingCommand {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    RemotingCommand::decode(std::fs::read(path).unwrap().into()).unwrap()
}

fn keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Topics

/// GET_ALL_TOPIC_CONFIG's body.
fn all_topics(conn: &mut Connection) -> Value {
    let all = conn
        .call(command(request::GET_ALL_TOPIC_CONFIG, &[]))
        .unwrap();
    json(&all.body)
}

/// Checks GET_TOPIC_STATS_INFO of a 4-queue topic holding `per_queue` messages per queue.
fn assert_topic_stats(conn: &mut Connection, topic: &str, per_queue: i64) {
    let stats = command(request::GET_TOPIC_STATS_INFO, &[("topic", topic)]);
    let (entries, rest) = mq_table(&conn.call(stats).unwrap().body);
    assert_eq!(keys(&rest), ["offsetTable"]);
    let queues: Vec<i32> = entries.iter().map(|(mq, _)| mq.queue_id).collect();
    assert_eq!(queues, [0, 1, 2, 3]);
    for (mq, offsets) in &entries {
        assert_eq!(
            (mq.broker_name.as_str(), mq.topic.as_str()),
            ("broker-it", topic)
        );
        let expected = ["lastUpdateTimestamp", "maxOffset", "minOffset"];
        assert_eq!(keys(offsets), expected);
        let (min, max) = (offsets["minOffset"].as_i64(), offsets["maxOffset"].as_i64());
        assert_eq!((min, max), (Some(0), Some(per_queue)));
        assert!(offsets["lastUpdateTimestamp"].as_i64().unwrap() > 1_600_000_000_000);
    }
}

#[test]
fn an_admin_topic_is_created_on_every_shard_counted_and_deleted() {
    let (dir, broker) = broker_with(|c| c.auto_create_topic_enable = false);
    let mut conn = broker.connection();
    let created = create_topic(&mut conn, "AdminTopic", 4);
    let java = golden("java/0006-s2c-17-create_topic_resp.bin");
    assert_eq!((created.code, &created.remark), (java.code, &java.remark));
    let owners: Vec<usize> = (0..4).map(|q| owner_shard("AdminTopic", q, 2)).collect();
    assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");
    // Every replica has the topic once the answer is back (a pull reads only the replica).
    for q in 0..4 {
        let pulled = conn.pull("cg", "AdminTopic", q, 0, 1, "*", 0).unwrap();
        assert_eq!(pulled.code, response::PULL_NOT_FOUND);
    }
    // Without auto-creation, a send succeeds only where the shard's replica has the topic.
    for q in 0..4 {
        for _ in 0..3 {
            conn.send_message("pg", &message("AdminTopic", q)).unwrap();
        }
    }
    let all = all_topics(&mut conn);
    let config = &all["topicConfigTable"]["AdminTopic"];
    let counts = (&config["readQueueNums"], &config["writeQueueNums"]);
    assert_eq!(counts, (&Value::from(4), &Value::from(4)));
    assert_eq!(config["perm"], 6);
    assert!(all["dataVersion"]["counter"].as_i64().unwrap() > 0);
    assert!(all["topicConfigTable"]["TBW102"].is_null());
    assert_topic_stats(&mut conn, "AdminTopic", 3);
    let persisted = std::fs::read_to_string(MetadataPaths::new(dir.path()).topics).unwrap();
    assert!(persisted.contains("\"AdminTopic\""));
    let mut ns = broker.namesrv.client();
    wait_for("the route of the new topic", || ns.route("AdminTopic").ok());

    let delete = [("topic", "AdminTopic")];
    let deleted = admin(&mut conn, request::DELETE_TOPIC_IN_BROKER, &delete);
    assert_eq!(deleted.code, response::SUCCESS);
    assert!(all_topics(&mut conn)["topicConfigTable"]["AdminTopic"].is_null());
    let gone = admin(&mut conn, request::GET_TOPIC_STATS_INFO, &delete);
    let remark = "topic[AdminTopic] not exist";
    assert_refused(&gone, response::TOPIC_NOT_EXIST, remark);
    for q in 0..4 {
        let pulled = conn.pull("cg", "AdminTopic", q, 0, 1, "*", 0);
        assert_eq!(pulled.unwrap_err().code(), Some(response::TOPIC_NOT_EXIST));
        let err = conn.send_message("pg", &message("AdminTopic", q));
        assert_eq!(
            err.unwrap_err().code(),
            Some(response::TOPIC_NOT_EXIST),
            "queue {q}"
        );
    }
}

#[test]
fn topic_admin_errors_carry_javas_codes_and_remarks() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    let illegal =
        "The specified topic contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$";
    assert_refused(
        &create_topic(&mut conn, "bad topic", 4),
        response::SYSTEM_ERROR,
        illegal,
    );
    let blank = "The specified topic is blank.";
    assert_refused(
        &create_topic(&mut conn, "", 4),
        response::SYSTEM_ERROR,
        blank,
    );
    let long = "t".repeat(128);
    let too_long = "The specified topic is longer than topic max length.";
    assert_refused(
        &create_topic(&mut conn, &long, 4),
        response::SYSTEM_ERROR,
        too_long,
    );
    for system in [
        "TBW102",
        "SCHEDULE_TOPIC_XXXX",
        "DefaultCluster",
        "broker-it",
        "rmq_sys_x",
    ] {
        let remark = format!("The topic[{system}] is conflict with system topic.");
        assert_refused(
            &create_topic(&mut conn, system, 4),
            response::SYSTEM_ERROR,
            &remark,
        );
        let delete = admin(
            &mut conn,
            request::DELETE_TOPIC_IN_BROKER,
            &[("topic", system)],
        );
        assert_refused(&delete, response::SYSTEM_ERROR, &remark);
    }
    let no_queues = admin(
        &mut conn,
        request::UPDATE_AND_CREATE_TOPIC,
        &[("topic", "T")],
    );
    assert_eq!(no_queues.code, response::SYSTEM_ERROR);
    assert!(no_queues.remark.unwrap().contains("readQueueNums"));
    let unknown = admin(
        &mut conn,
        request::GET_TOPIC_STATS_INFO,
        &[("topic", "Nope")],
    );
    assert_refused(&unknown, response::TOPIC_NOT_EXIST, "topic[Nope] not exist");
}

#[test]
fn a_slave_refuses_topic_and_group_changes() {
    let (_dir, broker) = broker_with(|c| {
        c.broker_role = ringmq::config::BrokerRole::Slave;
        c.broker_id = 1;
    });
    let mut conn = broker.connection();
    assert_refused(
        &create_topic(&mut conn, "SlaveTopic", 4),
        response::SYSTEM_ERROR,
        SLAVE_REMARK,
    );
    let delete = admin(
        &mut conn,
        request::DELETE_TOPIC_IN_BROKER,
        &[("topic", "T")],
    );
    assert_refused(&delete, response::SYSTEM_ERROR, SLAVE_REMARK);
    let group = command(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, &[])
        .with_body(br#"{"groupName":"g"}"#.to_vec());
    assert_refused(
        &conn.invoke(group).unwrap(),
        response::SYSTEM_ERROR,
        SLAVE_REMARK,
    );
    let delete = admin(
        &mut conn,
        request::DELETE_SUBSCRIPTIONGROUP,
        &[("groupName", "g")],
    );
    assert_refused(&delete, response::SYSTEM_ERROR, SLAVE_REMARK);
    // Reading is fine.
    let all = admin(&mut conn, request::GET_ALL_TOPIC_CONFIG, &[]);
    assert_eq!(all.code, response::SUCCESS);
}

// ---------------------------------------------------------------------------------------------
// Subscription groups

#[test]
fn subscription_groups_are_created_listed_persisted_and_deleted() {
    let (dir, broker) = broker_with(|_| {});
    let mut conn = broker.connection();
    let body = br#"{"brokerId":0,"consumeBroadcastEnable":true,"consumeEnable":true,
        "consumeFromMinEnable":true,"groupName":"admin_group","notifyConsumerIdsChangedEnable":true,
        "retryMaxTimes":3,"retryQueueNums":2,"whichBrokerWhenConsumeSlowly":1}"#;
    let create =
        command(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, &[]).with_body(body.to_vec());
    conn.call(create).unwrap();
    let all = conn
        .call(command(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG, &[]))
        .unwrap();
    let all = json(&all.body);
    let group = &all["subscriptionGroupTable"]["admin_group"];
    assert_eq!(
        (
            group["retryMaxTimes"].as_i64(),
            group["retryQueueNums"].as_i64()
        ),
        (Some(3), Some(2))
    );
    assert!(all["subscriptionGroupTable"]["TOOLS_CONSUMER"].is_object());
    assert!(all["dataVersion"]["counter"].as_i64().unwrap() > 0);
    let path = MetadataPaths::new(dir.path()).subscription_group;
    let on_disk: SubscriptionGroupTable = metadata::load(&path).unwrap();
    assert_eq!(on_disk.get("admin_group").unwrap().retry_max_times, 3);

    for q in 0..4 {
        conn.send_message("pg", &message("GroupTopic", q)).unwrap();
        commit_offset(&mut conn, "admin_group", "GroupTopic", q, 1);
    }
    let offsets = conn
        .call(command(request::GET_ALL_CONSUMER_OFFSET, &[]))
        .unwrap();
    assert_eq!(
        json(&offsets.body)["offsetTable"]["GroupTopic@admin_group"]
            .as_object()
            .unwrap()
            .len(),
        4
    );
    let delete = command(
        request::DELETE_SUBSCRIPTIONGROUP,
        &[("groupName", "admin_group"), ("removeOffset", "true")],
    );
    conn.call(delete).unwrap();
    let all = conn
        .call(command(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG, &[]))
        .unwrap();
    assert!(json(&all.body)["subscriptionGroupTable"]["admin_group"].is_null());
    let on_disk: SubscriptionGroupTable = metadata::load(&path).unwrap();
    assert!(on_disk.get("admin_group").is_none());
    let offsets = conn
        .call(command(request::GET_ALL_CONSUMER_OFFSET, &[]))
        .unwrap();
    assert!(json(&offsets.body)["offsetTable"]["GroupTopic@admin_group"].is_null());

    let bad = command(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, &[]).with_body(&b"{"[..]);
    assert_eq!(conn.invoke(bad).unwrap().code, response::SYSTEM_ERROR);
}

// ---------------------------------------------------------------------------------------------
// Connections

#[test]
fn consumer_connections_come_from_the_registry() {
    let broker = TestBroker::start(2);
    let mut client = broker.connection();
    let beat = heartbeat("client-1", "conn_group", "ConnTopic", Some("conn_pg"));
    client.heartbeat(&beat).unwrap();
    let mut conn = broker.connection();
    let reply = conn
        .call(command(
            request::GET_CONSUMER_CONNECTION_LIST,
            &[("consumerGroup", "conn_group")],
        ))
        .unwrap();
    let body = json(&reply.body);
    assert_eq!(
        keys(&body),
        [
            "connectionSet",
            "consumeFromWhere",
            "consumeType",
            "messageModel",
            "subscriptionTable"
        ]
    );
    let connection = &body["connectionSet"][0];
    assert_eq!(connection["clientId"], "client-1");
    assert_eq!(
        (&connection["language"], &connection["version"]),
        (&Value::from("JAVA"), &Value::from(409))
    );
    assert!(connection["clientAddr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(body["consumeType"], "CONSUME_PASSIVELY");
    assert_eq!(body["messageModel"], "CLUSTERING");
    assert_eq!(body["consumeFromWhere"], "CONSUME_FROM_FIRST_OFFSET");
    assert_eq!(body["subscriptionTable"]["ConnTopic"]["subString"], "*");

    // The golden Java answer for a group nobody runs.
    let java = golden("java/0060-s2c-203-consumer_conn_list_resp.bin");
    let offline = admin(
        &mut conn,
        request::GET_CONSUMER_CONNECTION_LIST,
        &[("consumerGroup", "golden_retry_group")],
    );
    assert_eq!((offline.code, &offline.remark), (java.code, &java.remark));
    assert_eq!(offline.code, response::CONSUMER_NOT_ONLINE);
}

#[test]
fn producer_connections_come_from_the_registry() {
    let broker = TestBroker::start(2);
    let mut client = broker.connection();
    let beat = heartbeat("client-1", "conn_group", "ConnTopic", Some("conn_pg"));
    client.heartbeat(&beat).unwrap();
    let mut conn = broker.connection();
    let producers = conn
        .call(command(
            request::GET_PRODUCER_CONNECTION_LIST,
            &[("producerGroup", "conn_pg")],
        ))
        .unwrap();
    let producers = json(&producers.body);
    assert_eq!(keys(&producers), ["connectionSet"]);
    assert_eq!(producers["connectionSet"][0]["clientId"], "client-1");
    let unknown = admin(
        &mut conn,
        request::GET_PRODUCER_CONNECTION_LIST,
        &[("producerGroup", "x")],
    );
    assert_refused(
        &unknown,
        response::SYSTEM_ERROR,
        "the producer group[x] not exist",
    );
}

// ---------------------------------------------------------------------------------------------
// Consume stats and offsets

/// The body of a successful admin request.
fn body_of(conn: &mut Connection, code: i32, fields: &[(&str, &str)]) -> Vec<u8> {
    conn.call(command(code, fields)).unwrap().body.to_vec()
}

/// Queue q of StatsTopic holds q + 1 messages; stats_group committed offset q there.
fn fill_stats_topic(conn: &mut Connection) {
    for q in 0..4 {
        for _ in 0..=q {
            conn.send_message("pg", &message("StatsTopic", q)).unwrap();
        }
        commit_offset(conn, "stats_group", "StatsTopic", q, i64::from(q));
    }
}

#[test]
fn consume_stats_are_gathered_from_every_shard() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    fill_stats_topic(&mut conn);
    let group = [("consumerGroup", "stats_group")];
    let (entries, rest) = mq_table(&body_of(&mut conn, request::GET_CONSUME_STATS, &group));
    let java = golden("java/0054-s2c-208-consume_stats_resp.bin");
    let (java_entries, java_rest) = mq_table(&java.body);
    assert_eq!(keys(&rest), keys(&java_rest));
    assert_eq!(rest["consumeTps"].as_f64(), Some(0.0));
    assert_eq!(entries.len(), 4);
    for (q, (mq, offsets)) in entries.iter().enumerate() {
        assert_eq!((mq.topic.as_str(), mq.queue_id), ("StatsTopic", q as i32));
        assert_eq!(keys(offsets), keys(&java_entries[0].1));
        assert_eq!(offsets["brokerOffset"].as_i64(), Some(q as i64 + 1));
        assert_eq!(offsets["consumerOffset"].as_i64(), Some(q as i64));
        let last = offsets["lastTimestamp"].as_i64().unwrap();
        assert_eq!(last > 0, q > 0, "queue {q}: {last}");
    }
    let one_topic = [("consumerGroup", "stats_group"), ("topic", "StatsTopic")];
    let body = body_of(&mut conn, request::GET_CONSUME_STATS, &one_topic);
    assert_eq!(mq_table(&body).0.len(), 4);
    let nobody = [("consumerGroup", "nobody")];
    let body = body_of(&mut conn, request::GET_CONSUME_STATS, &nobody);
    assert_eq!(body, br#"{"consumeTps":0.0,"offsetTable":{}}"#);
}

#[test]
fn offsets_and_consuming_groups_are_gathered_from_every_shard() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    fill_stats_topic(&mut conn);
    let all = json(&body_of(&mut conn, request::GET_ALL_CONSUMER_OFFSET, &[]));
    let queues = &all["offsetTable"]["StatsTopic@stats_group"];
    let owners: Vec<usize> = (0..4).map(|q| owner_shard("StatsTopic", q, 2)).collect();
    assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");
    assert_eq!(queues, &serde_json::json!({"0": 0, "1": 1, "2": 2, "3": 3}));

    let who_client = heartbeat("c-who", "who_group", "StatsTopic", None);
    // Kept open: a closed connection takes its clients out of the registry.
    let mut who_conn = broker.connection();
    who_conn.heartbeat(&who_client).unwrap();
    let topic = [("topic", "StatsTopic")];
    let who = json(&body_of(
        &mut conn,
        request::QUERY_TOPIC_CONSUME_BY_WHO,
        &topic,
    ));
    let java = json(&golden("java/0058-s2c-300-topic_consume_by_who_resp.bin").body);
    assert_eq!(keys(&who), keys(&java));
    assert_eq!(
        who["groupList"],
        serde_json::json!(["stats_group", "who_group"])
    );
}

#[test]
fn delay_offsets_of_every_shard_are_listed() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    let empty = conn
        .call(command(request::GET_ALL_DELAY_OFFSET, &[]))
        .unwrap();
    assert_eq!(keys(&json(&empty.body)), ["offsetTable"]);
    let mut delayed = message("DelayAdmin", 0);
    delayed.properties.set("DELAY", "1");
    conn.send_message("pg", &delayed).unwrap();
    wait_for("the level 1 delay offset", || {
        let reply = conn
            .call(command(request::GET_ALL_DELAY_OFFSET, &[]))
            .ok()?;
        let offset = json(&reply.body)["offsetTable"]["1"].as_i64()?;
        (offset >= 1).then_some(())
    });
}

// ---------------------------------------------------------------------------------------------
// Runtime info, config, client config

/// A value of the runtime KVTable (each one a string).
fn entry(table: &Value, key: &str) -> String {
    let value = table[key].as_str();
    value
        .unwrap_or_else(|| panic!("{key} missing or not a string: {table}"))
        .to_string()
}

/// Checks the formats of the runtime figures that do not depend on the traffic.
fn assert_runtime_formats(table: &Value) {
    let get = |k: &str| entry(table, k);
    assert!(table.as_object().unwrap().values().all(Value::is_string));
    let version = (get("brokerVersion"), get("brokerVersionDesc"));
    assert_eq!(version, ("409".into(), "V4_9_8".into()));
    let counters = ["msgPutTotalTodayMorning", "msgGetTotalTodayMorning"];
    let yesterday = ["msgPutTotalYesterdayMorning", "msgGetTotalYesterdayMorning"];
    for k in counters.iter().chain(&yesterday) {
        get(k).parse::<u64>().unwrap();
    }
    let tps = [
        "putTps",
        "getTransferedTps",
        "getFoundTps",
        "getMissTps",
        "getTotalTps",
    ];
    for k in tps {
        let rates: Vec<f64> = get(k).split(' ').map(|r| r.parse().unwrap()).collect();
        assert_eq!(rates.len(), 3, "{k}");
    }
    let runtime = get("runtime");
    assert!(runtime.starts_with("[ 0 days, 0 hours, "), "{runtime}");
    let capacity = get("commitLogDirCapacity");
    let has_sizes = capacity.starts_with("Total : ") && capacity.contains(", Free : ");
    assert!(has_sizes, "{capacity}");
    let ratio: f64 = get("commitLogDiskRatio").parse().unwrap();
    assert!((0.0..=1.0).contains(&ratio));
    // Every key we write is one the Java broker writes too (golden java/0010), except
    // ringmq's replication figures (`ha…`, README "Replication").
    let java = golden("java/0010-s2c-28-broker_runtime_info_resp.bin");
    let java = json(&java.body)["table"].clone();
    let ours = keys(table);
    assert_eq!(get("haConnectionCount"), "0");
    for key in ours
        .iter()
        .filter(|k| !k.starts_with("commitLogDiskRatio_") && !k.starts_with("ha"))
    {
        assert!(java.get(key).is_some(), "{key} is not a Java key");
    }
}

#[test]
fn runtime_info_sums_the_counters_of_every_shard() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    for q in 0..4 {
        conn.send_message("pg", &message("RtTopic", q)).unwrap();
        conn.send_message("pg", &message("RtTopic", q)).unwrap();
    }
    let mut pulled = 0;
    for q in 0..4 {
        let found = conn.pull("rt_group", "RtTopic", q, 0, 32, "*", 0).unwrap();
        pulled += found.messages.len();
    }
    assert_eq!(pulled, 8);
    conn.pull("rt_group", "RtTopic", 0, 2, 32, "*", 0).unwrap();
    let table = json(&body_of(&mut conn, request::GET_BROKER_RUNTIME_INFO, &[]))["table"].clone();
    assert_runtime_formats(&table);
    let get = |k: &str| entry(&table, k);
    let totals = (get("msgPutTotalTodayNow"), get("msgGetTotalTodayNow"));
    assert_eq!(totals, ("8".into(), "8".into()));
    assert!(get("putTps")
        .split(' ')
        .all(|r| r.parse::<f64>().unwrap() > 0.0));
    let now = ringmq::store::Clock::now_ms(&ringmq::store::SystemClock);
    let earliest: i64 = get("earliestMessageTimeStamp").parse().unwrap();
    assert!(earliest > 1_600_000_000_000 && earliest <= now);
    assert_eq!(get("commitLogMinOffset"), "0");
    assert!(get("commitLogMaxOffset").parse::<u64>().unwrap() > 0);
    assert!(get("bootTimestamp").parse::<i64>().unwrap() <= now);
}

#[test]
fn broker_config_is_its_properties_with_a_data_version() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    let reply = conn.call(command(request::GET_BROKER_CONFIG, &[])).unwrap();
    let properties = String::from_utf8(reply.body.to_vec()).unwrap();
    assert!(
        properties.lines().any(|l| l == "brokerName=broker-it"),
        "{properties}"
    );
    assert!(properties
        .lines()
        .any(|l| l == "brokerClusterName=DefaultCluster"));
    let version = json(reply.ext("version").unwrap().as_bytes());
    assert_eq!(keys(&version), ["counter", "timestamp"]);
}

/// A CHECK_CLIENT_CONFIG request for a subscription of `expression_type` / `expression`.
fn check_client_of(expression_type: &str, expression: &str) -> RemotingCommand {
    let body = format!(
        r#"{{"clientId":"c","group":"g","subscriptionData":{{"classFilterMode":false,
        "codeSet":[],"expressionType":"{expression_type}","subString":"{expression}",
        "subVersion":1,"tagsSet":[],"topic":"T"}}}}"#
    );
    command(request::CHECK_CLIENT_CONFIG, &[]).with_body(body.into_bytes())
}

fn check_client(expression_type: &str) -> RemotingCommand {
    check_client_of(expression_type, "a > 1")
}

#[test]
fn client_config_checks_pass_tags_and_compile_sql92() {
    let broker = TestBroker::start(2);
    let mut conn = broker.connection();
    assert_eq!(
        conn.invoke(check_client("TAG")).unwrap().code,
        response::SUCCESS
    );
    let sql = conn.invoke(check_client("SQL92")).unwrap();
    let remark = "The broker does not support consumer to filter message by SQL92";
    assert_refused(&sql, response::SYSTEM_ERROR, remark);
    // With enablePropertyFilter the expression is compiled: refused only if it does not.
    let (_dir, filtering) = broker_with(|c| c.enable_property_filter = true);
    let mut conn = filtering.connection();
    let sql = conn.invoke(check_client("SQL92")).unwrap();
    assert_eq!(sql.code, response::SUCCESS, "{:?}", sql.remark);
    let bad = conn.invoke(check_client_of("SQL92", "a > 1 AND")).unwrap();
    let remark = "the SQL92 expression \"a > 1 AND\" does not parse: expected a value, found \
                  the end of the expression";
    assert_refused(&bad, response::SUBSCRIPTION_PARSE_FAILED, remark);
}
