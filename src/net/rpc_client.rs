//! Outbound remoting calls from a glommio executor (broker → nameserver registration, slave →
//! master metadata sync): one lazily opened, pipelined connection per peer, responses matched to
//! requests by opaque, each call bounded by a deadline. On any connection failure every pending
//! call fails at once and the next call reconnects.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, WriteHalf};
use glommio::channels::local_channel::{self, LocalSender};
use glommio::net::TcpStream;
use thiserror::Error;

use crate::limits::{CONNECTION_READ_BUFFER_BYTES, FRAME_SIZE_MAX_BYTES};
use crate::remoting::{next_frame, RemotingCommand, WireError};

/// Why an outbound call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RpcError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to {addr} failed: {reason}")]
    Io { addr: String, reason: String },
    #[error("no response from {addr} within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u128 },
    #[error("cannot encode request to {addr}: {source}")]
    Encode { addr: String, source: WireError },
}

type Pending = RefCell<HashMap<i32, LocalSender<RemotingCommand>>>;

struct Link {
    /// Encoded frames for the writer task, which owns the socket's write half.
    outbound: LocalSender<bytes::Bytes>,
    pending: Rc<Pending>,
    alive: Rc<Cell<bool>>,
}

/// A client for one peer address.
pub struct RpcClient {
    addr: String,
    timeout: Duration,
    link: RefCell<Option<Rc<Link>>>,
    next_opaque: Cell<i32>,
}

impl RpcClient {
    /// A client for `addr` (`host:port`); nothing is opened until the first call.
    pub fn new(addr: impl Into<String>, timeout: Duration) -> RpcClient {
        RpcClient {
            addr: addr.into(),
            timeout,
            link: RefCell::new(None),
            next_opaque: Cell::new(1),
        }
    }

    /// The peer address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn link(&self) -> Result<Rc<Link>, RpcError> {
        if let Some(link) = self.link.borrow().as_ref().filter(|l| l.alive.get()) {
            return Ok(Rc::clone(link));
        }
        let connect = TcpStream::connect(self.addr.as_str());
        let timeout = async {
            glommio::timer::sleep(self.timeout).await;
            Err(glommio::GlommioError::IoError(std::io::Error::other(
                "timed out",
            )))
        };
        let stream = future::or(connect, timeout)
            .await
            .map_err(|e| RpcError::Connect {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = futures_lite::io::split(stream);
        let pending: Rc<Pending> = Rc::default();
        let alive = Rc::new(Cell::new(true));
        glommio::spawn_local(read_responses(
            reader,
            Rc::clone(&pending),
            Rc::clone(&alive),
        ))
        .detach();
        let (outbound, frames) =
            local_channel::new_bounded(crate::limits::CONNECTION_WRITE_QUEUE_MAX);
        glommio::spawn_local(write_frames(writer, frames, Rc::clone(&alive))).detach();
        let link = Rc::new(Link {
            outbound,
            pending,
            alive,
        });
        *self.link.borrow_mut() = Some(Rc::clone(&link));
        Ok(link)
    }

    fn opaque(&self) -> i32 {
        let opaque = self.next_opaque.get();
        self.next_opaque.set(opaque.wrapping_add(1) & i32::MAX);
        opaque
    }

    async fn write(&self, link: &Link, request: &RemotingCommand) -> Result<(), RpcError> {
        let frame = request.to_frame().map_err(|source| RpcError::Encode {
            addr: self.addr.clone(),
            source,
        })?;
        link.outbound.send(frame).await.map_err(|_| {
            link.alive.set(false);
            RpcError::Io {
                addr: self.addr.clone(),
                reason: "connection closed".into(),
            }
        })
    }

    /// Sends `request` and waits for its response (whatever its code) until the deadline.
    pub async fn invoke(&self, mut request: RemotingCommand) -> Result<RemotingCommand, RpcError> {
        let link = self.link().await?;
        request.opaque = self.opaque();
        let (tx, rx) = local_channel::new_bounded(1);
        link.pending.borrow_mut().insert(request.opaque, tx);
        let opaque = request.opaque;
        if let Err(e) = self.write(&link, &request).await {
            link.pending.borrow_mut().remove(&opaque);
            return Err(e);
        }
        let response = future::or(async { rx.recv().await.ok_or(()) }, async {
            glommio::timer::sleep(self.timeout).await;
            Err(())
        })
        .await;
        link.pending.borrow_mut().remove(&opaque);
        response.map_err(|()| match link.alive.get() {
            true => RpcError::Timeout {
                addr: self.addr.clone(),
                timeout_ms: self.timeout.as_millis(),
            },
            false => RpcError::Io {
                addr: self.addr.clone(),
                reason: "connection closed".into(),
            },
        })
    }

    /// Sends a oneway request.
    pub async fn invoke_oneway(&self, mut request: RemotingCommand) -> Result<(), RpcError> {
        let link = self.link().await?;
        request.opaque = self.opaque();
        request.set_oneway();
        self.write(&link, &request).await
    }
}

async fn write_frames(
    mut writer: WriteHalf<TcpStream>,
    frames: glommio::channels::local_channel::LocalReceiver<bytes::Bytes>,
    alive: Rc<Cell<bool>>,
) {
    while let Some(frame) = frames.recv().await {
        if writer.write_all(&frame).await.is_err() {
            alive.set(false);
            return;
        }
    }
}

async fn read_responses(
    mut reader: futures_lite::io::ReadHalf<TcpStream>,
    pending: Rc<Pending>,
    alive: Rc<Cell<bool>>,
) {
    let mut buf = BytesMut::with_capacity(CONNECTION_READ_BUFFER_BYTES);
    'read: loop {
        loop {
            match next_frame(&mut buf, FRAME_SIZE_MAX_BYTES) {
                Ok(Some(frame)) => match RemotingCommand::decode(frame) {
                    Ok(cmd) if cmd.is_response() => {
                        if let Some(tx) = pending.borrow_mut().remove(&cmd.opaque) {
                            let _ = tx.try_send(cmd);
                        }
                    }
                    // Requests from the peer are not expected on these links.
                    Ok(_) => {}
                    Err(_) => break 'read,
                },
                Ok(None) => break,
                Err(_) => break 'read,
            }
        }
        let filled = buf.len();
        buf.resize(filled + CONNECTION_READ_BUFFER_BYTES, 0);
        match reader.read(&mut buf[filled..]).await {
            Ok(n) if n > 0 => buf.truncate(filled + n),
            _ => break,
        }
    }
    alive.set(false);
    // Dropping the senders fails every pending call at once.
    pending.borrow_mut().clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namesrv::{self, NamesrvOptions};
    use crate::remoting::{request, response};
    use crate::runtime::Shutdown;

