//! The accept loop: one per executor, on a listener bound with SO_REUSEPORT, with the idle
//! sweep of its connections and the rate-limited log of their failures.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpListener;

use super::connection::{self, CloseReason, Connection, Handler};
use crate::limits::{
    CONNECTIONS_PER_SHARD_MAX, FRAME_SIZE_MAX_BYTES, SERVER_CHANNEL_MAX_IDLE_DEFAULT_SECONDS,
};
use crate::log_limit::{LogLimiter, Verdict};
use crate::runtime::Shutdown;

/// How long a listener found on the port may take to go away before it counts as another
/// server's.
const PORT_RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Picks the address to listen on and makes sure no other server is listening there. glommio
/// binds every listener with SO_REUSEPORT (so shards can share a port), which would let a
/// second ringmq silently share the port of a running one. A connection attempt tells whether
/// someone is listening (a bind probe would also trip over the port's TIME_WAIT connections
/// after a restart). Port 0 is resolved to a free port here, once, so every shard of a server
/// binds the same one.
pub fn reserve_addr(addr: SocketAddr) -> io::Result<SocketAddr> {
    if addr.port() == 0 {
        return std::net::TcpListener::bind(addr)?.local_addr();
    }
    let target = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    let probe = SocketAddr::new(target, addr.port());
    let listening = || {
        std::net::TcpStream::connect_timeout(&probe, std::time::Duration::from_millis(300)).is_ok()
    };
    // A process killed with SIGKILL leaves its listeners open for a moment after it is reaped
    // (the kernel tears its io_uring down asynchronously), so a restart right after a crash
    // would see "someone" listening: only a listener that stays counts.
    let deadline = std::time::Instant::now() + PORT_RELEASE_GRACE;
    while listening() {
        if std::time::Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("cannot listen on {addr}: another server is already listening there"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(addr)
}

/// Binds a glommio listener on an address from [`reserve_addr`].
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| io::Error::other(format!("cannot listen on {addr}: {e}")))
}

/// Starts an executor (`options`) that listens on `addr` (checked with [`reserve_addr`]) and
/// then runs `run` with the listener; returns once it is listening, with the address it
/// listens on. `what` names the server in the error when the executor ends before that.
pub fn spawn_listening<R, F>(
    options: &crate::runtime::ExecutorOptions,
    what: &str,
    addr: SocketAddr,
    run: R,
) -> io::Result<(SocketAddr, glommio::ExecutorJoinHandle<()>)>
where
    R: FnOnce(TcpListener) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + 'static,
{
    let local_addr = reserve_addr(addr)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
    let join = crate::runtime::spawn_executor(options, move || async move {
        let listener = match bind(local_addr) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let _ = ready_tx.send(Ok(()));
        run(listener).await;
    })?;
    ready_rx
        .recv()
        .map_err(|_| io::Error::other(format!("{what} executor exited before listening")))??;
    Ok((local_addr, join))
}

/// Per-listener bounds.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Frames declaring more than this are refused and their connection closed.
    pub max_frame_bytes: usize,
    /// Connections served at once; further ones are closed on accept.
    pub max_connections: usize,
    /// Connections with no bytes read or written for this long are closed
    /// (`serverChannelMaxIdleTimeSeconds`, Java's IdleStateHandler); `None` never.
    pub max_idle: Option<Duration>,
}

impl ServerOptions {
    /// `max_idle` from a `serverChannelMaxIdleTimeSeconds` value (0 = never, as in Java).
    pub fn idle_seconds(mut self, seconds: u32) -> ServerOptions {
        self.max_idle = (seconds > 0).then(|| Duration::from_secs(seconds.into()));
        self
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_frame_bytes: FRAME_SIZE_MAX_BYTES,
            max_connections: CONNECTIONS_PER_SHARD_MAX,
            max_idle: Some(Duration::from_secs(SERVER_CHANNEL_MAX_IDLE_DEFAULT_SECONDS)),
        }
    }
}

/// The connections one listener is serving, for the idle sweep.
type Registry = Rc<RefCell<HashMap<u64, Rc<Connection>>>>;

