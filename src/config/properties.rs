//! Owns the `java.util.Properties` text format as RocketMQ reads its `-c` files: logical lines
//! (with backslash continuations), `#`/`!` comments, the `=`/`:`/whitespace key separators and
//! the `\t \n \r \f \\ \uXXXX` escapes. Pure: text in, ordered entries out; no I/O, no keys.
//!
//! Faithful to `Properties.load` in the places that change meaning: the leading whitespace of a
//! key and of a value is skipped, but a value's trailing whitespace is **kept**, because Java
//! keeps it (and then fails to parse `SYNC_MASTER ` as a role, silently). The typed layer above
//! warns about it.

use std::fmt;

/// One `key=value` pair, in file order. A key set twice yields two entries (Java keeps the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key with escapes resolved.
    pub key: String,
    /// The value with escapes resolved; trailing whitespace is kept, as Java keeps it.
    pub value: String,
    /// 1-based line number of the first physical line of the (possibly continued) entry.
    pub line: usize,
}

/// A line the Java reader would also reject (only malformed `\uXXXX` escapes qualify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number of the offending entry.
    pub line: usize,
    /// What is wrong.
    pub reason: EscapeError,
}

/// A backslash escape Java's `Properties.load` would reject too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscapeError {
    #[error("malformed \\uXXXX escape (needs four hex digits)")]
    MalformedUnicode,
    #[error("\\u{0:04X} is half of a surrogate pair")]
    LoneSurrogate(u16),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

/// The whitespace `Properties.load` skips: space, tab and form feed (not other Unicode blanks).
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{000C}')
}

/// Parses a properties text into its entries, in file order.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    logical_lines(text)
        .into_iter()
        .map(|(line, logical)| split_entry(line, &logical))
        .collect()
}

/// Splits `text` into physical lines; `\n`, `\r` and `\r\n` all end a line.
fn physical_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['\n', '\r']) {
            None => {
                lines.push(rest);
                break;
            }
            Some(at) => {
                lines.push(&rest[..at]);
                let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[at + skip..];
            }
        }
    }
    lines
}

/// Joins continued lines, drops blank and comment lines. Yields (first line number, text) with
/// the leading whitespace of every physical line removed and continuation backslashes dropped.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (index, raw) in physical_lines(text).into_iter().enumerate() {
        let part = raw.trim_start_matches(is_blank);
        let (start, mut buf) = match open.take() {
            Some(continued) => continued,
            None if part.is_empty() || part.starts_with(['#', '!']) => continue,
            None => (index + 1, String::new()),
        };
        buf.push_str(part);
        let trailing = part.chars().rev().take_while(|&c| c == '\\').count();
        if trailing % 2 == 1 {
            buf.pop();
            open = Some((start, buf));
        } else {
            out.push((start, buf));
        }
    }
    // A continuation at end of file: Java drops the backslash and keeps what it has.
    out.extend(open);
    out
}

/// Splits one logical line at the first unescaped `=`, `:` or blank, as `Properties.load` does.
fn split_entry(line: usize, logical: &str) -> Result<Entry, ParseError> {
    let chars: Vec<char> = logical.chars().collect();
    let mut key_len = 0;
    let mut value_start = chars.len();
    let mut has_separator = false;
    let mut escaped = false;
    while key_len < chars.len() {
        let c = chars[key_len];
        if !escaped && (c == '=' || c == ':') {
            value_start = key_len + 1;
            has_separator = true;
            break;
        }
        if !escaped && is_blank(c) {
            value_start = key_len + 1;
            break;
        }
        escaped = c == '\\' && !escaped;
        key_len += 1;
    }
    while value_start < chars.len() {
        let c = chars[value_start];
        if !is_blank(c) {
            if has_separator || (c != '=' && c != ':') {
                break;
            }
            has_separator = true;
        }
        value_start += 1;
    }
    let key = unescape(&chars[..key_len]).map_err(|reason| ParseError { line, reason })?;
    let value = unescape(&chars[value_start..]).map_err(|reason| ParseError { line, reason })?;
    Ok(Entry { key, value, line })
}

/// Resolves backslash escapes: `\t \n \r \f`, `\uXXXX` (UTF-16, surrogate pairs combined) and
/// `\c` → `c` for any other character.
fn unescape(chars: &[char]) -> Result<String, EscapeError> {
    let mut out = String::with_capacity(chars.len());
    let mut units: Vec<u16> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != '\\' {
            flush_utf16(&mut units, &mut out)?;
            out.push(c);
            continue;
        }
        let Some(&next) = chars.get(i) else { break };
        i += 1;
        if next == 'u' {
            units.push(hex4(chars.get(i..i + 4))?);
            i += 4;
            continue;
        }
        flush_utf16(&mut units, &mut out)?;
        out.push(match next {
            't' => '\t',
            'n' => '\n',
            'r' => '\r',
            'f' => '\u{000C}',
            other => other,
        });
    }
    flush_utf16(&mut units, &mut out)?;
    Ok(out)
}

