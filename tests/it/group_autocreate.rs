//! A pull names its consumer group, and the broker looks the group up as Java's
//! PullMessageProcessor does: an unknown group is created with the defaults when
//! `autoCreateSubscriptionGroup` is on (the default) and refused with
//! SUBSCRIPTION_GROUP_NOT_EXIST (26) when it is off; a group with `consumeEnable=false` is
//! refused with NO_PERMISSION. Checked on both shards of a 2-shard broker (the control shard
//! holds the groups; the other one asks it and remembers).

use ringmq::broker::placement::owner_shard;
use ringmq::client::broker::pull_command;
use ringmq::client::Connection;
use ringmq::remoting::{request, response, RemotingCommand};

use crate::harness::{TestBroker, TestNamesrv};

const TOPIC: &str = "GroupPullTopic";

/// A queue of [`TOPIC`] on each shard.
fn queue_per_shard() -> [i32; 2] {
    let on = |shard| (0..4).find(|q| owner_shard(TOPIC, *q, 2) == shard).unwrap();
    [on(0), on(1)]
}

fn pull(conn: &mut Connection, group: &str, queue: i32) -> RemotingCommand {
    let cmd = pull_command(group, TOPIC, queue, 0, 32, "*", 0);
    conn.invoke(cmd).expect("pull answered")
}

fn groups(conn: &mut Connection) -> serde_json::Value {
    let all = RemotingCommand::request(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG);
    let reply = conn.call(all).expect("groups");
    serde_json::from_slice::<serde_json::Value>(&reply.body).expect("json")
        ["subscriptionGroupTable"]
        .clone()
}

fn update_group(conn: &mut Connection, group: &str, consume_enable: bool) {
    let body = format!(r#"{{"groupName":"{group}","consumeEnable":{consume_enable}}}"#);
    let cmd = RemotingCommand::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
        .with_body(body.into_bytes());
    conn.call(cmd).expect("group updated");
}

fn broker(auto_create: bool) -> (tempfile::TempDir, TestBroker) {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-it-")
        .tempdir_in("/tmp")
        .unwrap();
    let broker = TestBroker::start_in(TestNamesrv::start(), dir.path(), 2, |cfg| {
        cfg.auto_create_subscription_group = auto_create;
    });
    (dir, broker)
}

#[test]
fn a_pull_auto_creates_its_group_on_every_shard_and_it_survives_a_restart() {
    let (dir, broker) = broker(true);
    let mut conn = broker.connection();
    crate::harness::create_topic(&mut conn, TOPIC, 4);
    for (shard, queue) in queue_per_shard().into_iter().enumerate() {
        let group = format!("pull-only-group-{shard}");
        assert!(groups(&mut conn).get(&group).is_none());
        let answer = pull(&mut conn, &group, queue);
        assert_eq!(answer.code, response::PULL_NOT_FOUND, "{:?}", answer.remark);
        let created = &groups(&mut conn)[&group];
        assert_eq!(created["consumeEnable"], true, "{created}");
        assert_eq!(created["retryQueueNums"], 1, "{created}");
    }
    // Written to subscriptionGroup.json in the background: it is there after a restart.
    let store = broker.store.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let file = store.join("config/subscriptionGroup.json");
    while !std::fs::read_to_string(&file).is_ok_and(|t| t.contains("pull-only-group-1")) {
        assert!(std::time::Instant::now() < deadline, "never persisted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(conn);
    let (namesrv, _) = broker.stop();
    let broker = TestBroker::start_in(namesrv, &store, 2, |_| {});
    let mut conn = broker.connection();
    let all = groups(&mut conn);
    assert!(all["pull-only-group-0"].is_object() && all["pull-only-group-1"].is_object());
    drop(conn);
    drop(broker);
    drop(dir);
}

#[test]
fn without_auto_create_an_unknown_group_is_refused_and_consume_enable_is_honoured() {
    let (_dir, broker) = broker(false);
    let mut conn = broker.connection();
    crate::harness::create_topic(&mut conn, TOPIC, 4);
    let queues = queue_per_shard();
    let group = "never-created-group";
    for queue in queues {
        let answer = pull(&mut conn, group, queue);
        assert_eq!(answer.code, response::SUBSCRIPTION_GROUP_NOT_EXIST);
        let remark = answer.remark.unwrap_or_default();
        assert!(
            remark.starts_with(&format!("subscription group [{group}] does not exist")),
            "{remark}"
        );
    }
    assert!(groups(&mut conn).get(group).is_none(), "not created");
    // RocketMQ's system groups are created whatever the key says.
    let sys = "CID_RMQ_SYS_pulling";
    assert_eq!(
        pull(&mut conn, sys, queues[1]).code,
        response::PULL_NOT_FOUND
    );
    assert!(groups(&mut conn)[sys].is_object());

    // Created by an admin: pulls go through on both shards.
    update_group(&mut conn, group, true);
    for queue in queues {
        assert_eq!(pull(&mut conn, group, queue).code, response::PULL_NOT_FOUND);
    }
    // consumeEnable=false: NO_PERMISSION with Java's remark, on both shards (the shard that
    // remembered the group forgets it when the group changes).
    update_group(&mut conn, group, false);
    for queue in queues {
        let answer = pull(&mut conn, group, queue);
        assert_eq!(answer.code, response::NO_PERMISSION, "queue {queue}");
        assert_eq!(
            answer.remark.as_deref(),
            Some(format!("subscription group no permission, {group}").as_str())
        );
    }
    update_group(&mut conn, group, true);
    assert_eq!(
        pull(&mut conn, group, queues[1]).code,
        response::PULL_NOT_FOUND
    );
    // Deleted: unknown again.
    let delete =
        RemotingCommand::request(request::DELETE_SUBSCRIPTIONGROUP).with_ext("groupName", group);
    conn.call(delete).expect("deleted");
    for queue in queues {
        let code = pull(&mut conn, group, queue).code;
        assert_eq!(
            code,
            response::SUBSCRIPTION_GROUP_NOT_EXIST,
            "queue {queue}"
        );
    }
}
