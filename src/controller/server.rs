//! The controller's remoting side: the request codes reach the Raft thread through a
//! [`ControllerHandle`], from the nameserver's server (embedded) or from a server of its own on
//! `listenPort` (`ringmq controller`), both on a glommio executor that awaits the answer
//! without blocking.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use glommio::ExecutorJoinHandle;

use super::node::ControllerHandle;
use crate::net::{serve, spawn_listening, Busy, Connection, Handler, Reply, ServerOptions};
use crate::remoting::{response as resp, RemotingCommand};
use crate::runtime::{ExecutorOptions, Shutdown};

/// Hands `request` to the controller and answers when it does (nothing for a oneway request,
/// such as the brokers' heartbeats). The connection's work claim is held until then (a wait
/// bounded by the controller's proposal timeout).
pub fn forward(controller: &ControllerHandle, request: RemotingCommand, busy: Busy) -> Reply {
    let oneway = request.is_oneway();
    let stopped = ControllerHandle::stopped_answer(&request);
    let answer = controller.call(request);
    Reply::Later(Box::pin(async move {
        let answer = answer.recv_async().await.unwrap_or(stopped);
        drop(busy);
        (!oneway).then_some(answer)
    }))
}

/// A standalone controller's request handler.
struct ControllerServer {
    controller: ControllerHandle,
}

impl Handler for ControllerServer {
    fn handle(
        self: &Rc<Self>,
        _conn: &Rc<Connection>,
        request: RemotingCommand,
        busy: Busy,
    ) -> Reply {
        if ControllerHandle::serves(request.code) {
            return forward(&self.controller, request, busy);
        }
        let code = request.code;
        Reply::Now(Some(request.error_to(
            resp::REQUEST_CODE_NOT_SUPPORTED,
            format!(" request type {code} not supported by a controller"),
        )))
    }
}

/// A running standalone controller server.
pub struct ServerHandle {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    shutdown: Shutdown,
    join: ExecutorJoinHandle<()>,
}

impl ServerHandle {
    /// Waits until it has stopped (after its `Shutdown` fired).
    pub fn wait(self) {
        if let Err(e) = self.join.join() {
            tracing::error!(error = %e, "controller executor failed");
        }
    }

    /// Asks it to stop and waits.
    pub fn stop(self) {
        self.shutdown.trigger();
        self.wait();
    }
}

/// Serves `controller`'s request codes on `addr` until `shutdown`.
pub fn start(
    addr: SocketAddr,
    controller: ControllerHandle,
    shutdown: Shutdown,
) -> io::Result<ServerHandle> {
    let stop = shutdown.clone();
    let (local_addr, join) = spawn_listening(
        &ExecutorOptions::control_plane("controller"),
        "controller",
        addr,
        move |listener| async move {
            serve(
                listener,
                Rc::new(ControllerServer { controller }),
                ServerOptions::default(),
                stop,
            )
            .await;
        },
    )?;
    Ok(ServerHandle {
        local_addr,
        shutdown,
        join,
    })
}
