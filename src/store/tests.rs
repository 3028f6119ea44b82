//! Behaviour of the whole store on `SimStorage` (and once on a real ext4 directory):
//! rollover, reads, filtering, keys, time search, group commit, flush timeouts, injected
//! I/O errors, torn tails, crashes, rebuilds and the shard-count check.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::test_support::run;
use super::*;
use crate::message::record::{RecordInput, RecordSlots, RecordView, BLANK_MAGIC_CODE};
use crate::message::{sysflag, tags_hash_code};
use crate::testing::{SimClock, SimFaults, SimStorage};

pub(super) const ROOT: &str = "/store";

pub(super) fn small_config() -> StoreConfig {
    let mut cfg = StoreConfig::for_dir(ROOT);
    cfg.segment_bytes = 64 * 1024;
    cfg.max_message_bytes = 8 * 1024;
    cfg.consume_queue_file_bytes = 20 * 1024;
    cfg.flush_disk_type = FlushDiskType::SyncFlush;
    cfg.sync_flush_timeout_ms = 2_000;
    cfg.flush_interval_consume_queue_ms = 20;
    cfg.flush_consume_queue_thorough_interval_ms = 100;
    cfg.index_active_entries_max = 64;
    cfg
}

pub(super) fn props(tags: &str, keys: &str, uniq: &str) -> String {
    format!("TAGS\u{1}{tags}\u{2}KEYS\u{1}{keys}\u{2}UNIQ_KEY\u{1}{uniq}")
}

pub(super) fn record(
    topic: &str,
    queue_id: i32,
    body: &[u8],
    properties: &str,
) -> (BytesMut, RecordSlots) {
    record_with_flag(topic, queue_id, body, properties, 0)
}

fn record_with_flag(
    topic: &str,
    queue_id: i32,
    body: &[u8],
    properties: &str,
    sys_flag: i32,
) -> (BytesMut, RecordSlots) {
    let input = RecordInput {
        topic,
        queue_id,
        flag: 0,
        sys_flag,
        born_timestamp: 1,
        born_host: "10.0.0.1:4000".parse().unwrap(),
        store_host: "127.0.0.1:10911".parse().unwrap(),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body,
        properties,
    };
    let mut buf = BytesMut::new();
    let slots = input.encode(&mut buf).unwrap();
    (buf, slots)
}

pub(super) fn body_of(i: usize, len: usize) -> Vec<u8> {
    let mut b = format!("msg-{i:06}-").into_bytes();
    b.resize(len, b'a' + (i % 26) as u8);
    b
}

pub(super) fn view(bytes: &Bytes) -> RecordView<'_> {
    RecordView::parse(bytes).unwrap()
}

pub(super) async fn open(
    sim: &SimStorage,
    clock: &SimClock,
    cfg: &StoreConfig,
) -> MessageStore<SimStorage> {
    MessageStore::open(sim.clone(), Rc::new(clock.clone()), cfg.clone())
        .await
        .unwrap()
}

pub(super) async fn put_n(
    store: &MessageStore<SimStorage>,
    topic: &str,
    n: usize,
    len: usize,
) -> Vec<i64> {
    let mut offsets = Vec::new();
    let base = store.max_offset(topic, 0);
    for i in 0..n {
        let p = props(
            if i % 2 == 0 { "TagA" } else { "TagB" },
            &format!("k{i}"),
            &format!("U{i}"),
        );
        let (rec, slots) = record(topic, 0, &body_of(i, len), &p);
        let r = store.put(rec, slots, true).await.unwrap();
        assert_eq!(r.status, PutStatus::PutOk);
        assert_eq!(r.queue_offset, base + i as i64);
        offsets.push(r.physical_offset);
    }
    offsets
}

pub(super) async fn read_all(store: &MessageStore<SimStorage>, topic: &str) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = store.min_offset(topic, 0);
    while offset < store.max_offset(topic, 0) {
        let got = store
            .get_messages(Reader::Broker, topic, 0, offset, 7, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(got.status, GetStatus::Found);
        offset = got.next_begin_offset;
        out.extend(got.messages);
    }
    out
}

pub(super) fn check_bodies(messages: &[Bytes], n: usize, len: usize) {
    assert_eq!(messages.len(), n);
    for (i, m) in messages.iter().enumerate() {
        let v = view(m);
        assert_eq!(v.body, &body_of(i, len)[..], "message {i}");
        assert_eq!(v.queue_offset, i as i64);
        v.check_crc().unwrap();
    }
}

pub(super) fn segment_path(start: u64) -> PathBuf {
    Path::new(ROOT)
        .join("commitlog/0")
        .join(format!("{start:020}"))
}

#[test]
fn records_roll_over_segments_and_read_back_across_them_after_reopen() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(11), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        let offsets = put_n(&store, "T", 100, 2_000).await;
        check_bodies(&read_all(&store, "T").await, 100, 2_000);
        // Records never span segments; the first segment ends with a blank record.
        let seg = cfg.segment_bytes as i64;
        let last_in_first = offsets.iter().filter(|o| **o < seg).max().unwrap();
        let first = sim.file_bytes(&segment_path(0)).unwrap();
        let last = store.read_by_physical_offset(*last_in_first).await.unwrap();
        let blank_at = *last_in_first as usize + last.len();
        let magic = i32::from_be_bytes(first[blank_at + 4..blank_at + 8].try_into().unwrap());
        assert_eq!(magic, BLANK_MAGIC_CODE);
        assert!(offsets.contains(&seg), "a record starts the second segment");
        store.close().await.unwrap();
        assert!(sim
            .file_bytes(&segment_path(3 * cfg.segment_bytes))
            .is_some());
        let store = open(&sim, &clock, &cfg).await;
        assert!(!store.was_unclean_start());
        check_bodies(&read_all(&store, "T").await, 100, 2_000);
        let got = store.read_by_physical_offset(offsets[40]).await.unwrap();
        assert_eq!(view(&got).body, &body_of(40, 2_000)[..]);
        for bogus in [
            offsets[40] + 3,
            to_physical(1, 0),
            store.max_physical_offset(),
        ] {
            let err = store.read_by_physical_offset(bogus).await.unwrap_err();
            assert!(matches!(err, StoreError::OffsetOutOfRange { .. }), "{err}");
        }
        put_n(&store, "U", 3, 10).await;
        store.close().await.unwrap();
    });
}

