//! The SYNC_FLUSH pipeline on `SimStorage` with slow writes and fdatasyncs: appends that
//! arrive during an fdatasync are written at once (beside it) and acknowledged by the next
//! round, never by the round that was running when their write completed; with O_DSYNC
//! segment files (the default), appends that arrive during a write go into the next write
//! or, once they fill a page, into a second write beside it, and are acknowledged when every
//! byte up to theirs is durable, with no fdatasync; and in both modes a crash at any moment
//! loses nothing that was acknowledged, also with writes completing out of order.

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use crate::message::record::RecordView;
use crate::store::commitlog::split_physical;
use crate::store::test_support::run;
use crate::store::tests::{
    body_of, open, read_all, record, segment_path, small_config, view, ROOT,
};
use crate::store::{MessageStore, PutResult, PutStatus};
use crate::testing::{SimClock, SimFaults, SimStorage};

fn slow_commitlog(write_ms: u64, fsync_ms: u64) -> SimFaults {
    SimFaults {
        write_delay: Duration::from_millis(write_ms),
        fsync_delay: Duration::from_millis(fsync_ms),
        path_prefix: Some(PathBuf::from(ROOT).join("commitlog")),
        ..SimFaults::default()
    }
}

/// Asserts that the record of message `i` acknowledged as `put` is durable: a crash now
/// would leave it in its segment file.
fn assert_durable(sim: &SimStorage, cfg_segment: u64, put: &PutResult, i: usize, len: usize) {
    let (_, pos) = split_physical(put.physical_offset);
    let seg = pos - pos % cfg_segment;
    let durable = sim.durable_bytes(&segment_path(seg)).unwrap_or_default();
    let at = (pos - seg) as usize;
    let view = durable
        .get(at..)
        .and_then(|rest| RecordView::parse(rest).ok())
        .unwrap_or_else(|| panic!("message {i} acknowledged but not durable at {pos}"));
    assert_eq!(
        view.body,
        &body_of(i, len)[..],
        "message {i} acknowledged, not durable"
    );
}

/// Spawns a SYNC_FLUSH put of message `i`; the cell is set when it is acknowledged.
fn spawn_put(
    store: &MessageStore<SimStorage>,
    sim: &SimStorage,
    i: usize,
) -> (glommio::task::JoinHandle<()>, Rc<Cell<bool>>) {
    spawn_put_of(store, sim, i, small_config().segment_bytes)
}

fn spawn_put_of(
    store: &MessageStore<SimStorage>,
    sim: &SimStorage,
    i: usize,
    segment: u64,
) -> (glommio::task::JoinHandle<()>, Rc<Cell<bool>>) {
    let (store, sim, done) = (store.clone(), sim.clone(), Rc::new(Cell::new(false)));
    let flag = Rc::clone(&done);
    let task = glommio::spawn_local(async move {
        let (rec, slots) = record("T", 0, &body_of(i, 100), "");
        let put = store.put(rec, slots, true).await.unwrap();
        assert_eq!(put.status, PutStatus::PutOk);
        assert_durable(&sim, segment, &put, i, 100);
        flag.set(true);
    })
    .detach();
    (task, done)
}