/// Accepts connections on `listener` and serves each with `handler` until `shutdown` fires.
/// Open connections are left to finish (they end when their peers close, or go idle).
///
/// Connections are admitted on a task queue of their own (see [`admission_queue`]): the accept
/// loop, each connection's set-up, and everything a connection does until its first request
/// has arrived whole (and its tear-down if it never sends one) run there; from its first
/// request on a connection is served on the queue `serve` was called on. So a burst of new
/// connections, silent ones closing together, or a stream of bad frames waits behind the
/// requests of connections already being served instead of queueing ahead of them.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Rc<H>,
    options: ServerOptions,
    shutdown: Shutdown,
) {
    // Grown now, the descriptor table never grows (stalling every shard) while peers come.
    if let Err(e) = super::descriptors::reserve(options.max_connections) {
        tracing::warn!(error = %e, "could not grow the descriptor table ahead of connections");
    }
    let established = glommio::executor().current_task_queue();
    let accepting = accept_loop(listener, handler, options, shutdown, established);
    glommio::spawn_local_into(accepting, admission_queue())
        .expect("a task queue just created exists")
        .await;
}

/// The CPU shares of the admission queue against the 1,000 of the queue connections are served
/// on: while both have work, admitting and tearing down connections gets about a tenth.
const ADMISSION_SHARES: usize = 100;

/// While the admission queue has work, no queue of the executor runs longer than this before
/// the executor looks for I/O (the executor's slice is otherwise 100 ms): a good peer's request
/// waits about this long behind a burst of connections, not the whole burst. (A queue that
/// becomes ready is placed just after the one that ran last, so admission's next turn comes
/// first; the accept loop gives the executor back after each connection to keep that short.)
const ADMISSION_SLICE: Duration = Duration::from_micros(250);

/// A new task queue for admitting connections: [`ADMISSION_SHARES`], and the executor's slice
/// shortened to [`ADMISSION_SLICE`] only while it has work (an executor admitting nothing
/// keeps its long slice and its timer quiet).
fn admission_queue() -> glommio::TaskQueueHandle {
    glommio::executor().create_task_queue(
        glommio::Shares::Static(ADMISSION_SHARES),
        glommio::Latency::Matters(ADMISSION_SLICE),
        "admission",
    )
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: Rc<H>,
    options: ServerOptions,
    shutdown: Shutdown,
    established: glommio::TaskQueueHandle,
) {
    let registry: Registry = Rc::default();
    // Repeated conditions (bad frames from many peers, refusals, idle closes) are logged once
    // per interval per kind with a count, never once per connection.
    let log = Rc::new(LogLimiter::new(LOG_INTERVAL, 16));
    let closed = Rc::new(Cell::new(0u64));
    let sweep = housekeeping(
        Rc::clone(&registry),
        Rc::clone(&closed),
        options.max_idle,
        shutdown.clone(),
    );
    glommio::spawn_local(sweep).detach();
    let open = Rc::new(Cell::new(0usize));
    let mut next_id = 0u64;
    loop {
        // glommio accepts without waiting while connections are pending, so a burst of them
        // would otherwise be admitted in one go, ahead of everything else: one at a time, then
        // the executor's other queues get their turn.
        glommio::executor().yield_task_queue_now().await;
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                if let Verdict::Log { suppressed } = log.check(LogKey::AcceptFailed) {
                    tracing::warn!(error = %e, suppressed, "accept failed");
                }
                continue;
            }
        };
        if open.get() >= options.max_connections {
            if let Verdict::Log { suppressed } = log.check(LogKey::Refused) {
                tracing::warn!(
                    max = options.max_connections,
                    suppressed,
                    "connection limit reached; refusing"
                );
            }
            drop(stream);
            continue;
        }
        next_id += 1;
        open.set(open.get() + 1);
        let (handler, open, closed, registry, log, max_frame) = (
            Rc::clone(&handler),
            Rc::clone(&open),
            Rc::clone(&closed),
            Rc::clone(&registry),
            Rc::clone(&log),
            options.max_frame_bytes,
        );
        glommio::spawn_local(async move {
            let id = next_id;
            let added = Rc::clone(&registry);
            let registered = move |conn: &Rc<Connection>| {
                added.borrow_mut().insert(id, Rc::clone(conn));
            };
            let ended = |conn: &Connection, reason: Option<(CloseReason, String)>| {
                // Out of the registry before the socket is dropped (the sweep may shut it down).
                let mut open = registry.borrow_mut();
                open.remove(&id);
                // A map sized for a past peak of connections is given back.
                if open.capacity() > 64 && open.capacity() > 4 * open.len() {
                    open.shrink_to_fit();
                }
                drop(open);
                if let Some((kind, reason)) = reason {
                    log_close(&log, conn, kind, &reason);
                }
            };
            let established = Some(established);
            connection::run(
                id,
                stream,
                handler,
                max_frame,
                established,
                registered,
                ended,
            )
            .await;
            open.set(open.get() - 1);
            closed.set(closed.get() + 1);
        })
        .detach();
    }
}

