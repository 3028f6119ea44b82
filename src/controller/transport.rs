//! Raft messages between controllers over TCP, on the peer addresses of
//! `controllerDLegerPeers`. Plain std threads: one accept loop, one reader per inbound
//! connection, one writer per peer with a bounded queue (a full queue drops the message: Raft
//! retransmits). This is the controllers' own traffic, never on a broker's request path.
//!
//! A connection opens with a hello frame (JSON: group, sender's Raft id, its remoting address);
//! a peer of another group is refused and logged. Then each frame is `[len u32 LE][raft-rs
//! Message, protobuf]`.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::Message;
use serde::{Deserialize, Serialize};

use crate::log_limit::{LogLimiter, Verdict};

use crate::limits::{
    CONTROLLER_CONNECT_TIMEOUT as CONNECT_TIMEOUT, CONTROLLER_FRAME_MAX_BYTES as FRAME_MAX_BYTES,
};
/// Readers wake this often to notice a stop.
const READ_POLL: Duration = Duration::from_millis(500);
const QUEUE_MESSAGES: usize = 4096;

/// What the transport hands the Raft thread.
pub enum Inbound {
    /// A Raft message from a peer.
    Message(Message),
    /// A peer said hello: its Raft id and remoting address.
    Peer { id: u64, remoting_addr: String },
    /// Sending to this peer failed (raft-rs's `report_unreachable`).
    Unreachable(u64),
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    group: String,
    from: u64,
    remoting: String,
}

/// Where inbound messages go; `false` means the Raft thread is gone.
pub type Sink = Arc<dyn Fn(Inbound) -> bool + Send + Sync>;

/// The outbound side: one queue per peer.
pub struct Transport {
    queues: HashMap<u64, flume::Sender<Message>>,
    stop: Arc<AtomicBool>,
    listen_addr: SocketAddr,
    /// Joined by `stop`, so that the port is free again once it returns (a restarted
    /// controller binds it at once).
    accept: Option<thread::JoinHandle<()>>,
}

impl Transport {
    /// Binds `listen_addr` and starts the threads. `peers` maps Raft ids (other than `self_id`)
    /// to their peer addresses; inbound messages and events go to `inbox`.
    pub fn start(
        group: &str,
        self_id: u64,
        listen_addr: SocketAddr,
        remoting_addr: String,
        peers: &HashMap<u64, SocketAddr>,
        inbox: Sink,
    ) -> io::Result<Transport> {
        let listener = TcpListener::bind(listen_addr)?;
        let listen_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (stop, inbox, group) = (Arc::clone(&stop), Arc::clone(&inbox), group.to_string());
            thread::Builder::new()
                .name("controller-accept".into())
                .spawn(move || accept_loop(listener, group, inbox, stop))?
        };
        let mut queues = HashMap::new();
        for (&id, &addr) in peers {
            let (tx, rx) = flume::bounded::<Message>(QUEUE_MESSAGES);
            let hello = Hello {
                group: group.to_string(),
                from: self_id,
                remoting: remoting_addr.clone(),
            };
            let (stop, inbox) = (Arc::clone(&stop), Arc::clone(&inbox));
            thread::Builder::new()
                .name(format!("controller-peer-{id}"))
                .spawn(move || writer_loop(id, addr, hello, rx, inbox, stop))?;
            queues.insert(id, tx);
        }
        Ok(Transport {
            queues,
            stop,
            listen_addr,
            accept: Some(accept),
        })
    }

    /// Queues `message` for its peer; a full queue or unknown peer drops it.
    pub fn send(&self, message: Message) {
        if let Some(queue) = self.queues.get(&message.to) {
            let _ = queue.try_send(message);
        }
    }

    /// Stops the threads (writers when their queue closes, readers within [`READ_POLL`]).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.queues.clear();
        // Wake the accept loop, and wait until it closed the listener.
        let woken = TcpStream::connect_timeout(&self.listen_addr, CONNECT_TIMEOUT);
        if let (Ok(_), Some(accept)) = (woken, self.accept.take()) {
            let _ = accept.join();
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        if !self.stop.load(Ordering::SeqCst) {
            self.stop();
        }
    }
}

