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
use ringmq::remoting::RemotingCommand;

fn send_request() -> RemotingCommand {
    RemotingCommand::request(310)
        .with_ext("a", "please_rename_unique_group_name")
        .with_ext("b", "TopicTest")
        .with_ext("c", "TBW102")
        .with_ext("d", "4")
        .with_ext("e", "3")
        .with_ext("f", "0")
        .with_ext("g", "1795243657617")
        .with_ext("h", "0")
        .with_ext(
            "i",
            "UNIQ_KEY\u{1}FD0000000000000000000000000002\u{2}WAIT\u{1}true\u{2}TAGS\u{1}TagA",
        )
        .with_ext("j", "0")
        .with_ext("k", "false")
        .with_ext("m", "false")
        .with_body(vec![b'x'; 128])
}

fn acl(c: &mut Criterion) {
    let rules = "accounts:\n  - {accessKey: benchAK1, secretKey: benchSK1, defaultTopicPerm: PUB|SUB, defaultGroupPerm: SUB}\n";
    let file = AclFile::parse(Path::new("bench.yml"), rules).expect("rules");
    let rules = Rules::new(vec![file]).expect("rules");
    let credentials = Credentials::new("benchAK1", "benchSK1");
    let peer: IpAddr = "10.0.0.1".parse().unwrap();
    let mut signed = send_request();
    sign(&mut signed, &credentials);
    let mut group = c.benchmark_group("acl");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign_send_v2", |b| {
        b.iter_batched(
            send_request,
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