/// How often a repeated condition is logged (with the count of those not logged).
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Kinds of repeated conditions the accept loop and its connections log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LogKey {
    AcceptFailed,
    Refused,
    Closed(CloseReason),
}

fn log_close(log: &LogLimiter<LogKey>, conn: &Connection, kind: CloseReason, reason: &str) {
    let Verdict::Log { suppressed } = log.check(LogKey::Closed(kind)) else {
        return;
    };
    let peer = conn.peer;
    match kind {
        CloseReason::BadFrame => tracing::warn!(
            %peer, %reason, suppressed,
            "closing connection (bad frame); `suppressed` more since the last such line"
        ),
        CloseReason::ReadFailed => tracing::info!(
            %peer, %reason, suppressed,
            "connection failed; `suppressed` more since the last such line"
        ),
        CloseReason::Idle => tracing::info!(
            %peer, suppressed,
            "closing idle connection (serverChannelMaxIdleTimeSeconds); `suppressed` more since \
             the last such line"
        ),
    }
}

/// Once a second: closes the connections idle for longer than `max_idle` (one pass over the
/// registry per listener, nothing per request), and after connections have closed, gives the
/// memory they freed back to the system (see [`release_freed_memory`]) once they have stopped
/// closing for a whole sweep, or at most every `RELEASE_DURING_CHURN` while they keep closing.
/// The release runs on the shard's thread and holds it (measured during a bad-input attack:
/// 0.2–15 ms per call, on a machine at load 10): done every few seconds while bad peers come
/// and go, it was a stall of every connection the shard serves, each time; memory freed during
/// the churn is reused by the connections that follow, so waiting costs no growth.
async fn housekeeping(
    registry: Registry,
    closed: Rc<Cell<u64>>,
    max_idle: Option<Duration>,
    shutdown: Shutdown,
) {
    let every = max_idle.map_or(IDLE_SWEEP_INTERVAL, |m| IDLE_SWEEP_INTERVAL.min(m));
    let mut release = ReleasePacing::new(Instant::now());
    while shutdown.sleep(every).await {
        let now = Instant::now();
        if let Some(max_idle) = max_idle {
            for conn in registry.borrow().values() {
                if now.saturating_duration_since(conn.last_active()) >= max_idle {
                    conn.reap();
                }
            }
        }
        // Closes seen while the process-wide interval had not passed wait for the next turn.
        if release.due(closed.get(), now) && release_freed_memory() {
            closed.set(0);
            release.released(now);
        }
    }
}

/// While connections keep closing, freed memory is given back at most this often.
const RELEASE_DURING_CHURN: Duration = Duration::from_secs(30);

/// When the housekeeping sweep gives freed memory back (see [`housekeeping`]).
#[derive(Debug)]
struct ReleasePacing {
    /// The close count at the previous sweep.
    seen: u64,
    last_release: Instant,
}

impl ReleasePacing {
    fn new(now: Instant) -> ReleasePacing {
        ReleasePacing {
            seen: 0,
            last_release: now,
        }
    }

    /// With `closed` connections closed since the last release: true once none closed since
    /// the previous sweep, or when the last release is `RELEASE_DURING_CHURN` old.
    fn due(&mut self, closed: u64, now: Instant) -> bool {
        let still_closing = closed != self.seen;
        self.seen = closed;
        closed > 0
            && (!still_closing
                || now.saturating_duration_since(self.last_release) >= RELEASE_DURING_CHURN)
    }

    fn released(&mut self, now: Instant) {
        self.seen = 0;
        self.last_release = now;
    }
}

