//! The `ringmq` binary: clap subcommands, each a thin call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ringmq::broker::{self, BrokerOptions};
use ringmq::config::{resolve_namesrv_addrs, BrokerConfig, NamesrvConfig};
use ringmq::namesrv::{self, NamesrvOptions};
use ringmq::runtime::Shutdown;

/// mimalloc instead of glibc's malloc (see Cargo.toml): every request allocates a few buffers
/// of a kilobyte or more, which glibc serves slowly from a multi-threaded process.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's own call (linked in through the `mimalloc` crate): frees the calling
    /// thread's empty pages and, with `force`, returns them to the system.
    fn mi_collect(force: bool);
}

/// Gives the calling executor's freed memory back to the system (connections closed).
fn mimalloc_collect() {
    // SAFETY: mi_collect only releases memory of the calling thread's mimalloc heap that no
    // allocation uses.
    unsafe { mi_collect(true) }
}

/// A RocketMQ 4.x compatible message broker and nameserver, thread-per-core on io_uring.
#[derive(Parser, Debug)]
#[command(name = "ringmq", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a nameserver (the route registry brokers register with and clients ask), like
    /// `mqnamesrv`. Listens on 9876 unless the config file says otherwise.
    Namesrv(NamesrvArgs),
    /// Run a controller of RocketMQ 5's controller mode (automatic master failover), like
    /// `mqcontroller -c controller.properties`; three controllers (controllerDLegerPeers)
    /// survive the loss of one. Listens on 19876 unless the file says otherwise.
    Controller(ControllerArgs),
    /// Run a broker from a broker.properties file, like `mqbroker -c`: one shard per core, each
    /// owning its queues; registers with every nameserver of `-n`, `namesrvAddr` or
    /// NAMESRV_ADDR.
    Broker(BrokerArgs),
    /// Run a nameserver (9876) and one broker (10911) in one process, store under ./store: the
    /// quickest way to try ringmq with any RocketMQ client.
    Standalone(StandaloneArgs),
    /// Administer a cluster with mqadmin's commands and flags (`ringmq admin --help` lists
    /// them: topics, subscription groups, consumer progress, broker status, write permission…).
    #[command(disable_help_flag = true)]
    Admin(NotBuiltArgs),
    /// Stop a local broker or nameserver gracefully, like `mqshutdown`. Not built yet.
    Shutdown(ShutdownArgs),
    /// Serve the web console and Prometheus exporter of a cluster (`-n` its nameservers,
    /// `--listen` where to serve, 127.0.0.1:8080 by default).
    Dashboard(DashboardCommand),
}

/// The dashboard's flags plus the account its requests are signed with (RocketMQ's ACL).
#[derive(Args, Debug)]
struct DashboardCommand {
    #[command(flatten)]
    args: ringmq::dashboard::DashboardArgs,
    #[command(flatten)]
    credentials: ringmq::admin::CredentialArgs,
}

#[derive(Args, Debug)]
struct NamesrvArgs {
    #[command(flatten)]
    log: LogArgs,
    /// A namesrv.properties file (RocketMQ key names; see conf/namesrv.properties).
    #[arg(short = 'c', long = "configFile", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Print every config key with its value and exit (like `mqnamesrv -p`).
    #[arg(short = 'p', long = "printConfigItem")]
    print_config: bool,
}

#[derive(Args, Debug)]
struct ControllerArgs {
    #[command(flatten)]
    log: LogArgs,
    /// A controller.properties file (RocketMQ 5 key names; see conf/controller/).
    #[arg(short = 'c', long = "configFile", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Print every config key with its value and exit.
    #[arg(short = 'p', long = "printConfigItem")]
    print_config: bool,
}

#[derive(Args, Debug)]
struct BrokerArgs {
    #[command(flatten)]
    log: LogArgs,
    /// A broker.properties file (RocketMQ key names; see conf/broker.properties).
    #[arg(short = 'c', long = "configFile", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Nameserver list, `host:port;host:port` (overrides namesrvAddr and NAMESRV_ADDR).
    #[arg(short = 'n', long = "namesrvAddr", value_name = "ADDRS")]
    namesrv_addr: Option<String>,
    /// Print every config key with its value and exit (like `mqbroker -p`).
    #[arg(short = 'p', long = "printConfigItem")]
    print_config: bool,
}

