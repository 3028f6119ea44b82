//! Commitlog append throughput on a real disk (a temp dir under /tmp; glommio drops O_DIRECT
//! on tmpfs): 128 B, 1 KiB and 16 KiB records under ASYNC_FLUSH and SYNC_FLUSH with 256
//! appends in flight, plus the bare 4 KiB write + fdatasync rate of the same disk. Criterion
//! reports appends/s (one element = one append); after each benchmark a line gives the
//! fdatasyncs/s and records per fdatasync (group commit) it saw. Each store runs on its own
//! glommio executor thread, driven by criterion through a channel.
//!
//! Tiny under `cargo test --benches` (criterion's test mode runs each routine once);
//! `cargo bench --bench commitlog_append` for the numbers.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq::config::FlushDiskType;
use ringmq::message::record::RecordInput;
use ringmq::runtime::{spawn_executor, ExecutorOptions};
use ringmq::store::io::{IoBuffer, Storage, StorageFile};
use ringmq::store::{DmaStorage, MessageStore, PutStatus, StoreConfig, SystemClock};

const IN_FLIGHT: u64 = 256;

/// What one measured job did.
#[derive(Default, Clone, Copy)]
struct Done {
    elapsed: Duration,
    appends: u64,
    fsyncs: u64,
}

fn options(name: &str) -> ExecutorOptions {
    let mut options = ExecutorOptions::control_plane(name);
    options.io_memory_bytes = 16 << 20;
    options.ring_depth = 256;
    options
}

fn record(body: &[u8]) -> (BytesMut, ringmq::message::record::RecordSlots) {
    let input = RecordInput {
        topic: "BenchTopic",
        queue_id: 0,
        flag: 0,
        sys_flag: 0,
        born_timestamp: 1,
        born_host: "10.0.0.1:4000".parse().expect("addr"),
        store_host: "127.0.0.1:10911".parse().expect("addr"),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body,
        properties: "TAGS\u{1}bench",
    };
    let mut buf = BytesMut::with_capacity(input.encoded_len());
    let slots = input.encode(&mut buf).expect("encode");
    (buf, slots)
}

/// Appends `n` records of `size` bytes from `IN_FLIGHT` tasks.
async fn append_job(store: &MessageStore, size: usize, n: u64) -> Done {
    let body = Rc::new(vec![b'x'; size]);
    let rounds = store.flush_rounds();
    let start = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT.min(n))
        .map(|t| {
            let (store, body) = (store.clone(), body.clone());
            let share = n / IN_FLIGHT.min(n) + u64::from(t < n % IN_FLIGHT.min(n));
            glommio::spawn_local(async move {
                for _ in 0..share {
                    let (rec, slots) = record(&body);
                    let r = store.put(rec, slots, true).await.expect("put");
                    assert_eq!(r.status, PutStatus::PutOk);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    Done {
        elapsed: start.elapsed(),
        appends: n,
        fsyncs: store.flush_rounds() - rounds,
    }
}

/// `n` rounds of one aligned 4 KiB write + fdatasync.
async fn bare_fsync_job(path: PathBuf, n: u64) -> Done {
    let file = DmaStorage.open(&path, true).await.expect("open");
    let align = file.alignment() as usize;
    let start = Instant::now();
    for i in 0..n {
        let mut buf = file.alloc_buffer(4096usize.div_ceil(align) * align);
        buf.as_mut_slice().fill(i as u8);
        file.write_at(buf, (i % 256) * 4096).await.expect("write");
        file.fdatasync().await.expect("fdatasync");
    }
    Done {
        elapsed: start.elapsed(),
        appends: n,
        fsyncs: n,
    }
}

/// A store (or bare file) on its own executor thread, running jobs sent over a channel.
struct Worker {
    jobs: flume::Sender<u64>,
    done: flume::Receiver<Done>,
}

impl Worker {
    fn start(dir: PathBuf, mode: Option<(FlushDiskType, usize)>) -> Worker {
        let (jobs, job_rx) = flume::unbounded::<u64>();
        let (done_tx, done) = flume::unbounded();
        spawn_executor(&options("bench-store"), move || async move {
            let store = match mode {
                Some((flush, _)) => {
                    let mut cfg = StoreConfig::for_dir(&dir);
                    cfg.segment_bytes = 256 << 20;
                    cfg.flush_disk_type = flush;
                    let clock = Rc::new(SystemClock);
                    Some(
                        MessageStore::open(DmaStorage, clock, cfg)
                            .await
                            .expect("open"),
                    )
                }
                None => None,
            };
            while let Ok(n) = job_rx.recv_async().await {
                let done = match (&store, mode) {
                    (Some(store), Some((_, size))) => append_job(store, size, n).await,
                    _ => bare_fsync_job(dir.join("bare"), n).await,
                };
                let _ = done_tx.send(done);
            }
            if let Some(store) = store {
                store.close().await.expect("close");
            }
        })
        .expect("executor");
        Worker { jobs, done }
    }

    fn run(&self, n: u64) -> Done {
        self.jobs.send(n).expect("worker gone");
        self.done.recv().expect("worker gone")
    }
}

fn report(name: &str, total: Done) {
    if total.appends == 0 {
        return; // filtered out
    }
    let secs = total.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{name}: {} appends, {} fdatasyncs in {:.2?}: {:.0} appends/s, {:.0} fdatasyncs/s, \
         {:.1} records per fdatasync",
        total.appends,
        total.fsyncs,
        total.elapsed,
        total.appends as f64 / secs,
        total.fsyncs as f64 / secs,
        total.appends as f64 / total.fsyncs.max(1) as f64
    );
}

fn bench_one(c: &mut Criterion, name: &str, worker: &Worker) {
    let mut total = Done::default();
    let mut group = c.benchmark_group("commitlog_append");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let done = worker.run(iters);
            total.elapsed += done.elapsed;
            total.appends += done.appends;
            total.fsyncs += done.fsyncs;
            done.elapsed
        })
    });
    group.finish();
    report(&format!("commitlog_append/{name}"), total);
}

fn commitlog_append(c: &mut Criterion) {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-bench")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let bare = Worker::start(dir.path().to_path_buf(), None);
    bench_one(c, "bare_4KiB_write_fdatasync", &bare);
    for (mode, flush) in [
        ("sync", FlushDiskType::SyncFlush),
        ("async", FlushDiskType::AsyncFlush),
    ] {
        for (label, size) in [("128B", 128), ("1KiB", 1024), ("16KiB", 16 * 1024)] {
            let store_dir = dir.path().join(format!("{mode}-{label}"));
            let worker = Worker::start(store_dir, Some((flush, size)));
            bench_one(c, &format!("{mode}_{label}"), &worker);
        }
    }
}

criterion_group!(benches, commitlog_append);
criterion_main!(benches);