/// At most once per `MEMORY_RELEASE_INTERVAL` for the whole process: asks glibc's allocator to
/// return free memory to the system. Its per-thread arenas otherwise keep what a burst of
/// connections (or a bad peer's queued answers) used, however little of it is still in use:
/// measured after a bad-input attack, 217 MiB resident of which `malloc_trim` returned 172 MiB
/// (README "Connections and memory"). Called only after connections have closed, so a broker
/// whose connections stay does not pay for it. False when another shard did it too recently.
fn release_freed_memory() -> bool {
    if let Some(release) = THREAD_MEMORY_RELEASE.get() {
        return release_on_this_thread(*release);
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now_ms = START.get_or_init(Instant::now).elapsed().as_millis() as u64
        + MEMORY_RELEASE_INTERVAL.as_millis() as u64;
    let last = LAST_MS.load(Ordering::Relaxed);
    if now_ms < last + MEMORY_RELEASE_INTERVAL.as_millis() as u64
        || LAST_MS
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // On glommio's blocking-thread pool: the trim walks every arena (milliseconds for a
        // large heap) and the shard keeps serving meanwhile.
        let trim = glommio::executor().spawn_blocking(|| {
            let started = Instant::now();
            // SAFETY: malloc_trim only releases free memory of the allocator's own arenas; it
            // takes each arena's lock and touches no memory in use.
            unsafe { libc::malloc_trim(0) };
            tracing::debug!(took = ?started.elapsed(), "returned freed memory to the system");
        });
        glommio::spawn_local(trim).detach();
    }
    true
}

