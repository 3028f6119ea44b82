//! Frame splitting and whole-command decoding, as a connection's read loop does it:
//! `next_frame` over the input until it runs dry or errors, `RemotingCommand::decode` on every
//! frame, and for every command that decodes, the codec's round-trip property: encoding it and
//! decoding that again gives the same command, and the encoding is a fixed point.
//! Must never panic, whatever the bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringmq::limits::FRAME_SIZE_MAX_BYTES;
use ringmq::remoting::{check_frame, next_frame, RemotingCommand};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    loop {
        match next_frame(&mut buf, FRAME_SIZE_MAX_BYTES) {
            Ok(Some(frame)) => round_trip(frame),
            // Incomplete: a real connection would wait for more bytes.
            Ok(None) => break,
            // Malformed prefix: a real connection is closed.
            Err(_) => break,
        }
    }
});

fn round_trip(frame: Bytes) {
    let frame_len = frame.len();
    let Ok(cmd) = RemotingCommand::decode(frame) else {
        return;
    };

    let mut encoded = BytesMut::new();
    // A decoded header may not fit a frame once re-encoded (integers become strings): encoding
    // must then fail cleanly and leave the buffer untouched.
    if cmd.encode(&mut encoded).is_err() {
        assert!(encoded.is_empty(), "failed encode left bytes behind");
        return;
    }
    let encoded = encoded.freeze();

    // `to_frame` is `encode` into a fresh buffer.
    assert_eq!(cmd.to_frame().ok(), Some(encoded.clone()), "to_frame differs from encode");

    // The re-encoded bytes are exactly one whole frame (the length prefix is right).
    assert_eq!(
        check_frame(&encoded, usize::MAX),
        Ok(Some(encoded.len())),
        "re-encoded frame's length prefix is wrong (decoded frame was {frame_len} bytes)"
    );

    let again = RemotingCommand::decode(encoded.clone())
        .unwrap_or_else(|e| panic!("re-encoded frame does not decode: {e:?}\ncmd: {cmd:?}"));
    assert_eq!(again, cmd, "decode(encode(cmd)) != cmd");

    // Encoding is a fixed point: the re-decoded command encodes to the same bytes.
    assert_eq!(
        again.to_frame().ok(),
        Some(encoded.clone()),
        "encode(decode(encode(cmd))) != encode(cmd)"
    );
}
