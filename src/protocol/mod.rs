//! Typed request/response headers and JSON bodies per command family. Pure: no I/O, no shard
//! state. Every JSON body is read with [`lenient::from_slice`] (as fastjson reads it).

pub mod fastjson;
pub mod fastjson_mq;
pub mod fields;
pub mod heartbeat;
pub mod lenient;
pub mod register;
pub mod route;
pub mod send;

pub use fields::{FieldError, Fields};
