//! SEND_MESSAGE (10, long field names), SEND_MESSAGE_V2 (310) and SEND_BATCH_MESSAGE (320, one-
//! letter names) request headers, the same for SEND_REPLY_MESSAGE (324, long) and
//! SEND_REPLY_MESSAGE_V2 (325, letters), and the send response header (PROTOCOL.md §7.2).
//!
//! Go and the Rust client send 10 for single messages, Java 310, C++ 310 for batches too (with
//! `m=true`): a batch is recognised by its `batch`/`m` flag, or by code 320.

use super::fields::{FieldError, Fields};
use crate::remoting::{request, ExtFields, RemotingCommand};

/// A send request header in either naming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    pub producer_group: String,
    pub topic: String,
    pub default_topic: String,
    pub default_topic_queue_nums: i32,
    /// Target queue; negative means "broker picks".
    pub queue_id: i32,
    pub sys_flag: i32,
    pub born_timestamp: i64,
    pub flag: i32,
    pub properties: String,
    pub reconsume_times: i32,
    pub unit_mode: bool,
    pub max_reconsume_times: Option<i32>,
    pub batch: bool,
}

/// Field names of one naming: (V1 long name, V2 letter).
const NAMES: [(&str, &str); 13] = [
    ("producerGroup", "a"),
    ("topic", "b"),
    ("defaultTopic", "c"),
    ("defaultTopicQueueNums", "d"),
    ("queueId", "e"),
    ("sysFlag", "f"),
    ("bornTimestamp", "g"),
    ("flag", "h"),
    ("properties", "i"),
    ("reconsumeTimes", "j"),
    ("unitMode", "k"),
    ("maxReconsumeTimes", "l"),
    ("batch", "m"),
];

/// The index in [`NAMES`] of a V1 (long) name.
fn v1_index(name: &str) -> Option<usize> {
    NAMES.iter().position(|(v1, _)| *v1 == name)
}

/// The index in [`NAMES`] of a V2 name: the letters `a` to `m` in order.
fn v2_index(name: &str) -> Option<usize> {
    match name.as_bytes() {
        [letter @ b'a'..=b'm'] => Some(usize::from(letter - b'a')),
        _ => None,
    }
}

/// The header's send fields, found in one pass over its entries (under V1 or V2 names) and
/// read by their V1 names.
struct Named<'a> {
    values: [Option<&'a str>; NAMES.len()],
}

impl<'a> Named<'a> {
    fn of(cmd: &'a RemotingCommand, v2: bool) -> Named<'a> {
        let mut values = [None; NAMES.len()];
        let index = if v2 { v2_index } else { v1_index };
        for (key, value) in cmd.ext_fields.iter().flat_map(|f| f.iter()) {
            if let Some(i) = index(key) {
                values[i] = Some(value);
            }
        }
        Named { values }
    }
}

impl Fields for Named<'_> {
    fn field(&self, name: &'static str) -> Option<&str> {
        v1_index(name).and_then(|i| self.values[i])
    }
}

/// SEND_MESSAGE (10) and SEND_REPLY_MESSAGE (324) name fields in full; the others by letter.
fn uses_letters(code: i32) -> bool {
    code != request::SEND_MESSAGE && code != request::SEND_REPLY_MESSAGE
}