#[test]
fn statuses_follow_the_pull_rules() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(12), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        let get = |o| store.get_messages(Reader::Broker, "T", 0, o, 10, 1 << 20, None);
        assert_eq!(get(0).await.unwrap().status, GetStatus::NoMessageInQueue);
        put_n(&store, "T", 5, 100).await;
        let r = get(5).await.unwrap();
        assert_eq!(
            (r.status, r.next_begin_offset, r.max_offset),
            (GetStatus::OffsetOverflowOne, 5, 5)
        );
        let r = get(9).await.unwrap();
        assert_eq!(
            (r.status, r.next_begin_offset),
            (GetStatus::OffsetOverflowBadly, 0)
        );
        let r = get(3).await.unwrap();
        assert_eq!(
            (r.status, r.messages.len(), r.next_begin_offset),
            (GetStatus::Found, 2, 5)
        );
        let r = store
            .get_messages(Reader::Broker, "T", 0, 0, 10, 150, None)
            .await
            .unwrap();
        assert_eq!(
            r.messages.len(),
            1,
            "max bytes stops after the first message"
        );
        store.close().await.unwrap();
    });
}

#[test]
fn a_corrupt_queue_unit_fails_the_read_with_where_and_what_instead_of_crashing() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(13), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 3, 100).await;
        let cq = store.inner.queues.get_or_create("T", 0);
        // Unit 3 points past the commitlog's end; unit 4 at another shard's record.
        let past_end = commitlog::to_physical(0, 1 << 30);
        cq.append(
            3,
            consumequeue::CqUnit {
                physical_offset: past_end,
                size: 100,
                tags_code: 0,
            },
        );
        let other_shard = commitlog::to_physical(3, 0);
        cq.append(
            4,
            consumequeue::CqUnit {
                physical_offset: other_shard,
                size: 100,
                tags_code: 0,
            },
        );
        let good = store
            .get_messages(Reader::Broker, "T", 0, 0, 3, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!((good.status, good.messages.len()), (GetStatus::Found, 3));
        for (offset, what) in [
            (3, "past the commitlog's end"),
            (4, "not a record of shard 0"),
        ] {
            let err = store
                .get_messages(Reader::Broker, "T", 0, offset, 10, 1 << 20, None)
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{text}");
            assert!(text.contains("/T/0 unit") && text.contains(what), "{text}");
        }
        store.close().await.unwrap();
    });
}

#[test]
fn tag_filter_keeps_only_subscribed_hash_codes() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(13), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 20, 100).await;
        let codes: HashSet<i32> = [tags_hash_code("TagB") as i32].into();
        let r = store
            .get_messages(Reader::Broker, "T", 0, 0, 4, 1 << 20, Some(&codes))
            .await
            .unwrap();
        assert_eq!(r.status, GetStatus::Found);
        let offsets: Vec<i64> = r.messages.iter().map(|m| view(m).queue_offset).collect();
        assert_eq!(offsets, vec![1, 3, 5, 7]);
        assert_eq!(r.next_begin_offset, 8);
        let none: HashSet<i32> = [tags_hash_code("TagC") as i32].into();
        let r = store
            .get_messages(Reader::Broker, "T", 0, 0, 4, 1 << 20, Some(&none))
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.next_begin_offset),
            (GetStatus::NoMatchedMessage, 20)
        );
        store.close().await.unwrap();
    });
}

#[test]
fn keys_and_unique_ids_are_found_within_the_time_range_also_after_reopen_and_crash() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(14), SimClock::new(10_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        for i in 0..150 {
            clock.advance(10);
            let keys = format!("order-{} shared", i % 50);
            let (rec, slots) = record("T", 0, b"x", &props("t", &keys, &format!("UNIQ{i}")));
            store.put(rec, slots, true).await.unwrap();
        }
        let check = |store: MessageStore<SimStorage>| async move {
            let hits = store
                .query_by_key("T", "order-7", 10, 0, i64::MAX)
                .await
                .unwrap();
            let bodies: Vec<i64> = hits.iter().map(|m| view(m).queue_offset).collect();
            assert_eq!(bodies, vec![107, 57, 7], "newest first");
            let uniq = store
                .query_by_key("T", "UNIQ42", 10, 0, i64::MAX)
                .await
                .unwrap();
            assert_eq!(view(&uniq[0]).queue_offset, 42);
            let ranged = store
                .query_by_key("T", "shared", 100, 10_000 + 10 * 20, 10_000 + 10 * 29)
                .await;
            assert_eq!(ranged.unwrap().len(), 10);
            assert_eq!(
                store
                    .query_by_key("T", "shared", 5, 0, i64::MAX)
                    .await
                    .unwrap()
                    .len(),
                5
            );
            assert!(store
                .query_by_key("U", "order-7", 10, 0, i64::MAX)
                .await
                .unwrap()
                .is_empty());
        };
        check(store.clone()).await;
        store.close().await.unwrap();
        let store = open(&sim, &clock, &cfg).await;
        check(store.clone()).await;
        drop(store);
        sim.crash();
        let store = open(&sim, &clock, &cfg).await;
        assert!(store.was_unclean_start());
        check(store.clone()).await;
    });
}

