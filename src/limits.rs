//! Every fixed bound of ringmq in one place, with compile-time checks of how they relate.
//! Pure constants: nothing here reads config or the environment.

use std::time::Duration;

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

/// Requests in flight on one connection beyond which its reader waits whenever answers are
/// queued for it (until they are written): a peer that does not read holds about this many
/// answers, not `CONNECTION_INFLIGHT_MAX`.
pub const CONNECTION_INFLIGHT_CONGESTED: usize = 256;

/// Requests of one connection being worked on at once (in flight and not parked in a long
/// poll); the connection's reader waits for one to finish before it reads the next. A peer that
/// pipelines thousands of requests thus has at most this many in any shard's run queue at a
/// time, and other peers' requests wait behind at most that much of its work.
pub const CONNECTION_ACTIVE_MAX: usize = 256;

/// Answers another shard may owe one connection at once: sends handed to the shard that owns
/// their queue, which writes their answers on the connection's socket itself (the reader shard
/// is not woken for them, `crate::net::socket_link`). Their requests gave their claim on
/// `CONNECTION_ACTIVE_MAX` back when they were handed over (the reader's part of the work is
/// done); past this many, a connection's further sends go the usual way until answers are
/// written. They count towards `CONNECTION_INFLIGHT_MAX`.
pub const CONNECTION_DIRECT_ANSWERS_MAX: usize = 256;

/// Commitlog reads one shard has at the device at once (pulls and lookups of what has left the
/// in-memory tail; each an O_DIRECT read through the executor's io_uring). Further reads wait
/// their turn, so a flood of cold reads cannot fill the ring and the device queue ahead of
/// the sockets' operations and the commitlog's writes.
pub const STORE_READS_IN_FLIGHT_MAX: usize = 32;

/// SYNC_FLUSH commitlog writes (O_DSYNC) one shard has at the device at once, by default and
/// at most (`RINGMQ_DSYNC_WRITES`). Each makes its own pages durable; they never share a page
/// (`store::write_plan`), and an append is acknowledged when every byte up to its end is
/// durable. One by default: two lost on the quiet machine (stop 29, pinned, 64 in flight:
/// 83.5k / 82.0k SYNC msgs/s against 94.1k / 93.3k with one, README "SYNC_FLUSH: the disk
/// works while the shard answers").
pub const COMMITLOG_WRITES_IN_FLIGHT_DEFAULT: usize = 1;
pub const COMMITLOG_WRITES_IN_FLIGHT_MAX: usize = 4;

/// Connections one server executor accepts before refusing new ones.
pub const CONNECTIONS_PER_SHARD_MAX: usize = 16 * 1024;

/// Descriptors the process's table holds beyond its listeners' connection limits (store
/// files, the nameserver's and replication's sockets, io_uring), grown to at start
/// (`net::descriptors`), within RLIMIT_NOFILE.
pub const DESCRIPTOR_TABLE_SPARE: usize = 1024;

/// Read space of a connection with part of a frame in: a connection waiting for its next
/// request holds no read buffer at all (its reads land in the executor's shared buffer of
/// `CONNECTION_READ_BUSY_BYTES`; see README "Connections and memory").
pub const CONNECTION_READ_IDLE_BYTES: usize = 4 * 1024;

/// Read space of a busy connection: reads double up to this while they keep filling the
/// space, and go back to `CONNECTION_READ_IDLE_BYTES` once the connection is quiet. A frame
/// being assembled also gets room in steps of this, only as its bytes arrive.
pub const CONNECTION_READ_BUSY_BYTES: usize = 64 * 1024;

/// A request whose body is declared longer than this is shown to its server once its header
/// has arrived, before the body is read (`net::Handler::refuse_body`): a send over
/// `maxMessageSize` is answered at once and its body dropped as it arrives, never buffered.
pub const CONNECTION_BODY_VETTED_BYTES: usize = 64 * 1024;

/// A refused request's body is dropped at most this much per turn (`net::connection`): each
/// truncating `recv` of a loopback body frees its pages and acknowledges them in the shard's
/// own time (measured: ~0.26 ms of kernel time per 5 MiB body, up to 360 µs in one call), and
/// between slices the connection waits for the low-priority admission queue's turn, so other
/// peers' requests are reaped and served in between.
pub const CONNECTION_DROP_SLICE_BYTES: usize = 256 * 1024;

/// Responses coalesced into one write, up to this many bytes (plus the frame that crosses it).
pub const CONNECTION_WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Bytes the kernel holds unsent for one connection (`TCP_NOTSENT_LOWAT`) before its socket
/// stops taking writes: once the peer's receive window is closed (it does not read), the
/// writer waits here instead of piling megabytes of answers into the kernel's send buffer, and
/// the connection's reader waits with it (see `net::connection`). Without it a peer
/// pipelining requests and never reading was held only once ~4 MiB of answers had filled the
/// kernel's send buffer (5,399 answers of 1 KiB in the test, 176 with it).
pub const CONNECTION_UNSENT_MAX_BYTES: usize = CONNECTION_WRITE_BATCH_BYTES;

/// A connection's write buffer larger than this is given back when its queue runs empty.
pub const CONNECTION_WRITE_KEEP_BYTES: usize = 16 * 1024;

/// Bytes of responses (bodies plus a header allowance) queued for one connection's writer
/// before further responses wait, and its reader stops reading while more than half is used:
/// a peer that does not read its answers costs at most this much queued.
pub const CONNECTION_WRITE_QUEUE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Requests a connection's reader dispatches before it lets other tasks run (per-peer
/// fairness: one peer's burst of pipelined requests does not hold the executor).
pub const CONNECTION_FRAMES_PER_TURN: usize = 16;

