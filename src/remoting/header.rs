//! The two header encodings: JSON (serialize type 0) and ROCKETMQ binary (type 1).
//!
//! Decoding is lenient where real clients differ (the C++ client's numeric and boolean ext values,
//! `language` as a name or an ordinal, `remark: null`, unknown keys, trailing whitespace); encoding
//! is strict: compact JSON with fastjson's alphabetical key order, every ext value a string,
//! `language` as a name and `serializeTypeCurrentRPC` always present (the Rust client requires it).

use bytes::{BufMut, Bytes, BytesMut};
use std::borrow::Cow;

use serde::Deserialize;

use super::codes::{LanguageCode, SerializeType};
use super::command::{ExtFields, RemotingCommand};
use super::error::WireError;

/// The fields of a header, without the body and serialize type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFields {
    pub code: i32,
    pub language: LanguageCode,
    pub version: i32,
    pub opaque: i32,
    pub flag: i32,
    pub remark: Option<String>,
    pub ext_fields: Option<ExtFields>,
}

impl HeaderFields {
    /// The command these fields head, read in `serialize_type`, carrying `body`.
    pub fn into_command(self, serialize_type: SerializeType, body: Bytes) -> RemotingCommand {
        let HeaderFields {
            code,
            language,
            version,
            opaque,
            flag,
            remark,
            ext_fields,
        } = self;
        RemotingCommand {
            code,
            language,
            version,
            opaque,
            flag,
            remark,
            ext_fields,
            serialize_type,
            body,
        }
    }
}

/// A header value as the client sent it. Strings, integers (the C++ client) and booleans are
/// accepted; floats, arrays and objects are sent by no client and are refused (their text form
/// could also grow without bound on re-encoding). Decoded straight from the JSON text, with no
/// intermediate `serde_json::Value`: header decoding is on every request's path. A string
/// without escapes is borrowed from the frame, not copied.
enum Scalar<'de> {
    Null,
    Str(Cow<'de, str>),
    Int(i64),
    UInt(u64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, integer or boolean")
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
}

impl Scalar<'_> {
    fn int(value: Option<Scalar<'_>>, field: &str) -> Result<i32, WireError> {
        let parsed = match value {
            None | Some(Scalar::Null) => return Ok(0),
            Some(Scalar::Int(n)) => Some(n),
            Some(Scalar::UInt(n)) => i64::try_from(n).ok(),
            Some(Scalar::Str(s)) => s.trim().parse::<i64>().ok(),
            Some(Scalar::Bool(_)) => None,
        };
        parsed
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| WireError::BadJson(format!("field {field} is not a 32-bit integer")))
    }

    /// The string fastjson would coerce the value to (numbers written into `digits`); `None`
    /// for null.
    fn text<'s>(&'s self, digits: &'s mut itoa::Buffer) -> Option<&'s str> {
        Some(match self {
            Scalar::Null => return None,
            Scalar::Str(s) => s,
            Scalar::Int(n) => digits.format(*n),
            Scalar::UInt(n) => digits.format(*n),
            Scalar::Bool(true) => "true",
            Scalar::Bool(false) => "false",
        })
    }

    /// Appends the value's [`Scalar::text`] (nothing for null) as the value of `key`.
    fn insert_into(self, fields: &mut ExtFields, key: &str) {
        if let Some(text) = self.text(&mut itoa::Buffer::new()) {
            fields.insert(key, text);
        }
    }

    /// The value's [`Scalar::text`], owned.
    fn into_string(self) -> Option<String> {
        match self {
            Scalar::Str(s) => Some(s.into_owned()),
            other => other.text(&mut itoa::Buffer::new()).map(str::to_string),
        }
    }
}

/// A JSON object key, borrowed from the frame unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Room for a decoded header's `extFields` (a Java send has 13); more grows the map.
const EXT_ENTRIES_EXPECTED: usize = 16;

