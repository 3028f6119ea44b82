//! The two header decoders on raw bytes: `decode_json` (serialize type 0) and `decode_binary`
//! (ROCKETMQ, type 1). Must never panic. For a header that decodes, re-encoding it with the
//! matching encoder and decoding again must give the same fields.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringmq::remoting::header::{decode_binary, decode_json, encode_binary, encode_json};
use ringmq::remoting::SerializeType;

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = decode_json(data) {
        let mut dst = BytesMut::new();
        encode_json(
            &fields
                .clone()
                .into_command(SerializeType::Json, Bytes::new()),
            &mut dst,
        );
        let again = decode_json(&dst).unwrap_or_else(|e| {
            panic!("re-encoded JSON header does not decode: {e:?}\n{fields:?}")
        });
        assert_eq!(again, fields, "JSON header round trip");
    }
    if let Ok(fields) = decode_binary(data) {
        let mut dst = BytesMut::new();
        if encode_binary(
            &fields
                .clone()
                .into_command(SerializeType::RocketMq, Bytes::new()),
            &mut dst,
        )
        .is_err()
        {
            return;
        }
        let again = decode_binary(&dst).unwrap_or_else(|e| {
            panic!("re-encoded binary header does not decode: {e:?}\n{fields:?}")
        });
        assert_eq!(again, fields, "binary header round trip");
    }
});