#[test]
fn offset_by_time_finds_the_first_message_stored_at_or_after() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(15), SimClock::new(5_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        for _ in 0..30 {
            clock.advance(100);
            let (rec, slots) = record("T", 0, b"x", "");
            store.put(rec, slots, true).await.unwrap();
        }
        // Message i was stored at 5_100 + 100 * i.
        assert_eq!(store.offset_by_time("T", 0, 0).await.unwrap(), 0);
        assert_eq!(store.offset_by_time("T", 0, 5_100).await.unwrap(), 0);
        assert_eq!(store.offset_by_time("T", 0, 5_150).await.unwrap(), 1);
        assert_eq!(store.offset_by_time("T", 0, 6_100).await.unwrap(), 10);
        assert_eq!(store.offset_by_time("T", 0, 99_999).await.unwrap(), 30);
        assert_eq!(
            store.earliest_store_time("T", 0).await.unwrap(),
            Some(5_100)
        );
        // Store timestamps never go back, even when the clock does.
        clock.set(1);
        let (rec, slots) = record("T", 0, b"x", "");
        assert_eq!(
            store.put(rec, slots, true).await.unwrap().store_timestamp,
            8_000
        );
        store.close().await.unwrap();
    });
}

#[test]
fn group_commit_releases_many_waiters_with_one_fsync_each_round() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(16), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        sim.set_faults(SimFaults {
            fsync_delay: Duration::from_millis(2),
            ..SimFaults::default()
        });
        let (fsyncs, rounds) = (sim.fsync_count(), store.flush_rounds());
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let store = store.clone();
                glommio::spawn_local(async move {
                    let (rec, slots) = record("T", i % 4, &body_of(i as usize, 50), "");
                    store.put(rec, slots, true).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().status, PutStatus::PutOk);
        }
        let (fsyncs, rounds) = (sim.fsync_count() - fsyncs, store.flush_rounds() - rounds);
        assert!(rounds <= 30, "300 waiters took {rounds} flush rounds");
        assert!(fsyncs <= 60, "300 waiters took {fsyncs} fsyncs");
        assert!(store.flushed_physical_offset() >= store.max_physical_offset());
        store.close().await.unwrap();
    });
}

#[test]
fn a_hand_over_batch_is_appended_in_order_and_waits_for_one_fdatasync() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(23), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        let mut items = Vec::new();
        for i in 0..6 {
            let (rec, slots) = record("T", i % 2, format!("m{i}").as_bytes(), "");
            items.push((rec, slots, i != 5));
        }
        // A record that cannot be stored fails alone; the others of the batch are stored.
        let (mut bad, bad_slots) = record("T", 0, b"torn", "");
        bad.truncate(10);
        items.insert(3, (bad, bad_slots, true));
        let (fsyncs, rounds) = (sim.fsync_count(), store.flush_rounds());
        let results = store.put_many(items).await;
        assert_eq!(results.len(), 7);
        assert!(matches!(results[3], Err(StoreError::BadRecord { .. })));
        let ok: Vec<&PutResult> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let queues: Vec<i64> = ok.iter().map(|r| r.queue_offset).collect();
        assert_eq!(
            queues,
            vec![0, 0, 1, 1, 2, 2],
            "queue offsets per queue, in order"
        );
        assert!(ok
            .windows(2)
            .all(|w| w[0].physical_offset < w[1].physical_offset));
        assert!(ok.iter().all(|r| r.status == PutStatus::PutOk));
        assert!(store.flushed_physical_offset() >= ok[5].physical_offset);
        let rounds = store.flush_rounds() - rounds;
        assert!(
            rounds <= 2,
            "one wait for the batch took {rounds} flush rounds"
        );
        assert!(sim.fsync_count() - fsyncs <= 4);
        let got = store
            .get_messages(Reader::Broker, "T", 1, 0, 10, 1 << 20, None)
            .await
            .unwrap();
        let bodies: Vec<&[u8]> = got.messages.iter().map(|m| view(m).body).collect();
        assert_eq!(bodies, vec![&b"m1"[..], b"m3", b"m5"]);
        store.close().await.unwrap();
    });
}

#[test]
fn a_stalled_fsync_reports_flush_disk_timeout_but_keeps_the_record() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(17), SimClock::new(1_000), small_config());
        cfg.sync_flush_timeout_ms = 30;
        let store = open(&sim, &clock, &cfg).await;
        sim.set_faults(SimFaults {
            fsync_delay: Duration::from_millis(300),
            path_prefix: Some(PathBuf::from(ROOT).join("commitlog")),
            ..SimFaults::default()
        });
        let (rec, slots) = record("T", 0, b"slow", "");
        let r = store.put(rec, slots, true).await.unwrap();
        assert_eq!(r.status, PutStatus::FlushDiskTimeout);
        let got = store
            .get_messages(Reader::Broker, "T", 0, 0, 10, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(view(&got.messages[0]).body, b"slow");
        let (rec, slots) = record("T", 0, b"no wait", "");
        assert_eq!(
            store.put(rec, slots, false).await.unwrap().status,
            PutStatus::PutOk
        );
        sim.set_faults(SimFaults::default());
        glommio::timer::sleep(Duration::from_millis(350)).await;
        let (rec, slots) = record("T", 0, b"fast", "");
        assert_eq!(
            store.put(rec, slots, true).await.unwrap().status,
            PutStatus::PutOk
        );
        store.close().await.unwrap();
    });
}

