//! `ringmq dashboard`: the web console and Prometheus exporter of a RocketMQ cluster, in one
//! light process that talks to the cluster only through [`crate::admin`]'s data functions (the
//! ones `ringmq admin` prints), so it works against Java RocketMQ as well.
//!
//! * `http`: requests, answers, and failures mapped onto HTTP statuses
//! * `api`: the views the pages show, served as JSON under `/api/`
//! * `pages`: server-rendered HTML (maud) of the same views; `assets/` holds the embedded
//!   stylesheet and script (live tables, charts, forms posting to the API)
//! * `sampler`: the snapshots of the cluster taken every `--interval`, kept for the charts
//! * `metrics`: `/metrics` with rocketmq-exporter's names
//! * `guard`: what every request passes first (Host, same-origin JSON writes with the
//!   session's anti-CSRF token, who may write) and the headers on every answer
//! * `login`: the optional sign-in from a users file, as rocketmq-dashboard's
//!
//! Threads: tiny_http accepts; a few workers answer requests (each blocking on the cluster),
//! and the sampler takes snapshots. Nothing here runs on a broker.

mod api;
mod guard;
mod http;
mod login;
mod metrics;
mod pages;
mod sampler;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Args;

use crate::admin::Common;
use guard::{Access, Guard, Secret, SECURITY_HEADERS};
use http::{ApiError, Reply, Request};
use sampler::{History, Snapshot};

/// Threads answering requests.
const WORKERS: usize = 4;

/// `ringmq dashboard`'s flags.
#[derive(Args, Debug, Clone)]
pub struct DashboardArgs {
    /// Nameserver list `host:port;host:port` (defaults to NAMESRV_ADDR).
    #[arg(short = 'n', long = "namesrvAddr", env = "NAMESRV_ADDR")]
    pub namesrv: Option<String>,
    /// Address to serve the dashboard on.
    #[arg(long = "listen", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Seconds between two snapshots of the cluster (charts, /metrics).
    #[arg(long = "interval", default_value_t = 5)]
    pub interval_seconds: u64,
    /// Minutes of snapshots the charts show.
    #[arg(long = "history", default_value_t = 10)]
    pub history_minutes: u64,
    /// Another name the dashboard answers to (repeatable); requests for any other Host than
    /// the listen address and localhost are refused (DNS rebinding).
    #[arg(long = "allowed-host", value_name = "NAME")]
    pub allowed_hosts: Vec<String>,
    /// rocketmq-dashboard's users.properties (`name=password[,1]`, 1 = admin): pages need a
    /// sign-in and writes an admin. Re-read when it changes.
    #[arg(long = "users-file", value_name = "FILE")]
    pub users_file: Option<PathBuf>,
    /// Let anyone who reaches a non-loopback --listen address write (without it, and without
    /// --users-file, such a dashboard is read-only).
    #[arg(long = "allow-anonymous-writes")]
    pub allow_anonymous_writes: bool,
}

/// What a dashboard needs.
#[derive(Debug, Clone)]
pub struct DashboardOptions {
    /// Nameserver list `host:port;host:port`.
    pub namesrv: String,
    pub listen: SocketAddr,
    pub interval: Duration,
    pub history: Duration,
    /// More names the dashboard answers to.
    pub allowed_hosts: Vec<String>,
    /// Sign-in from this users file.
    pub users_file: Option<PathBuf>,
    /// Writes open beyond loopback without a users file.
    pub allow_anonymous_writes: bool,
}

impl DashboardOptions {
    /// Snapshots every 5 s, 10 minutes kept; no sign-in, no other host name.
    pub fn new(namesrv: &str, listen: SocketAddr) -> DashboardOptions {
        DashboardOptions {
            namesrv: namesrv.to_string(),
            listen,
            interval: Duration::from_secs(5),
            history: Duration::from_secs(600),
            allowed_hosts: Vec::new(),
            users_file: None,
            allow_anonymous_writes: false,
        }
    }
}

/// A stop flag threads can sleep on.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Sleeps `d`; false when stopped first.
    fn sleep(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        !*guard
    }
}

/// What every request handler shares.
pub(crate) struct State {
    common: Common,
    namesrv: String,
    interval: Duration,
    history: Mutex<History>,
    guard: Guard,
}

