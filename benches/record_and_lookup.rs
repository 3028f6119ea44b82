//! Micro costs of the stored record and of reading it back: record encoding, the body CRC,
//! record parsing with its CRC check, SQL92 filtering of a record, and consume-queue lookups
//! (`get_messages` of 32 messages from a random offset, with and without a tag filter) on a
//! store of 20,000 records whose tail is in memory. The store runs on its own glommio executor
//! thread; criterion times batches of lookups it runs there (`iter_custom`).
//!
//! Tiny under `cargo test --benches`; `cargo bench --bench record_and_lookup` for the numbers.

use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringmq::filter::sql::Selector;
use ringmq::message::record::{body_crc, RecordInput, RecordView};
use ringmq::message::tags_hash_code;
use ringmq::runtime::{spawn_executor, ExecutorOptions};
use ringmq::store::{DmaStorage, MessageStore, Reader, StoreConfig, SystemClock};

const RECORDS: u64 = 20_000;
const QUEUES: u64 = 4;

fn input<'a>(body: &'a [u8], props: &'a str, queue_id: i32) -> RecordInput<'a> {
    RecordInput {
        topic: "BenchTopic",
        queue_id,
        flag: 0,
        sys_flag: 0,
        born_timestamp: 1,
        born_host: "10.0.0.1:4000".parse().expect("addr"),
        store_host: "127.0.0.1:10911".parse().expect("addr"),
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        body,
        properties: props,
    }
}

fn record_costs(c: &mut Criterion) {
    let props = "UNIQ_KEY\u{1}AC11000100002A9F0000000000000001\u{2}TAGS\u{1}TagA\u{2}KEYS\u{1}k1";
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    for size in [128usize, 1024] {
        let body = vec![b'x'; size];
        group.bench_function(format!("encode_{size}b"), |b| {
            let mut buf = BytesMut::with_capacity(2048);
            b.iter(|| {
                buf.clear();
                input(&body, props, 0)
                    .encode(&mut buf)
                    .map(|_| buf.len())
                    .unwrap_or(0)
            })
        });
    }
    for size in [128usize, 1024, 16 * 1024] {
        let body = vec![b'y'; size];
        group.bench_function(format!("body_crc_{size}b"), |b| b.iter(|| body_crc(&body)));
    }
    let body = vec![b'z'; 1024];
    let mut stored = BytesMut::new();
    input(&body, props, 0).encode(&mut stored).expect("encode");
    group.bench_function("parse_and_check_crc_1k", |b| {
        b.iter(|| {
            RecordView::parse(&stored)
                .map(|v| v.check_crc().is_ok())
                .unwrap_or(false)
        })
    });
    group.finish();
}

/// SQL92 property filtering per candidate record: parse the stored record, then evaluate a
/// typical selector against its properties (what an SQL92 pull adds per record looked at).
fn sql_filter_costs(c: &mut Criterion) {
    let props = "UNIQ_KEY\u{1}AC11000100002A9F0000000000000001\u{2}TAGS\u{1}TagA\u{2}\
                 KEYS\u{1}k1\u{2}a\u{1}42\u{2}region\u{1}hz\u{2}price\u{1}12.5";
    let body = vec![b'q'; 1024];
    let mut stored = BytesMut::new();
    input(&body, props, 0).encode(&mut stored).expect("encode");
    let mut group = c.benchmark_group("sql_filter");
    group.throughput(Throughput::Elements(1));
    for (name, sql) in [
        ("match_and_in", "a > 10 AND region IN ('hz', 'bj')"),
        (
            "miss_between_or_null",
            "price BETWEEN 20.0 AND 30.0 OR missing IS NOT NULL",
        ),
    ] {
        let selector = Selector::compile(sql).expect("compiles");
        group.bench_function(name, |b| {
            b.iter(|| {
                RecordView::parse(&stored)
                    .map(|v| selector.matches(v.properties))
                    .unwrap_or(false)
            })
        });
    }
    group.bench_function("compile", |b| {
        b.iter(|| Selector::compile("a > 10 AND region IN ('hz', 'bj')").is_ok())
    });
    group.finish();
}

/// A job for the lookup worker: `n` lookups, filtered by tag or not.
struct Job {
    n: u64,
    filtered: bool,
}

fn lookup_worker() -> (flume::Sender<Job>, flume::Receiver<Duration>) {
    let (jobs, job_rx) = flume::unbounded::<Job>();
    let (done_tx, done) = flume::unbounded();
    let mut options = ExecutorOptions::control_plane("bench-lookup");
    options.io_memory_bytes = 16 << 20;
    spawn_executor(&options, move || async move {
        let dir = tempfile::Builder::new()
            .prefix("ringmq-bench-")
            .tempdir_in("/tmp")
            .expect("dir");
        let store = MessageStore::open(
            DmaStorage,
            Rc::new(SystemClock),
            StoreConfig::for_dir(dir.path()),
        )
        .await
        .expect("open");
        let body = vec![b'x'; 128];
        for i in 0..RECORDS {
            // Every queue alternates TagA and TagB, so a filtered read keeps half of what it scans.
            let tag = if (i / QUEUES) % 2 == 0 {
                "TagA"
            } else {
                "TagB"
            };
            let props = format!("TAGS\u{1}{tag}");
            let mut buf = BytesMut::new();
            let slots = input(&body, &props, (i % QUEUES) as i32)
                .encode(&mut buf)
                .expect("encode");
            store.put(buf, slots, false).await.expect("put");
        }
        let tags: HashSet<i32> = [tags_hash_code("TagA") as i32].into_iter().collect();
        let per_queue = (RECORDS / QUEUES) as i64;
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        while let Ok(job) = job_rx.recv_async().await {
            let start = Instant::now();
            for _ in 0..job.n {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (queue, offset) = (
                    (seed >> 60) as i32 % QUEUES as i32,
                    (seed >> 20) as i64 % (per_queue - 32),
                );
                let filter = job.filtered.then_some(&tags);
                let got = store
                    .get_messages(
                        Reader::Consumer,
                        "BenchTopic",
                        queue,
                        offset,
                        32,
                        256 << 10,
                        filter,
                    )
                    .await;
                assert!(!got.expect("read").messages.is_empty());
            }
            let _ = done_tx.send(start.elapsed());
        }
        store.close().await.expect("close");
    })
    .expect("executor");
    (jobs, done)
}

fn lookups(c: &mut Criterion) {
    let (jobs, done) = lookup_worker();
    let mut group = c.benchmark_group("consume_queue_lookup");
    group.throughput(Throughput::Elements(1));
    for filtered in [false, true] {
        let name = if filtered {
            "get_32_tag_filtered"
        } else {
            "get_32"
        };
        group.bench_function(name, |b| {
            b.iter_custom(|n| {
                jobs.send(Job { n, filtered }).expect("worker");
                done.recv().expect("worker")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, record_costs, sql_filter_costs, lookups);
criterion_main!(benches);
