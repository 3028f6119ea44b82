//! An ordered map of string keys to string values kept in one string: what a request header's
//! `extFields` and a message's properties are. A map of n entries costs two allocations (its
//! text and its entry list), not 2n: both are built for every message on the send path.
//! Insertion order is kept, a key set again keeps its place (Java `HashMap.put` as the wire
//! shows it), lookups are linear (a few dozen keys at most). A lookup of a key the map has
//! never held skips the search for it (a small filter of the keys' shapes says so), so a map
//! built from distinct keys, as a decoded header is, costs no key comparisons, nor does asking
//! for a property a message does not have.

/// The map. Keys and values live back to back in `text`; `spans` says where each entry's key
/// and value are, in order.
#[derive(Clone, Default)]
pub struct PackedMap {
    text: String,
    spans: Vec<Span>,
    /// One bit per [`shape_bit`] of every key inserted since the map was built or compacted
    /// (removals leave theirs set): a key whose bit is clear is not in the map.
    shapes: u128,
}

/// A bit standing for `key`'s length and first and last bytes.
fn shape_bit(key: &str) -> u128 {
    let bytes = key.as_bytes();
    let (first, last) = match bytes {
        [] => (0, 0),
        [first, .., last] => (*first, *last),
        [only] => (*only, *only),
    };
    let shape = u32::from(first) | u32::from(last) << 8 | (bytes.len() as u32) << 16;
    1u128 << (shape.wrapping_mul(0x9E37_79B1) >> 25)
}

/// One entry of [`PackedMap`]: its key is `text[key_start..value_start]`, its value
/// `text[value_start..value_end]`.
#[derive(Clone, Copy)]
struct Span {
    key_start: u32,
    value_start: u32,
    value_end: u32,
}

impl PackedMap {
    /// An empty map.
    pub fn new() -> PackedMap {
        PackedMap::default()
    }

    /// An empty map with room for `entries` entries of `text_bytes` bytes of keys and values.
    pub fn with_capacity(entries: usize, text_bytes: usize) -> PackedMap {
        PackedMap {
            text: String::with_capacity(text_bytes),
            spans: Vec::with_capacity(entries),
            shapes: 0,
        }
    }

    fn key_of(&self, span: &Span) -> &str {
        &self.text[span.key_start as usize..span.value_start as usize]
    }

    fn value_of(&self, span: &Span) -> &str {
        &self.text[span.value_start as usize..span.value_end as usize]
    }

    /// Where `key` is; a key whose shape bit is clear is not searched for.
    fn position(&self, key: &str) -> Option<usize> {
        if self.shapes & shape_bit(key) == 0 {
            return None;
        }
        self.spans.iter().position(|s| self.key_of(s) == key)
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.position(key).map(|i| self.value_of(&self.spans[i]))
    }

    /// Appends `s` to the text and returns where it starts and ends.
    fn push_text(&mut self, s: &str) -> (u32, u32) {
        let start = self.text.len();
        self.text.push_str(s);
        // Maps hold a header or a message's properties, both within a frame (16 MiB).
        (start as u32, self.text.len() as u32)
    }

    /// Sets `key`, replacing an earlier value in place (Java `HashMap.put`).
    pub fn insert(&mut self, key: impl AsRef<str>, value: impl AsRef<str>) {
        let (key, value) = (key.as_ref(), value.as_ref());
        let earlier = self.position(key);
        self.shapes |= shape_bit(key);
        // A replaced entry moves to the end of the text; its old bytes stay until a compaction.
        let (key_start, value_start) = self.push_text(key);
        let (_, value_end) = self.push_text(value);
        let span = Span {
            key_start,
            value_start,
            value_end,
        };
        match earlier {
            Some(i) => {
                self.spans[i] = span;
                self.compact_if_sparse();
            }
            None => self.spans.push(span),
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let index = self.position(key)?;
        let value = self.value_of(&self.spans[index]).to_string();
        self.spans.remove(index);
        self.compact_if_sparse();
        Some(value)
    }

    /// Rewrites the text without the bytes of replaced and removed entries once they are
    /// most of it, so a map changed many times stays bounded by what it holds.
    fn compact_if_sparse(&mut self) {
        let live: usize = self
            .spans
            .iter()
            .map(|s| (s.value_end - s.key_start) as usize)
            .sum();
        if self.text.len() <= 2 * live + 64 {
            return;
        }
        let mut compact = PackedMap::with_capacity(self.spans.len(), live);
        for (k, v) in self.iter() {
            compact.insert(k, v);
        }
        *self = compact;
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.spans
            .iter()
            .map(|s| (self.key_of(s), self.value_of(s)))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

impl PartialEq for PackedMap {
    fn eq(&self, other: &PackedMap) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for PackedMap {}

impl std::fmt::Debug for PackedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for PackedMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> PackedMap {
        let mut fields = PackedMap::new();
        for (k, v) in iter {
            fields.insert(k, v);
        }
        fields
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_replaces_in_place_and_removes() {
        let mut f = PackedMap::new();
        f.insert("a", "1");
        f.insert("bb", "22");
        f.insert("c", "");
        f.insert("a", "one");
        assert_eq!(
            f.iter().collect::<Vec<_>>(),
            [("a", "one"), ("bb", "22"), ("c", "")]
        );
        assert_eq!(f.get("bb"), Some("22"));
        assert_eq!(f.get("b"), None);
        assert_eq!(f.remove("bb").as_deref(), Some("22"));
        assert_eq!(f.remove("bb"), None);
        assert_eq!(f.len(), 2);
        assert_eq!(format!("{f:?}"), r#"{"a": "one", "c": ""}"#);
    }

    #[test]
    fn maps_are_equal_by_entries_not_by_history() {
        let mut changed = PackedMap::new();
        changed.insert("k", "old");
        changed.insert("x", "gone");
        changed.insert("k", "v");
        changed.remove("x");
        let plain: PackedMap = [("k", "v")].into_iter().collect();
        assert_eq!(changed, plain);
        changed.insert("k", "w");
        assert_ne!(changed, plain);
    }

    #[test]
    fn keys_of_one_shape_are_still_told_apart_and_replaced() {
        // "a0b", "a1b", ... have one length and the same first and last bytes: one shape.
        let mut f = PackedMap::new();
        let keys: Vec<String> = (0..10).map(|i| format!("a{i}b")).collect();
        for (i, k) in keys.iter().enumerate() {
            f.insert(k, i.to_string());
        }
        for (i, k) in keys.iter().enumerate().rev() {
            f.insert(k, format!("v{i}"));
        }
        f.remove("a3b");
        f.insert("a3b", "back");
        f.insert("", "empty");
        f.insert("", "again");
        let got: Vec<_> = f.iter().collect();
        assert_eq!(got.len(), 11);
        assert_eq!(got[0], ("a0b", "v0"));
        assert_eq!(got[9], ("a3b", "back"));
        assert_eq!(got[10], ("", "again"));
        assert_eq!(f.get("a7b"), Some("v7"));
    }

    #[test]
    fn a_map_set_over_and_over_stays_the_size_of_what_it_holds() {
        let mut f = PackedMap::new();
        f.insert("queueId", "0");
        for i in 0..10_000 {
            f.insert("queueId", i.to_string());
            f.insert("tmp", "x".repeat(100));
            f.remove("tmp");
        }
        assert_eq!(f.get("queueId"), Some("9999"));
        assert!(f.text.len() < 512, "text grew to {} bytes", f.text.len());
    }
}
