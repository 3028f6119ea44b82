//! The accept loop: one per executor, on a listener bound with SO_REUSEPORT.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::future;
use glommio::net::TcpListener;

use super::connection::{self, Handler};
use crate::limits::{CONNECTIONS_PER_SHARD_MAX, FRAME_SIZE_MAX_BYTES};
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

/// Per-listener bounds.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Frames declaring more than this are refused and their connection closed.
    pub max_frame_bytes: usize,
    /// Connections served at once; further ones are closed on accept.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_frame_bytes: FRAME_SIZE_MAX_BYTES,
            max_connections: CONNECTIONS_PER_SHARD_MAX,
        }
    }
}

/// Accepts connections on `listener` and serves each with `handler` until `shutdown` fires.
/// Open connections are left to finish (they end when their peers close).
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Rc<H>,
    options: ServerOptions,
    shutdown: Shutdown,
) {
    let open = Rc::new(Cell::new(0usize));
    let mut next_id = 0u64;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        if open.get() >= options.max_connections {
            tracing::warn!(
                max = options.max_connections,
                "connection limit reached; refusing"
            );
            drop(stream);
            continue;
        }
        next_id += 1;
        open.set(open.get() + 1);
        let (handler, open, max_frame) = (
            Rc::clone(&handler),
            Rc::clone(&open),
            options.max_frame_bytes,
        );
        glommio::spawn_local(async move {
            connection::run(next_id, stream, handler, max_frame).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}
