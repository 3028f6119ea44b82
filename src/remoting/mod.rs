//! The remoting codec: frames, the JSON and ROCKETMQ binary headers, code tables and
//! `WireError`. Pure: no I/O, no async, no knowledge of topics or stores.

pub mod codes;
pub mod command;
pub mod error;
pub mod frame;
pub mod header;

pub use codes::{request, response, LanguageCode, SerializeType, VERSION_CURRENT};
pub use command::{ExtFields, RemotingCommand, FLAG_ONEWAY, FLAG_RESPONSE};
pub use error::WireError;
pub use frame::{check_frame, declared_body_bytes, decode_head, next_frame, split_frame, RawFrame};
