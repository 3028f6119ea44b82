//! The nameserver: a route registry on one glommio executor (DESIGN.md "Nameserver").
//! Stateless across restarts except for the KV config; several run side by side, each learning
//! everything from broker registrations. Never imports `store` or `broker`.

pub mod kv_config;
pub mod processor;
pub mod route_table;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::ExecutorJoinHandle;

use crate::net::{serve, spawn_listening, ServerOptions};
use crate::runtime::{ExecutorOptions, Shutdown};
use kv_config::KvConfig;
use processor::{NamesrvProcessor, ProcessorOptions};

/// Everything needed to run a nameserver.
#[derive(Debug, Clone)]
pub struct NamesrvOptions {
    /// Address to listen on (port 0 picks a free one).
    pub listen_addr: SocketAddr,
    /// Where the KV config lives; `None` keeps it in memory.
    pub kv_config_path: Option<PathBuf>,
    /// How often brokers are checked for expiry.
    pub broker_scan_interval: Duration,
    /// Processor settings (expiry, order topics, served config).
    pub processor: ProcessorOptions,
    /// Frame and connection bounds.
    pub server: ServerOptions,
}

impl NamesrvOptions {
    /// Defaults of a Java nameserver on `listen_addr`, KV config in memory.
    pub fn new(listen_addr: SocketAddr) -> NamesrvOptions {
        NamesrvOptions {
            listen_addr,
            kv_config_path: None,
            broker_scan_interval: Duration::from_secs(10),
            processor: ProcessorOptions {
                order_message_enable: false,
                broker_expiry: Duration::from_secs(120),
                config_properties: Vec::new(),
                controller: None,
            },
            server: ServerOptions::default(),
        }
    }
}

/// A running nameserver.
pub struct NamesrvHandle {
    /// The address it listens on.
    pub local_addr: SocketAddr,
    shutdown: Shutdown,
    join: ExecutorJoinHandle<()>,
}

impl NamesrvHandle {
    /// Asks it to stop and waits until its executor has exited.
    pub fn stop(self) {
        self.shutdown.trigger();
        self.wait();
    }

    /// Waits until it has stopped (after its `Shutdown` fired).
    pub fn wait(self) {
        if let Err(e) = self.join.join() {
            tracing::error!(error = %e, "nameserver executor failed");
        }
    }
}

/// Starts a nameserver on its own executor thread. Returns once it is listening.
pub fn start(options: NamesrvOptions, shutdown: Shutdown) -> io::Result<NamesrvHandle> {
    let kv = KvConfig::load(options.kv_config_path.clone())?;
    let stop = shutdown.clone();
    let (local_addr, join) = spawn_listening(
        &ExecutorOptions::control_plane("namesrv"),
        "nameserver",
        options.listen_addr,
        move |listener| async move {
            let processor = Rc::new(NamesrvProcessor::new(kv, options.processor));
            let scan = scan_brokers(
                Rc::clone(&processor),
                options.broker_scan_interval,
                stop.clone(),
            );
            glommio::spawn_local(scan).detach();
            serve(listener, processor, options.server, stop).await;
            tracing::info!("nameserver stopped");
        },
    )?;
    tracing::info!(%local_addr, "nameserver listening");
    Ok(NamesrvHandle {
        local_addr,
        shutdown,
        join,
    })
}

/// Drops expired brokers every `interval` until shutdown. A housekeeping timer, not a request
/// path: requests never wait on it.
async fn scan_brokers(processor: Rc<NamesrvProcessor>, interval: Duration, shutdown: Shutdown) {
    while shutdown.sleep(interval).await {
        processor.scan_expired(Instant::now());
    }
}