/// Reads the four hex digits of a `\uXXXX` escape.
fn hex4(digits: Option<&[char]>) -> Result<u16, EscapeError> {
    let digits = digits.ok_or(EscapeError::MalformedUnicode)?;
    let text: String = digits.iter().collect();
    if !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(EscapeError::MalformedUnicode);
    }
    u16::from_str_radix(&text, 16).map_err(|_| EscapeError::MalformedUnicode)
}

/// Decodes pending `\uXXXX` code units into `out`; a lone surrogate is an error.
fn flush_utf16(units: &mut Vec<u16>, out: &mut String) -> Result<(), EscapeError> {
    for decoded in char::decode_utf16(units.drain(..)) {
        let c = decoded.map_err(|e| EscapeError::LoneSurrogate(e.unpaired_surrogate()))?;
        out.push(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String, usize)> {
        parse(text)
            .expect("parses")
            .into_iter()
            .map(|e| (e.key, e.value, e.line))
            .collect()
    }

    fn kv(key: &str, value: &str, line: usize) -> (String, String, usize) {
        (key.to_string(), value.to_string(), line)
    }

    #[test]
    fn all_separator_styles_are_accepted() {
        let text = "a=1\nb = 2\nc: 3\nd 4\n  e\t=\t5\nf:=6\ng\n";
        assert_eq!(
            pairs(text),
            vec![
                kv("a", "1", 1),
                kv("b", "2", 2),
                kv("c", "3", 3),
                kv("d", "4", 4),
                kv("e", "5", 5),
                kv("f", "=6", 6),
                kv("g", "", 7),
            ]
        );
    }

    #[test]
    fn comments_and_blank_lines_are_skipped() {
        let text = "# comment\n! bang comment\n\n   \n  # indented comment \\\nk=v\n";
        assert_eq!(pairs(text), vec![kv("k", "v", 6)]);
    }

    #[test]
    fn trailing_whitespace_of_a_value_is_kept() {
        let text = "brokerRole=SYNC_MASTER \nname =  spaced\t\n";
        assert_eq!(
            pairs(text),
            vec![
                kv("brokerRole", "SYNC_MASTER ", 1),
                kv("name", "spaced\t", 2)
            ]
        );
    }

    #[test]
    fn continuation_lines_join_and_drop_leading_blanks() {
        let text = "levels=1s 5s \\\n      10s\nnext=x\\\n\nafter=y\neof=z\\";
        assert_eq!(
            pairs(text),
            vec![
                kv("levels", "1s 5s 10s", 1),
                kv("next", "x", 3),
                kv("after", "y", 5),
                kv("eof", "z", 6),
            ]
        );
    }

    #[test]
    fn even_backslashes_do_not_continue() {
        assert_eq!(
            pairs("path=C:\\\\\nb=1"),
            vec![kv("path", "C:\\", 1), kv("b", "1", 2)]
        );
    }

    #[test]
    fn escapes_are_resolved() {
        let text = "k\\=ey\\ x=a\\tb\\nc\\\\d\\u00e9\\q\nsmile=\\uD83D\\uDE00\n";
        assert_eq!(
            pairs(text),
            vec![kv("k=ey x", "a\tb\nc\\déq", 1), kv("smile", "\u{1F600}", 2)]
        );
    }

    #[test]
    fn crlf_and_cr_line_endings_count_lines() {
        assert_eq!(
            pairs("a=1\r\nb=2\rc=3"),
            vec![kv("a", "1", 1), kv("b", "2", 2), kv("c", "3", 3)]
        );
    }

    #[test]
    fn malformed_unicode_escape_is_an_error_with_its_line() {
        let err = parse("ok=1\nbad=\\u12G4\n").expect_err("malformed");
        assert_eq!(err.line, 2);
        assert_eq!(err.reason, EscapeError::MalformedUnicode);
        assert!(err.to_string().contains("\\uXXXX"), "{err}");
        let err = parse("lone=\\uD83D\n").expect_err("lone surrogate");
        assert_eq!(err.reason, EscapeError::LoneSurrogate(0xD83D));
        assert!(
            err.to_string().contains("\\uD83D is half of a surrogate"),
            "{err}"
        );
    }
}