#[test]
fn puts_wait_then_report_busy_when_too_much_waits_for_the_disk() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(24), SimClock::new(1_000), small_config());
        cfg.unflushed_max_bytes = 4_000;
        cfg.sync_flush_timeout_ms = 40;
        let store = open(&sim, &clock, &cfg).await;
        sim.set_faults(SimFaults {
            fsync_delay: Duration::from_millis(200),
            path_prefix: Some(PathBuf::from(ROOT).join("commitlog")),
            ..SimFaults::default()
        });
        let mut busy = None;
        for i in 0..10 {
            let (rec, slots) = record("T", 0, &body_of(i, 1_000), "");
            if let Err(e) = store.put(rec, slots, false).await {
                busy = Some(e);
                break;
            }
        }
        assert!(matches!(busy, Some(StoreError::Busy { .. })), "{busy:?}");
        let stored = store.max_offset("T", 0);
        assert!(
            (3..10).contains(&stored),
            "{stored} stored before back-pressure"
        );
        sim.set_faults(SimFaults::default());
        glommio::timer::sleep(Duration::from_millis(250)).await;
        let (rec, slots) = record("T", 0, b"after", "");
        assert_eq!(
            store.put(rec, slots, true).await.unwrap().queue_offset,
            stored
        );
        store.close().await.unwrap();
    });
}

fn io_error_keeps_acknowledged_records(errno: i32, on_fsync: bool) {
    io_error_keeps_acknowledged_records_in(errno, on_fsync, true);
    io_error_keeps_acknowledged_records_in(errno, on_fsync, false);
}

/// `dsync`: SYNC_FLUSH through O_DSYNC writes (a failing flush fails the write) or writes and
/// fdatasync rounds.
fn io_error_keeps_acknowledged_records_in(errno: i32, on_fsync: bool, dsync: bool) {
    run(async move {
        let (sim, clock, mut cfg) = (SimStorage::new(18), SimClock::new(1_000), small_config());
        cfg.sync_flush_dsync = dsync;
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 10, 300).await;
        let prefix = Some(PathBuf::from(ROOT).join("commitlog"));
        let faults = match on_fsync {
            true => SimFaults {
                fsync_errno: Some(errno),
                path_prefix: prefix,
                ..Default::default()
            },
            false => SimFaults {
                write_errno: Some(errno),
                path_prefix: prefix,
                ..Default::default()
            },
        };
        sim.set_faults(faults);
        let (rec, slots) = record("T", 0, b"lost", "");
        let err = store.put(rec, slots, true).await.unwrap_err();
        assert!(matches!(err, StoreError::FlushFailed { .. }), "{err}");
        let (rec, slots) = record("T", 0, b"refused", "");
        let err = store.put(rec, slots, true).await.unwrap_err();
        assert!(matches!(err, StoreError::Unwritable { .. }), "{err}");
        assert!(store.failure().unwrap().contains("flushing commitlog"));
        assert!(
            store.close().await.is_err(),
            "a failed store does not close cleanly"
        );
        drop(store);
        sim.crash();
        sim.set_faults(SimFaults::default());
        let store = open(&sim, &clock, &cfg).await;
        assert!(store.was_unclean_start());
        let all = read_all(&store, "T").await;
        check_bodies(&all[..10], 10, 300);
        assert!(all.len() <= 11);
        put_n(&store, "U", 5, 10).await;
        store.close().await.unwrap();
    });
}

#[test]
fn eio_on_write_fails_the_put_and_keeps_acknowledged_records() {
    io_error_keeps_acknowledged_records(libc::EIO, false);
}

#[test]
fn enospc_on_fsync_still_poisons_the_store() {
    // A failed fdatasync may have lost what it was syncing, whatever its errno. (An O_DSYNC
    // write that fails with ENOSPC cannot tell its flush from its write apart: it is retried
    // like any write that ran out of space, and the retry writes every unflushed byte again
    // through O_DIRECT, so nothing rests on pages a failed flush may have dropped.)
    io_error_keeps_acknowledged_records_in(libc::ENOSPC, true, false);
}

/// Puts until one is refused; returns the refusal.
async fn put_until_refused(store: &MessageStore<SimStorage>, from: usize) -> StoreError {
    for i in from..from + 1_000 {
        let (rec, slots) = record("T", 0, &body_of(i, 300), &props("", &format!("k{i}"), ""));
        if let Err(e) = store.put(rec, slots, false).await {
            return e;
        }
    }
    panic!("1,000 puts accepted on a full disk");
}