impl State {
    /// The snapshots, oldest first.
    fn history(&self) -> Vec<Arc<Snapshot>> {
        self.history.lock().unwrap_or_else(|p| p.into_inner()).all()
    }

    fn record(&self, snap: Snapshot) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        history.push(snap);
    }
}

/// A running dashboard.
pub struct DashboardHandle {
    /// Where it serves.
    pub local_addr: SocketAddr,
    /// Who may write, for the start-up line.
    pub mode: String,
    server: Arc<tiny_http::Server>,
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
}

impl DashboardHandle {
    /// Stops serving and sampling; returns once every thread has ended.
    pub fn stop(self) {
        self.stop.stop();
        for _ in 0..WORKERS {
            self.server.unblock();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Starts serving `options.listen` (port 0: any free port) and sampling the cluster.
pub fn start(options: DashboardOptions) -> io::Result<DashboardHandle> {
    if options.users_file.is_some() && options.allow_anonymous_writes {
        return Err(io::Error::other(
            "--allow-anonymous-writes has no meaning with --users-file (admins write)",
        ));
    }
    let secret = Arc::new(Secret::random()?);
    let logins = match &options.users_file {
        Some(path) => {
            Some(login::Logins::load(path, Arc::clone(&secret)).map_err(io::Error::other)?)
        }
        None => None,
    };
    let server = tiny_http::Server::http(options.listen).map_err(io::Error::other)?;
    let local_addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| io::Error::other("the dashboard is not listening on an IP address"))?;
    let server = Arc::new(server);
    let interval = options.interval.max(Duration::from_millis(100));
    let capacity = (options.history.as_millis() / interval.as_millis()).max(2) as usize;
    let access = Access::choose(local_addr, logins, options.allow_anonymous_writes);
    let mode = access.describe();
    let state = Arc::new(State {
        common: Common::for_namesrv(&options.namesrv),
        namesrv: options.namesrv.clone(),
        interval,
        history: Mutex::new(History::new(capacity)),
        guard: Guard::new(secret, local_addr, &options.allowed_hosts, access),
    });
    let stop = Arc::new(Stop::default());
    let mut threads = Vec::new();
    for i in 0..WORKERS {
        let (server, state) = (Arc::clone(&server), Arc::clone(&state));
        let worker = std::thread::Builder::new()
            .name(format!("dashboard-{i}"))
            .spawn(move || serve(&server, &state))?;
        threads.push(worker);
    }
    let (sampler_state, sampler_stop) = (Arc::clone(&state), Arc::clone(&stop));
    let sampler = std::thread::Builder::new()
        .name("dashboard-sampler".into())
        .spawn(move || loop {
            sampler_state.record(sampler::collect(&sampler_state.common));
            if !sampler_stop.sleep(sampler_state.interval) {
                break;
            }
        })?;
    threads.push(sampler);
    Ok(DashboardHandle {
        local_addr,
        mode,
        server,
        stop,
        threads,
    })
}

fn serve(server: &tiny_http::Server, state: &State) {
    while let Ok(mut request) = server.recv() {
        let (reply, extra) = answer(state, &mut request);
        let mut response = reply.into_response();
        for (name, value) in SECURITY_HEADERS {
            response.add_header(http::header(name, value));
        }
        if let Some(h) = extra.and_then(|(n, v)| tiny_http::Header::from_bytes(n, v).ok()) {
            response.add_header(h);
        }
        if let Err(e) = request.respond(response) {
            tracing::debug!(error = %e, "a dashboard answer was not delivered");
        }
    }
}

/// The answer to one request, after the guard, and a header to add (a cookie, a challenge).
fn answer(
    state: &State,
    request: &mut tiny_http::Request,
) -> (Reply, Option<(&'static str, String)>) {
    let req = match Request::from_tiny(request) {
        Ok(req) => req,
        Err(e) => return (Reply::from_api_error(&e), None),
    };
    let mut visitor = match state.guard.admit(&req) {
        Ok(v) => v,
        Err(refusal) => return (refusal.reply, refusal.header),
    };
    let reply = login::route(state, &req, &mut visitor).unwrap_or_else(|| route(state, &req));
    (reply, visitor.set_cookie.map(|c| ("Set-Cookie", c)))
}

/// Answers one request.
fn route(state: &State, req: &Request) -> Reply {
    let path: Vec<&str> = req.path.iter().map(String::as_str).collect();
    if path.first() == Some(&"api") {
        return match api_route(state, req, &path[1..]) {
            Ok(reply) => reply,
            Err(e) => Reply::from_api_error(&e),
        };
    }
    match (req.method.as_str(), path.as_slice()) {
        ("GET", []) => pages::cluster(state),
        ("GET", ["topics"]) => pages::topics(state),
        ("GET", ["topics", name]) => pages::topic(state, name),
        ("GET", ["groups"]) => pages::groups(state),
        ("GET", ["groups", name]) => pages::group(state, name, req.param("client")),
        ("GET", ["messages"]) => pages::messages(state, req),
        ("GET", ["messages", id]) => pages::message(state, id),
        ("GET", ["producer"]) => pages::producer(state, req),
        ("GET", ["metrics"]) => {
            let mut history = state.history();
            if history.is_empty() {
                state.record(sampler::collect(&state.common));
                history = state.history();
            }
            Reply::Text(200, metrics::CONTENT_TYPE, metrics::render(&history))
        }
        ("GET", ["assets", "app.js"]) => Reply::Static(
            "text/javascript; charset=utf-8",
            include_str!("assets/app.js"),
        ),
        ("GET", ["assets", "style.css"]) => {
            Reply::Static("text/css; charset=utf-8", include_str!("assets/style.css"))
        }
        _ => pages::not_found(state, &format!("/{}", req.path.join("/"))),
    }
}

fn api_route(state: &State, req: &Request, path: &[&str]) -> Result<Reply, ApiError> {
    let reply = match (req.method.as_str(), path) {
        ("GET", ["cluster"]) => Reply::json(&api::cluster(state)?),
        ("GET", ["topics"]) => Reply::json(&api::topics(state)?),
        ("POST", ["topics"]) => Reply::json(&api::create_topic(state, req.json()?)?),
        ("GET", ["topics", name]) => Reply::json(&api::topic(state, name)?),
        ("DELETE", ["topics", name]) => Reply::json(&api::delete_topic(state, name, req)?),
        ("GET", ["groups"]) => Reply::json(&api::groups(state)?),
        ("GET", ["groups", name]) => Reply::json(&api::group(state, name)?),
        ("GET", ["groups", name, "clients", id]) => Reply::json(&api::client(state, name, id)?),
        ("POST", ["groups", name, "reset"]) => Reply::json(&api::reset(state, name, req.json()?)?),
        ("GET", ["messages"]) => Reply::json(&api::search_messages(state, req)?),
        ("POST", ["messages"]) => Reply::json(&api::send(state, req.json()?)?),
        ("GET", ["messages", id]) => Reply::json(&api::message(state, id)?),
        ("POST", ["messages", id, "resend"]) => Reply::json(&api::resend(id, req.json()?)?),
        ("GET", ["series"]) => Reply::json(&api::series(state)),
        (method, _) => {
            let what = format!("no API {method} /api/{}", path.join("/"));
            return Err(ApiError::not_found(what));
        }
    };
    Ok(reply)
}

/// Runs `ringmq dashboard` until SIGINT or SIGTERM.
pub fn run(args: DashboardArgs) -> ExitCode {
    let fail = |e: String| {
        eprintln!("ringmq dashboard: {e}");
        ExitCode::from(1)
    };
    let namesrv = match args.namesrv.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => return fail("no nameserver given: pass -n host:port or set NAMESRV_ADDR".into()),
    };
    if args.interval_seconds == 0 {
        return fail("--interval must be at least 1 second".into());
    }
    let mut options = DashboardOptions::new(&namesrv, args.listen);
    options.interval = Duration::from_secs(args.interval_seconds);
    options.history = Duration::from_secs(args.history_minutes.max(1) * 60);
    options.allowed_hosts = args.allowed_hosts.clone();
    options.users_file = args.users_file.clone();
    options.allow_anonymous_writes = args.allow_anonymous_writes;
    let shutdown = crate::runtime::Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        return fail(format!("cannot install signal handlers: {e}"));
    }
    let handle = match start(options) {
        Ok(h) => h,
        Err(e) => return fail(format!("cannot serve on {}: {e}", args.listen)),
    };
    println!(
        "ringmq dashboard: http://{} (nameservers {namesrv}; metrics at /metrics; {})",
        handle.local_addr, handle.mode
    );
    shutdown.wait_blocking();
    handle.stop();
    ExitCode::SUCCESS
}
