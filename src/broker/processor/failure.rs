//! What a client is answered when a layer under the processors fails: one table per layer's
//! error type, to RocketMQ's response code and a remark that says what went wrong. A failure
//! is never silence: every variant maps to an answer, and the table test below walks them all
//! (a new variant does not compile until it is given its code there).

use super::admin_shards::DeleteTopicError;
use super::errors::{PushReplyError, TransactionError};
use super::Failure;
use crate::broker::live_config::{RewriteError, UpdateError};
use crate::broker::mesh_proto::ShardFailure;
use crate::broker::services::puts::PutError;
use crate::broker::topic_config::TopicNameError;
use crate::remoting::response as resp;
use crate::runtime::mesh::MeshError;
use crate::store::StoreError;

/// A put (send, reply, relay of a stored message) the store refused.
///
/// The codes are Java's for the same conditions: a record the broker cannot take is the
/// message's fault (MESSAGE_ILLEGAL 13, not retried by clients); a store too busy to take it
/// now is SYSTEM_BUSY 2 with Java's `[PC_SYNCHRONIZED]` marker (clients back off and retry); a
/// store that cannot write (failed disk, full disk, shutting down, a hop to the queue's shard
/// that failed) is SERVICE_NOT_AVAILABLE 14 (clients retry on another broker); anything else
/// is SYSTEM_ERROR 1.
pub(crate) fn put(e: StoreError) -> Failure {
    match e {
        StoreError::RecordTooLarge { .. }
        | StoreError::BadRecord { .. }
        | StoreError::MixedBatch => (resp::MESSAGE_ILLEGAL, e.to_string()),
        StoreError::Busy { .. } => (resp::SYSTEM_BUSY, format!("[PC_SYNCHRONIZED] {e}")),
        StoreError::Unwritable { .. }
        | StoreError::ShutDown
        | StoreError::FlushFailed { .. }
        | StoreError::DiskFull { .. }
        | StoreError::NoSpace { .. } => (resp::SERVICE_NOT_AVAILABLE, e.to_string()),
        StoreError::Io { .. }
        | StoreError::ShardCountMismatch { .. }
        | StoreError::OldOffsetLayout { .. }
        | StoreError::Corrupt { .. }
        | StoreError::OffsetOutOfRange { .. }
        | StoreError::Config { .. } => (resp::SYSTEM_ERROR, e.to_string()),
    }
}

/// A record the broker builds itself (a retry, a transaction's commit) that was not stored:
/// the store's refusal as for a client's put; a record that cannot be built is the message's
/// fault (MESSAGE_ILLEGAL, as Java answers a message it cannot encode).
pub(crate) fn broker_put(e: PutError) -> Failure {
    match e {
        PutError::Record(_) => (resp::MESSAGE_ILLEGAL, e.to_string()),
        PutError::Store(e) => put(e),
    }
}

/// CONSUMER_SEND_MSG_BACK's retry copy that was not stored: SYSTEM_ERROR whatever the cause,
/// as Java's `consumerSendMsgBack` answers any failed put.
pub(crate) fn send_back(e: PutError) -> Failure {
    (resp::SYSTEM_ERROR, e.to_string())
}

/// END_TRANSACTION's commit or op record that failed.
pub(crate) fn transaction(e: TransactionError) -> Failure {
    match e {
        TransactionError::Put(e) => broker_put(e),
        TransactionError::NoRealTopic
        | TransactionError::Store(_)
        | TransactionError::Record(_) => (resp::SYSTEM_ERROR, e.to_string()),
    }
}

/// UPDATE_BROKER_CONFIG's change refused: SYSTEM_ERROR naming the key and the rule, as Java
/// answers a config it cannot take.
pub(crate) fn config_update(e: UpdateError) -> Failure {
    match e {
        UpdateError::NoKey
        | UpdateError::NotAtRuntime { .. }
        | UpdateError::UnknownKey { .. }
        | UpdateError::Invalid(_)
        | UpdateError::LargerThanStore { .. } => (resp::SYSTEM_ERROR, e.to_string()),
    }
}

/// UPDATE_BROKER_CONFIG's change that could not be written to the config file (nothing
/// changed).
pub(crate) fn config_file(path: &std::path::Path, e: RewriteError) -> Failure {
    let remark = format!(
        "the change is not written to {}: {e}; nothing changed",
        path.display()
    );
    match e {
        RewriteError::Read(_) | RewriteError::Parse(_) | RewriteError::Write(_) => {
            (resp::SYSTEM_ERROR, remark)
        }
    }
}

