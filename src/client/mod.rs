//! A small blocking RocketMQ remoting client for tests, the admin tool and scripts. It speaks
//! only the wire protocol, so it works against ringmq and Java RocketMQ alike; it never imports
//! `namesrv`, `broker` or `store`.

pub mod broker;
pub mod namesrv;
pub mod pipelined;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use thiserror::Error;

use crate::limits::FRAME_SIZE_MAX_BYTES;
use crate::remoting::{next_frame, response, RemotingCommand, SerializeType, WireError};

pub use namesrv::NamesrvClient;

pub use crate::acl::Credentials;

/// Credentials every [`Connection`] opened afterwards in this process signs with (a tool sets
/// them once from its flags: `ringmq admin`, `ringmq dashboard`). Connections can also be
/// given their own with [`Connection::set_credentials`].
static DEFAULT_CREDENTIALS: std::sync::RwLock<Option<Credentials>> = std::sync::RwLock::new(None);

/// Sets the credentials new connections of this process sign with (`None`: unsigned).
pub fn set_default_credentials(credentials: Option<Credentials>) {
    *DEFAULT_CREDENTIALS
        .write()
        .unwrap_or_else(|e| e.into_inner()) = credentials;
}

fn default_credentials() -> Option<Credentials> {
    DEFAULT_CREDENTIALS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Why a call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("i/o error talking to {addr}: {source}")]
    Io { addr: String, source: io::Error },
    #[error("{addr} sent an undecodable frame: {source}")]
    Wire { addr: String, source: WireError },
    #[error("{addr} closed the connection")]
    Closed { addr: String },
    #[error("no response from {addr} within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u128 },
    #[error("{addr} answered {name} ({code}){}", remark.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    Server {
        addr: String,
        code: i32,
        name: &'static str,
        remark: Option<String>,
    },
    #[error("{addr} sent a body that does not parse: {reason}")]
    Body { addr: String, reason: String },
}

impl ClientError {
    /// The server's response code, when the server answered with an error.
    pub fn code(&self) -> Option<i32> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// One connection to a nameserver or broker. Requests are sent one at a time; frames the server
/// initiates in between (e.g. NOTIFY_CONSUMER_IDS_CHANGED) are kept in `unsolicited`.
pub struct Connection {
    addr: String,
    stream: TcpStream,
    buf: BytesMut,
    next_opaque: i32,
    /// Per-call deadline.
    pub timeout: Duration,
    /// Header encoding of requests (JSON unless set).
    pub serialize_type: SerializeType,
    /// Server-initiated requests received while waiting for a response.
    pub unsolicited: Vec<RemotingCommand>,
    /// Signs every request (RocketMQ's ACL) when set.
    credentials: Option<Credentials>,
}

impl Connection {
    /// Connects to `addr` (`host:port`).
    pub fn connect(addr: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let connect_err = |source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        };
        let sock_addr: SocketAddr = addr
            .to_socket_addrs()
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| connect_err(io::Error::other("address resolves to nothing")))?;
        let stream = TcpStream::connect_timeout(&sock_addr, timeout).map_err(connect_err)?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            addr: addr.to_string(),
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            next_opaque: 1,
            timeout,
            serialize_type: SerializeType::Json,
            unsolicited: Vec::new(),
            credentials: default_credentials(),
        })
    }

    /// Signs every later request with `credentials` (`None`: unsigned).
    pub fn set_credentials(&mut self, credentials: Option<Credentials>) {
        self.credentials = credentials;
    }

    /// The address this connection was opened to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn io_err(&self, source: io::Error) -> ClientError {
        ClientError::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Sends `request` and waits for its response (matched by opaque). The response is returned
    /// whatever its code; see [`Connection::call`] for error codes as errors.
    pub fn invoke(&mut self, mut request: RemotingCommand) -> Result<RemotingCommand, ClientError> {
        let opaque = self.prepare(&mut request);
        let frame = self.frame(&request)?;
        self.write_all(&frame)?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let frame = self.read_command_until(deadline)?;
            if frame.is_response() && frame.opaque == opaque {
                return Ok(frame);
            }
            if !frame.is_response() {
                self.unsolicited.push(frame);
            }
        }
    }

    /// Like [`Connection::invoke`], but a response code other than SUCCESS is an error.
    pub fn call(&mut self, request: RemotingCommand) -> Result<RemotingCommand, ClientError> {
        let response = self.invoke(request)?;
        if response.code == response::SUCCESS {
            Ok(response)
        } else {
            Err(ClientError::Server {
                addr: self.addr.clone(),
                code: response.code,
                name: response::name(response.code).unwrap_or("UNKNOWN"),
                remark: response.remark,
            })
        }
    }

    /// Sends a oneway request (no response expected).
    pub fn invoke_oneway(&mut self, mut request: RemotingCommand) -> Result<(), ClientError> {
        self.prepare(&mut request);
        request.set_oneway();
        let frame = self.frame(&request)?;
        self.write_all(&frame)
    }

    fn frame(&self, request: &RemotingCommand) -> Result<bytes::Bytes, ClientError> {
        request.to_frame().map_err(|source| ClientError::Wire {
            addr: self.addr.clone(),
            source,
        })
    }

    fn prepare(&mut self, request: &mut RemotingCommand) -> i32 {
        request.opaque = self.next_opaque;
        request.flag &= !crate::remoting::FLAG_RESPONSE;
        request.serialize_type = self.serialize_type;
        self.next_opaque = self.next_opaque.wrapping_add(1) & i32::MAX;
        if let Some(credentials) = &self.credentials {
            crate::acl::sign(request, credentials);
        }
        request.opaque
    }

    /// Writes raw bytes (tests use this to send hand-built or malformed frames).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).map_err(|e| self.io_err(e))
    }

    /// Reads the next frame from the server, whatever it is.
    pub fn read_command(&mut self) -> Result<RemotingCommand, ClientError> {
        let deadline = Instant::now() + self.timeout;
        self.read_command_until(deadline)
    }

    fn read_command_until(&mut self, deadline: Instant) -> Result<RemotingCommand, ClientError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let frame = next_frame(&mut self.buf, FRAME_SIZE_MAX_BYTES).map_err(|source| {
                ClientError::Wire {
                    addr: self.addr.clone(),
                    source,
                }
            })?;
            if let Some(frame) = frame {
                return RemotingCommand::decode(frame).map_err(|source| ClientError::Wire {
                    addr: self.addr.clone(),
                    source,
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout {
                    addr: self.addr.clone(),
                    timeout_ms: self.timeout.as_millis(),
                });
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| self.io_err(e))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(ClientError::Closed {
                        addr: self.addr.clone(),
                    })
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io_err(e)),
            }
        }
    }
}