/// Waits (bounded) until a put is accepted again after the disk had room again.
async fn put_when_writable(store: &MessageStore<SimStorage>, i: usize) -> PutResult {
    for _ in 0..200 {
        let (rec, slots) = record("T", 0, &body_of(i, 300), &props("", &format!("k{i}"), ""));
        match store.put(rec, slots, true).await {
            Ok(r) => return r,
            Err(StoreError::NoSpace { .. }) => {
                glommio::timer::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("put after space came back: {e}"),
        }
    }
    panic!("puts still refused 4 s after space came back");
}

#[test]
fn enospc_on_the_commitlog_refuses_puts_until_space_returns_without_losing_anything() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(31), SimClock::new(1_000), small_config());
        cfg.sync_flush_timeout_ms = 200;
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 10, 300).await;
        // Creating or writing commitlog segments fails with ENOSPC (fsyncs would work).
        sim.set_faults(SimFaults {
            write_errno: Some(libc::ENOSPC),
            path_prefix: Some(PathBuf::from(ROOT).join("commitlog")),
            ..Default::default()
        });
        // The put whose flush meets the full disk is stored but not acknowledged as durable.
        let (rec, slots) = record("T", 0, &body_of(10, 300), &props("", "k10", ""));
        let put = store.put(rec, slots, true).await.unwrap();
        assert_eq!(put.status, PutStatus::FlushDiskTimeout);
        assert_eq!(put.queue_offset, 10);
        let err = put_until_refused(&store, 11).await;
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
        assert!(err.to_string().contains("disk is full"), "{err}");
        assert!(
            store.failure().is_none(),
            "running out of space poisons nothing"
        );
        assert_eq!(store.max_offset("T", 0), 11, "nothing refused was stored");
        // Reads and key lookups go on meanwhile.
        check_bodies(&read_all(&store, "T").await[..10], 10, 300);
        let found = store
            .query_by_key("T", "k3", 10, 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        glommio::timer::sleep(Duration::from_millis(300)).await;
        let (rec, slots) = record("T", 0, b"x", "");
        assert!(store.put(rec, slots, true).await.is_err(), "still refused");
        // Space is back: the flusher's retry succeeds and puts are accepted, no reopen.
        sim.set_faults(SimFaults::default());
        let after = put_when_writable(&store, 11).await;
        assert_eq!((after.status, after.queue_offset), (PutStatus::PutOk, 11));
        assert!(store.flushed_physical_offset() >= store.max_physical_offset());
        store.close().await.unwrap();
        // Everything, the put that timed out included, survives a power loss now.
        sim.crash();
        let store = open(&sim, &clock, &cfg).await;
        assert!(!store.was_unclean_start());
        check_bodies(&read_all(&store, "T").await, 12, 300);
        store.close().await.unwrap();
    });
}

#[test]
fn enospc_on_queues_and_index_loses_no_entry() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(32), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        // Consume queues and the key index cannot be written; the commitlog can.
        for dir in ["consumequeue", "index"] {
            sim.set_faults(SimFaults {
                write_errno: Some(libc::ENOSPC),
                path_prefix: Some(PathBuf::from(ROOT).join(dir)),
                ..Default::default()
            });
            let base = store.max_offset("T", 0) as usize;
            for i in base..base + 200 {
                let keys = props("", &format!("k{i}"), "");
                let (rec, slots) = record("T", 0, &body_of(i, 300), &keys);
                let r = store.put(rec, slots, true).await.unwrap();
                assert_eq!(
                    r.status,
                    PutStatus::PutOk,
                    "queues and index never block puts"
                );
            }
            // Several background rounds fail meanwhile.
            glommio::timer::sleep(Duration::from_millis(150)).await;
            for i in [base, base + 100, base + 199] {
                let key = format!("k{i}");
                let found = store.query_by_key("T", &key, 4, 0, i64::MAX).await.unwrap();
                assert_eq!(found.len(), 1, "key k{i} while {dir} cannot be written");
                assert_eq!(view(&found[0]).body, &body_of(i, 300)[..]);
            }
            check_bodies(&read_all(&store, "T").await, base + 200, 300);
        }
        // Space back: the background task writes what it could not; after a power loss the
        // queues and the index hold every entry (written, or rebuilt from the commitlog).
        sim.set_faults(SimFaults::default());
        glommio::timer::sleep(Duration::from_millis(250)).await;
        drop(store);
        sim.crash();
        let store = open(&sim, &clock, &cfg).await;
        check_bodies(&read_all(&store, "T").await, 400, 300);
        for i in (0..400).step_by(37) {
            let key = format!("k{i}");
            let found = store.query_by_key("T", &key, 4, 0, i64::MAX).await.unwrap();
            assert_eq!(found.len(), 1, "key k{i} after the crash");
        }
        store.close().await.unwrap();
    });
}

#[test]
fn eio_on_fsync_fails_the_put_and_keeps_acknowledged_records() {
    io_error_keeps_acknowledged_records(libc::EIO, true);
}

fn torn_tail_is_cut_off(damage: impl FnOnce(&SimStorage, u64, &[u8])) {
    run(async move {
        let (sim, clock, cfg) = (SimStorage::new(19), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 20, 500).await;
        let end = store.max_physical_offset() as u64;
        let (extra, _) = record("T", 0, &body_of(20, 500), "");
        drop(store); // no clean close: the abort marker stays
        sim.kill(); // and its background tasks stop writing
        damage(&sim, end, &extra);
        let store = open(&sim, &clock, &cfg).await;
        assert!(store.was_unclean_start());
        assert_eq!(store.max_physical_offset() as u64, end);
        assert_eq!(store.max_offset("T", 0), 20);
        let seg = sim.file_bytes(&segment_path(0)).unwrap();
        assert!(seg[end as usize..].iter().all(|b| *b == 0), "tail zeroed");
        put_n(&store, "T", 0, 0).await;
        let (rec, slots) = record("T", 0, &body_of(20, 500), "");
        assert_eq!(store.put(rec, slots, true).await.unwrap().queue_offset, 20);
        store.close().await.unwrap();
        let store = open(&sim, &clock, &cfg).await;
        check_bodies(&read_all(&store, "T").await, 21, 500);
        store.close().await.unwrap();
    });
}

