//! Typed request/response headers and JSON bodies per command family. Pure: no I/O, no shard
//! state.

pub mod fastjson;
pub mod fields;
pub mod register;
pub mod route;

pub use fields::{FieldError, Fields};
