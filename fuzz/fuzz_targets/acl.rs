//! The ACL's parsers and its signature path. The first byte picks the part:
//!
//! * 0: `data[1..]` as plain_acl.yml text (`AclFile::parse`): never panics; a file that parses
//!   writes back (`to_yaml`) to text that parses to the same file.
//! * 1: `data[1..]` as an address pattern (`AddressPattern::parse`), matched against a few
//!   peers: never panics.
//! * 2: `data[1..]` as a JSON header (`decode_json`) and the rest as the body, checked
//!   against fixed rules from a few peers (`acl::check::check`): never panics; signed with a
//!   known account it verifies, and a one-byte change of its body does not.
#![no_main]

use std::net::IpAddr;
use std::path::Path;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use ringmq::acl::address::AddressPattern;
use ringmq::acl::check::check;
use ringmq::acl::rules::{AclFile, Rules};
use ringmq::acl::sign::{sign, verify, Credentials};
use ringmq::remoting::header::decode_json;
use ringmq::remoting::{RemotingCommand, SerializeType};

const RULES: &str = "\
globalWhiteRemoteAddresses: [10.10.103.*, '192.168.0.{1,2}']
accounts:
  - {accessKey: RocketMQ, secretKey: 12345678, defaultTopicPerm: DENY, defaultGroupPerm: SUB, topicPerms: [topicA=PUB, topicB=PUB|SUB]}
  - {accessKey: rocketmq2, secretKey: 12345678, whiteRemoteAddress: 192.168.1.*, admin: true}
";

fn peers() -> [IpAddr; 4] {
    ["127.0.0.1", "10.10.103.7", "192.168.1.9", "::1"].map(|p| p.parse().unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(file) = AclFile::parse(Path::new("fuzz.yml"), text) {
                let again = AclFile::parse(Path::new("fuzz.yml"), &file.to_yaml())
                    .unwrap_or_else(|e| panic!("written file does not parse: {e}\n{file:?}"));
                assert_eq!(again, file, "plain_acl.yml round trip");
                let _ = Rules::new(vec![file]);
            }
        }
        1 => {
            let Ok(text) = std::str::from_utf8(rest) else {
                return;
            };
            if let Ok(pattern) = AddressPattern::parse(text) {
                for peer in peers() {
                    let _ = pattern.matches(peer);
                }
            }
        }
        _ => {
            let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let Ok(fields) = decode_json(&rest[..split]) else {
                return;
            };
            let body = Bytes::copy_from_slice(rest.get(split + 1..).unwrap_or_default());
            let mut cmd = RemotingCommand {
                code: fields.code,
                language: fields.language,
                version: fields.version,
                opaque: fields.opaque,
                flag: fields.flag,
                remark: fields.remark,
                ext_fields: fields.ext_fields,
                serialize_type: SerializeType::Json,
                body,
            };
            let file = AclFile::parse(Path::new("rules.yml"), RULES).expect("fixed rules");
            let rules = Rules::new(vec![file]).expect("fixed rules");
            for peer in peers() {
                let _ = check(&rules, peer, &cmd);
            }
            sign(&mut cmd, &Credentials::new("RocketMQ", "12345678"));
            assert!(verify(&cmd, "12345678"), "a request we signed must verify");
            let _ = check(&rules, peers()[0], &cmd);
            if !cmd.body.is_empty() {
                let mut body = cmd.body.to_vec();
                body[0] ^= 1;
                cmd.body = Bytes::from(body);
                assert!(!verify(&cmd, "12345678"), "a changed body must not verify");
            }
        }
    }
});