#[test]
fn garbage_after_the_last_record_is_cut_off_on_reopen() {
    torn_tail_is_cut_off(|sim, end, _| sim.write_raw(&segment_path(0), end, &[0xAB; 700]));
}

#[test]
fn a_half_written_record_is_cut_off_on_reopen() {
    torn_tail_is_cut_off(|sim, end, extra| {
        sim.write_raw(&segment_path(0), end, &extra[..extra.len() / 2]);
    });
}

#[test]
fn a_record_with_a_bad_crc_ends_the_log() {
    torn_tail_is_cut_off(|sim, end, extra| {
        let mut bad = extra.to_vec();
        bad[28..36].copy_from_slice(&(end as i64).to_be_bytes());
        let last = bad.len() - 1;
        bad[last - 40] ^= 0xFF;
        sim.write_raw(&segment_path(0), end, &bad);
    });
}

#[test]
fn crashes_keep_every_acknowledged_record_whatever_the_seed() {
    for seed in 0..12 {
        run(async move {
            let align = if seed % 2 == 0 { 512 } else { 4096 };
            let sim = SimStorage::with_alignment(seed, align);
            let (clock, cfg) = (SimClock::new(1_000), small_config());
            let mut acked = 0usize;
            for round in 0..3 {
                let store = open(&sim, &clock, &cfg).await;
                assert_eq!(
                    store.max_offset("T", 0),
                    acked as i64,
                    "seed {seed} round {round}"
                );
                check_bodies(&read_all(&store, "T").await, acked, 700);
                for i in acked..acked + 40 {
                    let (rec, slots) = record("T", 0, &body_of(i, 700), "");
                    store.put(rec, slots, true).await.unwrap();
                }
                acked += 40;
                // Unacknowledged appends in flight when the power goes.
                for i in acked..acked + 3 {
                    let (rec, slots) = record("T", 0, &body_of(i, 700), "");
                    store.put(rec, slots, false).await.unwrap();
                }
                drop(store);
                sim.crash();
                let store = open(&sim, &clock, &cfg).await;
                acked = store.max_offset("T", 0) as usize;
                check_bodies(&read_all(&store, "T").await, acked, 700);
                drop(store);
                sim.crash();
            }
        });
    }
}

#[test]
fn consume_queues_and_index_are_rebuilt_from_the_commitlog() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(20), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 60, 1_500).await;
        store.close().await.unwrap();
        for path in sim.paths() {
            let s = path.to_string_lossy();
            if s.contains("/consumequeue/") || s.contains("/index/") || s.contains("/checkpoint/") {
                sim.remove(&path).await.unwrap();
            }
        }
        let store = open(&sim, &clock, &cfg).await;
        check_bodies(&read_all(&store, "T").await, 60, 1_500);
        let hit = store
            .query_by_key("T", "k33", 5, 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(view(&hit[0]).queue_offset, 33);
        store.close().await.unwrap();
    });
}

#[test]
fn prepared_and_rollback_records_get_no_queue_unit_and_batches_are_consecutive() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(21), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 3, 10).await;
        for flag in [sysflag::TRANSACTION_PREPARED, sysflag::TRANSACTION_ROLLBACK] {
            let (rec, slots) = record_with_flag("T", 0, b"half", &props("t", "tx", "TX1"), flag);
            let r = store.put(rec, slots, true).await.unwrap();
            assert_eq!(r.queue_offset, 0);
            let again = store
                .read_by_physical_offset(r.physical_offset)
                .await
                .unwrap();
            assert_eq!(view(&again).body, b"half");
        }
        assert_eq!(store.max_offset("T", 0), 3);
        assert_eq!(
            store
                .query_by_key("T", "TX1", 10, 0, i64::MAX)
                .await
                .unwrap()
                .len(),
            1
        );
        let batch: Vec<_> = (0..5)
            .map(|i| record("T", 0, &body_of(i, 10), ""))
            .collect();
        let r = store.put_batch(batch, true).await.unwrap();
        assert_eq!((r.queue_offset, r.physical_offsets.len()), (3, 5));
        assert_eq!(store.max_offset("T", 0), 8);
        let mixed = vec![record("T", 0, b"a", ""), record("T", 1, b"b", "")];
        assert!(matches!(
            store.put_batch(mixed, true).await,
            Err(StoreError::MixedBatch)
        ));
        store.close().await.unwrap();
    });
}

#[test]
fn a_store_made_with_another_shard_count_is_refused() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(22), SimClock::new(1_000), small_config());
        cfg.shard_count = 2;
        open(&sim, &clock, &cfg).await.close().await.unwrap();
        cfg.shard_count = 3;
        let err = MessageStore::open(sim.clone(), Rc::new(clock.clone()), cfg.clone())
            .await
            .err()
            .unwrap();
        assert!(matches!(
            err,
            StoreError::ShardCountMismatch {
                found: 2,
                configured: 3,
                ..
            }
        ));
    });
}

#[test]
fn async_flush_acknowledges_at_once_and_flushes_in_the_background() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(23), SimClock::new(1_000), small_config());
        cfg.flush_disk_type = FlushDiskType::AsyncFlush;
        cfg.flush_interval_commitlog_ms = 20;
        let store = open(&sim, &clock, &cfg).await;
        let rounds = store.flush_rounds();
        put_n(&store, "T", 10, 100).await;
        assert_eq!(store.flush_rounds(), rounds, "no flush on the put path");
        glommio::timer::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.flushed_physical_offset(), store.max_physical_offset());
        store.close().await.unwrap();
    });
}

