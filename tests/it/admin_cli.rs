//! `ringmq admin` as an operator runs it: the real binary against an in-process cluster.

use std::process::Command;

use crate::harness::TestBroker;

fn admin(namesrv: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .arg("admin")
        .args(args)
        .env("NAMESRV_ADDR", namesrv)
        .output()
        .expect("ringmq runs");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[test]
fn send_then_consume_a_message_and_list_the_cluster() {
    let broker = TestBroker::start(2);
    let ns = broker.namesrv.addr.clone();
    let (ok, out, err) = admin(
        &ns,
        &[
            "sendMessage",
            "-t",
            "AdminTopic",
            "-p",
            "hello",
            "-c",
            "TagA",
            "-k",
            "k1",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("SEND_OK"), "{out}");
    let (ok, out, err) = admin(&ns, &["consumeMessage", "-t", "AdminTopic"]);
    assert!(ok, "{err}");
    assert!(out.contains("tags=TagA keys=k1 body=hello"), "{out}");
    let (ok, out, _) = admin(&ns, &["clusterList"]);
    assert!(
        ok && out.contains("DefaultCluster") && out.contains(&broker.addr),
        "{out}"
    );
    let (ok, out, _) = admin(&ns, &["topicList"]);
    assert!(ok && out.lines().any(|l| l == "AdminTopic"), "{out}");
}

#[test]
fn errors_name_what_failed_and_exit_non_zero() {
    let broker = TestBroker::start(1);
    let (ok, _, err) = admin(&broker.namesrv.addr, &["topicRoute", "-t", "NoSuchTopic"]);
    assert!(!ok);
    assert!(
        err.contains("TOPIC_NOT_EXIST (17)") && err.contains(&broker.namesrv.addr),
        "{err}"
    );
    let (ok, _, err) = admin("127.0.0.1:1", &["topicList"]);
    assert!(!ok);
    assert!(err.contains("cannot reach 127.0.0.1:1"), "{err}");
}
