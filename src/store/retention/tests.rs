//! Retention on the whole store, on `SimStorage` with a `SimClock` (file ages) and an
//! injected disk usage, and once on a real directory: expired segments go and queues, index
//! and readers follow; the newest segment stays; the hour, space and manual rules; forced
//! cleaning; the disk-full guard; the background task; reopen and crash after deleting.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use super::policy::Trigger;
use super::*;
use crate::store::test_support::run;
use crate::store::tests::{
    body_of, open, props, put_n, read_all, record, small_config, view, ROOT,
};
use crate::store::{
    split_physical, Clock, DmaStorage, GetStatus, PutStatus, Reader, StoreConfig, SystemClock,
};
use crate::testing::{SimClock, SimStorage};

const HOUR_MS: i64 = 3_600_000;
const T0_MS: i64 = 1_700_000_000_000;

/// Small segments, no deleteWhen hour, no background pass during a test, no pauses.
fn config() -> StoreConfig {
    let mut cfg = small_config();
    cfg.retention.delete_when_hours = Vec::new();
    cfg.retention.clean_resource_interval_ms = 3_600_000;
    cfg.retention.delete_commitlog_files_interval_ms = 0;
    cfg
}

fn sim_at(seed: u64, now_ms: i64) -> (SimStorage, SimClock) {
    let (sim, clock) = (SimStorage::new(seed), SimClock::new(now_ms));
    sim.set_clock(&clock);
    (sim, clock)
}

/// Puts messages `ids` of `topic` queue 0 with keys `key-<id>`; returns physical offsets.
async fn put_keyed(
    store: &MessageStore<SimStorage>,
    topic: &str,
    ids: std::ops::Range<usize>,
) -> Vec<i64> {
    let mut offsets = Vec::new();
    for i in ids {
        let p = props("t", &format!("key-{i}"), &format!("UNIQ-{i}"));
        let (rec, slots) = record(topic, 0, &body_of(i, 100), &p);
        let r = store.put(rec, slots, true).await.unwrap();
        assert_eq!(r.queue_offset, i as i64);
        offsets.push(r.physical_offset);
    }
    offsets
}

/// Polls `done` every 5 ms for at most 2 s (background passes run when the executor lets
/// them); whether it came true.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if done() {
            return true;
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    done()
}

fn segment_starts(sim: &SimStorage) -> Vec<u64> {
    let dir = Path::new(ROOT).join("commitlog/0");
    sim.paths()
        .iter()
        .filter(|p| p.parent() == Some(&dir))
        .filter_map(|p| p.file_name()?.to_str()?.parse().ok())
        .collect()
}

fn queue_files(sim: &SimStorage, topic: &str) -> Vec<u64> {
    let dir = Path::new(ROOT).join("consumequeue/0").join(topic).join("0");
    sim.paths()
        .iter()
        .filter(|p| p.parent() == Some(&dir))
        .filter_map(|p| p.file_name()?.to_str()?.parse().ok())
        .collect()
}

fn index_files(sim: &SimStorage) -> usize {
    let dir = PathBuf::from(ROOT).join("index/0");
    sim.paths()
        .iter()
        .filter(|p| p.parent() == Some(&dir))
        .count()
}

fn seg_of(cfg: &StoreConfig, physical: i64) -> u64 {
    let pos = split_physical(physical).1;
    pos - pos % cfg.segment_bytes
}

/// The first queue offset whose record lies at or past `min` (a commitlog offset).
fn first_at_or_after(offsets: &[i64], min: u64) -> i64 {
    offsets.iter().position(|o| *o as u64 >= min).unwrap() as i64
}