#[derive(Args, Debug)]
struct StandaloneArgs {
    #[command(flatten)]
    log: LogArgs,
    /// A broker.properties file for the broker (defaults otherwise).
    #[arg(short = 'c', long = "configFile", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// Where the store lives (overrides storePathRootDir).
    #[arg(long, value_name = "DIR", default_value = "./store")]
    store: PathBuf,
    /// Nameserver port.
    #[arg(long, default_value_t = 9876)]
    namesrv_port: u16,
}

/// Where a server writes its log file besides stderr (Java: logback under `-Duser.home`).
#[derive(Args, Debug, Clone)]
struct LogArgs {
    /// Directory of the log file (`namesrv.log`, `broker.log`, `controller.log`); `none` writes
    /// no file. Default: `$HOME/logs/rocketmqlogs`, where Java's logback writes.
    #[arg(long = "logDir", env = "RINGMQ_LOG_DIR", value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// Size in bytes past which the log file is rotated (Java's 128 MiB).
    #[arg(long = "logFileMaxBytes", env = "RINGMQ_LOG_FILE_MAX_BYTES",
        default_value_t = ringmq::logfile::DEFAULT_MAX_FILE_BYTES)]
    log_file_max_bytes: u64,
    /// Rotated log files kept (`broker.1.log` … ; Java's 10).
    #[arg(long = "logFilesMax", env = "RINGMQ_LOG_FILES_MAX",
        default_value_t = ringmq::logfile::DEFAULT_MAX_FILES)]
    log_files_max: u32,
}

impl LogArgs {
    fn file(&self, name: &str) -> Option<ringmq::logfile::LogFileOptions> {
        let dir = self
            .log_dir
            .clone()
            .unwrap_or_else(ringmq::logfile::default_dir);
        (!ringmq::logfile::is_off(&dir)).then(|| ringmq::logfile::LogFileOptions {
            dir,
            name: name.to_string(),
            max_file_bytes: self.log_file_max_bytes,
            max_files: self.log_files_max,
        })
    }
}

#[derive(Args, Debug)]
struct ShutdownArgs {
    /// What to stop: `broker` (also stops a `standalone`) or `namesrv`.
    #[arg(value_parser = ["broker", "namesrv"])]
    what: String,
    /// The store the broker runs on (its storePathRootDir; `./store` for standalone). For
    /// `namesrv`, the nameserver's files are looked up under `<DIR>/namesrv` first.
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
    /// Seconds to wait for the process to exit.
    #[arg(long, default_value_t = 60)]
    wait: u64,
}