/// `extFields`, read entry by entry into [`ExtFields`] in arrival order. `text_bytes` bounds
/// the bytes of its keys and values (the header's length), so the map's text is allocated once.
struct ExtIn(ExtFields);

struct ExtSeed {
    text_bytes: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for ExtSeed {
    type Value = ExtIn;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<ExtIn, D::Error> {
        struct ExtVisitor {
            text_bytes: usize,
        }
        impl<'de> serde::de::Visitor<'de> for ExtVisitor {
            type Value = ExtIn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of string, integer or boolean values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ExtIn, A::Error> {
                let mut fields = ExtFields::with_capacity(EXT_ENTRIES_EXPECTED, self.text_bytes);
                while let Some((key, value)) = map.next_entry::<Key, Scalar>()? {
                    value.insert_into(&mut fields, &key.0);
                }
                Ok(ExtIn(fields))
            }
        }
        d.deserialize_map(ExtVisitor {
            text_bytes: self.text_bytes,
        })
    }
}

/// The top-level object of a JSON header. Hand-written rather than derived so that
/// `extFields` is read with an [`ExtSeed`] sized from the header.
#[derive(Default)]
struct JsonHeaderIn<'de> {
    code: Option<Scalar<'de>>,
    language: Option<Scalar<'de>>,
    version: Option<Scalar<'de>>,
    opaque: Option<Scalar<'de>>,
    flag: Option<Scalar<'de>>,
    remark: Option<Scalar<'de>>,
    ext_fields: Option<ExtIn>,
}

struct HeaderSeed {
    text_bytes: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for HeaderSeed {
    type Value = JsonHeaderIn<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<JsonHeaderIn<'de>, D::Error> {
        struct HeaderVisitor {
            text_bytes: usize,
        }
        impl<'de> serde::de::Visitor<'de> for HeaderVisitor {
            type Value = JsonHeaderIn<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a remoting command header object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonHeaderIn<'de>, A::Error> {
                use serde::de::IgnoredAny;
                let mut h = JsonHeaderIn::default();
                // A repeated field is refused, as serde's derive (the previous decoder) did.
                fn once<'de, T: Deserialize<'de>, A: serde::de::MapAccess<'de>>(
                    slot: &mut Option<T>,
                    map: &mut A,
                    name: &'static str,
                ) -> Result<(), A::Error> {
                    if slot.is_some() {
                        return Err(serde::de::Error::duplicate_field(name));
                    }
                    *slot = map.next_value()?;
                    Ok(())
                }
                let mut seen_ext = false;
                while let Some(key) = map.next_key::<Key>()? {
                    match &*key.0 {
                        "code" => once(&mut h.code, &mut map, "code")?,
                        "language" => once(&mut h.language, &mut map, "language")?,
                        "version" => once(&mut h.version, &mut map, "version")?,
                        "opaque" => once(&mut h.opaque, &mut map, "opaque")?,
                        "flag" => once(&mut h.flag, &mut map, "flag")?,
                        "remark" => once(&mut h.remark, &mut map, "remark")?,
                        "extFields" => {
                            if std::mem::replace(&mut seen_ext, true) {
                                return Err(serde::de::Error::duplicate_field("extFields"));
                            }
                            h.ext_fields = map.next_value_seed(OptionSeed(ExtSeed {
                                text_bytes: self.text_bytes,
                            }))?;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(h)
            }
        }
        d.deserialize_map(HeaderVisitor {
            text_bytes: self.text_bytes,
        })
    }
}

/// `null` or what `S` reads.
struct OptionSeed<S>(S);

impl<'de, S: serde::de::DeserializeSeed<'de>> serde::de::DeserializeSeed<'de> for OptionSeed<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct OptionVisitor<S>(S);
        impl<'de, S: serde::de::DeserializeSeed<'de>> serde::de::Visitor<'de> for OptionVisitor<S> {
            type Value = Option<S::Value>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("null or a value")
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                self.0.deserialize(d).map(Some)
            }
        }
        d.deserialize_option(OptionVisitor(self.0))
    }
}