/// A send whose topic name breaks a rule: SYSTEM_ERROR naming the rule, as Java's
/// `TopicValidator` answers.
pub(crate) fn topic_name(e: TopicNameError) -> Failure {
    match e {
        TopicNameError::Blank
        | TopicNameError::TooLong { .. }
        | TopicNameError::IllegalCharacter { .. }
        | TopicNameError::Forbidden(_) => (resp::SYSTEM_ERROR, e.to_string()),
    }
}

/// What another shard could not do for an admin request: SYSTEM_ERROR with its reason.
pub(crate) fn shard(e: ShardFailure) -> Failure {
    match e {
        ShardFailure::NoOffsetByTime { .. } | ShardFailure::TopicDataKept { .. } => {
            (resp::SYSTEM_ERROR, e.to_string())
        }
    }
}

/// DELETE_TOPIC_IN_BROKER whose data is not gone on every shard.
pub(crate) fn delete_topic(e: DeleteTopicError) -> Failure {
    let remark = format!("the topic's data is not all deleted: {e}");
    match e {
        DeleteTopicError::Unasked(_) | DeleteTopicError::OnShard(_) => (resp::SYSTEM_ERROR, remark),
    }
}

/// SEND_REPLY_MESSAGE whose reply could not be pushed to its requester: SYSTEM_ERROR with
/// Java's remark (the reply is stored all the same).
pub(crate) fn push_reply(e: PushReplyError) -> Failure {
    match e {
        PushReplyError::NoRequester
        | PushReplyError::NoChannel(_)
        | PushReplyError::Failed { .. } => (resp::SYSTEM_ERROR, e.to_string()),
    }
}

/// A request that could not be handed to (or answered by) another shard of this broker.
pub(crate) fn hop(e: MeshError, shard: usize) -> Failure {
    match e {
        MeshError::NoSuchShard(_) | MeshError::ShardGone(_) | MeshError::NoAnswer(_) => {
            unhanded(shard, e)
        }
    }
}