#[test]
fn real_disk_store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(async move {
        let mut cfg = small_config();
        cfg.root_dir = root.clone();
        cfg.commitlog_dir = root.join("commitlog");
        let clock: Rc<dyn Clock> = Rc::new(SystemClock);
        let store = MessageStore::open(DmaStorage, clock.clone(), cfg.clone())
            .await
            .unwrap();
        for i in 0..200 {
            let (rec, slots) = record(
                "T",
                0,
                &body_of(i, 1_000),
                &props("a", "k", &format!("u{i}")),
            );
            assert_eq!(
                store.put(rec, slots, true).await.unwrap().status,
                PutStatus::PutOk
            );
        }
        store.close().await.unwrap();
        let store = MessageStore::open(DmaStorage, clock, cfg).await.unwrap();
        let mut offset = 0;
        let mut n = 0;
        while offset < store.max_offset("T", 0) {
            let got = store
                .get_messages(Reader::Broker, "T", 0, offset, 32, 1 << 20, None)
                .await
                .unwrap();
            for m in &got.messages {
                assert_eq!(view(m).body, &body_of(n, 1_000)[..]);
                n += 1;
            }
            offset = got.next_begin_offset;
        }
        assert_eq!(n, 200);
        let hit = store
            .query_by_key("T", "u150", 1, 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(view(&hit[0]).queue_offset, 150);
        store.close().await.unwrap();
    });
}

/// Makes the store under [`ROOT`] look like one from before the format line.
fn drop_format_line(sim: &SimStorage, shard_count: u32) {
    let path = Path::new(ROOT).join("shard_count");
    let old = format!("{shard_count}\n");
    sim.write_raw(&path, 0, old.as_bytes());
    sim.set_len_raw(&path, old.len() as u64);
}

#[test]
fn a_new_store_records_its_format_with_the_shard_count() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(40), SimClock::new(1_000), small_config());
        cfg.shard_count = 2;
        open(&sim, &clock, &cfg).await.close().await.unwrap();
        let text = sim
            .file_bytes(&Path::new(ROOT).join("shard_count"))
            .unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            format!("2\nstore-format {}\n", checkpoint::STORE_FORMAT)
        );
    });
}

#[test]
fn an_old_layout_store_with_data_past_shard_0_is_refused_with_the_migration() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(41), SimClock::new(1_000), small_config());
        cfg.shard_count = 2;
        cfg.shard = 1;
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 3, 100).await;
        store.close().await.unwrap();
        drop_format_line(&sim, 2);
        for shard in [0, 1] {
            cfg.shard = shard;
            let err = MessageStore::open(sim.clone(), Rc::new(clock.clone()), cfg.clone())
                .await
                .err()
                .expect("refused");
            assert!(
                matches!(&err, StoreError::OldOffsetLayout { shards, .. } if shards == &[1]),
                "{err}"
            );
            let text = err.to_string();
            assert!(
                text.contains("bits 56-63") && text.contains("To migrate"),
                "{text}"
            );
        }
        // Nothing was changed: still refused, and the data is still there.
        let seg = sim.file_bytes(&Path::new(ROOT).join("commitlog/1/00000000000000000000"));
        assert!(seg.is_some_and(|b| b.iter().take(8).any(|x| *x != 0)));
    });
}

#[test]
fn an_old_layout_store_with_data_only_on_shard_0_opens_and_is_upgraded() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(42), SimClock::new(1_000), small_config());
        cfg.shard_count = 2;
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 5, 100).await;
        store.close().await.unwrap();
        cfg.shard = 1;
        open(&sim, &clock, &cfg).await.close().await.unwrap();
        drop_format_line(&sim, 2);
        cfg.shard = 0;
        let store = open(&sim, &clock, &cfg).await;
        let got = store
            .get_messages(Reader::Broker, "T", 0, 0, 32, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(got.messages.len(), 5);
        assert_eq!(view(&got.messages[4]).body, &body_of(4, 100)[..]);
        store.close().await.unwrap();
        let text = sim
            .file_bytes(&Path::new(ROOT).join("shard_count"))
            .unwrap();
        assert!(String::from_utf8(text).unwrap().contains("store-format"));
    });
}

#[test]
fn a_record_of_the_old_layout_behind_a_format_line_is_refused_not_cut() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(43), SimClock::new(1_000), small_config());
        cfg.shard_count = 2;
        cfg.shard = 1;
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 2, 100).await;
        store.close().await.unwrap();
        // Rewrite the first record's PHYSICALOFFSET field as the old layout wrote it, and
        // drop the checkpoint so that recovery scans it.
        let old = (1u64 << commitlog::OLD_SHARD_SHIFT).to_be_bytes();
        let seg = Path::new(ROOT).join("commitlog/1/00000000000000000000");
        sim.write_raw(&seg, 28, &old);
        sim.set_len_raw(&Path::new(ROOT).join("checkpoint/1"), 0);
        let err = MessageStore::open(sim.clone(), Rc::new(clock.clone()), cfg.clone())
            .await
            .err()
            .expect("refused");
        assert!(matches!(err, StoreError::OldOffsetLayout { .. }), "{err}");
        let seg = sim.file_bytes(&seg).unwrap();
        assert_eq!(&seg[28..36], &old, "the record is left as it was");
    });
}

