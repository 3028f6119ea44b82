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
///
/// Headers in the shape every client sends (the known fields once each, strings with their
/// escapes but no surrogate pair, integers, booleans, `null`) are read by [`fast_json`] in one
/// pass; anything else (a surrogate, a float, an unknown field holding an object or array, a
/// field given twice, malformed text) is read, or refused, by the serde decoder, whose reading
/// of every header the fast pass takes is the same.
pub fn decode_json(bytes: &[u8]) -> Result<HeaderFields, WireError> {
    match fast_json(bytes) {
        Some(fields) => Ok(fields),
        None => decode_json_serde(bytes),
    }
}

/// The bytes JSON skips between tokens.
fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Where the first `"`, `\\` or control character (below 0x20) of `bytes` is: eight bytes at a
/// time (a send's header is mostly string values).
fn string_stop(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `w` below `n` (exact for the lowest such byte, which is
    // the one taken; bytes of 0x80 and up never count).
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in chunks.by_ref() {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let hits = below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1)
            | below(w, 0x20);
        if hits != 0 {
            return Some(at + (hits.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = chunks.remainder();
    rest.iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

/// A one-pass reader of the common JSON header ([`decode_json`]): `None` wherever the text
/// leaves that shape, for the serde decoder to read or refuse.
struct FastJson<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> FastJson<'a> {
    fn peek(&mut self) -> Option<u8> {
        let bytes = self.text.as_bytes();
        while self.at < bytes.len() && is_json_space(bytes[self.at]) {
            self.at += 1;
        }
        bytes.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    /// A string without escapes or control characters, borrowed (object keys).
    fn string(&mut self) -> Option<&'a str> {
        match self.text_value()? {
            Cow::Borrowed(s) => Some(s),
            Cow::Owned(_) => None,
        }
    }

    /// A string value: borrowed unless it holds escapes (RocketMQ's property separators
    /// `\u0001` and `\u0002` in every send), which are decoded as JSON decodes them. A
    /// surrogate escape, a bad escape or a control character: `None`.
    fn text_value(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut end = start + string_stop(&bytes[start..])?;
        if bytes[end] == b'"' {
            self.at = end + 1;
            return Some(Cow::Borrowed(&self.text[start..end]));
        }
        let mut owned = String::with_capacity(end - start + 16);
        owned.push_str(&self.text[start..end]);
        loop {
            match bytes[end] {
                b'"' => {
                    self.at = end + 1;
                    return Some(Cow::Owned(owned));
                }
                b'\\' => {
                    let escape = *bytes.get(end + 1)?;
                    end += 2;
                    owned.push(match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self.text.get(end..end + 4)?;
                            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                                return None;
                            }
                            end += 4;
                            // A surrogate (half of a pair) is left to serde.
                            char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
                        }
                        _ => return None,
                    });
                }
                _ => return None, // a control character
            }
            let run = string_stop(&bytes[end..])?;
            owned.push_str(&self.text[end..end + run]);
            end += run;
        }
    }

    /// A string, an integer that fits an i64 with no leading zero, `true`, `false` or `null`.
    fn scalar(&mut self) -> Option<Scalar<'a>> {
        let first = self.peek()?;
        let rest = &self.text.as_bytes()[self.at..];
        match first {
            b'"' => self.text_value().map(Scalar::Str),
            b't' if rest.starts_with(b"true") => {
                self.at += 4;
                Some(Scalar::Bool(true))
            }
            b'f' if rest.starts_with(b"false") => {
                self.at += 5;
                Some(Scalar::Bool(false))
            }
            b'n' if rest.starts_with(b"null") => {
                self.at += 4;
                Some(Scalar::Null)
            }
            b'-' | b'0'..=b'9' => {
                let negative = first == b'-';
                let digits = &rest[usize::from(negative)..];
                let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
                // Up to 18 digits always fit; a leading zero, "-0", a fraction or an exponent
                // go to serde.
                if n == 0 || n > 18 || (digits[0] == b'0' && (n > 1 || negative)) {
                    return None;
                }
                if matches!(digits.get(n), Some(b'.' | b'e' | b'E')) {
                    return None;
                }
                let text = &self.text[self.at..self.at + usize::from(negative) + n];
                self.at += text.len();
                let v: i64 = text.parse().ok()?;
                Some(match negative {
                    true => Scalar::Int(v),
                    false => Scalar::UInt(v as u64),
                })
            }
            _ => None,
        }
    }

    /// `null` or an object of scalars, into `ExtFields` sized from the header.
    fn ext_fields(&mut self, text_bytes: usize) -> Option<Option<ExtFields>> {
        if self.peek()? == b'n' {
            return match self.scalar()? {
                Scalar::Null => Some(None),
                _ => None,
            };
        }
        self.eat(b'{')?;
        let mut fields = ExtFields::with_capacity(EXT_ENTRIES_EXPECTED, text_bytes);
        if self.eat(b'}').is_some() {
            return Some(Some(fields));
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            self.scalar()?.insert_into(&mut fields, key);
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(Some(fields));
                }
                _ => return None,
            }
        }
    }
}

