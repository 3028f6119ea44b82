//! Typed request/response headers and JSON bodies per command family. Pure: no I/O, no shard
//! state.

pub mod fastjson;
pub mod fields;
pub mod heartbeat;
pub mod register;
pub mod route;
pub mod send;

pub use fields::{FieldError, Fields};
