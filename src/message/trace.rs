//! Message trace records as RocketMQ clients write them (`TraceDataEncoder`): the body of a
//! message on the trace topic (`RMQ_SYS_TRACE_TOPIC` by default) holds one or more records,
//! each ended by `\u{2}`, their fields separated by `\u{1}`; the message's KEYS are the traced
//! messages' ids and keys, so a trace is found by a key query on the trace topic.
//!
//! | type | fields after the type |
//! |---|---|
//! | `Pub` | time, region, group, topic, msgId, tags, keys, storeHost, bodyLength, costTime, msgType, [offsetMsgId,] success[, clientHost] |
//! | `SubBefore` | time, region, group, requestId, msgId, retryTimes, keys |
//! | `SubAfter` | requestId, msgId, costTime, success, keys[, contextCode[, time]] |
//! | `EndTransaction` | time, region, group, topic, msgId, tags, keys, storeHost, msgType, transactionId, transactionState, fromTransactionCheck |
//!
//! Decoding never fails as a whole: a record that does not decode is returned as
//! [`TraceEntry::Invalid`] with its text and the reason, beside the records that do. Pure.

use serde::Serialize;

/// Separates the fields of a record (`TraceConstants.CONTENT_SPLITOR`).
pub const CONTENT_SEPARATOR: char = '\u{1}';
/// Ends each record (`TraceConstants.FIELD_SPLITOR`).
pub const RECORD_SEPARATOR: char = '\u{2}';
/// The default trace topic (`TopicValidator.RMQ_SYS_TRACE_TOPIC`).
pub const DEFAULT_TRACE_TOPIC: &str = "RMQ_SYS_TRACE_TOPIC";

/// A record's type (`TraceType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TraceType {
    Pub,
    SubBefore,
    SubAfter,
    EndTransaction,
}

impl TraceType {
    pub fn name(self) -> &'static str {
        match self {
            TraceType::Pub => "Pub",
            TraceType::SubBefore => "SubBefore",
            TraceType::SubAfter => "SubAfter",
            TraceType::EndTransaction => "EndTransaction",
        }
    }
}

/// One decoded record; fields a record type does not carry (or an older client left out) are
/// `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceRecord {
    pub trace_type: TraceType,
    /// When the traced action happened (ms since the epoch).
    pub timestamp: Option<i64>,
    pub region_id: Option<String>,
    /// Producer group (Pub, EndTransaction) or consumer group (SubBefore).
    pub group: Option<String>,
    /// Joins a consume's SubBefore and SubAfter.
    pub request_id: Option<String>,
    pub topic: Option<String>,
    /// The traced message's id (its UNIQ_KEY).
    pub msg_id: String,
    pub tags: Option<String>,
    pub keys: Option<String>,
    pub store_host: Option<String>,
    pub body_length: Option<i64>,
    pub cost_ms: Option<i64>,
    /// `MessageType` ordinal: 0 normal, 1 transaction half, 2 transaction commit, 3 delay.
    pub msg_type: Option<i64>,
    pub offset_msg_id: Option<String>,
    pub success: Option<bool>,
    /// Written by newer clients on Pub; otherwise the trace message's born host tells.
    pub client_host: Option<String>,
    pub retry_times: Option<i64>,
    /// `ConsumeReturnType` ordinal of a SubAfter.
    pub context_code: Option<i64>,
    pub transaction_id: Option<String>,
    /// `LocalTransactionState` name: COMMIT_MESSAGE, ROLLBACK_MESSAGE, UNKNOW.
    pub transaction_state: Option<String>,
    pub from_transaction_check: Option<bool>,
}

/// A record of a trace message body: decoded, or not.
// Most entries are records: boxing them would allocate twice per record to save the rare
// invalid one some bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TraceEntry {
    Record(TraceRecord),
    /// The record's text (separators shown as `|`) and why it does not decode.
    Invalid {
        text: String,
        #[serde(serialize_with = "as_text")]
        reason: TraceError,
    },
}

