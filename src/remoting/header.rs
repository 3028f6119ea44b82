//! The two header encodings: JSON (serialize type 0) and ROCKETMQ binary (type 1).
//!
//! Decoding is lenient where real clients differ (the C++ client's numeric and boolean ext values,
//! `language` as a name or an ordinal, `remark: null`, unknown keys, trailing whitespace); encoding
//! is strict: compact JSON with fastjson's alphabetical key order, every ext value a string,
//! `language` as a name and `serializeTypeCurrentRPC` always present (the Rust client requires it).

use bytes::{BufMut, BytesMut};
use serde::Deserialize;

use super::codes::LanguageCode;
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

/// A header value as the client sent it. Strings, integers (the C++ client) and booleans are
/// accepted; floats, arrays and objects are sent by no client and are refused (their text form
/// could also grow without bound on re-encoding). Decoded straight from the JSON text, with no
/// intermediate `serde_json::Value`: header decoding is on every request's path.
enum Scalar {
    Null,
    Str(String),
    Int(i64),
    UInt(u64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, integer or boolean")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::UInt(v))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Null)
    }
}

impl Scalar {
    fn int(value: Option<Scalar>, field: &str) -> Result<i32, WireError> {
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

    /// The string fastjson would coerce the value to; `None` for null.
    fn into_string(self) -> Option<String> {
        match self {
            Scalar::Null => None,
            Scalar::Str(s) => Some(s),
            Scalar::Int(n) => Some(n.to_string()),
            Scalar::UInt(n) => Some(n.to_string()),
            Scalar::Bool(b) => Some(b.to_string()),
        }
    }
}

/// `extFields`, read entry by entry into [`ExtFields`] in arrival order.
struct ExtIn(ExtFields);

impl<'de> Deserialize<'de> for ExtIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ExtVisitor;
        impl<'de> serde::de::Visitor<'de> for ExtVisitor {
            type Value = ExtIn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of string, integer or boolean values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<ExtIn, A::Error> {
                let mut fields = ExtFields::new();
                while let Some((key, value)) = map.next_entry::<String, Scalar>()? {
                    if let Some(value) = value.into_string() {
                        fields.insert(key, value);
                    }
                }
                Ok(ExtIn(fields))
            }
        }
        d.deserialize_map(ExtVisitor)
    }
}

#[derive(Deserialize)]
struct JsonHeaderIn {
    code: Option<Scalar>,
    language: Option<Scalar>,
    version: Option<Scalar>,
    opaque: Option<Scalar>,
    flag: Option<Scalar>,
    remark: Option<Scalar>,
    #[serde(rename = "extFields")]
    ext_fields: Option<ExtIn>,
}

/// Decodes a JSON header. Trailing whitespace (the C++ client's newline) is accepted.
pub fn decode_json(bytes: &[u8]) -> Result<HeaderFields, WireError> {
    let header: JsonHeaderIn =
        serde_json::from_slice(bytes).map_err(|e| WireError::BadJson(e.to_string()))?;
    if header.code.is_none() {
        return Err(WireError::BadJson("field code is missing".into()));
    }
    let language = match header.language {
        Some(Scalar::Str(name)) => LanguageCode::from_name(&name),
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
    // serde_json escapes exactly what JSON requires (quotes, backslash, control characters as
    // \uXXXX), as fastjson does; writing into BytesMut cannot fail.
    let _ = serde_json::to_writer(dst.writer(), s);
}

fn put_decimal(dst: &mut BytesMut, n: i32) {
    use std::fmt::Write;
    // Writing into BytesMut cannot fail.
    let _ = write!(dst, "{n}");
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
    fn string(&mut self, len: i64) -> Result<String, WireError> {
        let offset = self.offset;
        let len = usize::try_from(len).map_err(|_| WireError::Truncated {
            offset,
            need: usize::MAX,
            have: self.bytes.len() - offset,
        })?;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| WireError::BadUtf8 { offset })
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
        n => Some(r.string(i64::from(n))?),
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
    let mut fields = ExtFields::new();
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
