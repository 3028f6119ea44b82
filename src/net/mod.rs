//! Sockets on glommio: the accept loop and the per-connection reader/writer pair.
//!
//! A connection is admitted on a low-priority task queue of the executor that accepted it and
//! stays there until its first request arrives whole (a peer that never sends a valid frame is
//! set up, waited on and torn down there, with one task); it is then served by two tasks on
//! the executor's main queue. The reader extracts frames
//! (refusing an oversized one from its length prefix, before buffering it; a request with a
//! large body is shown to the handler once its header is in, and one it refuses is answered and
//! its body dropped unread, [`Handler::refuse_body`]), decodes them and
//! hands each request to the [`Handler`]; a handler answers at once ([`Reply::Now`]) or returns a
//! future ([`Reply::Later`]) that runs as its own task, so many requests are in flight per
//! connection and responses go out in completion order (RocketMQ matches them by opaque). The
//! writer batches whatever responses are queued into one write. A malformed frame closes that
//! connection only. `net` reads only code, flag and opaque; it never looks at command bodies.
//!
//! A connection's memory follows what it does (README "Connections and memory"): waiting, it
//! holds no buffer; its write queue is bounded in bytes and a peer that does not read its
//! answers is not read either; each reader yields after a few requests so one peer cannot hold
//! the shard. The accept loop closes connections idle past `serverChannelMaxIdleTimeSeconds`
//! (one sweep a second), logs repeated failures once per interval with a count, and after
//! connections close returns freed memory to the system. Before it accepts, the process's
//! descriptor table is grown to hold its connection limit ([`descriptors`]), so it never grows
//! (and stalls every shard) while connections come.

pub mod connection;
pub mod descriptors;
pub mod invoke;
pub mod rpc_client;
pub mod server;
pub mod socket_link;

pub use connection::{Busy, Connection, Handler, Reply};
pub use rpc_client::{RpcClient, RpcError};
pub use server::{bind, reserve_addr, serve, spawn_listening, ServerOptions};
