//! `ringmq shutdown`: stops the process a PID file names, gracefully, and waits for it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::process::{free_port_triple, Rng};

/// A port p with p-2 (fast port), p and p+1 (HA port) free, below the ephemeral range, so the
/// suite's thousands of client connections (tests/it/churn.rs) cannot take it meanwhile.
fn free_port() -> u16 {
    free_port_triple(&mut Rng::seeded())
}

/// Starts `ringmq <args>` and waits for its start-up line.
fn spawn(args: &[&str], ready: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(args)
        .env("RINGMQ_LOG_DIR", "none")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ringmq starts");
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains(ready));
    assert!(line.is_some(), "no start-up line {ready:?}");
    child
}

fn shutdown(what: &str, store: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["shutdown", what, "--store"])
        .arg(store)
        .output()
        .expect("ringmq shutdown runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn shutdown_stops_a_standalone_gracefully_and_then_finds_nothing() {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-shutdown-")
        .tempdir_in("/tmp")
        .unwrap();
    let conf = dir.path().join("broker.properties");
    std::fs::write(
        &conf,
        format!(
            "brokerIP1=127.0.0.1\nlistenAddress=127.0.0.1\nlistenPort={}\n",
            free_port()
        ),
    )
    .unwrap();
    let store = dir.path().join("store");
    let ns_port = free_port().to_string();
    let mut child = spawn(
        &[
            "standalone",
            "-c",
            conf.to_str().unwrap(),
            "--store",
            store.to_str().unwrap(),
            "--namesrv-port",
            &ns_port,
        ],
        "ringmq standalone:",
    );
    let (ok, text) = shutdown("broker", &store);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("(pid {})", child.id())), "{text}");
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit, got {status:?}");
    assert!(!store.join("broker.pid").exists());
    let (ok, text) = shutdown("broker", &store);
    assert!(!ok && text.contains("no PID file"), "{text}");
}

#[test]
fn shutdown_stops_a_nameserver_by_its_pid_file() {
    let dir = tempfile::Builder::new()
        .prefix("ringmq-shutdown-ns-")
        .tempdir_in("/tmp")
        .unwrap();
    let conf = dir.path().join("namesrv.properties");
    let kv = dir.path().join("namesrv").join("kvConfig.json");
    let listen = format!(
        "listenPort={}\nkvConfigPath={}\n",
        free_port(),
        kv.display()
    );
    std::fs::write(&conf, listen).unwrap();
    let mut child = spawn(&["namesrv", "-c", conf.to_str().unwrap()], "boot success");
    let (ok, text) = shutdown("namesrv", dir.path());
    assert!(ok, "{text}");
    assert!(child.wait().unwrap().success());
}
