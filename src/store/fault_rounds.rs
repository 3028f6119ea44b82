//! The chaos suite's storage faults (issue 16), on `SimStorage`: rounds of a slow disk
//! (every commitlog fdatasync delayed) with producers and a long-polling consumer running,
//! then EIO on every commitlog read, then the faults cleared and the power cut. Checked each
//! round: a read that meets EIO fails with the error (never a short or wrong answer) while
//! puts go on; every acknowledged record is at its queue offset after the crash, no offset
//! twice; every record the consumer was served is still there (it was durable when served).
//!
//! `cargo test --lib store::fault_rounds` runs 3 rounds; the long form prints the chaos
//! table's row: `CHAOS_SIM_ROUNDS=20 cargo test --lib store::fault_rounds -- --nocapture`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::test_support::run;
use super::tests::{body_of, open, record, small_config, view, ROOT};
use super::*;
use crate::testing::{SimClock, SimFaults, SimStorage};

const PRODUCERS: usize = 4;
const PER_PRODUCER: usize = 30;
const BODY: usize = 1_500;

/// One round's counts.
#[derive(Default)]
struct Counts {
    acked: usize,
    lost: usize,
    duplicated: usize,
    /// Served to the consumer, then not there after the crash.
    erased: usize,
}

/// One round; returns its counts and the time from clearing the faults to a good read.
async fn round(seed: u64) -> (Counts, Duration) {
    let sim = SimStorage::new(seed);
    let (clock, mut cfg) = (SimClock::new(1_000), small_config());
    cfg.hot_tail_bytes = 4096; // most reads go to the (faulty) device
    let store = open(&sim, &clock, &cfg).await;
    let commitlog = Some(PathBuf::from(ROOT).join("commitlog"));
    let delay = Duration::from_millis(5 + seed % 40);
    sim.set_faults(SimFaults {
        fsync_delay: delay,
        path_prefix: commitlog.clone(),
        ..SimFaults::default()
    });
    let acked: Rc<RefCell<BTreeMap<i64, usize>>> = Rc::default();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (store, acked) = (store.clone(), acked.clone());
            glommio::spawn_local(async move {
                for n in 0..PER_PRODUCER {
                    let id = n * PRODUCERS + p;
                    let (rec, slots) = record("T", 0, &body_of(id, BODY), "");
                    let r = store.put(rec, slots, true).await.unwrap();
                    if r.status == PutStatus::PutOk {
                        acked.borrow_mut().insert(r.queue_offset, id);
                    }
                }
            })
        })
        .collect();
    // The consumer: long-polls the queue and keeps what it was served.
    let served: Rc<RefCell<BTreeMap<i64, Vec<u8>>>> = Rc::default();
    let total = (PRODUCERS * PER_PRODUCER) as i64;
    let consumer = glommio::spawn_local({
        let (store, served) = (store.clone(), served.clone());
        async move {
            let mut next = 0;
            while next < total {
                store.wait_readable("T", 0, next as u64).await;
                let got = store
                    .get_messages(Reader::Consumer, "T", 0, next, 8, 1 << 20, None)
                    .await
                    .unwrap();
                for m in &got.messages {
                    let v = view(m);
                    served.borrow_mut().insert(v.queue_offset, v.body.to_vec());
                }
                next = got.next_begin_offset;
            }
        }
    });
    for p in producers {
        p.await;
    }
    consumer.await;
    // EIO on every commitlog read: reads fail with it, puts go on.
    sim.set_faults(SimFaults {
        read_errno: Some(libc::EIO),
        path_prefix: commitlog,
        ..SimFaults::default()
    });
    let failed = store
        .get_messages(Reader::Consumer, "T", 0, 0, 32, 1 << 20, None)
        .await;
    assert!(
        failed.is_err(),
        "seed {seed}: a read meeting EIO answered {failed:?}"
    );
    let (rec, slots) = record("T", 0, b"during EIO", "");
    let during = store.put(rec, slots, true).await.unwrap();
    assert_eq!(during.status, PutStatus::PutOk, "seed {seed}");
    sim.set_faults(SimFaults::default());
    let cleared = Instant::now();
    store
        .get_messages(Reader::Consumer, "T", 0, 0, 32, 1 << 20, None)
        .await
        .unwrap();
    let recovery = cleared.elapsed();
    drop(store);
    sim.crash();
    let store = open(&sim, &clock, &cfg).await;
    let mut stored: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    let mut next = 0;
    let mut counts = Counts::default();
    while next < store.max_offset("T", 0) {
        let got = store
            .get_messages(Reader::Consumer, "T", 0, next, 32, 1 << 20, None)
            .await
            .unwrap();
        for m in &got.messages {
            let v = view(m);
            if stored.insert(v.queue_offset, v.body.to_vec()).is_some() {
                counts.duplicated += 1;
            }
        }
        next = got.next_begin_offset;
    }
    for (offset, id) in acked.borrow().iter() {
        if stored.get(offset) != Some(&body_of(*id, BODY)) {
            counts.lost += 1;
        }
    }
    if stored.get(&during.queue_offset).map(Vec::as_slice) != Some(b"during EIO".as_slice()) {
        counts.lost += 1;
    }
    for (offset, body) in served.borrow().iter() {
        if stored.get(offset) != Some(body) {
            counts.erased += 1;
        }
    }
    store.close().await.unwrap();
    counts.acked = acked.borrow().len() + 1;
    (counts, recovery)
}

#[test]
fn slow_disk_and_eio_on_reads_lose_nothing_and_serve_nothing_erasable() {
    let rounds: u64 = std::env::var("CHAOS_SIM_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut total = Counts::default();
    let mut recovery = Vec::new();
    for seed in 0..rounds {
        let (c, r) = run(round(seed));
        total.acked += c.acked;
        total.lost += c.lost;
        total.duplicated += c.duplicated;
        total.erased += c.erased;
        recovery.push(r);
    }
    recovery.sort();
    let us = |d: &Duration| d.as_micros();
    eprintln!(
        "| slow disk (fsync 5–44 ms) + EIO on reads, SimStorage | {rounds} | {} | {} | {} | {} \
         | {} / {} / {} µs |",
        total.acked,
        total.lost,
        total.duplicated,
        total.erased,
        us(&recovery[0]),
        us(&recovery[recovery.len() / 2]),
        us(&recovery[recovery.len() - 1]),
    );
    assert_eq!((total.lost, total.duplicated, total.erased), (0, 0, 0));
}
