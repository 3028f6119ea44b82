//! JSON bodies: fastjson's bare-key `normalize`, and the REGISTER_BROKER body in both forms
//! (plain JSON, and the zlib `compressedRegister=true` layout). The first input byte picks the
//! form (low bit set: compressed); the rest is the body. Must never panic.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use ringmq::protocol::fastjson::normalize;
use ringmq::protocol::register::RegisterBrokerBody;

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };

    // normalize on the whole body.
    let normalized = normalize(body);
    // Standard JSON has no bare keys, so it must come back untouched (and borrowed).
    if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
        assert!(
            matches!(normalized, Cow::Borrowed(_)),
            "normalize changed standard JSON"
        );
    }
    // Quoting is idempotent: a second pass finds no bare key left.
    assert_eq!(
        normalize(&normalized),
        normalized,
        "normalize is not idempotent"
    );

    let compressed = first & 1 == 1;
    if let Ok(decoded) = RegisterBrokerBody::decode(body, compressed) {
        // Whatever decodes re-serializes to standard JSON that decodes to the same body.
        let json = serde_json::to_vec(&decoded).expect("RegisterBrokerBody serializes");
        let again = RegisterBrokerBody::decode(&json, false)
            .unwrap_or_else(|e| panic!("re-serialized body does not decode: {e}\n{decoded:?}"));
        assert_eq!(again, decoded, "RegisterBrokerBody JSON round trip");
    }
});
