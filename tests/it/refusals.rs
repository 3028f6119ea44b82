//! Refused requests are visible to the operator (crate::refusal): a `ringmq broker` process logs
//! one WARN line per refusal with the peer, the client id, the request code and the remark; a
//! burst of 1,000 refusals from one peer writes at most a few lines; and the connection answers
//! (the dashboard's member table) count every refusal of the client.

use std::path::Path;
use std::time::{Duration, Instant};

use ringmq::client::Connection;
use ringmq::protocol::heartbeat::{HeartbeatData, ProducerData};
use ringmq::remoting::{request, response, RemotingCommand};
use serde_json::json;

use crate::harness::TestNamesrv;
use crate::process::{free_port_triple, log_tail, BrokerProcess, Rng};

const CLIENT_ID: &str = "10.0.0.9@refusal-client";
const BURST: usize = 1_000;

fn write_config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("broker.properties");
    let text = format!(
        "brokerClusterName=DefaultCluster\nbrokerName=broker-refusals\nbrokerId=0\n\
         brokerIP1=127.0.0.1\nlistenAddress=127.0.0.1\nlistenPort={port}\n\
         storePathRootDir={}\nmappedFileSizeCommitLog=67108864\nshardCount=2\n",
        dir.join("store").display()
    );
    std::fs::write(&path, text).expect("write broker.properties");
    path
}

/// The broker log's "request refused" lines that mention `needle`, once at least `min` of them
/// are there (the line is written before the answer is sent, so this rarely waits).
fn refusal_lines(log: &Path, needle: &str, min: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("request refused") && l.contains(needle))
            .map(str::to_string)
            .collect();
        if lines.len() >= min || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn refusals_are_logged_once_per_peer_and_code_and_counted_per_client() {
    let namesrv = TestNamesrv::start();
    let dir = tempfile::Builder::new()
        .prefix("ringmq-refusals-")
        .tempdir_in("/tmp")
        .unwrap();
    let port = free_port_triple(&mut Rng::seeded());
    let config = write_config(dir.path(), port);
    let log = dir.path().join("broker.log");
    let mut broker = BrokerProcess::start(&config, &namesrv.addr, log.clone());
    let addr = format!("127.0.0.1:{port}");
    let mut conn = Connection::connect(&addr, Duration::from_secs(5)).unwrap();
    conn.heartbeat(&HeartbeatData {
        client_id: CLIENT_ID.into(),
        consumer_data_set: vec![],
        producer_data_set: vec![ProducerData {
            group_name: "refusal_pg".into(),
        }],
    })
    .unwrap();

    // One refused heartbeat: its code set is not numbers.
    let bad = json!({
        "clientID": CLIENT_ID,
        "consumerDataSet": [{"groupName": "refusal_cg", "subscriptionDataSet": [
            {"topic": "T", "subString": "TagA", "tagsSet": ["TagA"], "codeSet": ["TagA"]}
        ]}],
    });
    let answer = conn
        .invoke(
            RemotingCommand::request(request::HEART_BEAT)
                .with_body(serde_json::to_vec(&bad).unwrap()),
        )
        .unwrap();
    assert_eq!(answer.code, response::SYSTEM_ERROR);
    let remark = answer.remark.unwrap_or_default();
    assert!(
        remark.contains(
            r#"consumerDataSet[0].subscriptionDataSet[0].codeSet[0]: "TagA" is not an integer"#
        ),
        "{remark}"
    );
    let lines = refusal_lines(&log, "request_code=34", 1);
    assert_eq!(lines.len(), 1, "{}", log_tail(&log));
    let line = &lines[0];
    for part in [
        "WARN",
        "peer=127.0.0.1:",
        CLIENT_ID,
        "codeSet[0]",
        "response_code=1",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }

    // A burst from the same peer: a group nobody consumes (the client id comes from the
    // connection's heartbeat).
    for _ in 0..BURST {
        let answer = conn
            .invoke(
                RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP)
                    .with_ext("consumerGroup", "nobody_refusal_cg"),
            )
            .unwrap();
        assert_eq!(answer.code, response::SYSTEM_ERROR);
    }
    let lines = refusal_lines(&log, "request_code=38", 1);
    assert!(
        (1..=3).contains(&lines.len()),
        "{} lines for {BURST} refusals:\n{}",
        lines.len(),
        lines.join("\n")
    );
    assert!(lines[0].contains(CLIENT_ID), "{}", lines[0]);
    assert!(
        lines[0].contains("no consumer for this group"),
        "{}",
        lines[0]
    );

    // The producer's connection answer counts them all (dashboard: "Refused requests").
    let producers = conn
        .call(
            RemotingCommand::request(request::GET_PRODUCER_CONNECTION_LIST)
                .with_ext("producerGroup", "refusal_pg"),
        )
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&producers.body).unwrap();
    let member = &body["connectionSet"][0];
    assert_eq!(member["clientId"], CLIENT_ID, "{body}");
    assert_eq!(member["refusedCount"], json!(BURST + 1), "{body}");
    assert!(broker.sigterm().success());
}