/// Why a trace record does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    #[error("the trace message body is not UTF-8 text: {0}")]
    NotUtf8(std::str::Utf8Error),
    #[error("{kind} record has no {name} (field {index} of {count})")]
    Missing {
        kind: String,
        name: &'static str,
        index: usize,
        count: usize,
    },
    #[error("{kind} record's {name} (field {index}) is not a number: {value:?}")]
    NotANumber {
        kind: String,
        name: &'static str,
        index: usize,
        value: String,
    },
    #[error(
        "EndTransaction record's transactionState (field 11) is not a LocalTransactionState: \
         {0:?}"
    )]
    BadTransactionState(String),
    #[error("the record has no type")]
    NoType,
    #[error("unknown trace type {0:?} (ringmq decodes Pub, SubBefore, SubAfter, EndTransaction)")]
    UnknownType(String),
}

fn as_text<S: serde::Serializer>(e: &TraceError, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(e)
}

/// Decodes a trace message body.
pub fn decode_body(body: &[u8]) -> Vec<TraceEntry> {
    match std::str::from_utf8(body) {
        Ok(text) => decode(text),
        Err(e) => vec![TraceEntry::Invalid {
            text: printable(&String::from_utf8_lossy(body)),
            reason: TraceError::NotUtf8(e),
        }],
    }
}

/// Decodes the records of a trace message body.
pub fn decode(data: &str) -> Vec<TraceEntry> {
    data.split(RECORD_SEPARATOR)
        .filter(|r| !r.trim().is_empty())
        .map(|record| match decode_record(record) {
            Ok(r) => TraceEntry::Record(r),
            Err(reason) => TraceEntry::Invalid {
                text: printable(record),
                reason,
            },
        })
        .collect()
}

/// A record's text with its separators visible.
fn printable(record: &str) -> String {
    const MAX_CHARS: usize = 512;
    record
        .chars()
        .map(|c| match c {
            CONTENT_SEPARATOR | RECORD_SEPARATOR => '|',
            c if c.is_control() => '?',
            c => c,
        })
        .take(MAX_CHARS)
        .collect()
}

/// The fields of one record, by position.
struct Fields<'a> {
    kind: &'a str,
    fields: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    fn text(&self, i: usize) -> Option<String> {
        self.fields
            .get(i)
            .filter(|v| !v.is_empty() && **v != "null")
            .map(|v| v.to_string())
    }

    fn required(&self, i: usize, name: &'static str) -> Result<&'a str, TraceError> {
        match self.fields.get(i) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(TraceError::Missing {
                kind: self.kind.to_string(),
                name,
                index: i,
                count: self.fields.len(),
            }),
        }
    }

    fn number(&self, i: usize, name: &'static str) -> Result<i64, TraceError> {
        let v = self.required(i, name)?;
        v.trim().parse().map_err(|_| TraceError::NotANumber {
            kind: self.kind.to_string(),
            name,
            index: i,
            value: v.to_string(),
        })
    }

    fn optional_number(&self, i: usize, name: &'static str) -> Result<Option<i64>, TraceError> {
        match self.fields.get(i) {
            Some(v) if !v.is_empty() => self.number(i, name).map(Some),
            _ => Ok(None),
        }
    }

    /// Java's `Boolean.parseBoolean`: "true" in any case, anything else false.
    fn boolean(&self, i: usize) -> Option<bool> {
        self.fields.get(i).map(|v| v.eq_ignore_ascii_case("true"))
    }
}

fn empty(trace_type: TraceType, msg_id: String) -> TraceRecord {
    TraceRecord {
        trace_type,
        timestamp: None,
        region_id: None,
        group: None,
        request_id: None,
        topic: None,
        msg_id,
        tags: None,
        keys: None,
        store_host: None,
        body_length: None,
        cost_ms: None,
        msg_type: None,
        offset_msg_id: None,
        success: None,
        client_host: None,
        retry_times: None,
        context_code: None,
        transaction_id: None,
        transaction_state: None,
        from_transaction_check: None,
    }
}

