//! `WireError`: what can be wrong with bytes from the network. Knows nothing of brokers.

use thiserror::Error;

/// A frame or header that cannot be decoded. Any of these closes the connection it came from.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The length prefix declares more than the frame limit; nothing of the body was buffered.
    #[error("frame of {declared_bytes} bytes exceeds the limit of {max_bytes} bytes")]
    FrameTooLarge {
        declared_bytes: usize,
        max_bytes: usize,
    },
    /// The length prefix is too small to hold the header word.
    #[error("frame length {declared_bytes} is too small to hold a header word")]
    FrameTooSmall { declared_bytes: usize },
    /// The header word declares a header longer than the frame.
    #[error("header length {header_bytes} exceeds the frame's {available_bytes} bytes")]
    HeaderTooLong {
        header_bytes: usize,
        available_bytes: usize,
    },
    /// The serialize type byte is neither 0 (JSON) nor 1 (ROCKETMQ).
    #[error("unknown serialize type {0}")]
    UnknownSerializeType(u8),
    /// A binary header ended early.
    #[error("binary header truncated at byte {offset}: need {need} bytes, have {have}")]
    Truncated {
        offset: usize,
        need: usize,
        have: usize,
    },
    /// A JSON header that does not parse, or lacks `code`.
    #[error("malformed JSON header: {0}")]
    BadJson(String),
    /// A string in a binary header that is not UTF-8.
    #[error("binary header string at byte {offset} is not UTF-8")]
    BadUtf8 { offset: usize },
}