#[test]
fn a_store_of_an_unknown_format_is_refused() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(44), SimClock::new(1_000), small_config());
        open(&sim, &clock, &cfg).await.close().await.unwrap();
        let path = Path::new(ROOT).join("shard_count");
        let text = b"1\nstore-format 9\n";
        sim.write_raw(&path, 0, text);
        sim.set_len_raw(&path, text.len() as u64);
        let err = MessageStore::open(sim.clone(), Rc::new(clock.clone()), cfg.clone())
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("store format 9"), "{err}");
    });
}

/// Whether `fut` resolves within `ms` (glommio timer).
async fn within<T>(ms: u64, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let timer = async {
        glommio::timer::sleep(Duration::from_millis(ms)).await;
        None
    };
    futures_lite::future::or(async { Some(fut.await) }, timer).await
}

#[test]
fn sync_flush_serves_a_record_to_consumers_only_once_it_is_durable() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(41), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 2, 100).await;
        // The next flush is held back (the O_DSYNC write, or the write's fdatasync with
        // RINGMQ_SYNC_FDATASYNC): the record is stored (in the commitlog's memory tail, which a
        // kill -9 erases) but not durable.
        sim.set_faults(SimFaults {
            fsync_delay: Duration::from_millis(400),
            write_delay: Duration::from_millis(400),
            path_prefix: Some(PathBuf::from(ROOT).join("commitlog")),
            ..SimFaults::default()
        });
        let (rec, slots) = record("T", 0, b"not durable yet", "");
        let put = glommio::spawn_local({
            let store = store.clone();
            async move { store.put(rec, slots, true).await.unwrap() }
        });
        glommio::executor().yield_task_queue_now().await;
        assert_eq!(store.max_offset("T", 0), 3, "stored");
        assert_eq!(
            store.readable_max_offset("T", 0),
            2,
            "consumers see only durable"
        );
        let got = store
            .get_messages(Reader::Consumer, "T", 0, 2, 10, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(got.status, GetStatus::OffsetOverflowOne, "a pull waits");
        assert_eq!((got.next_begin_offset, got.max_offset), (2, 2));
        assert!(got.messages.is_empty());
        let got = store
            .get_messages(Reader::Consumer, "T", 0, 0, 10, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(got.messages.len(), 2, "durable records are served");
        assert_eq!(got.next_begin_offset, 2);
        // The broker's own readers still see everything stored.
        let all = store
            .get_messages(Reader::Broker, "T", 0, 2, 10, 1 << 20, None)
            .await;
        assert_eq!(view(&all.unwrap().messages[0]).body, b"not durable yet");
        // A long-polled pull is not woken by the append, only by the flush.
        let waiting = within(100, store.wait_readable("T", 0, 2)).await;
        assert!(waiting.is_none(), "woken before the record was durable");
        let parked = glommio::spawn_local({
            let store = store.clone();
            async move { store.wait_readable("T", 0, 2).await }
        });
        assert_eq!(put.await.status, PutStatus::PutOk);
        // The flush that acknowledged the put has already woken the parked pull.
        assert!(within(0, parked).await.is_some(), "not woken by the flush");
        assert_eq!(store.readable_max_offset("T", 0), 3);
        let got = store
            .get_messages(Reader::Consumer, "T", 0, 2, 10, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(got.status, GetStatus::Found);
        assert_eq!(view(&got.messages[0]).body, b"not durable yet");
        store.close().await.unwrap();
    });
}

#[test]
fn what_a_crash_can_erase_was_never_served_to_a_consumer() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(42), SimClock::new(1_000), small_config());
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "T", 3, 100).await;
        sim.set_faults(SimFaults {
            fsync_errno: Some(libc::EIO),
            path_prefix: Some(PathBuf::from(ROOT).join("commitlog")),
            ..SimFaults::default()
        });
        let (rec, slots) = record("T", 0, b"lost to the crash", "");
        store.put(rec, slots, false).await.unwrap();
        let served = store
            .get_messages(Reader::Consumer, "T", 0, 3, 10, 1 << 20, None)
            .await
            .unwrap();
        assert!(served.messages.is_empty(), "served before it was durable");
        // A consumer that saw offsets 0..3 commits 3: never past what exists after the crash.
        let committed = store.readable_max_offset("T", 0);
        sim.crash();
        sim.set_faults(SimFaults::default());
        drop(store);
        let store = open(&sim, &clock, &cfg).await;
        assert_eq!(store.max_offset("T", 0), 3);
        assert!(committed <= store.max_offset("T", 0));
        // A different message now takes offset 3; the consumer does not skip it.
        let (rec, slots) = record("T", 0, b"after the crash", "");
        let r = store.put(rec, slots, true).await.unwrap();
        assert_eq!(r.queue_offset, committed);
        let got = store
            .get_messages(Reader::Consumer, "T", 0, committed, 10, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(view(&got.messages[0]).body, b"after the crash");
        store.close().await.unwrap();
    });
}

#[test]
fn async_flush_serves_what_is_stored_at_once() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(43), SimClock::new(1_000), small_config());
        cfg.flush_disk_type = FlushDiskType::AsyncFlush;
        cfg.flush_interval_commitlog_ms = 60_000;
        let store = open(&sim, &clock, &cfg).await;
        let (rec, slots) = record("T", 0, b"in memory", "");
        store.put(rec, slots, true).await.unwrap();
        assert_eq!(store.readable_max_offset("T", 0), 1);
        let got = store
            .get_messages(Reader::Consumer, "T", 0, 0, 10, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(view(&got.messages[0]).body, b"in memory");
        assert!(within(0, store.wait_readable("T", 0, 0)).await.is_some());
        store.close().await.unwrap();
    });
}