#[test]
fn an_append_during_an_fdatasync_is_written_beside_it_and_acknowledged_by_the_next_round() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(31), SimClock::new(1_000), small_config());
        cfg.sync_flush_dsync = false;
        let store = open(&sim, &clock, &cfg).await;
        // The first segment is created (and its fdatasync done) before the disk slows.
        let (first, _) = spawn_put(&store, &sim, 0);
        assert!(first.await.is_some());
        sim.set_faults(slow_commitlog(2, 40));
        let (a, a_done) = spawn_put(&store, &sim, 1);
        // A's write (2 ms) is done and its fdatasync (40 ms) runs.
        glommio::timer::sleep(Duration::from_millis(10)).await;
        let (writes, fsyncs) = (sim.write_count(), sim.fsync_count());
        let (b, b_done) = spawn_put(&store, &sim, 2);
        glommio::timer::sleep(Duration::from_millis(10)).await;
        assert!(
            sim.write_count() > writes,
            "B was not written while A's fdatasync ran"
        );
        assert_eq!(sim.fsync_count(), fsyncs, "A's fdatasync still runs");
        assert!(!a_done.get() && !b_done.get());
        assert!(a.await.is_some());
        assert!(a_done.get());
        assert!(
            !b_done.get(),
            "B was acknowledged by an fdatasync that began before B was written"
        );
        assert_eq!(sim.fsync_count(), fsyncs + 1);
        assert!(b.await.is_some());
        // The very next round covered B: no write had to come first.
        assert_eq!(sim.fsync_count(), fsyncs + 2);
        sim.set_faults(SimFaults::default());
        let all = read_all(&store, "T").await;
        assert_eq!(view(&all[2]).body, &body_of(2, 100)[..]);
        store.close().await.unwrap();
    });
}

#[test]
fn with_dsync_files_an_append_during_a_write_goes_into_the_next_write_without_fdatasync() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(32), SimClock::new(1_000), small_config());
        assert!(cfg.sync_flush_dsync, "O_DSYNC is the default");
        let store = open(&sim, &clock, &cfg).await;
        let (first, _) = spawn_put(&store, &sim, 0);
        assert!(first.await.is_some());
        sim.set_faults(slow_commitlog(40, 1000));
        let (writes, fsyncs) = (sim.write_count(), sim.fsync_count());
        let (a, a_done) = spawn_put(&store, &sim, 1);
        // A's write (40 ms) runs.
        glommio::timer::sleep(Duration::from_millis(10)).await;
        let (b, b_done) = spawn_put(&store, &sim, 2);
        glommio::timer::sleep(Duration::from_millis(10)).await;
        assert_eq!(sim.write_count(), writes, "one write at a time");
        assert!(!a_done.get() && !b_done.get());
        assert!(a.await.is_some());
        assert!(
            !b_done.get(),
            "B was acknowledged by a write that began before B was appended"
        );
        assert!(b.await.is_some());
        // Two writes (and perhaps zeros ahead), each its own round; not one fdatasync (each
        // would have taken a second).
        assert!(sim.write_count() >= writes + 2);
        assert_eq!(
            sim.fsync_count(),
            fsyncs,
            "an fdatasync ran for a dsync round"
        );
        sim.set_faults(SimFaults::default());
        let all = read_all(&store, "T").await;
        assert_eq!(view(&all[2]).body, &body_of(2, 100)[..]);
        store.close().await.unwrap();
    });
}

#[test]
fn with_dsync_files_the_next_write_is_at_the_device_before_the_puts_of_the_last_one_resume() {
    run(async {
        let (sim, clock, cfg) = (SimStorage::new(35), SimClock::new(1_000), small_config());
        assert_eq!(
            cfg.dsync_writes_in_flight, 1,
            "one write at a time by default"
        );
        let store = open(&sim, &clock, &cfg).await;
        let (first, _) = spawn_put(&store, &sim, 0);
        assert!(first.await.is_some());
        sim.set_faults(slow_commitlog(40, 1000));
        // A's put notes how many writes are at the device when it resumes, acknowledged.
        let at_ack = Rc::new(Cell::new(u64::MAX));
        let a = {
            let (store, sim, at_ack) = (store.clone(), sim.clone(), Rc::clone(&at_ack));
            glommio::spawn_local(async move {
                let (rec, slots) = record("T", 0, &body_of(1, 100), "");
                let put = store.put(rec, slots, true).await.unwrap();
                at_ack.set(sim.dsync_writes_in_flight());
                assert_eq!(put.status, PutStatus::PutOk);
                assert_durable(&sim, small_config().segment_bytes, &put, 1, 100);
            })
            .detach()
        };
        // A's write (40 ms) runs; B is appended meanwhile and waits for the next write.
        glommio::timer::sleep(Duration::from_millis(10)).await;
        let (b, b_done) = spawn_put(&store, &sim, 2);
        assert!(a.await.is_some());
        assert_eq!(
            at_ack.get(),
            1,
            "B's write was not at the device yet when A's put was answered"
        );
        assert!(!b_done.get(), "B acknowledged by A's write");
        assert!(b.await.is_some() && b_done.get());
        sim.set_faults(SimFaults::default());
        store.close().await.unwrap();
    });
}