/// `serverChannelMaxIdleTimeSeconds` default (Java's NettyServerConfig): a connection with no
/// bytes either way for this long is closed.
pub const SERVER_CHANNEL_MAX_IDLE_DEFAULT_SECONDS: u64 = 120;

/// Read space of a client connection's (`net::RpcClient`) buffer.
pub const CLIENT_READ_BUFFER_BYTES: usize = 64 * 1024;

/// Topic name length limit (1-byte length in the stored record; Java `msgCheck`).
pub const TOPIC_NAME_MAX_BYTES: usize = 127;

/// Bytes of one consume-queue unit: commitlog offset (8) + size (4) + tag hash code (8).
pub const CQ_UNIT_BYTES: u64 = 8 + 4 + 8;

/// Properties string limit (2-byte signed length in the stored record).
pub const PROPERTIES_MAX_BYTES: usize = 32767;

/// Bits of an integer every client holds exactly: JavaScript numbers and JSON tools that parse
/// numbers as IEEE doubles keep 53. Every offset the broker hands out (physical offsets, queue
/// offsets, the offset inside an offsetMsgId) stays below `1 << CLIENT_EXACT_INTEGER_BITS`.
pub const CLIENT_EXACT_INTEGER_BITS: u32 = 53;

/// Bits of a physical offset below the shard number: the offset inside the shard's commitlog.
pub const SHARD_OFFSET_BITS: u32 = 45;

/// Bits of a physical offset that name the shard (above [`SHARD_OFFSET_BITS`]).
pub const SHARD_NUMBER_BITS: u32 = 8;

/// Most shards a broker runs (every one must be nameable in a physical offset).
pub const SHARDS_MAX: u32 = 1 << SHARD_NUMBER_BITS;

/// Bytes one shard's commitlog can address (32 TiB); appends stop short of it.
pub const SHARD_COMMITLOG_CAPACITY_BYTES: u64 = 1 << SHARD_OFFSET_BITS;

/// Messages each shard-to-shard inbox holds before a sender waits.
pub const MESH_INBOX_CAPACITY: usize = 1024;

/// Largest FRAME payload a slave accepts from its master (a chunk is at most one record past
/// the transfer batch, and a record at most a frame).
pub const HA_FRAME_MAX_BYTES: u32 = 256 << 20;

/// How long a slave waits for its master's HA port to accept.
pub const HA_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Bound on one Raft message frame between controllers (the controller state is small).
pub const CONTROLLER_FRAME_MAX_BYTES: usize = 64 << 20;

/// How long a controller waits for a peer controller to accept (on loopback or a LAN).
pub const CONTROLLER_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

const _: () = assert!(FRAME_SIZE_MAX_BYTES > MESSAGE_SIZE_DEFAULT_MAX_BYTES);
const _: () = assert!(HEADER_SIZE_MAX_BYTES < FRAME_SIZE_MAX_BYTES);
const _: () = assert!(FRAME_SIZE_MAX_BYTES <= i32::MAX as usize);
const _: () = assert!(CONNECTION_READ_IDLE_BYTES <= CONNECTION_READ_BUSY_BYTES);
const _: () = assert!(CONNECTION_READ_BUSY_BYTES <= FRAME_SIZE_MAX_BYTES);
const _: () = assert!(CLIENT_READ_BUFFER_BYTES <= FRAME_SIZE_MAX_BYTES);
const _: () = assert!(CONNECTION_WRITE_KEEP_BYTES <= CONNECTION_WRITE_BATCH_BYTES);
const _: () = assert!(CONNECTION_WRITE_QUEUE_BYTES_MAX >= MESSAGE_SIZE_DEFAULT_MAX_BYTES);
const _: () = assert!(CONNECTION_FRAMES_PER_TURN > 0);
const _: () = assert!(CONNECTION_INFLIGHT_CONGESTED < CONNECTION_INFLIGHT_MAX);
const _: () = assert!(CONNECTION_DIRECT_ANSWERS_MAX <= CONNECTION_ACTIVE_MAX);
const _: () =
    assert!(CONNECTION_ACTIVE_MAX > 0 && CONNECTION_ACTIVE_MAX <= CONNECTION_INFLIGHT_MAX);
const _: () = assert!(SHARD_OFFSET_BITS + SHARD_NUMBER_BITS == CLIENT_EXACT_INTEGER_BITS);
const _: () = assert!(SHARD_COMMITLOG_CAPACITY_BYTES == 32 << 40);
// f64's mantissa holds every integer below 2^53 exactly.
const _: () = assert!(f64::MANTISSA_DIGITS == CLIENT_EXACT_INTEGER_BITS);
const _: () = assert!(SHARD_COMMITLOG_CAPACITY_BYTES > 4 * FRAME_SIZE_MAX_BYTES as u64);
const _: () = assert!(HA_FRAME_MAX_BYTES as usize > FRAME_SIZE_MAX_BYTES);
const _: () = assert!(MESH_INBOX_CAPACITY > 0);
const _: () = assert!(
    COMMITLOG_WRITES_IN_FLIGHT_DEFAULT > 0
        && COMMITLOG_WRITES_IN_FLIGHT_DEFAULT <= COMMITLOG_WRITES_IN_FLIGHT_MAX
);
