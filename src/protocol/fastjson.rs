//! fastjson compatibility: Java RocketMQ writes maps with non-string keys unquoted
//! (`{0:"127.0.0.1:10911"}`, `{"offsetTable":{"T@g":{0:12}}}`), which is not JSON. `normalize`
//! quotes such bare keys so serde can read what a Java broker or namesrv sends.

use std::borrow::Cow;

/// Returns `input` with bare (unquoted) object keys quoted. Strings are left untouched, so a
/// `{` or `,` inside a string value does not confuse it. Borrowed when nothing needed quoting.
pub fn normalize(input: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut in_string = false;
    let mut escaped = false;
    let mut expect_key = false;
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if c == b'"' {
            in_string = true;
            expect_key = false;
        } else if c == b'{' || c == b',' {
            expect_key = true;
        } else if expect_key && (c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
            let end = input[i..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'))
                .map_or(input.len(), |n| i + n);
            if input[end..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b':') {
                let buf = out.get_or_insert_with(|| input[..i].to_vec());
                buf.push(b'"');
                buf.extend_from_slice(&input[i..end]);
                buf.push(b'"');
                i = end;
                expect_key = false;
                continue;
            }
            expect_key = false;
        } else if !c.is_ascii_whitespace() {
            expect_key = false;
        }
        if let Some(buf) = out.as_mut() {
            buf.push(c);
        }
        i += 1;
    }
    out.map_or(Cow::Borrowed(input), Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_bare_numeric_keys_only() {
        let java = br#"{"brokerAddrTable":{"b":{"brokerAddrs":{0:"127.0.0.1:10911",1:"x,{2:y"}}}}"#;
        let fixed = normalize(java);
        let text = std::str::from_utf8(&fixed).unwrap();
        assert_eq!(
            text,
            r#"{"brokerAddrTable":{"b":{"brokerAddrs":{"0":"127.0.0.1:10911","1":"x,{2:y"}}}}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&fixed).unwrap();
        assert_eq!(v["brokerAddrTable"]["b"]["brokerAddrs"]["1"], "x,{2:y");
    }

    #[test]
    fn leaves_standard_json_borrowed() {
        let std_json = br#"{"a":[1,2,{"b":-3}],"c":true,"d":"e:f"}"#;
        assert!(matches!(normalize(std_json), Cow::Borrowed(_)));
    }

    #[test]
    fn values_that_look_like_keys_are_untouched() {
        let input = br#"{"a":12,"b":[3, 4],-1:5}"#;
        assert_eq!(&normalize(input)[..], br#"{"a":12,"b":[3, 4],"-1":5}"#);
    }
}
