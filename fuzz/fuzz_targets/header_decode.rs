//! The two header decoders on raw bytes: `decode_json` (serialize type 0) and `decode_binary`
//! (ROCKETMQ, type 1). Must never panic. For a header that decodes, re-encoding it with the
//! matching encoder and decoding again must give the same fields.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringmq::remoting::header::{
    decode_binary, decode_json, encode_binary, encode_json, HeaderFields,
};
use ringmq::remoting::{RemotingCommand, SerializeType};

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = decode_json(data) {
        let mut dst = BytesMut::new();
        encode_json(&command(fields.clone(), SerializeType::Json), &mut dst);
        let again = decode_json(&dst).unwrap_or_else(|e| {
            panic!("re-encoded JSON header does not decode: {e:?}\n{fields:?}")
        });
        assert_eq!(again, fields, "JSON header round trip");
    }
    if let Ok(fields) = decode_binary(data) {
        let mut dst = BytesMut::new();
        if encode_binary(&command(fields.clone(), SerializeType::RocketMq), &mut dst).is_err() {
            return;
        }
        let again = decode_binary(&dst).unwrap_or_else(|e| {
            panic!("re-encoded binary header does not decode: {e:?}\n{fields:?}")
        });
        assert_eq!(again, fields, "binary header round trip");
    }
});

fn command(fields: HeaderFields, serialize_type: SerializeType) -> RemotingCommand {
    let HeaderFields {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
    } = fields;
    RemotingCommand {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
        serialize_type,
        body: Bytes::new(),
    }
}