/// Set by a binary whose global allocator keeps freed memory per thread (the `ringmq` binary
/// uses mimalloc): run on each executor's own thread instead of glibc's `malloc_trim`, which
/// would not see that allocator's memory. Measured after a bad-input attack with mimalloc and
/// no release: 311 MiB resident for 25 s (83 MiB before the attack).
static THREAD_MEMORY_RELEASE: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Makes `release` the way executors give freed memory back after connections closed (see
/// [`THREAD_MEMORY_RELEASE`]); the first call wins.
pub fn set_thread_memory_release(release: fn()) {
    let _ = THREAD_MEMORY_RELEASE.set(release);
}

/// At most once per `MEMORY_RELEASE_INTERVAL` per executor thread: runs `release` here (it
/// frees this thread's heap, so it must run on the shard, not on a helper thread).
fn release_on_this_thread(release: fn()) -> bool {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    let due = LAST.with(|last| {
        last.get()
            .is_none_or(|t| now.saturating_duration_since(t) >= MEMORY_RELEASE_INTERVAL)
    });
    if due {
        LAST.with(|last| last.set(Some(now)));
        release();
        tracing::debug!(took = ?now.elapsed(), "returned this executor's freed memory");
    }
    due
}

/// How often, at most, freed memory is given back to the system after connections closed.
const MEMORY_RELEASE_INTERVAL: Duration = Duration::from_secs(5);

/// How often the idle sweep runs (a connection is closed at most this long after its limit).
const IDLE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::{mpsc, Mutex};

    use super::*;
    use crate::net::{Busy, Reply};
    use crate::remoting::{response, RemotingCommand};

    /// Answers every request at once, recording the task queue it ran on. The request with
    /// opaque `HOLD` holds the executor's thread until the test says go (so connections pile
    /// up in the listen backlog); the one with opaque `COUNT` counts the connections accepted
    /// since then (the process's open descriptors: the client's are all open by then).
    struct Recorder {
        holding: mpsc::Sender<()>,
        go: Mutex<mpsc::Receiver<()>>,
        fds_at_go: Cell<usize>,
        accepted_before_count: Cell<Option<usize>>,
        queues: RefCell<Vec<usize>>,
    }

    const HOLD: i32 = 1;
    const COUNT: i32 = 2;

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
    }

    impl Handler for Recorder {
        fn handle(
            self: &Rc<Self>,
            _conn: &Rc<Connection>,
            request: RemotingCommand,
            _busy: Busy,
        ) -> Reply {
            let queue = glommio::executor().current_task_queue().index();
            self.queues.borrow_mut().push(queue);
            match request.opaque {
                HOLD => {
                    let _ = self.holding.send(());
                    let _ = self.go.lock().unwrap().recv();
                    self.fds_at_go.set(open_fds());
                }
                COUNT => {
                    let accepted = open_fds().saturating_sub(self.fds_at_go.get());
                    self.accepted_before_count.set(Some(accepted));
                }
                _ => {}
            }
            Reply::Now(Some(request.response_to(response::SUCCESS, None)))
        }
    }

    fn send(conn: &mut TcpStream, opaque: i32) {
        let mut request = RemotingCommand::request(crate::remoting::request::GET_MAX_OFFSET);
        request.opaque = opaque;
        let mut frame = bytes::BytesMut::new();
        request.encode(&mut frame).unwrap();
        conn.write_all(&frame).unwrap();
    }

    fn answer(conn: &mut TcpStream) {
        let mut prefix = [0u8; 4];
        conn.read_exact(&mut prefix).unwrap();
        let mut rest = vec![0u8; u32::from_be_bytes(prefix) as usize];
        conn.read_exact(&mut rest).unwrap();
    }

    #[test]
    fn freed_memory_is_released_once_closes_stop_or_after_a_long_churn() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut pacing = ReleasePacing::new(t0);
        // Nothing closed: nothing to release.
        assert!(!pacing.due(0, at(1)));
        // Closes in every sweep: not while they go on ...
        for (sweep, closed) in [(2, 10), (3, 25), (4, 40)] {
            assert!(!pacing.due(closed, at(sweep)), "sweep {sweep}");
        }
        // ... but once a sweep saw none.
        assert!(pacing.due(40, at(5)));
        pacing.released(at(5));
        // A churn that never pauses is released every RELEASE_DURING_CHURN.
        let mut closed = 0;
        let mut releases = Vec::new();
        for sweep in 6..=100u64 {
            closed += 7;
            if pacing.due(closed, at(sweep)) {
                pacing.released(at(sweep));
                closed = 0;
                releases.push(sweep);
            }
        }
        assert_eq!(releases, [35, 65, 95]);
    }

    #[test]
    fn a_burst_of_new_connections_waits_behind_a_served_connections_request() {
        const BURST: usize = 800;
        let (holding_tx, holding_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        let handler = Rc::new(Recorder {
            holding: holding_tx,
            go: Mutex::new(go_rx),
            fds_at_go: Cell::new(0),
            accepted_before_count: Cell::new(None),
            queues: RefCell::default(),
        });
        let recorder = Rc::clone(&handler);
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async move {
                let main_queue = glommio::executor().current_task_queue().index();
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let shutdown = Shutdown::new();
                let stop = shutdown.clone();
                let client = std::thread::spawn(move || {
                    // A connection being served, waiting for its next request.
                    let mut served = TcpStream::connect(addr).unwrap();
                    send(&mut served, 0);
                    answer(&mut served);
                    // Another one's request holds the server while a burst of connections
                    // completes its handshakes and waits in the backlog, and the served one
                    // sends its next request.
                    let mut holder = TcpStream::connect(addr).unwrap();
                    send(&mut holder, HOLD);
                    holding_rx.recv().unwrap();
                    let burst: Vec<_> = (0..BURST)
                        .map(|_| TcpStream::connect(addr).unwrap())
                        .collect();
                    send(&mut served, COUNT);
                    go_tx.send(()).unwrap();
                    answer(&mut holder);
                    answer(&mut served);
                    // The burst is admitted all the same: the last of it is served.
                    let mut last = burst.into_iter().last().unwrap();
                    send(&mut last, 3);
                    answer(&mut last);
                    stop.trigger();
                });
                serve(listener, handler, ServerOptions::default(), shutdown).await;
                client.join().unwrap();
                // Every request ran on the queue `serve` was called on, none on admission's.
                let queues = recorder.queues.borrow();
                assert_eq!(queues.len(), 4);
                assert!(queues.iter().all(|&q| q == main_queue), "{queues:?}");
                // The served connection's request was answered before most of the burst was
                // accepted. (Without the admission queue, glommio accepts the whole backlog in
                // one go, and the accept completed before the request arrived.)
                let accepted = recorder.accepted_before_count.get().unwrap();
                assert!(accepted < BURST / 2, "{accepted} of {BURST} accepted first");
            });
    }
}
