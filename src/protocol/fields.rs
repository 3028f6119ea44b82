//! Typed access to a command's `extFields`, with errors that name the field. Java parses with
//! `Integer.parseInt`, `Long.parseLong` and `Boolean.parseBoolean` (only "true" is true).

use thiserror::Error;

use crate::remoting::RemotingCommand;

/// A custom-header field that is missing or does not parse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FieldError {
    #[error("the request header field {field} is missing")]
    Missing { field: &'static str },
    #[error("the request header field {field} = {value:?} is not {expected}")]
    Invalid {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Reads typed fields from a request's custom header.
pub trait Fields {
    /// The raw value, if present.
    fn field(&self, name: &'static str) -> Option<&str>;

    /// A required string field.
    fn req_str(&self, name: &'static str) -> Result<&str, FieldError> {
        self.field(name).ok_or(FieldError::Missing { field: name })
    }

    /// An optional string field; an empty string counts as absent (the C++ client sends "").
    fn opt_str(&self, name: &'static str) -> Option<&str> {
        self.field(name).filter(|v| !v.is_empty())
    }

    /// A required integer field.
    fn req_i64(&self, name: &'static str) -> Result<i64, FieldError> {
        parse_i64(name, self.req_str(name)?)
    }

    /// A required 32-bit integer field.
    fn req_i32(&self, name: &'static str) -> Result<i32, FieldError> {
        let value = self.req_str(name)?;
        value
            .trim()
            .parse::<i32>()
            .map_err(|_| FieldError::Invalid {
                field: name,
                value: value.to_string(),
                expected: "a 32-bit integer",
            })
    }

    /// An optional integer field (absent or empty → `None`).
    fn opt_i64(&self, name: &'static str) -> Result<Option<i64>, FieldError> {
        self.opt_str(name).map(|v| parse_i64(name, v)).transpose()
    }

    /// A boolean field as Java reads it: only "true" (any case) is true; absent is `default`.
    fn bool_or(&self, name: &'static str, default: bool) -> bool {
        self.opt_str(name)
            .map_or(default, |v| v.eq_ignore_ascii_case("true"))
    }
}

fn parse_i64(field: &'static str, value: &str) -> Result<i64, FieldError> {
    value
        .trim()
        .parse::<i64>()
        .map_err(|_| FieldError::Invalid {
            field,
            value: value.to_string(),
            expected: "an integer",
        })
}

impl Fields for RemotingCommand {
    fn field(&self, name: &'static str) -> Option<&str> {
        self.ext(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_fields() {
        let cmd = RemotingCommand::request(1)
            .with_ext("n", "42")
            .with_ext("bad", "4x")
            .with_ext("empty", "")
            .with_ext("t", "TRUE");
        assert_eq!(cmd.req_i64("n"), Ok(42));
        assert_eq!(cmd.req_i32("n"), Ok(42));
        assert_eq!(
            cmd.req_i64("missing"),
            Err(FieldError::Missing { field: "missing" })
        );
        let err = cmd.req_i64("bad").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the request header field bad = \"4x\" is not an integer"
        );
        assert_eq!(cmd.opt_str("empty"), None);
        assert_eq!(cmd.opt_i64("empty"), Ok(None));
        assert!(cmd.bool_or("t", false));
        assert!(!cmd.bool_or("n", true));
        assert!(cmd.bool_or("missing", true));
    }
}