fn truthy(value: Option<&str>) -> bool {
    // Java reads "true"; the C++ client has been seen sending "1"/"0".
    value.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

impl SendRequest {
    /// Decodes the header of a 10, 310 or 320 request. Required fields missing or malformed
    /// are errors naming the field (by its long name).
    pub fn from_command(cmd: &RemotingCommand) -> Result<SendRequest, FieldError> {
        let v2 = uses_letters(cmd.code);
        let f = Named::of(cmd, v2);
        Ok(SendRequest {
            producer_group: f.req_str("producerGroup")?.to_string(),
            topic: f.req_str("topic")?.to_string(),
            default_topic: f.opt_str("defaultTopic").unwrap_or("TBW102").to_string(),
            default_topic_queue_nums: f.opt_i64("defaultTopicQueueNums")?.unwrap_or(4) as i32,
            queue_id: f.req_i32("queueId")?,
            sys_flag: f.opt_i64("sysFlag")?.unwrap_or(0) as i32,
            born_timestamp: f.req_i64("bornTimestamp")?,
            flag: f.opt_i64("flag")?.unwrap_or(0) as i32,
            properties: f.field("properties").unwrap_or_default().to_string(),
            reconsume_times: f.opt_i64("reconsumeTimes")?.unwrap_or(0) as i32,
            unit_mode: f.bool_or("unitMode", false),
            max_reconsume_times: f.opt_i64("maxReconsumeTimes")?.map(|v| v as i32),
            batch: truthy(f.field("batch")) || cmd.code == request::SEND_BATCH_MESSAGE,
        })
    }

    /// Encodes this header onto a request of `code` (our client and loadgen use it).
    pub fn to_command(&self, code: i32) -> RemotingCommand {
        let v2 = uses_letters(code);
        let name = |i: usize| if v2 { NAMES[i].1 } else { NAMES[i].0 };
        // The map is sized once for all of it (names, strings and up to 20 digits a number).
        let names: usize = (0..NAMES.len()).map(|i| name(i).len()).sum();
        let strings = self.producer_group.len()
            + self.topic.len()
            + self.default_topic.len()
            + self.properties.len();
        let mut fields = ExtFields::with_capacity(NAMES.len(), names + strings + 7 * 20);
        let mut digits = itoa::Buffer::new();
        fields.insert(name(0), &self.producer_group);
        fields.insert(name(1), &self.topic);
        fields.insert(name(2), &self.default_topic);
        fields.insert(name(3), digits.format(self.default_topic_queue_nums));
        fields.insert(name(4), digits.format(self.queue_id));
        fields.insert(name(5), digits.format(self.sys_flag));
        fields.insert(name(6), digits.format(self.born_timestamp));
        fields.insert(name(7), digits.format(self.flag));
        fields.insert(name(8), &self.properties);
        fields.insert(name(9), digits.format(self.reconsume_times));
        fields.insert(name(10), if self.unit_mode { "true" } else { "false" });
        if let Some(max) = self.max_reconsume_times {
            fields.insert(name(11), digits.format(max));
        }
        fields.insert(name(12), if self.batch { "true" } else { "false" });
        let mut cmd = RemotingCommand::request(code);
        cmd.ext_fields = Some(fields);
        cmd
    }
}

/// The send response header (`SendMessageResponseHeader`) plus the two ext fields the Java broker
/// adds (`MSG_REGION`, `TRACE_ON`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResponse {
    /// offsetMsgId (comma-joined for batches).
    pub msg_id: String,
    pub queue_id: i32,
    /// Queue offset of the (first) message.
    pub queue_offset: i64,
    pub transaction_id: Option<String>,
    pub region_id: String,
    pub trace_on: bool,
}

impl SendResponse {
    /// Adds the header fields to `response`.
    pub fn apply(&self, response: &mut RemotingCommand) {
        // Sized for what follows, so the answer's header grows no buffer.
        let text = self.msg_id.len() + self.region_id.len() + 80;
        response
            .ext_fields
            .get_or_insert_with(|| ExtFields::with_capacity(6, text));
        response.set_ext("msgId", self.msg_id.as_str());
        response.set_ext("queueId", itoa::Buffer::new().format(self.queue_id));
        response.set_ext("queueOffset", itoa::Buffer::new().format(self.queue_offset));
        if let Some(id) = &self.transaction_id {
            response.set_ext("transactionId", id.as_str());
        }
        response.set_ext("MSG_REGION", self.region_id.as_str());
        response.set_ext("TRACE_ON", if self.trace_on { "true" } else { "false" });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_names_decode_alike() {
        let req = SendRequest {
            producer_group: "pg".into(),
            topic: "T".into(),
            default_topic: "TBW102".into(),
            default_topic_queue_nums: 4,
            queue_id: 3,
            sys_flag: 0,
            born_timestamp: 17,
            flag: 0,
            properties: "TAGS\u{1}a".into(),
            reconsume_times: 0,
            unit_mode: false,
            max_reconsume_times: None,
            batch: false,
        };
        for code in [request::SEND_MESSAGE, request::SEND_MESSAGE_V2] {
            assert_eq!(
                SendRequest::from_command(&req.to_command(code)).unwrap(),
                req
            );
        }
        let batch =
            SendRequest::from_command(&req.to_command(request::SEND_BATCH_MESSAGE)).unwrap();
        assert!(batch.batch);
    }

    #[test]
    fn name_indexes_match_the_table() {
        for (i, (v1, v2)) in NAMES.iter().enumerate() {
            assert_eq!(v1_index(v1), Some(i), "{v1}");
            assert_eq!(v2_index(v2), Some(i), "{v2}");
        }
        assert_eq!(v1_index("b"), None);
        assert_eq!(v2_index("topic"), None);
        assert_eq!(v2_index("n"), None);
    }

    #[test]
    fn fields_under_the_other_naming_are_not_read() {
        // A V2 request carrying long names (and the reverse) has none of its fields.
        let cmd = RemotingCommand::request(request::SEND_MESSAGE_V2)
            .with_ext("producerGroup", "pg")
            .with_ext("topic", "T");
        let err = SendRequest::from_command(&cmd).unwrap_err();
        assert_eq!(
            err,
            FieldError::Missing {
                field: "producerGroup"
            }
        );
        let cmd = RemotingCommand::request(request::SEND_MESSAGE)
            .with_ext("a", "pg")
            .with_ext("b", "T");
        let err = SendRequest::from_command(&cmd).unwrap_err();
        assert_eq!(
            err,
            FieldError::Missing {
                field: "producerGroup"
            }
        );
    }

    #[test]
    fn missing_topic_names_the_field() {
        let cmd = RemotingCommand::request(request::SEND_MESSAGE_V2).with_ext("a", "pg");
        let err = SendRequest::from_command(&cmd).unwrap_err();
        assert_eq!(err, FieldError::Missing { field: "topic" });
    }
}