/// Decodes a JSON header. Trailing whitespace (the C++ client's newline) is accepted.
pub fn decode_json(bytes: &[u8]) -> Result<HeaderFields, WireError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = HeaderSeed {
        text_bytes: bytes.len(),
    };
    let header = seed
        .deserialize(&mut de)
        .and_then(|h| de.end().map(|()| h))
        .map_err(|e| WireError::BadJson(e.to_string()))?;
    if header.code.is_none() {
        return Err(WireError::BadJson("field code is missing".into()));
    }
    let language = match header.language {
        Some(Scalar::Str(ref name)) => LanguageCode::from_name(name),
        Some(Scalar::Int(n)) => LanguageCode::from_ordinal(n),
        Some(Scalar::UInt(n)) => LanguageCode::from_ordinal(i64::try_from(n).unwrap_or(-1)),
        _ => LanguageCode::Other,
    };
    Ok(HeaderFields {
        code: Scalar::int(header.code, "code")?,
        language,
        version: Scalar::int(header.version, "version")?,
        opaque: Scalar::int(header.opaque, "opaque")?,
        flag: Scalar::int(header.flag, "flag")?,
        remark: header.remark.and_then(Scalar::into_string),
        ext_fields: header.ext_fields.map(|e| e.0),
    })
}

fn put_json_str(dst: &mut BytesMut, s: &str) {
    // Most header strings need no escape: copied as they are between quotes.
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        dst.reserve(s.len() + 2);
        dst.put_u8(b'"');
        dst.put_slice(s.as_bytes());
        dst.put_u8(b'"');
        return;
    }
    // serde_json escapes exactly what JSON requires (quotes, backslash, control characters as
    // \uXXXX), as fastjson does; writing into BytesMut cannot fail.
    let _ = serde_json::to_writer(dst.writer(), s);
}

fn put_decimal(dst: &mut BytesMut, n: i32) {
    dst.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Encodes a JSON header the way fastjson writes `RemotingCommand`: keys in alphabetical order,
/// null fields omitted, ext values as strings.
pub fn encode_json(cmd: &RemotingCommand, dst: &mut BytesMut) {
    dst.put_slice(b"{\"code\":");
    put_decimal(dst, cmd.code);
    if let Some(fields) = &cmd.ext_fields {
        dst.put_slice(b",\"extFields\":{");
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                dst.put_u8(b',');
            }
            put_json_str(dst, k);
            dst.put_u8(b':');
            put_json_str(dst, v);
        }
        dst.put_u8(b'}');
    }
    dst.put_slice(b",\"flag\":");
    put_decimal(dst, cmd.flag);
    dst.put_slice(b",\"language\":");
    put_json_str(dst, cmd.language.name());
    dst.put_slice(b",\"opaque\":");
    put_decimal(dst, cmd.opaque);
    if let Some(remark) = &cmd.remark {
        dst.put_slice(b",\"remark\":");
        put_json_str(dst, remark);
    }
    dst.put_slice(b",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":");
    put_decimal(dst, cmd.version);
    dst.put_u8(b'}');
}

/// Bounds-checked reader over a binary header.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, need: usize) -> Result<&'a [u8], WireError> {
        let have = self.bytes.len() - self.offset;
        if need > have {
            return Err(WireError::Truncated {
                offset: self.offset,
                need,
                have,
            });
        }
        let slice = &self.bytes[self.offset..self.offset + need];
        self.offset += need;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, WireError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A string of `len` bytes; a negative length is treated as malformed.
    fn string(&mut self, len: i64) -> Result<&'a str, WireError> {
        let offset = self.offset;
        let len = usize::try_from(len).map_err(|_| WireError::Truncated {
            offset,
            need: usize::MAX,
            have: self.bytes.len() - offset,
        })?;
        let raw = self.take(len)?;
        std::str::from_utf8(raw).map_err(|_| WireError::BadUtf8 { offset })
    }
}