#[test]
fn with_dsync_files_appends_are_written_and_acknowledged_while_zeros_ahead_are_written() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(33), SimClock::new(1_000), small_config());
        // Room for zeros ahead past the first chunk after the data.
        cfg.segment_bytes = 4 << 20;
        let store = open(&sim, &clock, &cfg).await;
        // Data writes (O_DSYNC handle) are quick; zeros ahead (a plain handle) take 1.5 s,
        // less than the puts' 2 s flush timeout, so a put held behind them would still
        // succeed, only after them.
        sim.set_faults(SimFaults {
            plain_write_delay: Some(Duration::from_millis(1_500)),
            path_prefix: Some(PathBuf::from(ROOT).join("commitlog")),
            ..SimFaults::default()
        });
        let log = &store.inner.commitlog.log;
        let (first, _) = spawn_put_of(&store, &sim, 0, cfg.segment_bytes);
        assert!(first.await.is_some());
        assert!(
            log.zeros_in_flight(),
            "the first write of a segment is followed by zeros ahead"
        );
        for i in 1..40 {
            let (put, done) = spawn_put_of(&store, &sim, i, cfg.segment_bytes);
            assert!(put.await.is_some());
            assert!(done.get());
            assert!(
                log.zeros_in_flight(),
                "put {i} waited for the zeros ahead before its own write"
            );
        }
        while log.zeros_in_flight() {
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        sim.set_faults(SimFaults::default());
        let all = read_all(&store, "T").await;
        assert_eq!(all.len(), 40);
        assert_eq!(view(&all[39]).body, &body_of(39, 100)[..]);
        store.close().await.unwrap();
    });
}

#[test]
fn with_dsync_files_appends_filling_pages_are_written_beside_a_write_in_flight() {
    run(async {
        let (sim, clock, mut cfg) = (SimStorage::new(34), SimClock::new(1_000), small_config());
        cfg.dsync_writes_in_flight = 2;
        let store = open(&sim, &clock, &cfg).await;
        let (first, _) = spawn_put(&store, &sim, 0);
        assert!(first.await.is_some());
        // Writes take 30-50 ms and complete in any order.
        sim.set_faults(SimFaults {
            write_delay_jitter: Duration::from_millis(20),
            ..slow_commitlog(30, 1000)
        });
        let (a, a_done) = spawn_put(&store, &sim, 1);
        glommio::timer::sleep(Duration::from_millis(5)).await;
        // A's write is in flight; these fill pages past A's and go out beside it. Each put
        // checks, when acknowledged, that its record and every one before it is durable.
        let puts: Vec<_> = (2..60).map(|i| spawn_put(&store, &sim, i)).collect();
        assert!(a.await.is_some() && a_done.get());
        for (put, done) in puts {
            assert!(put.await.is_some());
            assert!(done.get());
        }
        assert_eq!(
            sim.max_dsync_writes_in_flight(),
            2,
            "no second write went out beside the first (or more than the limit did)"
        );
        sim.set_faults(SimFaults::default());
        let all = read_all(&store, "T").await;
        assert_eq!(all.len(), 60);
        for (i, rec) in all.iter().enumerate() {
            assert_eq!(view(rec).body, &body_of(i, 100)[..]);
        }
        store.close().await.unwrap();
    });
}

#[test]
fn a_crash_between_a_write_and_its_fdatasync_loses_nothing_acknowledged() {
    crash_loses_nothing_acknowledged(false, Duration::ZERO);
}

