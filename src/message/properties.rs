//! The properties string: `key \u{1} value \u{2} key \u{1} value …` (MESSAGE.md §2), and the
//! well-known keys. Java ≥ 4.9.1 writes no trailing `\u{2}`, the C++ and Go clients write one
//! after every pair: both are accepted. Items with an empty key or value are dropped, later
//! duplicates win, as in `MessageDecoder.string2messageProperties`.

use crate::packed_map::PackedMap;

/// Separates a key from its value.
pub const NAME_VALUE_SEPARATOR: char = '\u{1}';
/// Separates one pair from the next.
pub const PROPERTY_SEPARATOR: char = '\u{2}';

pub const TAGS: &str = "TAGS";
pub const KEYS: &str = "KEYS";
pub const UNIQ_KEY: &str = "UNIQ_KEY";
pub const WAIT: &str = "WAIT";
pub const DELAY: &str = "DELAY";
pub const TRAN_MSG: &str = "TRAN_MSG";
pub const PGROUP: &str = "PGROUP";
pub const REAL_TOPIC: &str = "REAL_TOPIC";
pub const REAL_QID: &str = "REAL_QID";
pub const RETRY_TOPIC: &str = "RETRY_TOPIC";
pub const ORIGIN_MESSAGE_ID: &str = "ORIGIN_MESSAGE_ID";
pub const RECONSUME_TIME: &str = "RECONSUME_TIME";
pub const MAX_RECONSUME_TIMES: &str = "MAX_RECONSUME_TIMES";
pub const CLUSTER: &str = "CLUSTER";
pub const TRAN_PREPARED_QUEUE_OFFSET: &str = "TRAN_PREPARED_QUEUE_OFFSET";
pub const TRANSACTION_CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
pub const CHECK_IMMUNITY_TIME_IN_SECONDS: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
/// Separator of the keys inside `KEYS`.
pub const KEY_SEPARATOR: char = ' ';

/// Parsed properties, in order of first appearance (later duplicates overwrite in place), in
/// one string ([`PackedMap`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pairs: PackedMap,
}

/// Room for a message's properties (a Java send has 3, the broker adds a few).
const PAIRS_EXPECTED: usize = 8;

impl Properties {
    /// Parses a properties string leniently (never fails).
    pub fn parse(raw: &str) -> Properties {
        // Room for a few pairs the broker adds (CLUSTER, REAL_TOPIC, ...) without growing.
        let mut pairs = PackedMap::with_capacity(PAIRS_EXPECTED, raw.len() + 64);
        for item in raw.split(PROPERTY_SEPARATOR) {
            let Some((key, value)) = item.split_once(NAME_VALUE_SEPARATOR) else {
                continue;
            };
            if !key.is_empty() && !value.is_empty() {
                pairs.insert(key, value);
            }
        }
        Properties { pairs }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.get(key)
    }

    /// Sets `key` (replacing in place).
    pub fn set(&mut self, key: &str, value: &str) {
        self.pairs.insert(key, value);
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.pairs.remove(key)
    }

    /// Pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter()
    }

    /// Serialises as Java ≥ 4.9.1 does: no trailing separator.
    pub fn to_wire(&self) -> String {
        let len = self.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        let mut out = String::with_capacity(len);
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                out.push(PROPERTY_SEPARATOR);
            }
            out.push_str(k);
            out.push(NAME_VALUE_SEPARATOR);
            out.push_str(v);
        }
        out
    }
}

/// Looks up one property in a raw properties string without building a map (hot path: TAGS,
/// KEYS and UNIQ_KEY during dispatch). Later duplicates win, as in Java.
pub fn find<'a>(raw: &'a str, key: &str) -> Option<&'a str> {
    raw.rsplit(PROPERTY_SEPARATOR)
        .filter_map(|item| item.split_once(NAME_VALUE_SEPARATOR))
        .find(|(k, v)| *k == key && !v.is_empty())
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_cpp_and_go_forms_parse_alike() {
        let java = "UNIQ_KEY\u{1}ABC\u{2}WAIT\u{1}true\u{2}TAGS\u{1}TagA";
        let cpp = "KEYS\u{1}k1 k2\u{2}TAGS\u{1}TagA\u{2}UNIQ_KEY\u{1}ABC\u{2}WAIT\u{1}true\u{2}";
        let j = Properties::parse(java);
        let c = Properties::parse(cpp);
        assert_eq!(j.get(TAGS), Some("TagA"));
        assert_eq!(c.get(TAGS), Some("TagA"));
        assert_eq!(c.get(KEYS), Some("k1 k2"));
        assert_eq!(j.to_wire(), java);
        assert_eq!(find(cpp, UNIQ_KEY), Some("ABC"));
        assert_eq!(find(cpp, "NOPE"), None);
    }

    #[test]
    fn empty_keys_and_values_are_dropped_and_duplicates_overwrite() {
        let p = Properties::parse("\u{1}x\u{2}A\u{1}\u{2}B\u{1}1\u{2}B\u{1}2\u{2}junk\u{2}\u{2}");
        assert_eq!(p.iter().collect::<Vec<_>>(), [("B", "2")]);
        assert_eq!(find("B\u{1}1\u{2}B\u{1}2", "B"), Some("2"));
    }
}
