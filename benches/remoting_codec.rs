//! Codec micro-benchmarks: encode and decode of a send request in both serializations, the
//! send processor's reading of its header and properties, and a
//! HEART_BEAT body read the way the broker reads it (`protocol::lenient`, through a parsed value)
//! against a plain serde_json read of the same (Java-shaped) body.
//! Runs tiny under `cargo test --benches` and at full size under `cargo bench`.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringmq::remoting::{RemotingCommand, SerializeType};

mod common;

fn send_request(serialize_type: SerializeType) -> RemotingCommand {
    let mut cmd = common::send_v2_request();
    cmd.opaque = 7;
    cmd.serialize_type = serialize_type;
    cmd
}

fn codec(c: &mut Criterion) {
    for (name, st) in [
        ("json", SerializeType::Json),
        ("rocketmq", SerializeType::RocketMq),
    ] {
        let cmd = send_request(st);
        let frame = cmd.to_frame().expect("encodes");
        let mut group = c.benchmark_group(format!("remoting_{name}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("encode_send_v2", |b| {
            let mut buf = BytesMut::with_capacity(1024);
            b.iter(|| {
                buf.clear();
                cmd.encode(&mut buf).map(|()| buf.len()).unwrap_or(0)
            })
        });
        group.bench_function("decode_send_v2", |b| {
            b.iter_batched(
                || frame.clone(),
                |f| RemotingCommand::decode(f).map(|c| c.code).unwrap_or(-1),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

fn heartbeat_body(c: &mut Criterion) {
    use ringmq::protocol::heartbeat::HeartbeatData;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let frame = std::fs::read(dir.join("java/0050-c2s-34-heartbeat.bin")).expect("golden frame");
    let body = RemotingCommand::decode(frame.into()).expect("decodes").body;
    let mut group = c.benchmark_group("heartbeat_body");
    group.throughput(Throughput::Elements(1));
    group.bench_function("lenient", |b| {
        b.iter(|| {
            ringmq::protocol::lenient::from_slice::<HeartbeatData>(&body)
                .map(|h| h.consumer_data_set.len())
                .unwrap_or(0)
        })
    });
    group.bench_function("serde_json_direct", |b| {
        b.iter(|| {
            serde_json::from_slice::<HeartbeatData>(&body)
                .map(|h| h.consumer_data_set.len())
                .unwrap_or(0)
        })
    });
    group.finish();
}

/// What the send processor does with a decoded SEND_MESSAGE_V2 before building the record:
/// read the header's fields, parse the properties, drop WAIT, add CLUSTER, write them back.
fn send_header(c: &mut Criterion) {
    use ringmq::message::properties::{self, Properties};
    use ringmq::protocol::send::SendRequest;
    let cmd = send_request(SerializeType::Json);
    let mut group = c.benchmark_group("send_header");
    group.throughput(Throughput::Elements(1));
    group.bench_function("from_command", |b| {
        b.iter(|| {
            SendRequest::from_command(&cmd)
                .map(|r| r.queue_id)
                .unwrap_or(-1)
        })
    });
    let raw = cmd.ext("i").unwrap_or_default().to_string();
    group.bench_function("properties_round_trip", |b| {
        b.iter(|| {
            let mut props = Properties::parse(&raw);
            props.remove(properties::WAIT);
            props.set(properties::CLUSTER, "DefaultCluster");
            props.to_wire().len()
        })
    });
    group.finish();
}

criterion_group!(benches, codec, heartbeat_body, send_header);
criterion_main!(benches);