#[test]
fn a_crash_during_dsync_writes_loses_nothing_acknowledged() {
    crash_loses_nothing_acknowledged(true, Duration::ZERO);
}

/// Writes in flight at once complete in any order (a write of a page that landed after a
/// newer write of the same page would take bytes back that were acknowledged).
#[test]
fn a_crash_during_dsync_writes_completing_out_of_order_loses_nothing_acknowledged() {
    crash_loses_nothing_acknowledged(true, Duration::from_millis(3));
}

fn crash_loses_nothing_acknowledged(dsync: bool, jitter: Duration) {
    // Out of order: enough producers that appends fill pages while a write is in flight.
    let producers = if jitter.is_zero() { 6 } else { 24 };
    let mut most_in_flight = 0;
    for seed in 0..16u64 {
        most_in_flight = most_in_flight.max(run(async move {
            let sim = SimStorage::new(100 + seed);
            let (clock, mut cfg) = (SimClock::new(1_000), small_config());
            cfg.sync_flush_dsync = dsync;
            if !jitter.is_zero() {
                cfg.dsync_writes_in_flight = 2;
            }
            let store = open(&sim, &clock, &cfg).await;
            // Writes and fdatasyncs of different lengths, so that crashes land in every
            // phase: during a write, between a write and the round covering it, during a
            // round, with a write running beside a round, and (past the first few seeds)
            // after segments rolled over.
            sim.set_faults(SimFaults {
                write_delay_jitter: jitter,
                ..slow_commitlog(seed % 3, 1 + seed % 5)
            });
            let acked: Rc<RefCell<Vec<(i64, usize)>>> = Rc::default();
            let next = Rc::new(Cell::new(0usize));
            let segment = cfg.segment_bytes;
            let producers: Vec<_> = (0..producers)
                .map(|_| {
                    let (store, acked, next) = (store.clone(), acked.clone(), next.clone());
                    let sim = sim.clone();
                    glommio::spawn_local(async move {
                        loop {
                            let i = next.get();
                            next.set(i + 1);
                            if !jitter.is_zero() {
                                // Out of step, so that appends arrive while writes are in
                                // flight rather than all at once when one completes.
                                let pause = (i as u64 * 7919 + seed * 131) % 1_500;
                                glommio::timer::sleep(Duration::from_micros(pause)).await;
                            }
                            let (rec, slots) = record("T", 0, &body_of(i, 300), "");
                            match store.put(rec, slots, true).await {
                                Ok(put) if put.status == PutStatus::PutOk => {
                                    assert_durable(&sim, segment, &put, i, 300);
                                    acked.borrow_mut().push((put.queue_offset, i))
                                }
                                _ => break,
                            }
                        }
                    })
                    .detach()
                })
                .collect();
            // The power goes after a number of acknowledgements that depends on the seed, at
            // a moment that depends on it too.
            while acked.borrow().len() < 10 + seed as usize * 25 {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            glommio::timer::sleep(Duration::from_micros(seed * 397 % 3_000)).await;
            sim.crash();
            for p in producers {
                assert!(p.await.is_some());
            }
            drop(store);
            sim.set_faults(SimFaults::default());
            let acked = acked.take();
            let store = open(&sim, &clock, &cfg).await;
            let all = read_all(&store, "T").await;
            for (queue_offset, i) in acked {
                let stored = all.get(queue_offset as usize).unwrap_or_else(|| {
                    panic!("seed {seed}: acknowledged message {i} at {queue_offset} lost")
                });
                assert_eq!(view(stored).body, &body_of(i, 300)[..], "seed {seed}");
            }
            store.close().await.unwrap();
            sim.max_dsync_writes_in_flight()
        }));
    }
    if !jitter.is_zero() {
        assert!(
            most_in_flight >= 2,
            "never two writes in flight: nothing was reordered"
        );
    }
}
