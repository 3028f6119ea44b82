//! Bodies keyed by MessageQueue objects, as fastjson writes `Map<MessageQueue, X>`
//! (PROTOCOL.md §6.2): `{"consumeTps":0.0,"offsetTable":{{"brokerName":"b","queueId":0,
//! "topic":"T"}:{…}}}`. That is not JSON, so the table is cut out by hand and each key and value
//! parsed on its own; the rest of the body is parsed as (fastjson-normalized) JSON.

use serde_json::Value;

use crate::protocol::heartbeat::MessageQueue;
use crate::protocol::lenient::{self, LenientError};

/// Where and why a MessageQueue-keyed body does not parse.
#[derive(Debug, thiserror::Error)]
pub enum MqTableError {
    #[error("{source} in `{shown}`")]
    Json {
        source: LenientError,
        /// The start of the text that does not parse (120 characters at most).
        shown: String,
    },
    #[error("expected `{expected}` at byte {at}, found `{found}`")]
    Unexpected {
        expected: char,
        at: usize,
        found: char,
    },
    #[error("expected `{expected}` at byte {at}, found the end")]
    Truncated { expected: char, at: usize },
    #[error("unbalanced JSON from byte {0}")]
    Unbalanced(usize),
}

/// The entries of a MessageQueue-keyed table, in body order.
pub type MqEntries = Vec<(MessageQueue, Value)>;

/// Parses a body whose top-level member `field` is a MessageQueue-keyed table: its entries, and
/// the rest of the body with that member emptied (`{}`). A missing member is an empty table.
/// Keys written as JSON strings holding the object are accepted too.
pub fn parse_mq_table(body: &[u8], field: &str) -> Result<(MqEntries, Value), MqTableError> {
    let Some((start, end)) = member_span(body, field)? else {
        return Ok((Vec::new(), parse_json(body)?));
    };
    let entries = parse_entries(&body[start..end])?;
    let rest = [&body[..start], b"{}", &body[end..]].concat();
    Ok((entries, parse_json(&rest)?))
}

/// The members of the top-level object member `field` whose values may hold MessageQueue-keyed
/// tables (`GetConsumerStatusBody.consumerTable`: client id → table): each string key and its
/// value's raw bytes. A missing member has none.
pub fn raw_members<'a>(
    body: &'a [u8],
    field: &str,
) -> Result<Vec<(String, &'a [u8])>, MqTableError> {
    let Some((start, end)) = member_span(body, field)? else {
        return Ok(Vec::new());
    };
    let object = &body[start..end];
    let mut members = Vec::new();
    expect(object, 0, b'{')?;
    let mut at = 1;
    loop {
        at = skip_ws(object, at);
        match object.get(at) {
            Some(b'}') => return Ok(members),
            Some(b',') => at = skip_ws(object, at + 1),
            _ => {}
        }
        let key_end = value_end(object, at)?;
        let key: String = parse_json(&object[at..key_end])?;
        at = skip_ws(object, key_end);
        expect(object, at, b':')?;
        let value_start = skip_ws(object, at + 1);
        let value_stop = value_end(object, value_start)?;
        members.push((key, &object[value_start..value_stop]));
        at = value_stop;
    }
}

/// Where the value of the top-level member `field` is in `body`.
fn member_span(body: &[u8], field: &str) -> Result<Option<(usize, usize)>, MqTableError> {
    let mut at = skip_ws(body, 0);
    expect(body, at, b'{')?;
    at += 1;
    let mut table = None;
    loop {
        at = skip_ws(body, at);
        match body.get(at) {
            Some(b'}') => break,
            Some(b',') => at = skip_ws(body, at + 1),
            _ => {}
        }
        let key_end = value_end(body, at)?;
        let key: String = parse_json(&body[at..key_end])?;
        at = skip_ws(body, key_end);
        expect(body, at, b':')?;
        let start = skip_ws(body, at + 1);
        let end = value_end(body, start)?;
        if key == field {
            table = Some((start, end));
        }
        at = end;
    }
    Ok(table)
}