/// The fast pass of [`decode_json`]. It reads what the serde decoder reads: `null` as an
/// absent field (so a field after its own `null` is taken, as serde takes it), a field or
/// `extFields` given twice left to serde (which refuses it), and an unknown field's scalar
/// value (Java's `serializeTypeCurrentRPC`) skipped.
fn fast_json(bytes: &[u8]) -> Option<HeaderFields> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut r = FastJson { text, at: 0 };
    let mut h = JsonHeaderIn::default();
    let mut ext: Option<Option<ExtFields>> = None;
    r.eat(b'{')?;
    if r.eat(b'}').is_none() {
        loop {
            let key = r.string()?;
            r.eat(b':')?;
            let slot = match key {
                "code" => Some(&mut h.code),
                "language" => Some(&mut h.language),
                "version" => Some(&mut h.version),
                "opaque" => Some(&mut h.opaque),
                "flag" => Some(&mut h.flag),
                "remark" => Some(&mut h.remark),
                "extFields" => {
                    if ext.is_some() {
                        return None;
                    }
                    ext = Some(r.ext_fields(bytes.len())?);
                    None
                }
                _ => {
                    r.scalar()?;
                    None
                }
            };
            if let Some(slot) = slot {
                if slot.is_some() {
                    return None;
                }
                *slot = match r.scalar()? {
                    Scalar::Null => None,
                    value => Some(value),
                };
            }
            match r.peek()? {
                b',' => r.at += 1,
                b'}' => {
                    r.at += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if r.peek().is_some() {
        return None;
    }
    h.ext_fields = ext.flatten().map(ExtIn);
    finish_json(h).ok()
}

fn decode_json_serde(bytes: &[u8]) -> Result<HeaderFields, WireError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = HeaderSeed {
        text_bytes: bytes.len(),
    };
    let header = seed
        .deserialize(&mut de)
        .and_then(|h| de.end().map(|()| h))
        .map_err(|e| WireError::BadJson(e.to_string()))?;
    finish_json(header)
}

/// The header's fields from what was read of its JSON text.
fn finish_json(header: JsonHeaderIn<'_>) -> Result<HeaderFields, WireError> {
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

    /// The JSON headers of every golden frame (real clients' and RocketMQ 4.9.8's).
    fn golden_json_headers() -> Vec<(String, Vec<u8>)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        let mut out = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "bin") {
                    continue;
                }
                let frame = std::fs::read(&path).unwrap();
                if frame.len() < 8 {
                    continue;
                }
                let word = u32::from_be_bytes(frame[4..8].try_into().unwrap());
                let len = (word & 0x00FF_FFFF) as usize;
                if word >> 24 == 0 && frame.len() >= 8 + len {
                    out.push((path.display().to_string(), frame[8..8 + len].to_vec()));
                }
            }
        }
        out.sort();
        out
    }

    /// The fast pass either leaves a header to serde or reads it exactly as serde does.
    fn check_fast_agrees(text: &[u8]) -> bool {
        match fast_json(text) {
            Some(fast) => {
                assert_eq!(
                    decode_json_serde(text).as_ref(),
                    Ok(&fast),
                    "fast pass disagrees on {:?}",
                    String::from_utf8_lossy(text)
                );
                true
            }
            None => false,
        }
    }

    #[test]
    fn string_stop_finds_the_first_quote_backslash_or_control_character() {
        let plain = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let mut seed: u64 = 7;
        for len in 0..40 {
            for _ in 0..300 {
                let text: Vec<u8> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Mostly ordinary text, sometimes a stop byte or a byte >= 0x80.
                        match seed % 16 {
                            0 => b'"',
                            1 => b'\\',
                            2 => (seed >> 8) as u8 % 0x20,
                            3 => 0x80 | (seed >> 8) as u8,
                            4 => 0x20,
                            5 => 0x21,
                            6 => 0x5d,
                            _ => b'a' + (seed >> 8) as u8 % 26,
                        }
                    })
                    .collect();
                assert_eq!(string_stop(&text), plain(&text), "{text:?}");
            }
        }
    }

    #[test]
    fn the_fast_json_pass_reads_every_golden_header_as_serde_does() {
        let headers = golden_json_headers();
        assert!(headers.len() > 100, "{} golden JSON headers", headers.len());
        for (path, header) in &headers {
            assert!(check_fast_agrees(header), "{path}: left to serde");
        }
    }

    #[test]
    fn the_fast_json_pass_leaves_everything_unusual_to_serde() {
        let taken: &[&[u8]] = &[
            br#"{"code":10,"flag":0,"language":"JAVA","opaque":3,"serializeTypeCurrentRPC":"JSON","version":401}"#,
            b" { \"code\" : 10 , \"extFields\" : { \"a\" : \"b\" , \"n\" : -5 } }\n",
            br#"{"code":10,"remark":null,"remark":"again"}"#,
            br#"{"code":"12","language":8,"extFields":{"b":true,"c":false,"d":null,"a":"x","a":"y"}}"#,
            br#"{"code":0,"extFields":{}}"#,
            br#"{"code":10,"extFields":null}"#,
            "{\"code\":1,\"remark\":\"h\u{e9}llo \u{4e16}\"}".as_bytes(),
            br#"{"code":10,"remark":"a\"b\\c\/d\b\f\n\r\t\u00e9\u4E16","extFields":{"properties":"K\u0001v\u0002"}}"#,
        ];
        for text in taken {
            assert!(
                check_fast_agrees(text),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        let left: &[&[u8]] = &[
            br#"{"code":10,"extFields":{"k\u0041":"v"}}"#,
            br#"{"code":10,"remark":"\ud83d\ude00"}"#,
            br#"{"code":10,"remark":"\x"}"#,
            br#"{"code":10,"remark":"\u12"}"#,
            br#"{"code":10,"remark":"\u+123"}"#,
            br#"{"code":10,"version":1.5}"#,
            br#"{"code":10,"version":1e3}"#,
            br#"{"code":010}"#,
            br#"{"code":-0}"#,
            br#"{"code":1234567890123456789}"#,
            br#"{"code":10,"code":11}"#,
            br#"{"code":10,"extFields":null,"extFields":{}}"#,
            br#"{"code":10,"other":{"nested":1}}"#,
            br#"{"code":10,"other":[1]}"#,
            br#"{"code":10,"extFields":{"a":[1]}}"#,
            br#"{"code":10} x"#,
            br#"{"code":10"#,
            br#"{"code":null}"#,
            br#"{}"#,
            b"{\"code\":10,\"remark\":\"tab\there\"}",
            b"{\"code\":10,\"remark\":\"\xff\"}",
            br#"{"code":tru}"#,
            br#"{"code":99999999999}"#,
            br#"{"code":10,"opaque":123456789012345678}"#,
        ];
        for text in left {
            assert!(
                fast_json(text).is_none(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn the_fast_json_pass_agrees_with_serde_on_mutated_headers() {
        // Single-byte edits of real headers (xorshift, fixed seed): wherever the fast pass
        // takes one, serde reads the same fields.
        let headers = golden_json_headers();
        let alphabet = b"{}[]\":,\\ -0123456789.eEtruefalsn\t\nxA\x7f\xc3";
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut taken, mut tried) = (0, 0);
        for (_, header) in headers.iter().take(60) {
            for _ in 0..200 {
                let mut text = header.clone();
                let at = (next() % text.len() as u64) as usize;
                let b = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => text[at] = b,
                    1 => text.insert(at, b),
                    _ => {
                        text.remove(at);
                    }
                }
                tried += 1;
                taken += usize::from(check_fast_agrees(&text));
            }
        }
        assert!(taken > tried / 10, "the fast pass took {taken} of {tried}");
    }

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