fn decode_record(record: &str) -> Result<TraceRecord, TraceError> {
    let mut fields: Vec<&str> = record.split(CONTENT_SEPARATOR).collect();
    // Java's String.split drops trailing empty fields; positions are read the same way.
    while fields.last().is_some_and(|f| f.is_empty()) {
        fields.pop();
    }
    let kind = fields.first().copied().unwrap_or_default().trim();
    let f = Fields { kind, fields };
    match kind {
        "Pub" => {
            let mut r = empty(TraceType::Pub, f.required(5, "msgId")?.to_string());
            r.timestamp = Some(f.number(1, "timestamp")?);
            r.region_id = f.text(2);
            r.group = f.text(3);
            r.topic = f.text(4);
            r.tags = f.text(6);
            r.keys = f.text(7);
            r.store_host = f.text(8);
            r.body_length = Some(f.number(9, "bodyLength")?);
            r.cost_ms = Some(f.number(10, "costTime")?);
            r.msg_type = Some(f.number(11, "msgType")?);
            match f.fields.len() {
                ..=12 => {}
                13 => r.success = f.boolean(12),
                n => {
                    r.offset_msg_id = f.text(12);
                    r.success = f.boolean(13);
                    if n >= 15 {
                        r.client_host = f.text(14);
                    }
                }
            }
            Ok(r)
        }
        "SubBefore" => {
            let mut r = empty(TraceType::SubBefore, f.required(5, "msgId")?.to_string());
            r.timestamp = Some(f.number(1, "timestamp")?);
            r.region_id = f.text(2);
            r.group = Some(f.required(3, "group")?.to_string());
            r.request_id = Some(f.required(4, "requestId")?.to_string());
            r.retry_times = Some(f.number(6, "retryTimes")?);
            r.keys = f.text(7);
            Ok(r)
        }
        "SubAfter" => {
            let mut r = empty(TraceType::SubAfter, f.required(2, "msgId")?.to_string());
            r.request_id = Some(f.required(1, "requestId")?.to_string());
            r.cost_ms = Some(f.number(3, "costTime")?);
            f.required(4, "success")?;
            r.success = f.boolean(4);
            r.keys = f.text(5);
            r.context_code = f.optional_number(6, "contextCode")?;
            r.timestamp = f.optional_number(7, "timestamp")?;
            Ok(r)
        }
        "EndTransaction" => {
            let mut r = empty(
                TraceType::EndTransaction,
                f.required(5, "msgId")?.to_string(),
            );
            r.timestamp = Some(f.number(1, "timestamp")?);
            r.region_id = f.text(2);
            r.group = f.text(3);
            r.topic = f.text(4);
            r.tags = f.text(6);
            r.keys = f.text(7);
            r.store_host = f.text(8);
            r.msg_type = Some(f.number(9, "msgType")?);
            r.transaction_id = f.text(10);
            let state = f.required(11, "transactionState")?;
            if !matches!(state, "COMMIT_MESSAGE" | "ROLLBACK_MESSAGE" | "UNKNOW") {
                return Err(TraceError::BadTransactionState(state.to_string()));
            }
            r.transaction_state = Some(state.to_string());
            r.from_transaction_check = f.boolean(12);
            Ok(r)
        }
        "" => Err(TraceError::NoType),
        other => Err(TraceError::UnknownType(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(fields: &[&str]) -> String {
        let mut s = fields.join(&CONTENT_SEPARATOR.to_string());
        s.push(RECORD_SEPARATOR);
        s
    }

    fn record(entry: &TraceEntry) -> &TraceRecord {
        match entry {
            TraceEntry::Record(r) => r,
            TraceEntry::Invalid { reason, .. } => panic!("invalid: {reason}"),
        }
    }

    #[test]
    fn decodes_each_java_layout() {
        let pub_old = join(&[
            "Pub",
            "1700000000000",
            "DefaultRegion",
            "pg",
            "T",
            "ID1",
            "tagA",
            "k1 k2",
            "10.0.0.1:10911",
            "42",
            "3",
            "0",
            "true",
        ]);
        let pub_new = join(&[
            "Pub",
            "1700000000001",
            "DefaultRegion",
            "pg",
            "T",
            "ID1",
            "tagA",
            "k1",
            "10.0.0.1:10911",
            "42",
            "5",
            "0",
            "0A00000100002A9F0000000000000000",
            "false",
            "10.0.0.9",
        ]);
        let before = join(&[
            "SubBefore",
            "1700000000100",
            "DefaultRegion",
            "cg",
            "req-1",
            "ID1",
            "0",
            "k1",
        ]);
        let after = join(&[
            "SubAfter",
            "req-1",
            "ID1",
            "7",
            "true",
            "k1",
            "0",
            "1700000000107",
        ]);
        let after_old = join(&["SubAfter", "req-2", "ID1", "9", "false", "k1"]);
        let end = join(&[
            "EndTransaction",
            "1700000000200",
            "DefaultRegion",
            "pg",
            "T",
            "ID1",
            "null",
            "k1",
            "10.0.0.1:10911",
            "1",
            "tx-1",
            "COMMIT_MESSAGE",
            "true",
        ]);
        let body = [pub_old, pub_new, before, after, after_old, end].concat();
        let entries = decode(&body);
        assert_eq!(entries.len(), 6);
        let r = record(&entries[0]);
        assert_eq!(r.trace_type, TraceType::Pub);
        assert_eq!(
            (r.timestamp, r.cost_ms, r.success),
            (Some(1700000000000), Some(3), Some(true))
        );
        assert_eq!(r.offset_msg_id, None);
        let r = record(&entries[1]);
        assert_eq!(r.success, Some(false));
        assert_eq!(r.client_host.as_deref(), Some("10.0.0.9"));
        assert!(r.offset_msg_id.is_some());
        let r = record(&entries[2]);
        assert_eq!(
            (r.group.as_deref(), r.request_id.as_deref()),
            (Some("cg"), Some("req-1"))
        );
        let r = record(&entries[3]);
        assert_eq!(
            (r.cost_ms, r.success, r.timestamp),
            (Some(7), Some(true), Some(1700000000107))
        );
        let r = record(&entries[4]);
        assert_eq!(
            (r.success, r.timestamp, r.context_code),
            (Some(false), None, None)
        );
        let r = record(&entries[5]);
        assert_eq!(r.transaction_state.as_deref(), Some("COMMIT_MESSAGE"));
        assert_eq!(
            (r.tags.as_deref(), r.from_transaction_check),
            (None, Some(true))
        );
    }

    #[test]
    fn bad_records_are_reported_beside_good_ones() {
        let good = join(&["SubAfter", "req-1", "ID1", "7", "true", "k1"]);
        let bodies = [
            (
                join(&["Pub", "yesterday", "r", "g", "T", "ID1"]),
                "timestamp",
            ),
            (
                join(&["Pub", "1", "r", "g", "T", "ID1", "", "", "h", "x"]),
                "bodyLength",
            ),
            (join(&["SubBefore", "1", "r"]), "no msgId"),
            (
                join(&[
                    "EndTransaction",
                    "1",
                    "r",
                    "g",
                    "T",
                    "ID1",
                    "",
                    "",
                    "h",
                    "0",
                    "t",
                    "MAYBE",
                ]),
                "LocalTransactionState",
            ),
            (join(&["Recall", "1"]), "unknown trace type"),
            (join(&["", "1"]), "no type"),
            ("just some text\u{2}".to_string(), "unknown trace type"),
        ];
        for (bad, why) in bodies {
            let entries = decode(&format!("{bad}{good}"));
            assert_eq!(entries.len(), 2, "{bad:?}");
            match &entries[0] {
                TraceEntry::Invalid { reason, text } => {
                    assert!(reason.to_string().contains(why), "{reason}");
                    assert!(!text.contains(CONTENT_SEPARATOR));
                }
                other => panic!("{bad:?} decoded: {other:?}"),
            }
            record(&entries[1]);
        }
        let entries = decode_body(&[0xff, 0xfe, 1, 2]);
        assert!(
            matches!(&entries[..], [TraceEntry::Invalid { reason, .. }] if matches!(reason, TraceError::NotUtf8(_)))
        );
        assert!(decode("").is_empty());
    }
}