fn accept_loop(listener: TcpListener, group: String, inbox: Sink, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let (group, inbox, stop) = (group.clone(), Arc::clone(&inbox), Arc::clone(&stop));
        let _ = thread::Builder::new()
            .name("controller-read".into())
            .spawn(move || {
                if let Err(e) = read_loop(stream, &group, &inbox, &stop) {
                    tracing::debug!(error = %e, "controller peer connection ended");
                }
            });
    }
}

fn read_frame(reader: &mut impl Read, stop: &AtomicBool) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    read_exact_patiently(reader, &mut len, stop)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > FRAME_MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes"),
        ));
    }
    let mut buf = vec![0u8; len];
    read_exact_patiently(reader, &mut buf, stop)?;
    Ok(buf)
}

/// `read_exact` that keeps waiting through read timeouts until `stop`.
fn read_exact_patiently(
    reader: &mut impl Read,
    mut buf: &mut [u8],
    stop: &AtomicBool,
) -> io::Result<()> {
    while !buf.is_empty() {
        match reader.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::SeqCst) {
                    return Err(io::ErrorKind::Interrupted.into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_loop(stream: TcpStream, group: &str, inbox: &Sink, stop: &AtomicBool) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_POLL))?;
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(stream);
    let hello: Hello = serde_json::from_slice(&read_frame(&mut reader, stop)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if hello.group != group {
        tracing::warn!(%peer, theirs = %hello.group, ours = %group, "refused a controller peer of another group (controllerDLegerGroup)");
        return Ok(());
    }
    let from = hello.from;
    if !inbox(Inbound::Peer {
        id: from,
        remoting_addr: hello.remoting,
    }) {
        return Ok(());
    }
    loop {
        let frame = read_frame(&mut reader, stop)?;
        let message = Message::parse_from_bytes(&frame)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if message.from != from {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message from {} on node {from}'s connection", message.from),
            ));
        }
        if !inbox(Inbound::Message(message)) {
            return Ok(());
        }
    }
}

fn write_frame(writer: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    writer.write_all(&(bytes.len() as u32).to_le_bytes())?;
    writer.write_all(bytes)
}

fn writer_loop(
    id: u64,
    addr: SocketAddr,
    hello: Hello,
    queue: flume::Receiver<Message>,
    inbox: Sink,
    stop: Arc<AtomicBool>,
) {
    let hello = serde_json::to_vec(&hello).expect("hello serializes");
    let log = LogLimiter::new(Duration::from_secs(30), 4);
    let mut conn: Option<BufWriter<TcpStream>> = None;
    while let Ok(message) = queue.recv() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if conn.is_none() {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).and_then(|s| {
                s.set_nodelay(true)?;
                let mut w = BufWriter::new(s);
                write_frame(&mut w, &hello)?;
                Ok(w)
            }) {
                Ok(w) => conn = Some(w),
                Err(e) => {
                    if let Verdict::Log { suppressed } = log.check(id) {
                        tracing::warn!(peer = id, %addr, error = %e, suppressed, "cannot reach controller peer");
                    }
                    inbox(Inbound::Unreachable(id));
                    continue;
                }
            }
        }
        let w = conn.as_mut().expect("connected above");
        let mut result = write_frame(w, &message.write_to_bytes().expect("message encodes"));
        // Send what else is queued in the same flush.
        while result.is_ok() {
            match queue.try_recv() {
                Ok(m) => result = write_frame(w, &m.write_to_bytes().expect("message encodes")),
                Err(_) => break,
            }
        }
        if result.and_then(|_| w.flush()).is_err() {
            conn = None;
            inbox(Inbound::Unreachable(id));
        }
    }
}