#[test]
fn expired_segments_go_and_queues_index_and_readers_follow_also_after_reopen_and_crash() {
    // Phase A at T0, phase B 48 hours later; the pass runs at T0 + 78 h in a deleteWhen hour.
    let pass_ms = T0_MS + 78 * HOUR_MS;
    let (sim, clock) = sim_at(31, T0_MS);
    let mut cfg = config();
    cfg.retention.delete_when_hours = vec![local_hour(pass_ms)];
    // The test flushes queues and seals index maps itself (the background task would race it).
    cfg.flush_interval_consume_queue_ms = 3_600_000;
    cfg.flush_consume_queue_thorough_interval_ms = 3_600_000;
    run(async move {
        let store = open(&sim, &clock, &cfg).await;
        put_n(&store, "U", 5, 100).await;
        let mut t = put_keyed(&store, "T", 0..1500).await;
        clock.advance(48 * HOUR_MS);
        t.extend(put_keyed(&store, "T", 1500..2500).await);
        clock.set(pass_ms);
        let before = segment_starts(&sim);
        // Segments before the one holding phase A's last record were last written at T0.
        let keep_from = seg_of(&cfg, t[1499]);
        let expired: Vec<u64> = before.iter().copied().filter(|s| *s < keep_from).collect();
        assert!(expired.len() >= 3, "{before:?}");
        // Queues wholly on disk (retention only removes those) and full index maps sealed into
        // files, which the pass removes; waiting for the background task left the sealing
        // racing the pass.
        store.flush_queues_and_index(1).await.unwrap();
        let index_before = index_files(&sim);
        let report = store.clean_expired_files().await.unwrap();
        assert_eq!(report.trigger, Some(Trigger::Hour));
        let deleted: Vec<u64> = report.deleted_segments.iter().map(|p| *p as u64).collect();
        assert_eq!(deleted, expired);
        assert_eq!(report.min_physical_offset, keep_from as i64);
        assert!(!report.disk_full);
        let after = segment_starts(&sim);
        assert_eq!(after, before[expired.len()..].to_vec(), "the others stay");
        assert!(report.deleted_index_files > 0);
        assert_eq!(index_files(&sim), index_before - report.deleted_index_files);
        let t_min = first_at_or_after(&t, keep_from);
        check_after_deletion(&store, &sim, t_min, &t).await;
        // A second pass finds nothing more to delete.
        let again = store.clean_expired_files().await.unwrap();
        assert_eq!(
            (again.deleted_segments.len(), again.deleted_queue_files),
            (0, 0)
        );
        // New writes go on at the next queue offsets.
        put_keyed(&store, "T", 2500..2510).await;
        store.close().await.unwrap();
        let store = open(&sim, &clock, &cfg).await;
        assert!(!store.was_unclean_start());
        assert_eq!(store.min_physical_offset(), keep_from as i64);
        check_after_deletion(&store, &sim, t_min, &t).await;
        assert_eq!(store.max_offset("T", 0), 2510);
        drop(store);
        sim.crash();
        let store = open(&sim, &clock, &cfg).await;
        assert!(store.was_unclean_start());
        check_after_deletion(&store, &sim, t_min, &t).await;
        store.close().await.unwrap();
    });
}

/// What readers see once everything below `t_min` of queue T (and all of U) is gone.
async fn check_after_deletion(
    store: &MessageStore<SimStorage>,
    sim: &SimStorage,
    t_min: i64,
    t: &[i64],
) {
    assert_eq!(store.min_offset("T", 0), t_min);
    assert_eq!((store.min_offset("U", 0), store.max_offset("U", 0)), (5, 5));
    let r = store
        .get_messages(Reader::Broker, "U", 0, 0, 32, 1 << 20, None)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.next_begin_offset),
        (GetStatus::OffsetTooSmall, 5)
    );
    for offset in [0, t_min - 1] {
        let r = store
            .get_messages(Reader::Broker, "T", 0, offset, 32, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.next_begin_offset),
            (GetStatus::OffsetTooSmall, t_min)
        );
        assert_eq!(r.min_offset, t_min);
    }
    let r = store
        .get_messages(Reader::Broker, "T", 0, t_min, 4, 1 << 20, None)
        .await
        .unwrap();
    assert_eq!(r.status, GetStatus::Found);
    assert_eq!(view(&r.messages[0]).queue_offset, t_min);
    assert_eq!(
        read_all(store, "T").await.len() as i64,
        store.max_offset("T", 0) - t_min
    );
    // Queue files wholly below the new minimum are gone (20 KiB files of 1024 units).
    let files = queue_files(sim, "T");
    assert!(t_min >= 1024, "the test must empty a queue file");
    assert!(
        files.iter().all(|f| (f + 20 * 1024) / 20 > t_min as u64),
        "{files:?}"
    );
    assert_eq!(queue_files(sim, "U").len(), 1, "a queue's last file stays");
    // Deleted records are found neither by key nor by offset; kept ones are.
    let key = |i: i64| format!("key-{i}");
    for gone in [0, t_min - 1] {
        let hits = store
            .query_by_key("T", &key(gone), 10, 0, i64::MAX)
            .await
            .unwrap();
        assert!(hits.is_empty(), "record {gone} was deleted");
        let err = store
            .read_by_physical_offset(t[gone as usize])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::OffsetOutOfRange { .. }), "{err}");
    }
    let hits = store
        .query_by_key("T", &key(t_min), 10, 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(view(&hits[0]).queue_offset, t_min);
    assert_eq!(store.offset_by_time("T", 0, 0).await.unwrap(), t_min);
    let earliest = store.earliest_store_time("T", 0).await.unwrap();
    assert!(earliest.is_some());
}

