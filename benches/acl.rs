//! The ACL's cost per request: signing a SEND_MESSAGE_V2 (what a client's hook does) and the
//! broker's whole check of it (account lookup, signature, topic permission), on the
//! request of `remoting_codec` with a 128-byte body. Runs tiny under `cargo test --benches` and
//! at full size under `cargo bench --bench acl`.

use std::net::IpAddr;
use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringmq::acl::check::check;
use ringmq::acl::rules::{AclFile, Rules};
use ringmq::acl::sign::{sign, Credentials};

mod common;

fn acl(c: &mut Criterion) {
    let rules = "accounts:\n  - {accessKey: benchAK1, secretKey: benchSK1, defaultTopicPerm: PUB|SUB, defaultGroupPerm: SUB}\n";
    let file = AclFile::parse(Path::new("bench.yml"), rules).expect("rules");
    let rules = Rules::new(vec![file]).expect("rules");
    let credentials = Credentials::new("benchAK1", "benchSK1");
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let mut signed = common::send_v2_request();
    sign(&mut signed, &credentials);
    let mut group = c.benchmark_group("acl");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign_send_v2", |b| {
        b.iter_batched(
            common::send_v2_request,
            |mut cmd| {
                sign(&mut cmd, &credentials);
                cmd
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("check_send_v2", |b| {
        b.iter(|| check(&rules, peer, &signed).expect("allowed"))
    });
    group.finish();
}

criterion_group!(benches, acl);
criterion_main!(benches);
