//! REGISTER_BROKER's body: `RegisterBrokerBody` with its `TopicConfigSerializeWrapper`, in the
//! JSON form and in the zlib-compressed form of brokers with `compressedRegister=true`.

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::lenient;

/// `DataVersion`: bumped by the broker whenever its topic table changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct DataVersion {
    #[serde(default)]
    pub counter: i64,
    #[serde(default)]
    pub timestamp: i64,
}

/// One topic's configuration (`TopicConfig`), as brokers register it and keep it in topics.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfig {
    #[serde(default)]
    pub order: bool,
    #[serde(default = "default_perm")]
    pub perm: i32,
    #[serde(default = "default_queue_nums")]
    pub read_queue_nums: i32,
    #[serde(default = "default_filter_type")]
    pub topic_filter_type: String,
    #[serde(default)]
    pub topic_name: String,
    #[serde(default)]
    pub topic_sys_flag: i32,
    #[serde(default = "default_queue_nums")]
    pub write_queue_nums: i32,
}

fn default_perm() -> i32 {
    6
}
fn default_queue_nums() -> i32 {
    16
}
fn default_filter_type() -> String {
    "SINGLE_TAG".into()
}

/// `TopicConfigSerializeWrapper`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TopicConfigWrapper {
    #[serde(default)]
    pub data_version: DataVersion,
    #[serde(default)]
    pub topic_config_table: BTreeMap<String, TopicConfig>,
}

/// `RegisterBrokerBody`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegisterBrokerBody {
    #[serde(default)]
    pub filter_server_list: Vec<String>,
    #[serde(default)]
    pub topic_config_serialize_wrapper: TopicConfigWrapper,
}

/// A REGISTER_BROKER body that cannot be read.
#[derive(Debug, Error)]
pub enum RegisterBodyError {
    #[error("register body does not parse: {0}")]
    Json(#[from] lenient::LenientError),
    #[error("compressed register body is not a valid zlib stream: {0}")]
    Zlib(#[from] std::io::Error),
    #[error("compressed register body is malformed: {0}")]
    Layout(&'static str),
}

impl RegisterBrokerBody {
    /// Decodes the body; `compressed` is the request's `compressed` header field.
    pub fn decode(body: &[u8], compressed: bool) -> Result<RegisterBrokerBody, RegisterBodyError> {
        if compressed {
            return decode_compressed(body);
        }
        if body.is_empty() {
            return Ok(RegisterBrokerBody::default());
        }
        Ok(lenient::from_slice(body)?)
    }
}

/// Reads `RegisterBrokerBody.decode(bytes, true)`: zlib of `len + DataVersion JSON`,
/// `topicCount`, per topic `len + "name read write perm FILTERTYPE"`, `len + filter list JSON`.
fn decode_compressed(body: &[u8]) -> Result<RegisterBrokerBody, RegisterBodyError> {
    let mut raw = Vec::new();
    // Bounded: a register body never inflates past the frame limit.
    flate2::read::ZlibDecoder::new(body)
        .take(crate::limits::FRAME_SIZE_MAX_BYTES as u64)
        .read_to_end(&mut raw)?;
    let mut cursor = raw.as_slice();
    let version_json = take_chunk(&mut cursor)?;
    let data_version: DataVersion = lenient::from_slice(version_json)?;
    let count = take_i32(&mut cursor)?;
    let mut table = BTreeMap::new();
    for _ in 0..count {
        let line = std::str::from_utf8(take_chunk(&mut cursor)?)
            .map_err(|_| RegisterBodyError::Layout("topic line is not UTF-8"))?;
        let config = parse_topic_line(line)?;
        table.insert(config.topic_name.clone(), config);
    }
    let filter_server_list = match take_chunk(&mut cursor) {
        Ok(json) if !json.is_empty() => lenient::from_slice(json)?,
        _ => Vec::new(),
    };
    Ok(RegisterBrokerBody {
        filter_server_list,
        topic_config_serialize_wrapper: TopicConfigWrapper {
            data_version,
            topic_config_table: table,
        },
    })
}

fn take_i32(cursor: &mut &[u8]) -> Result<i32, RegisterBodyError> {
    if cursor.len() < 4 {
        return Err(RegisterBodyError::Layout("truncated length field"));
    }
    let (head, rest) = cursor.split_at(4);
    *cursor = rest;
    Ok(i32::from_be_bytes([head[0], head[1], head[2], head[3]]))
}

fn take_chunk<'a>(cursor: &mut &'a [u8]) -> Result<&'a [u8], RegisterBodyError> {
    let len = usize::try_from(take_i32(cursor)?)
        .map_err(|_| RegisterBodyError::Layout("negative chunk length"))?;
    if cursor.len() < len {
        return Err(RegisterBodyError::Layout("chunk longer than the body"));
    }
    let (chunk, rest) = cursor.split_at(len);
    *cursor = rest;
    Ok(chunk)
}

/// `TopicConfig.decode`: "name read write perm FILTERTYPE" (space separated).
fn parse_topic_line(line: &str) -> Result<TopicConfig, RegisterBodyError> {
    let parts: Vec<&str> = line.split(' ').collect();
    let bad = RegisterBodyError::Layout("topic line is not 'name read write perm filterType'");
    if parts.len() < 5 {
        return Err(bad);
    }
    let num = |s: &str| {
        s.parse::<i32>()
            .map_err(|_| RegisterBodyError::Layout("bad topic number"))
    };
    Ok(TopicConfig {
        order: false,
        perm: num(parts[3])?,
        read_queue_nums: num(parts[1])?,
        topic_filter_type: parts[4].to_string(),
        topic_name: parts[0].to_string(),
        topic_sys_flag: 0,
        write_queue_nums: num(parts[2])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn compressed_form_decodes() {
        let mut raw = Vec::new();
        let chunk = |raw: &mut Vec<u8>, bytes: &[u8]| {
            raw.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
            raw.extend_from_slice(bytes);
        };
        chunk(&mut raw, br#"{"counter":3,"timestamp":17}"#);
        raw.extend_from_slice(&2i32.to_be_bytes());
        chunk(&mut raw, b"TopicA 4 4 6 SINGLE_TAG");
        chunk(&mut raw, b"TopicB 2 1 7 MULTI_TAG");
        chunk(&mut raw, b"[]");
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&raw).unwrap();
        let body = RegisterBrokerBody::decode(&z.finish().unwrap(), true).unwrap();
        let wrapper = body.topic_config_serialize_wrapper;
        assert_eq!(
            wrapper.data_version,
            DataVersion {
                counter: 3,
                timestamp: 17
            }
        );
        let b = &wrapper.topic_config_table["TopicB"];
        assert_eq!((b.read_queue_nums, b.write_queue_nums, b.perm), (2, 1, 7));
        assert_eq!(b.topic_filter_type, "MULTI_TAG");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(RegisterBrokerBody::decode(b"\x78\x9c garbage", true).is_err());
        assert!(RegisterBrokerBody::decode(b"{not json", false).is_err());
        assert!(RegisterBrokerBody::decode(b"", false).is_ok());
    }
}
