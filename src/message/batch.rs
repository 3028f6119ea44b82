//! The body of SEND_BATCH_MESSAGE (MESSAGE.md §5): elements of
//! `[total i32][magic i32][crc i32][flag i32][body len i32][body][props len i16][props]`.

use thiserror::Error;

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchElement<'a> {
    pub flag: i32,
    pub body: &'a [u8],
    pub properties: &'a str,
}

/// A batch body that does not parse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("batch element {index} at byte {offset} is malformed: {reason}")]
pub struct BatchError {
    pub index: usize,
    pub offset: usize,
    pub reason: &'static str,
}

/// Splits a batch body into its messages.
pub fn decode(body: &[u8]) -> Result<Vec<BatchElement<'_>>, BatchError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let fail = |reason| BatchError {
            index: out.len(),
            offset: pos,
            reason,
        };
        let rest = &body[pos..];
        let int = |at: usize| -> Option<i32> {
            rest.get(at..at + 4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        let total = int(0).ok_or_else(|| fail("truncated header"))?;
        let total = usize::try_from(total).map_err(|_| fail("negative size"))?;
        if total < 22 || total > rest.len() {
            return Err(fail("size out of range"));
        }
        let flag = int(12).ok_or_else(|| fail("truncated header"))?;
        let body_len = int(16)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| fail("bad body length"))?;
        let props_at = 20 + body_len;
        let props_len = rest
            .get(props_at..props_at + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| fail("bad properties length"))?;
        if props_at + 2 + props_len != total {
            return Err(fail("lengths do not add up"));
        }
        let properties = std::str::from_utf8(&rest[props_at + 2..total])
            .map_err(|_| fail("properties are not UTF-8"))?;
        out.push(BatchElement {
            flag,
            body: &rest[20..props_at],
            properties,
        });
        pos += total;
    }
    Ok(out)
}

/// Encodes messages as a batch body (our client and loadgen).
pub fn encode(elements: &[BatchElement<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        let total = 20 + e.body.len() + 2 + e.properties.len();
        out.extend_from_slice(&(total as i32).to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&e.flag.to_be_bytes());
        out.extend_from_slice(&(e.body.len() as i32).to_be_bytes());
        out.extend_from_slice(e.body);
        out.extend_from_slice(&(e.properties.len() as i16).to_be_bytes());
        out.extend_from_slice(e.properties.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let elems = [
            BatchElement {
                flag: 1,
                body: b"one",
                properties: "UNIQ_KEY\u{1}A",
            },
            BatchElement {
                flag: 0,
                body: b"",
                properties: "",
            },
        ];
        let bytes = encode(&elems);
        assert_eq!(decode(&bytes).unwrap(), elems);
        for cut in 1..bytes.len() {
            let _ = decode(&bytes[..cut]); // never panics
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[19] = 99;
        assert!(decode(&bad).is_err());
    }
}
