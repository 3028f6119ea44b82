//! Every fixed bound of ringmq in one place, with compile-time checks of how they relate.
//! Pure constants: nothing here reads config or the environment.

/// Largest value of a frame's 4-byte length field (Java `NettyDecoder`: 16 MiB, sysprop
/// `com.rocketmq.remoting.frameMaxLength`). A frame that declares more is refused before its
/// body is buffered, and the connection is closed.
pub const FRAME_SIZE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Bytes of the length prefix of every frame.
pub const FRAME_LENGTH_PREFIX_BYTES: usize = 4;

/// Bytes of the header word (`serialize type << 24 | header length`).
pub const FRAME_HEADER_WORD_BYTES: usize = 4;

/// Largest header a frame may carry: 24 bits of length in the header word, and never more than
/// the frame itself.
pub const HEADER_SIZE_MAX_BYTES: usize = (1 << 24) - 1;

/// Largest message body a broker accepts by default (`maxMessageSize`, 4 MiB).
pub const MESSAGE_SIZE_DEFAULT_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Requests one connection may have in flight before further ones are answered SYSTEM_BUSY.
pub const CONNECTION_INFLIGHT_MAX: usize = 4096;

/// Connections one server executor accepts before refusing new ones.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 16 * 1024;

/// Initial capacity of a connection's read buffer; it grows only to hold one whole frame.
pub const CONNECTION_READ_BUFFER_BYTES: usize = 64 * 1024;

/// Responses queued for one connection's writer before request handling waits for it.
pub const CONNECTION_WRITE_QUEUE_MAX: usize = CONNECTION_INFLIGHT_MAX;

/// Topic name length limit (1-byte length in the stored record; Java `msgCheck`).
pub const TOPIC_NAME_MAX_BYTES: usize = 127;

/// Properties string limit (2-byte signed length in the stored record).
pub const PROPERTIES_MAX_BYTES: usize = 32767;

const _: () = assert!(FRAME_SIZE_MAX_BYTES > MESSAGE_SIZE_DEFAULT_MAX_BYTES);
const _: () = assert!(HEADER_SIZE_MAX_BYTES < FRAME_SIZE_MAX_BYTES);
const _: () = assert!(FRAME_SIZE_MAX_BYTES <= i32::MAX as usize);
const _: () = assert!(CONNECTION_READ_BUFFER_BYTES <= FRAME_SIZE_MAX_BYTES);
const _: () = assert!(CONNECTION_WRITE_QUEUE_MAX >= CONNECTION_INFLIGHT_MAX);
