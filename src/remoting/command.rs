//! `RemotingCommand`: one request or response, with its custom header as ordered `extFields`.

use bytes::Bytes;

use super::codes::{response, LanguageCode, SerializeType, VERSION_CURRENT};
use crate::packed_map::PackedMap;

/// Flag bit 0: the frame is a response.
pub const FLAG_RESPONSE: i32 = 1;
/// Flag bit 1: the request expects no response.
pub const FLAG_ONEWAY: i32 = 2;

/// The custom header: every field as a string, in the order received (or inserted), so that a
/// decoded frame re-encodes to the same bytes ([`PackedMap`]: one string for all of them). Boxed
/// so that a `RemotingCommand` stays as small as when this was one `Vec` (it is the error type
/// of many functions).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ExtFields(Box<PackedMap>);

impl ExtFields {
    /// An empty map.
    pub fn new() -> ExtFields {
        ExtFields::default()
    }

    /// An empty map with room for `entries` entries of `text_bytes` bytes of keys and values.
    pub fn with_capacity(entries: usize, text_bytes: usize) -> ExtFields {
        ExtFields(Box::new(PackedMap::with_capacity(entries, text_bytes)))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)
    }

    /// Sets `key`, replacing an earlier value in place (Java `HashMap.put`).
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) {
        self.0.insert(key, value);
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.0.remove(key)
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for ExtFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for ExtFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> ExtFields {
        ExtFields(Box::new(iter.into_iter().collect()))
    }
}

/// One remoting request or response (`RemotingCommand.java`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotingCommand {
    /// Request code in requests, response code in responses.
    pub code: i32,
    /// The sender's language.
    pub language: LanguageCode,
    /// The sender's `MQVersion` ordinal.
    pub version: i32,
    /// Request id, echoed by the response.
    pub opaque: i32,
    /// Bit 0 response, bit 1 oneway.
    pub flag: i32,
    /// Human-readable text; the error message in failed responses.
    pub remark: Option<String>,
    /// The custom header. `None` and `Some(empty)` are told apart because Java writes
    /// `"extFields":{}` for one and nothing for the other.
    pub ext_fields: Option<ExtFields>,
    /// How the header was (or will be) encoded. Responses copy the request's.
    pub serialize_type: SerializeType,
    /// The body, shared with the frame it was read from.
    pub body: Bytes,
}

impl RemotingCommand {
    /// A new request with ringmq's language and version.
    pub fn request(code: i32) -> RemotingCommand {
        RemotingCommand {
            code,
            language: LanguageCode::Java,
            version: VERSION_CURRENT,
            opaque: 0,
            flag: 0,
            remark: None,
            ext_fields: None,
            serialize_type: SerializeType::Json,
            body: Bytes::new(),
        }
    }

    /// A response to `self` (a request): same opaque and serialize type, RESPONSE flag set.
    pub fn response_to(&self, code: i32, remark: Option<String>) -> RemotingCommand {
        RemotingCommand {
            code,
            language: LanguageCode::Java,
            version: VERSION_CURRENT,
            opaque: self.opaque,
            flag: FLAG_RESPONSE,
            remark,
            ext_fields: None,
            serialize_type: self.serialize_type,
            body: Bytes::new(),
        }
    }

    /// A SUCCESS response to `self`.
    pub fn success_to(&self) -> RemotingCommand {
        self.response_to(response::SUCCESS, None)
    }

    /// An error response to `self` with a remark saying what was wrong.
    pub fn error_to(&self, code: i32, remark: impl Into<String>) -> RemotingCommand {
        self.response_to(code, Some(remark.into()))
    }

    /// True for responses (flag bit 0).
    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }

    /// True for oneway requests (flag bit 1).
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// Marks a request oneway.
    pub fn set_oneway(&mut self) {
        self.flag |= FLAG_ONEWAY;
    }

    /// A custom-header field.
    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.as_ref().and_then(|f| f.get(key))
    }

    /// Sets a custom-header field, creating the map if needed.
    pub fn set_ext(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) {
        self.ext_fields
            .get_or_insert_with(ExtFields::new)
            .insert(key, value);
    }

    /// Builder form of [`RemotingCommand::set_ext`].
    pub fn with_ext(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.set_ext(key, value);
        self
    }

    /// Builder form for the body.
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}