#[test]
fn pulls_racing_the_deletion_see_message_was_removing_and_open_repairs_the_queues() {
    pulls_racing_the_deletion(false);
}

#[test]
fn open_repairs_the_queues_after_a_deletion_also_when_they_were_flushed_and_checkpointed() {
    pulls_racing_the_deletion(true);
}

/// Segments deleted, queues not yet cleaned, then a crash: with the queues still unflushed
/// (recovery rebuilds them from the checkpoint's safe offset) or flushed and checkpointed
/// (recovery keeps them); either way open corrects them to the commitlog's minimum. The
/// background task never flushes queues here, so which case it is does not depend on timing.
fn pulls_racing_the_deletion(flushed_at_crash: bool) {
    let (sim, clock) = sim_at(32, T0_MS);
    let mut cfg = config();
    cfg.flush_interval_consume_queue_ms = 3_600_000;
    cfg.flush_consume_queue_thorough_interval_ms = 3_600_000;
    run(async move {
        let store = open(&sim, &clock, &cfg).await;
        let t = put_keyed(&store, "T", 0..1500).await;
        let doomed: Vec<u64> = segment_starts(&sim).into_iter().take(4).collect();
        // Segments go but the queues are not yet cleaned (a pass cut short by a crash).
        store.delete_segments(&doomed, false).await.unwrap();
        let clog_min = doomed[3] + cfg.segment_bytes;
        let first_kept = first_at_or_after(&t, clog_min);
        assert!(
            first_kept > 800,
            "a pull's whole scan window must be removed"
        );
        assert_eq!(store.min_physical_offset(), clog_min as i64);
        assert_eq!(store.min_offset("T", 0), 0, "not corrected yet");
        let r = store
            .get_messages(Reader::Broker, "T", 0, 0, 16, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(r.status, GetStatus::MessageWasRemoving);
        assert_eq!(r.next_begin_offset, 800, "the scanned units are skipped");
        assert!(r.messages.is_empty());
        // A pull whose batch straddles the new minimum gets the records that remain.
        let r = store
            .get_messages(Reader::Broker, "T", 0, first_kept - 2, 4, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(r.status, GetStatus::Found);
        let got: Vec<i64> = r.messages.iter().map(|m| view(m).queue_offset).collect();
        assert_eq!(got, (first_kept..first_kept + 4).collect::<Vec<_>>());
        assert_eq!(r.next_begin_offset, first_kept + 4);
        assert_eq!(store.store_time_at("T", 0, 0).await.unwrap(), None);
        let err = store.read_by_physical_offset(t[0]).await.unwrap_err();
        assert!(matches!(err, StoreError::OffsetOutOfRange { .. }), "{err}");
        if flushed_at_crash {
            store.write_checkpoint().await.unwrap();
        }
        let dirty: u64 = store
            .inner
            .queues
            .all()
            .iter()
            .map(|q| q.dirty_bytes())
            .sum();
        assert_eq!(
            dirty == 0,
            flushed_at_crash,
            "{dirty} queue bytes unflushed"
        );
        drop(store);
        sim.crash();
        let store = open(&sim, &clock, &cfg).await;
        assert_eq!(store.min_offset("T", 0), first_kept, "corrected at open");
        assert_eq!(
            queue_files(&sim, "T").first(),
            Some(&(1024 * 20)),
            "file 0 removed"
        );
        assert_eq!(read_all(&store, "T").await.len() as i64, 1500 - first_kept);
        store.close().await.unwrap();
    });
}

#[test]
fn the_newest_segment_stays_when_everything_expired_and_writes_go_on() {
    let (sim, clock) = sim_at(33, T0_MS);
    let cfg = config();
    run(async move {
        let store = open(&sim, &clock, &cfg).await;
        let t = put_keyed(&store, "T", 0..1000).await;
        clock.advance(10_000 * HOUR_MS);
        let active = seg_of(&cfg, store.max_physical_offset());
        // The trigger wakes the background task, which runs the pass.
        store.request_delete_expired_files();
        assert!(eventually(|| store.min_physical_offset() == active as i64).await);
        let left = segment_starts(&sim);
        assert!(
            left.contains(&active) && left.iter().all(|s| *s >= active),
            "{left:?}"
        );
        let min = first_at_or_after(&t, active);
        assert_eq!(store.min_offset("T", 0), min);
        let (rec, slots) = record("T", 0, b"after", "");
        let r = store.put(rec, slots, true).await.unwrap();
        assert_eq!((r.status, r.queue_offset), (PutStatus::PutOk, 1000));
        let all = read_all(&store, "T").await;
        assert_eq!(all.len() as i64, 1001 - min);
        assert_eq!(view(all.last().unwrap()).body, b"after");
        // The trigger lasts 20 passes, then deleting waits for an hour, space or a trigger.
        assert_eq!(store.inner.retention.manual_passes.get(), 19);
        for _ in 1..20 {
            let r = store.clean_expired_files().await.unwrap();
            assert_eq!(
                (r.trigger, r.deleted_segments.len()),
                (Some(Trigger::Manual), 0)
            );
        }
        assert_eq!(store.clean_expired_files().await.unwrap().trigger, None);
        store.close().await.unwrap();
    });
}

#[test]
fn outside_delete_when_only_space_pressure_or_a_trigger_deletes() {
    let (sim, clock) = sim_at(34, T0_MS);
    let cfg = config();
    run(async move {
        let store = open(&sim, &clock, &cfg).await;
        let t = put_keyed(&store, "T", 0..800).await;
        clock.advance(100 * HOUR_MS);
        put_keyed(&store, "T", 800..1100).await;
        // Segments from the one holding record 799 on were written just now.
        let young_from = seg_of(&cfg, t[799]);
        let report = store.clean_expired_files().await.unwrap();
        assert_eq!((report.trigger, report.deleted_segments.len()), (None, 0));
        sim.set_disk_usage(DiskUsage::percent(75));
        assert_eq!(store.clean_expired_files().await.unwrap().trigger, None);
        sim.set_disk_usage(DiskUsage::percent(80));
        let report = store.clean_expired_files().await.unwrap();
        assert_eq!(report.trigger, Some(Trigger::Space));
        assert!(!report.deleted_segments.is_empty());
        let deleted: Vec<u64> = report.deleted_segments.iter().map(|p| *p as u64).collect();
        let expected: Vec<u64> = (0..young_from / cfg.segment_bytes)
            .map(|i| i * cfg.segment_bytes)
            .collect();
        assert_eq!(deleted, expected, "only expired segments go under 85 %");
        assert_eq!(report.usage, Some(DiskUsage::percent(80)));
        store.close().await.unwrap();
    });
}

#[test]
fn above_85_percent_young_segments_go_too_ten_per_pass() {
    let (sim, clock) = sim_at(35, T0_MS);
    let cfg = config();
    run(async move {
        let store = open(&sim, &clock, &cfg).await;
        put_keyed(&store, "T", 0..4000).await;
        let active = seg_of(&cfg, store.max_physical_offset());
        let older = segment_starts(&sim).iter().filter(|s| **s < active).count();
        assert!(older > 10, "{older} segments before the active one");
        sim.set_disk_usage(DiskUsage::percent(80));
        let r = store.clean_expired_files().await.unwrap();
        assert_eq!(
            (r.trigger, r.deleted_segments.len()),
            (Some(Trigger::Space), 0)
        );
        sim.set_disk_usage(DiskUsage::percent(87));
        let r = store.clean_expired_files().await.unwrap();
        assert_eq!(r.deleted_segments.len(), 10);
        assert!(!r.disk_full);
        let r = store.clean_expired_files().await.unwrap();
        assert_eq!(r.deleted_segments.len(), older - 10);
        assert_eq!(store.min_physical_offset(), active as i64);
        store.close().await.unwrap();
    });
}

#[test]
fn a_full_disk_refuses_puts_with_a_clear_error_until_usage_drops() {
    let (sim, clock) = sim_at(36, T0_MS);
    let mut cfg = config();
    cfg.retention.clean_file_forcibly_enable = false;
    run(async move {
        let store = open(&sim, &clock, &cfg).await;
        put_keyed(&store, "T", 0..10).await;
        sim.set_disk_usage(DiskUsage::percent(95));
        let r = store.clean_expired_files().await.unwrap();
        assert!(r.disk_full && store.is_disk_full());
        let (rec, slots) = record("T", 0, b"refused", "");
        let err = store.put(rec, slots, true).await.unwrap_err();
        match &err {
            StoreError::DiskFull {
                used_percent,
                full_percent,
                resume_percent,
                ..
            } => assert_eq!(
                (*used_percent, *full_percent, *resume_percent),
                (95, 90, 85)
            ),
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("95% full") && text.contains("at most 85%"),
            "{text}"
        );
        let batch = vec![record("T", 0, b"a", ""), record("T", 0, b"b", "")];
        let err = store.put_batch(batch, true).await.unwrap_err();
        assert!(matches!(err, StoreError::DiskFull { .. }));
        assert_eq!(store.max_offset("T", 0), 10, "nothing refused was stored");
        assert_eq!(read_all(&store, "T").await.len(), 10, "reads go on");
        // Between 85 % and 90 % the disk stays full; at 85 % it is writable again.
        sim.set_disk_usage(DiskUsage::percent(88));
        assert!(store.clean_expired_files().await.unwrap().disk_full);
        let (rec, slots) = record("T", 0, b"still refused", "");
        assert!(store.put(rec, slots, true).await.is_err());
        sim.set_disk_usage(DiskUsage::percent(85));
        assert!(!store.clean_expired_files().await.unwrap().disk_full);
        let (rec, slots) = record("T", 0, b"accepted", "");
        assert_eq!(store.put(rec, slots, true).await.unwrap().queue_offset, 10);
        // Coming from below, 88 % is not full.
        sim.set_disk_usage(DiskUsage::percent(88));
        assert!(!store.clean_expired_files().await.unwrap().disk_full);
        let (rec, slots) = record("T", 0, b"accepted too", "");
        assert!(store.put(rec, slots, true).await.is_ok());
        store.close().await.unwrap();
    });
}

#[test]
fn the_background_task_runs_on_its_timer_and_wakes_on_a_manual_trigger() {
    let (sim, clock) = sim_at(37, T0_MS);
    let mut cfg = config();
    cfg.retention.clean_resource_interval_ms = 10;
    cfg.retention.delete_commitlog_files_interval_ms = 1;
    run(async move {
        let store = open(&sim, &clock, &cfg).await;
        put_keyed(&store, "T", 0..900).await;
        clock.advance(100 * HOUR_MS);
        sim.set_disk_usage(DiskUsage::percent(95));
        let active = seg_of(&cfg, store.max_physical_offset()) as i64;
        let cleaned = || store.is_disk_full() && store.min_physical_offset() == active;
        assert!(
            eventually(cleaned).await,
            "a timer pass marked the disk full and cleaned"
        );
        sim.set_disk_usage(DiskUsage::percent(20));
        assert!(eventually(|| !store.is_disk_full()).await);
        store.close().await.unwrap();

        // With an hour-long interval only the manual trigger runs a pass.
        let mut slow = cfg.clone();
        slow.retention.clean_resource_interval_ms = 3_600_000;
        let store = open(&sim, &clock, &slow).await;
        put_keyed(&store, "T", 900..1800).await;
        clock.advance(100 * HOUR_MS);
        let min = store.min_physical_offset();
        glommio::timer::sleep(Duration::from_millis(30)).await;
        assert_eq!(store.min_physical_offset(), min);
        store.request_delete_expired_files();
        let woke = eventually(|| store.min_physical_offset() > min).await;
        assert!(woke, "the trigger woke the task");
        store.close().await.unwrap();
    });
}

#[test]
fn bad_retention_settings_refuse_to_open() {
    let (sim, clock) = sim_at(38, T0_MS);
    let mut cfg = config();
    cfg.retention.delete_when_hours = vec![25];
    run(async move {
        let err = MessageStore::open(sim.clone(), Rc::new(clock.clone()), cfg)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Config { .. }), "{err}");
    });
}