#[derive(Args, Debug)]
struct NotBuiltArgs {
    /// Arguments (ignored until this command is built).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Turns transparent huge pages off for this process. mimalloc asks for them on every arena it
/// reserves (`madvise(MADV_HUGEPAGE)`), so on a system with THP in `madvise` mode (the usual
/// default) each 2 MiB region a thread touches became resident whole: measured here, a
/// 2-shard broker held 48 MiB of huge pages idle (19 MiB without them) and ~20 MiB more
/// under load. Set before the executors start, so their allocations never get huge pages.
fn disable_huge_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process's memory map.
    match unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn main() -> ExitCode {
    // Fault tests arm fail points from FAILPOINTS (only in builds with the `failpoints`
    // feature, which the integration tests turn on).
    #[cfg(feature = "failpoints")]
    let _fail_points = fail::FailScenario::setup();
    let huge_pages = disable_huge_pages();
    let cli = Cli::parse();
    // Servers also write Java's log file; `admin`, `shutdown` and `dashboard` only stderr.
    let log_file = match &cli.command {
        Command::Namesrv(args) => args.log.file("namesrv"),
        Command::Controller(args) => args.log.file("controller"),
        Command::Broker(args) => args.log.file("broker"),
        Command::Standalone(args) => args.log.file("broker"),
        _ => None,
    };
    let _log_guard = init_logging(log_file);
    if let Err(e) = huge_pages {
        tracing::debug!(error = %e, "could not turn transparent huge pages off");
    }
    ringmq::net::server::set_thread_memory_release(mimalloc_collect);
    match cli.command {
        Command::Namesrv(args) => run_namesrv(args),
        Command::Controller(args) => run_controller(args),
        Command::Broker(args) => run_broker(args),
        Command::Standalone(args) => run_standalone(args),
        Command::Admin(args) => ringmq::admin::run(args.args),
        Command::Shutdown(args) => run_shutdown(args),
        Command::Dashboard(cmd) => match cmd.credentials.resolve() {
            Ok(credentials) => {
                ringmq::client::set_default_credentials(credentials);
                ringmq::dashboard::run(cmd.args)
            }
            Err(e) => fail("dashboard", e),
        },
    }
}

/// stderr, and the log file when given (written by a worker thread: see `ringmq::logfile`).
/// The guard flushes the file when dropped.
fn init_logging(
    file: Option<ringmq::logfile::LogFileOptions>,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let (file_layer, guard) = match file {
        Some(opts) => {
            let (writer, guard) = ringmq::logfile::non_blocking(opts);
            let layer = tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(false)
                .with_writer(writer);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file_layer)
        .init();
    guard
}

fn load_namesrv_config(path: Option<&PathBuf>) -> Result<NamesrvConfig, String> {
    let Some(path) = path else {
        return Ok(NamesrvConfig::default());
    };
    let (config, warnings) = NamesrvConfig::load(path).map_err(|e| e.to_string())?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

fn namesrv_options(config: &NamesrvConfig) -> NamesrvOptions {
    let mut options = NamesrvOptions::new(SocketAddr::new(config.listen_addr, config.listen_port));
    options.kv_config_path = Some(config.kv_config_path.clone());
    options.broker_scan_interval = Duration::from_millis(config.broker_scan_interval_ms);
    options.server = options
        .server
        .idle_seconds(config.server_channel_max_idle_seconds);
    options.processor.broker_expiry = Duration::from_millis(config.broker_expiry_ms);
    options.processor.order_message_enable = config.order_message_enable;
    options.processor.config_properties = config
        .to_properties()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    options
}

fn run_namesrv(args: NamesrvArgs) -> ExitCode {
    let config = match load_namesrv_config(args.config_file.as_ref()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("ringmq namesrv: {message}");
            return ExitCode::from(1);
        }
    };
    if args.print_config {
        print!("{}", config.print_config_item());
        return ExitCode::SUCCESS;
    }
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        eprintln!("ringmq namesrv: cannot install signal handlers: {e}");
        return ExitCode::from(1);
    }
    let mut options = namesrv_options(&config);
    // The embedded controller (enableControllerInNamesrv) lives as long as the nameserver.
    let _controller = if config.enable_controller_in_namesrv {
        let remoting = advertised(config.listen_addr, config.listen_port);
        match start_controller(args.config_file.as_ref(), remoting, true) {
            Ok(controller) => {
                options.processor.controller = Some(controller.handle());
                Some(controller)
            }
            Err(e) => return fail("namesrv", e),
        }
    } else {
        None
    };
    match namesrv::start(options, shutdown) {
        Ok(handle) => {
            // The PID file first: whoever saw the boot line may run `ringmq shutdown` at once.
            let _pid = pid_file(&ringmq::pidfile::namesrv_pid_path(&config.kv_config_path));
            // The line Java's mqnamesrv prints; start scripts wait for it.
            println!(
                "The Name Server boot success. serializeType=JSON, listening on {}",
                handle.local_addr
            );
            handle.wait();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringmq namesrv: {e}");
            ExitCode::from(1)
        }
    }
}

/// The address others reach a server bound to `ip:port` on (the host's address for 0.0.0.0).
fn advertised(ip: std::net::IpAddr, port: u16) -> String {
    let ip = if ip.is_unspecified() {
        ringmq::config::HostInfo::detect().ip
    } else {
        ip
    };
    SocketAddr::new(ip, port).to_string()
}

/// Loads the controller keys of `path` and starts the controller. `embedded`: the file is a
/// namesrv.properties, whose other keys the nameserver's loader already checked.
fn start_controller(
    path: Option<&PathBuf>,
    remoting_addr: String,
    embedded: bool,
) -> Result<ringmq::controller::Controller, String> {
    let config = load_controller_config(path, embedded)?;
    let options = ringmq::controller::ControllerOptions::from_config(&config, remoting_addr)
        .map_err(|e| e.to_string())?;
    ringmq::controller::Controller::start(options).map_err(|e| e.to_string())
}

fn load_controller_config(
    path: Option<&PathBuf>,
    embedded: bool,
) -> Result<ringmq::config::ControllerConfig, String> {
    let Some(path) = path else {
        return Err("a controller needs a config file (-c) with controllerDLegerGroup, controllerDLegerPeers and controllerDLegerSelfId".to_string());
    };
    let loaded = if embedded {
        ringmq::config::ControllerConfig::load_embedded(path)
    } else {
        ringmq::config::ControllerConfig::load(path)
    };
    let (config, warnings) = loaded.map_err(|e| e.to_string())?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

fn run_controller(args: ControllerArgs) -> ExitCode {
    let config = match load_controller_config(args.config_file.as_ref(), false) {
        Ok(config) => config,
        Err(message) => return fail("controller", message),
    };
    if args.print_config {
        print!("{}", config.to_properties());
        return ExitCode::SUCCESS;
    }
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        return fail("controller", format!("cannot install signal handlers: {e}"));
    }
    let remoting = advertised(config.listen_addr, config.listen_port);
    let options = match ringmq::controller::ControllerOptions::from_config(&config, remoting) {
        Ok(options) => options,
        Err(e) => return fail("controller", e),
    };
    let controller = match ringmq::controller::Controller::start(options) {
        Ok(controller) => controller,
        Err(e) => return fail("controller", e),
    };
    let listen = SocketAddr::new(config.listen_addr, config.listen_port);
    match ringmq::controller::server::start(listen, controller.handle(), shutdown) {
        Ok(server) => {
            println!(
                "The controller {} of group {} boot success. serializeType=JSON, listening on {}, peers on {}",
                config.self_id, config.group, server.local_addr, controller.peer_addr
            );
            server.wait();
            controller.stop();
            ExitCode::SUCCESS
        }
        Err(e) => fail("controller", e),
    }
}

fn load_broker_config(path: Option<&PathBuf>) -> Result<BrokerConfig, String> {
    let Some(path) = path else {
        return Ok(BrokerConfig::default());
    };
    let (config, warnings) = BrokerConfig::load(path).map_err(|e| e.to_string())?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

fn fail(command: &str, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ringmq {command}: {message}");
    ExitCode::from(1)
}

fn run_broker(args: BrokerArgs) -> ExitCode {
    let config = match load_broker_config(args.config_file.as_ref()) {
        Ok(config) => config,
        Err(message) => return fail("broker", message),
    };
    if args.print_config {
        print!("{}", config.print_config_item());
        return ExitCode::SUCCESS;
    }
    let namesrvs =
        match resolve_namesrv_addrs(args.namesrv_addr.as_deref(), config.namesrv_addr.as_deref()) {
            Ok(addrs) => addrs,
            Err(e) => return fail("broker", e),
        };
    if namesrvs.is_empty() {
        tracing::warn!("no nameserver given (-n, namesrvAddr or NAMESRV_ADDR): clients cannot find this broker");
    }
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        return fail("broker", format!("cannot install signal handlers: {e}"));
    }
    let options = BrokerOptions {
        cfg: config,
        namesrv_addrs: namesrvs.clone(),
        port_override: None,
        shards: 0,
        config_file: args.config_file.clone(),
        sync_state: None,
    };
    let name = options.cfg.broker_name.clone();
    let store_root = options.cfg.store_path_root_dir.clone();
    if options.cfg.enable_controller_mode {
        // The controllers decide the role; the agent runs the broker in it (and prints the
        // boot line once it does).
        let _pid = pid_file(&ringmq::pidfile::broker_pid_path(&store_root));
        return match ringmq::controller::broker_agent::run(options, shutdown) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail("broker", e),
        };
    }
    match broker::start(options, shutdown) {
        Ok(handle) => {
            // The PID file first: whoever saw the boot line may run `ringmq shutdown` at once.
            let _pid = pid_file(&ringmq::pidfile::broker_pid_path(&store_root));
            // The line Java's mqbroker prints; start scripts wait for it.
            println!(
                "The broker[{name}, {}] boot success. serializeType=JSON and name server is {}",
                handle.broker_addr,
                namesrvs.join(";")
            );
            if handle.wait() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => fail("broker", e),
    }
}

fn run_standalone(args: StandaloneArgs) -> ExitCode {
    let mut config = match load_broker_config(args.config_file.as_ref()) {
        Ok(config) => config,
        Err(message) => return fail("standalone", message),
    };
    config.store_path_root_dir = args.store.clone();
    config.store_path_commitlog = args.store.join("commitlog");
    // The broker stops first (flush, unregister from the nameserver), then the nameserver.
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.on_signals() {
        return fail("standalone", format!("cannot install signal handlers: {e}"));
    }
    let mut ns_options = NamesrvOptions::new(SocketAddr::from(([0, 0, 0, 0], args.namesrv_port)));
    ns_options.kv_config_path = Some(args.store.join("namesrv").join("kvConfig.json"));
    let namesrv = match namesrv::start(ns_options, Shutdown::new()) {
        Ok(handle) => handle,
        Err(e) => return fail("standalone", e),
    };
    let ns_addr = format!("127.0.0.1:{}", namesrv.local_addr.port());
    let options = BrokerOptions {
        cfg: config,
        namesrv_addrs: vec![ns_addr.clone()],
        port_override: None,
        shards: 0,
        config_file: args.config_file.clone(),
        sync_state: None,
    };
    match broker::start(options, shutdown.clone()) {
        Ok(handle) => {
            // The PID files first: whoever saw the start-up line may run `ringmq shutdown`.
            let _pids = (
                pid_file(&ringmq::pidfile::broker_pid_path(&args.store)),
                pid_file(&args.store.join("namesrv").join("namesrv.pid")),
            );
            println!(
                "ringmq standalone: nameserver {ns_addr}, broker {} (store {}). Point clients at NAMESRV_ADDR={ns_addr}",
                handle.broker_addr,
                args.store.display()
            );
            let clean = handle.wait();
            namesrv.stop();
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            namesrv.stop();
            fail("standalone", e)
        }
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn run_shutdown(args: ShutdownArgs) -> ExitCode {
    let path = match (args.what.as_str(), &args.store) {
        ("broker", Some(store)) => ringmq::pidfile::broker_pid_path(store),
        ("broker", None) => ringmq::pidfile::broker_pid_path(&home().join("store")),
        (_, Some(store)) => store.join("namesrv").join("namesrv.pid"),
        (_, None) => home().join("namesrv").join("namesrv.pid"),
    };
    match ringmq::pidfile::stop(&path, Duration::from_secs(args.wait)) {
        Ok(pid) => {
            println!("ringmq {} (pid {pid}) stopped", args.what);
            ExitCode::SUCCESS
        }
        Err(e) => fail("shutdown", e),
    }
}

/// Records this process for `ringmq shutdown`; a failure only costs that convenience.
fn pid_file(path: &std::path::Path) -> Option<ringmq::pidfile::PidFile> {
    match ringmq::pidfile::PidFile::create(path) {
        Ok(file) => Some(file),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the PID file");
            None
        }
    }
}