/// The `{key:value,…}` of the table itself.
fn parse_entries(table: &[u8]) -> Result<MqEntries, MqTableError> {
    let mut entries = Vec::new();
    expect(table, 0, b'{')?;
    let mut at = 1;
    loop {
        at = skip_ws(table, at);
        match table.get(at) {
            Some(b'}') => return Ok(entries),
            Some(b',') => at = skip_ws(table, at + 1),
            _ => {}
        }
        let key_end = value_end(table, at)?;
        let key = parse_queue(&table[at..key_end])?;
        at = skip_ws(table, key_end);
        expect(table, at, b':')?;
        let start = skip_ws(table, at + 1);
        let end = value_end(table, start)?;
        entries.push((key, parse_json(&table[start..end])?));
        at = end;
    }
}

/// A MessageQueue key: an object, or a string holding one.
fn parse_queue(key: &[u8]) -> Result<MessageQueue, MqTableError> {
    if key.first() == Some(&b'"') {
        let inner: String = parse_json(key)?;
        return parse_json(inner.as_bytes());
    }
    parse_json(key)
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &[u8]) -> Result<T, MqTableError> {
    lenient::from_slice(text).map_err(|source| MqTableError::Json {
        source,
        shown: String::from_utf8_lossy(text).chars().take(120).collect(),
    })
}

fn skip_ws(text: &[u8], mut at: usize) -> usize {
    while text.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

fn expect(text: &[u8], at: usize, c: u8) -> Result<(), MqTableError> {
    match text.get(at) {
        Some(&found) if found == c => Ok(()),
        Some(&found) => Err(MqTableError::Unexpected {
            expected: c as char,
            at,
            found: found as char,
        }),
        None => Err(MqTableError::Truncated {
            expected: c as char,
            at,
        }),
    }
}

/// The index just past the JSON value (object, array, string or scalar) starting at `start`.
fn value_end(text: &[u8], start: usize) -> Result<usize, MqTableError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &c) in text.iter().enumerate().skip(start) {
        match (in_string, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => {
                in_string = false;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => depth += 1,
            (false, _, b'}' | b']') if depth == 0 => return Ok(i),
            (false, _, b'}' | b']') => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            (false, _, b',' | b':') if depth == 0 => return Ok(i),
            (false, _, c) if depth == 0 && c.is_ascii_whitespace() => return Ok(i),
            _ => {}
        }
    }
    if depth == 0 && !in_string && start < text.len() {
        return Ok(text.len());
    }
    Err(MqTableError::Unbalanced(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_stats_as_java_writes_them() {
        let body = concat!(
            r#"{"consumeTps":1.5,"offsetTable":{{"brokerName":"b","queueId":1,"topic":"T"}:"#,
            r#"{"brokerOffset":5,"consumerOffset":3,"lastTimestamp":0},"#,
            r#"{"brokerName":"b","queueId":0,"topic":"T"}:"#,
            r#"{"brokerOffset":2,"consumerOffset":2,"lastTimestamp":7}}}"#
        )
        .as_bytes();
        let (entries, rest) = parse_mq_table(body, "offsetTable").unwrap();
        assert_eq!(
            rest,
            serde_json::json!({"consumeTps": 1.5, "offsetTable": {}})
        );
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].0.queue_id, entries[1].0.queue_id), (1, 0));
        assert_eq!(entries[0].1["brokerOffset"], 5);
        assert_eq!(entries[1].0.topic, "T");
    }

    #[test]
    fn whitespace_string_keys_and_empty_tables() {
        let body = concat!(
            r#" { "offsetTable" : { "{\"brokerName\":\"b\",\"queueId\":3,\"topic\":\"x\"}" "#,
            r#": {"minOffset": 0} } , "n" : 1 } "#
        )
        .as_bytes();
        let (entries, rest) = parse_mq_table(body, "offsetTable").unwrap();
        assert_eq!(entries[0].0.queue_id, 3);
        assert_eq!(rest["n"], 1);
        let (entries, _) =
            parse_mq_table(br#"{"consumeTps":0.0,"offsetTable":{}}"#, "offsetTable").unwrap();
        assert!(entries.is_empty());
        assert!(parse_mq_table(br#"{"x":1}"#, "offsetTable")
            .unwrap()
            .0
            .is_empty());
    }

    #[test]
    fn broken_bodies_are_errors() {
        assert!(parse_mq_table(b"", "offsetTable").is_err());
        assert!(
            parse_mq_table(br#"{"offsetTable":{{"brokerName":"b"}:1}}"#, "offsetTable").is_err()
        );
        assert!(parse_mq_table(br#"{"offsetTable":{{"a":1"#, "offsetTable").is_err());
    }
}