/// Decodes a ROCKETMQ binary header (`RocketMQSerializable.rocketMQProtocolDecode`).
pub fn decode_binary(bytes: &[u8]) -> Result<HeaderFields, WireError> {
    let mut r = Reader { bytes, offset: 0 };
    let code = i32::from(r.i16()?);
    let language = LanguageCode::from_ordinal(i64::from(r.u8()?));
    let version = i32::from(r.i16()?);
    let opaque = r.i32()?;
    let flag = r.i32()?;
    let remark_len = r.i32()?;
    let remark = match remark_len {
        0 => None,
        n => Some(r.string(i64::from(n))?.to_string()),
    };
    let ext_len = r.i32()?;
    let ext_fields = match ext_len {
        0 => None,
        n => {
            let n = usize::try_from(n).map_err(|_| WireError::Truncated {
                offset: r.offset,
                need: usize::MAX,
                have: bytes.len() - r.offset,
            })?;
            let map_bytes = r.take(n)?;
            Some(decode_binary_map(map_bytes, r.offset - n)?)
        }
    };
    Ok(HeaderFields {
        code,
        language,
        version,
        opaque,
        flag,
        remark,
        ext_fields,
    })
}

fn decode_binary_map(bytes: &[u8], base_offset: usize) -> Result<ExtFields, WireError> {
    let mut r = Reader { bytes, offset: 0 };
    let mut fields = ExtFields::with_capacity(EXT_ENTRIES_EXPECTED, bytes.len());
    while r.offset < bytes.len() {
        let key_len = r.i16()?;
        let key = r
            .string(i64::from(key_len))
            .map_err(|e| rebase(e, base_offset))?;
        let value_len = r.i32()?;
        let value = r
            .string(i64::from(value_len))
            .map_err(|e| rebase(e, base_offset))?;
        fields.insert(key, value);
    }
    Ok(fields)
}

fn rebase(error: WireError, base: usize) -> WireError {
    match error {
        WireError::Truncated { offset, need, have } => WireError::Truncated {
            offset: offset + base,
            need,
            have,
        },
        WireError::BadUtf8 { offset } => WireError::BadUtf8 {
            offset: offset + base,
        },
        other => other,
    }
}