#[test]
fn the_local_hour_follows_the_time_zone_offset() {
    for now_ms in [0, T0_MS, T0_MS + 5 * HOUR_MS + 59 * 60_000, -HOUR_MS] {
        let secs: libc::time_t = now_ms.div_euclid(1000);
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        assert!(!unsafe { libc::localtime_r(&secs, &mut tm) }.is_null());
        let expected = (secs + tm.tm_gmtoff).rem_euclid(86_400) / 3_600;
        assert_eq!(i64::from(local_hour(now_ms)), expected, "at {now_ms}");
    }
}

#[test]
fn real_disk_segments_are_deleted_by_file_age_and_the_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    run(async move {
        let mut cfg = config();
        cfg.root_dir = root.clone();
        cfg.commitlog_dir = root.join("commitlog");
        cfg.retention.file_reserved_time_hours = 0;
        cfg.retention.delete_when_hours = (0..24).collect();
        // Whatever this machine's disk holds, never force-clean or refuse writes.
        cfg.retention.disk_max_used_space_ratio_percent = 100;
        cfg.retention.clean_forcibly_ratio_percent = 100;
        cfg.retention.disk_full_ratio_percent = 100;
        let clock: Rc<dyn Clock> = Rc::new(SystemClock);
        let store = MessageStore::open(DmaStorage, clock.clone(), cfg.clone())
            .await
            .unwrap();
        for i in 0..120 {
            let (rec, slots) = record("T", 0, &body_of(i, 2_000), &props("a", "k", "u"));
            store.put(rec, slots, true).await.unwrap();
        }
        let active = seg_of(&cfg, store.max_physical_offset());
        assert!(active >= 2 * cfg.segment_bytes);
        let report = store.clean_expired_files().await.unwrap();
        assert_eq!(report.trigger, Some(Trigger::Hour));
        let usage = report.usage.unwrap();
        assert!(usage.total_bytes > 0 && usage.used_bytes <= usage.total_bytes);
        assert_eq!(report.min_physical_offset, active as i64);
        let seg_dir = root.join("commitlog/0");
        let first = seg_dir.join(format!("{:020}", 0));
        assert!(!first.exists(), "the oldest segment file is gone");
        assert!(seg_dir.join(format!("{active:020}")).exists());
        store.close().await.unwrap();
        let store = MessageStore::open(DmaStorage, clock, cfg).await.unwrap();
        assert_eq!(store.min_physical_offset(), active as i64);
        let min = store.min_offset("T", 0);
        let r = store
            .get_messages(Reader::Broker, "T", 0, min, 200, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(r.messages.len() as i64, 120 - min);
        store.close().await.unwrap();
    });
}