    fn run<T>(fut: impl std::future::Future<Output = T>) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .make()
            .expect("executor")
            .run(fut)
    }

    #[test]
    fn pipelined_calls_get_their_own_responses() {
        let ns = namesrv::start(
            NamesrvOptions::new("127.0.0.1:0".parse().unwrap()),
            Shutdown::new(),
        )
        .expect("nameserver");
        let addr = ns.local_addr.to_string();
        let codes = run(async move {
            let client = Rc::new(RpcClient::new(addr, Duration::from_secs(5)));
            let calls = (0..50).map(|i| {
                let client = Rc::clone(&client);
                glommio::spawn_local(async move {
                    let topic = format!("T{i}");
                    let req = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC)
                        .with_ext("topic", topic.as_str());
                    let resp = client.invoke(req).await.expect("answered");
                    (resp.code, resp.remark.unwrap_or_default().contains(&topic))
                })
            });
            let mut out = Vec::new();
            for task in calls.collect::<Vec<_>>() {
                out.push(task.await);
            }
            out
        });
        assert!(codes
            .iter()
            .all(|(code, mine)| *code == response::TOPIC_NOT_EXIST && *mine));
        ns.stop();
    }

    #[test]
    fn silent_peer_times_out_and_refused_peer_fails_to_connect() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_addr = silent.local_addr().unwrap().to_string();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let (timeout, refused) = run(async move {
            let client = RpcClient::new(silent_addr, Duration::from_millis(200));
            let timeout = client
                .invoke(RemotingCommand::request(request::HEART_BEAT))
                .await;
            let client = RpcClient::new(closed_addr, Duration::from_millis(200));
            let refused = client
                .invoke(RemotingCommand::request(request::HEART_BEAT))
                .await;
            (timeout, refused)
        });
        assert!(
            matches!(timeout, Err(RpcError::Timeout { .. })),
            "{timeout:?}"
        );
        assert!(
            matches!(refused, Err(RpcError::Connect { .. })),
            "{refused:?}"
        );
        drop(silent);
    }
}