/// SYSTEM_ERROR for a request that could not be handed to `shard`, saying why.
pub(crate) fn unhanded(shard: usize, why: impl std::fmt::Display) -> Failure {
    (
        resp::SYSTEM_ERROR,
        format!("the request could not be handed to shard {shard}: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::record::RecordError;
    use std::path::PathBuf;

    /// One of every store error, each with the code a put failing with it is answered.
    fn every_store_error() -> Vec<(StoreError, i32)> {
        let io = || std::io::Error::from_raw_os_error(libc::EIO);
        vec![
            (
                StoreError::Io {
                    op: "write",
                    path: PathBuf::from("/s/commitlog/0"),
                    source: io(),
                },
                resp::SYSTEM_ERROR,
            ),
            (
                StoreError::Unwritable {
                    reason: "fdatasync failed".into(),
                },
                resp::SERVICE_NOT_AVAILABLE,
            ),
            (
                StoreError::NoSpace {
                    reason: "ENOSPC".into(),
                },
                resp::SERVICE_NOT_AVAILABLE,
            ),
            (
                StoreError::DiskFull {
                    path: PathBuf::from("/s"),
                    used_percent: 96,
                    full_percent: 95,
                    resume_percent: 85,
                },
                resp::SERVICE_NOT_AVAILABLE,
            ),
            (
                StoreError::FlushFailed { offset: 7 },
                resp::SERVICE_NOT_AVAILABLE,
            ),
            (StoreError::ShutDown, resp::SERVICE_NOT_AVAILABLE),
            (
                StoreError::ShardCountMismatch {
                    root: PathBuf::from("/s"),
                    found: 2,
                    configured: 4,
                },
                resp::SYSTEM_ERROR,
            ),
            (
                StoreError::OldOffsetLayout {
                    root: PathBuf::from("/s"),
                    shards: vec![1],
                },
                resp::SYSTEM_ERROR,
            ),
            (
                StoreError::RecordTooLarge {
                    size: 5 << 20,
                    max: 4 << 20,
                },
                resp::MESSAGE_ILLEGAL,
            ),
            (
                StoreError::BadRecord {
                    index: 3,
                    source: RecordError::Truncated { need: 20, have: 4 },
                },
                resp::MESSAGE_ILLEGAL,
            ),
            (StoreError::MixedBatch, resp::MESSAGE_ILLEGAL),
            (
                StoreError::Busy {
                    unflushed_bytes: 1 << 30,
                },
                resp::SYSTEM_BUSY,
            ),
            (
                StoreError::Corrupt {
                    offset: 4096,
                    reason: "bad CRC".into(),
                },
                resp::SYSTEM_ERROR,
            ),
            (
                StoreError::OffsetOutOfRange { offset: -1 },
                resp::SYSTEM_ERROR,
            ),
            (
                StoreError::Config {
                    reason: "segment size".into(),
                },
                resp::SYSTEM_ERROR,
            ),
        ]
    }

    /// Exhaustive on purpose (no `_` arm): a new variant fails to compile here until it is
    /// added to the list above.
    fn variant(e: &StoreError) -> &'static str {
        match e {
            StoreError::Io { .. } => "Io",
            StoreError::Unwritable { .. } => "Unwritable",
            StoreError::NoSpace { .. } => "NoSpace",
            StoreError::DiskFull { .. } => "DiskFull",
            StoreError::FlushFailed { .. } => "FlushFailed",
            StoreError::ShutDown => "ShutDown",
            StoreError::ShardCountMismatch { .. } => "ShardCountMismatch",
            StoreError::OldOffsetLayout { .. } => "OldOffsetLayout",
            StoreError::RecordTooLarge { .. } => "RecordTooLarge",
            StoreError::BadRecord { .. } => "BadRecord",
            StoreError::MixedBatch => "MixedBatch",
            StoreError::Busy { .. } => "Busy",
            StoreError::Corrupt { .. } => "Corrupt",
            StoreError::OffsetOutOfRange { .. } => "OffsetOutOfRange",
            StoreError::Config { .. } => "Config",
        }
    }

    #[test]
    fn every_store_error_maps_to_its_code_and_a_remark_that_says_what_went_wrong() {
        let all = every_store_error();
        let mut seen: Vec<&str> = all.iter().map(|(e, _)| variant(e)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 15, "one example of every variant: {seen:?}");
        for (e, code) in all {
            let text = e.to_string();
            let name = variant(&e);
            let (got, remark) = put(e);
            assert_eq!(got, code, "{name} answers {code}");
            assert!(
                remark.contains(&text),
                "{name}'s remark {remark:?} holds {text:?}"
            );
        }
    }

    #[test]
    fn every_mesh_error_is_answered_with_system_error_naming_the_shard() {
        for e in [
            MeshError::NoSuchShard(9),
            MeshError::ShardGone(1),
            MeshError::NoAnswer(1),
        ] {
            let (code, remark) = hop(e, 1);
            assert_eq!(code, resp::SYSTEM_ERROR);
            assert!(
                remark.contains("shard 1") && remark.contains(&e.to_string()),
                "{remark}"
            );
        }
    }

    #[test]
    fn broker_built_records_and_transactions_map_to_their_codes() {
        let record = || RecordError::TopicTooLong(300);
        let store = || StoreError::ShutDown;
        let puts = [
            (PutError::Record(record()), resp::MESSAGE_ILLEGAL),
            (PutError::Store(store()), resp::SERVICE_NOT_AVAILABLE),
        ];
        for (e, code) in puts {
            let text = e.to_string();
            // Exhaustive on purpose: a new variant needs its row above.
            match &e {
                PutError::Record(_) | PutError::Store(_) => {}
            }
            let (got, remark) = broker_put(e);
            assert_eq!(got, code, "{text}");
            assert!(remark.contains(&text), "{remark:?} holds {text:?}");
        }
        let (code, remark) = send_back(PutError::Store(store()));
        assert_eq!(
            code,
            resp::SYSTEM_ERROR,
            "Java answers any failed retry put so"
        );
        assert!(remark.contains(&store().to_string()), "{remark}");
        let transactions = [
            (TransactionError::NoRealTopic, resp::SYSTEM_ERROR),
            (TransactionError::Store(store()), resp::SYSTEM_ERROR),
            (TransactionError::Record(record()), resp::SYSTEM_ERROR),
            (
                TransactionError::Put(PutError::Store(store())),
                resp::SERVICE_NOT_AVAILABLE,
            ),
        ];
        for (e, code) in transactions {
            match &e {
                TransactionError::NoRealTopic
                | TransactionError::Put(_)
                | TransactionError::Store(_)
                | TransactionError::Record(_) => {}
            }
            let text = e.to_string();
            let (got, remark) = transaction(e);
            assert_eq!(got, code, "{text}");
            assert!(remark.contains(&text), "{remark:?} holds {text:?}");
        }
    }

    /// Every variant of the processors' own refusals, each with its code; exhaustive matches
    /// make a new variant fail to compile until it has a row here.
    #[test]
    fn every_processor_error_maps_to_its_code_and_its_text() {
        let mut rows: Vec<(String, Failure, i32)> = Vec::new();
        let runtime = || "brokerPermission".to_string();
        for e in [
            UpdateError::NoKey,
            UpdateError::NotAtRuntime {
                key: "brokerName".into(),
                runtime: runtime(),
            },
            UpdateError::UnknownKey {
                key: "x".into(),
                runtime: runtime(),
            },
            UpdateError::LargerThanStore { asked: 2, max: 1 },
        ] {
            match &e {
                UpdateError::NoKey
                | UpdateError::NotAtRuntime { .. }
                | UpdateError::UnknownKey { .. }
                | UpdateError::Invalid(_)
                | UpdateError::LargerThanStore { .. } => {}
            }
            rows.push((e.to_string(), config_update(e), resp::SYSTEM_ERROR));
        }
        let io = || std::io::Error::other("disk gone");
        for e in [RewriteError::Read(io()), RewriteError::Write(io())] {
            match &e {
                RewriteError::Read(_) | RewriteError::Parse(_) | RewriteError::Write(_) => {}
            }
            let failure = config_file(std::path::Path::new("/etc/broker.conf"), e);
            assert!(failure.1.contains("/etc/broker.conf"), "{failure:?}");
            rows.push(("disk gone".into(), failure, resp::SYSTEM_ERROR));
        }
        for e in [
            TopicNameError::Blank,
            TopicNameError::TooLong { max: 127 },
            TopicNameError::IllegalCharacter {
                topic: "a b".into(),
                c: ' ',
            },
            TopicNameError::Forbidden("SCHEDULE_TOPIC_XXXX".into()),
        ] {
            match &e {
                TopicNameError::Blank
                | TopicNameError::TooLong { .. }
                | TopicNameError::IllegalCharacter { .. }
                | TopicNameError::Forbidden(_) => {}
            }
            rows.push((e.to_string(), topic_name(e), resp::SYSTEM_ERROR));
        }
        let failures = || {
            [
                ShardFailure::NoOffsetByTime {
                    topic: "T".into(),
                    queue_id: 1,
                    reason: "gone".into(),
                },
                ShardFailure::TopicDataKept {
                    shard: 1,
                    reason: "gone".into(),
                },
            ]
        };
        for e in failures() {
            match &e {
                ShardFailure::NoOffsetByTime { .. } | ShardFailure::TopicDataKept { .. } => {}
            }
            rows.push((e.to_string(), shard(e), resp::SYSTEM_ERROR));
        }
        let deletes = failures()
            .into_iter()
            .map(DeleteTopicError::OnShard)
            .chain([DeleteTopicError::Unasked("shard 1 is gone".into())]);
        for e in deletes {
            match &e {
                DeleteTopicError::Unasked(_) | DeleteTopicError::OnShard(_) => {}
            }
            let text = e.to_string();
            let failure = delete_topic(e);
            assert!(failure.1.starts_with("the topic's data is not all deleted"));
            rows.push((text, failure, resp::SYSTEM_ERROR));
        }
        for e in [
            PushReplyError::NoRequester,
            PushReplyError::NoChannel("c1".into()),
            PushReplyError::Failed {
                requester: "c1".into(),
                why: super::super::errors::PushFailure::Answered(1, "no".into()),
            },
        ] {
            match &e {
                PushReplyError::NoRequester
                | PushReplyError::NoChannel(_)
                | PushReplyError::Failed { .. } => {}
            }
            rows.push((e.to_string(), push_reply(e), resp::SYSTEM_ERROR));
        }
        for (text, (code, remark), want) in rows {
            assert_eq!(code, want, "{text}");
            assert!(remark.contains(&text), "{remark:?} holds {text:?}");
        }
    }
}
