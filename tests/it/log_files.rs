//! The servers' log files (ringmq::logfile): `namesrv.log` / `broker.log` under the log
//! directory besides stderr, rotated by size with a bounded number of files; a server whose
//! log directory cannot be written still serves.

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringmq::client::Connection;
use ringmq::remoting::{request, response, RemotingCommand};

use crate::process::{free_port_triple, BrokerProcess, Rng};

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A nameserver process on a free port with `env` set; its address.
fn namesrv(dir: &Path, env: &[(&str, &OsStr)]) -> (BrokerProcess, String) {
    let port = free_port_triple(&mut Rng::seeded());
    let conf = dir.join("namesrv.properties");
    let kv = dir.join("kvConfig.json");
    fs::write(
        &conf,
        format!("listenPort={port}\nkvConfigPath={}\n", kv.display()),
    )
    .unwrap();
    let args = [OsStr::new("namesrv"), OsStr::new("-c"), conf.as_os_str()];
    let process = BrokerProcess::spawn_with_env(None, &args, dir.join("stderr.log"), env);
    (process, format!("127.0.0.1:{port}"))
}

/// Requests with codes the nameserver does not know: each (code) a refusal WARN line.
fn refused_requests(addr: &str, codes: std::ops::Range<i32>) {
    let mut conn = Connection::connect(addr, Duration::from_secs(5)).expect("connect");
    for code in codes {
        let answer = conn
            .invoke(RemotingCommand::request(code))
            .expect("answered");
        assert_eq!(answer.code, response::REQUEST_CODE_NOT_SUPPORTED);
    }
}

#[test]
fn a_nameserver_writes_namesrv_log_rotated_by_size_keeping_a_bounded_number() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let logs = dir.path().join("rocketmqlogs");
    let env = [
        ("RINGMQ_LOG_DIR", logs.as_os_str()),
        ("RINGMQ_LOG_FILE_MAX_BYTES", OsStr::new("4096")),
        ("RINGMQ_LOG_FILES_MAX", OsStr::new("2")),
    ];
    let (mut process, addr) = namesrv(dir.path(), &env);
    refused_requests(&addr, 5_000..5_200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while names(&logs) != ["namesrv.1.log", "namesrv.2.log", "namesrv.log"] {
        assert!(Instant::now() < deadline, "log files: {:?}", names(&logs));
        std::thread::sleep(Duration::from_millis(50));
    }
    process.sigterm();
    for name in names(&logs) {
        let text = fs::read_to_string(logs.join(&name)).unwrap();
        assert!(text.len() <= 4096, "{name}: {} bytes", text.len());
        assert!(text.lines().all(|l| !l.is_empty()));
    }
    // The newest lines are in namesrv.log; the boot lines have been rotated away.
    let current = fs::read_to_string(logs.join("namesrv.log")).unwrap();
    assert!(current.contains("request_code="), "{current}");
    // stderr still has everything.
    let stderr = fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(stderr.matches("request refused").count() >= 200, "{stderr}");
}

#[test]
fn a_server_whose_log_directory_cannot_be_written_still_serves() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    // A directory under a regular file cannot be made, even by root.
    let blocker = dir.path().join("not-a-dir");
    fs::write(&blocker, b"").unwrap();
    let logs = blocker.join("rocketmqlogs");
    let (mut process, addr) = namesrv(dir.path(), &[("RINGMQ_LOG_DIR", logs.as_os_str())]);
    let mut conn = Connection::connect(&addr, Duration::from_secs(5)).expect("connect");
    let answer = conn
        .invoke(RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO))
        .expect("served");
    assert_eq!(answer.code, response::SUCCESS);
    process.sigterm();
    let stderr = fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(stderr.contains("cannot open the log file"), "{stderr}");
    assert_eq!(
        stderr.matches("cannot open the log file").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn admin_writes_no_log_file() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let logs = dir.path().join("rocketmqlogs");
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["admin", "topicList", "-n", "127.0.0.1:1"])
        .env("RINGMQ_LOG_DIR", &logs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert!(!out.success());
    assert!(!logs.exists());
}