/// Encodes a ROCKETMQ binary header (`RocketMQSerializable.rocketMQProtocolEncode`). Fails when
/// a key is longer than the 2-byte key length allows.
pub fn encode_binary(cmd: &RemotingCommand, dst: &mut BytesMut) -> Result<(), WireError> {
    if let Some(fields) = &cmd.ext_fields {
        if let Some((key, _)) = fields.iter().find(|(k, _)| k.len() > i16::MAX as usize) {
            return Err(WireError::BadJson(format!(
                "ext key of {} bytes does not fit a binary header",
                key.len()
            )));
        }
    }
    // Codes and versions are Java shorts on this wire; ours always fit.
    dst.put_i16(cmd.code as i16);
    dst.put_u8(cmd.language.ordinal());
    dst.put_i16(cmd.version as i16);
    dst.put_i32(cmd.opaque);
    dst.put_i32(cmd.flag);
    match &cmd.remark {
        Some(remark) => {
            dst.put_i32(remark.len() as i32);
            dst.put_slice(remark.as_bytes());
        }
        None => dst.put_i32(0),
    }
    let Some(fields) = &cmd.ext_fields else {
        dst.put_i32(0);
        return Ok(());
    };
    let map_len: usize = fields.iter().map(|(k, v)| 2 + k.len() + 4 + v.len()).sum();
    dst.put_i32(map_len as i32);
    for (k, v) in fields.iter() {
        dst.put_i16(k.len() as i16);
        dst.put_slice(k.as_bytes());
        dst.put_i32(v.len() as i32);
        dst.put_slice(v.as_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_formatting() {
        for n in [0, 7, -1, 409, i32::MAX, i32::MIN, -2147483647, 10, 100] {
            let mut buf = BytesMut::new();
            put_decimal(&mut buf, n);
            assert_eq!(std::str::from_utf8(&buf).unwrap(), n.to_string());
        }
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "TopicTest",
            "a\"b",
            "back\\slash",
            "UNIQ_KEY\u{1}FD00\u{2}WAIT\u{1}true",
            "tab\there\nline",
            "ünïcødé 話",
            "\u{7f}del",
        ] {
            let mut buf = BytesMut::new();
            put_json_str(&mut buf, s);
            let expected = serde_json::to_string(s).unwrap();
            assert_eq!(std::str::from_utf8(&buf).unwrap(), expected, "{s:?}");
        }
    }

    #[test]
    fn escaped_and_plain_ext_strings_decode_alike() {
        let raw = br#"{"code":310,"extFields":{"a":"pg","b\u0062":"T\"x","i":"K\u0001V"}}"#;
        let ext = decode_json(raw).unwrap().ext_fields.unwrap();
        assert_eq!(
            ext.iter().collect::<Vec<_>>(),
            [("a", "pg"), ("bb", "T\"x"), ("i", "K\u{1}V")]
        );
    }

    #[test]
    fn a_repeated_header_field_is_refused_and_null_ext_fields_is_none() {
        assert!(decode_json(br#"{"code":1,"code":2}"#).is_err());
        assert!(decode_json(br#"{"code":1,"extFields":{},"extFields":{}}"#).is_err());
        let h = decode_json(br#"{"code":1,"extFields":null,"remark":"r"}"#).unwrap();
        assert_eq!(h.ext_fields, None);
        assert_eq!(h.remark.as_deref(), Some("r"));
        assert!(decode_json(br#"{"code":1} x"#).is_err());
        assert!(decode_json(b"{\"code\":1}\n").is_ok());
    }

    #[test]
    fn json_lenient_inputs() {
        let raw = br#"{"code":"11","language":1,"version":333,"opaque":5,"flag":0,"remark":null,
            "extFields":{"queueId":3,"b":true,"n":null,"s":"x"},"unknown":[1,2]}
"#;
        let h = decode_json(raw).unwrap();
        assert_eq!(h.code, 11);
        assert_eq!(h.language, LanguageCode::Cpp);
        assert_eq!(h.remark, None);
        let ext = h.ext_fields.unwrap();
        assert_eq!(ext.get("queueId"), Some("3"));
        assert_eq!(ext.get("b"), Some("true"));
        assert_eq!(ext.get("n"), None);
        assert_eq!(ext.get("s"), Some("x"));
    }

    #[test]
    fn json_rejects_missing_code_and_garbage() {
        assert!(decode_json(br#"{"opaque":1}"#).is_err());
        assert!(decode_json(b"{\"code\":").is_err());
        assert!(decode_json(br#"{"code":99999999999}"#).is_err());
        assert!(decode_json(b"[]").is_err());
        assert!(decode_json(br#"{"code":1,"remark":["x"]}"#).is_err());
        assert!(decode_json(br#"{"code":1,"extFields":{"a":1e300}}"#).is_err());
        assert!(decode_json(br#"{"code":1,"extFields":{"a":{"b":1}}}"#).is_err());
    }

    #[test]
    fn binary_truncation_is_an_error() {
        let mut cmd = RemotingCommand::request(105).with_ext("topic", "T");
        cmd.remark = Some("r".into());
        let mut buf = BytesMut::new();
        encode_binary(&cmd, &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert!(decode_binary(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let h = decode_binary(&buf).unwrap();
        assert_eq!(h.ext_fields.unwrap().get("topic"), Some("T"));
    }
}
