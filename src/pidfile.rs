//! PID files: what `ringmq namesrv`, `broker` and `standalone` record at start so that
//! `ringmq shutdown` can stop exactly that process (by PID, never by matching process names),
//! like `mqshutdown`. Blocking `std::fs`; start-up and shutdown only.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The broker's PID file under its store root.
pub fn broker_pid_path(store_root: &Path) -> PathBuf {
    store_root.join("broker.pid")
}

/// The nameserver's PID file beside its KV config.
pub fn namesrv_pid_path(kv_config_path: &Path) -> PathBuf {
    kv_config_path
        .parent()
        .unwrap_or(Path::new("."))
        .join("namesrv.pid")
}

/// A PID file removed when dropped (the process exits cleanly).
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Records this process's PID at `path`.
    pub fn create(path: &Path) -> io::Result<PidFile> {
        crate::fsutil::write_atomically(path, format!("{}\n", std::process::id()).as_bytes())?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a process could not be stopped.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("no PID file at {0} (is it running, with this store?)")]
    NoPidFile(PathBuf),
    #[error("{path} does not hold a PID: {content:?}")]
    BadPidFile { path: PathBuf, content: String },
    #[error("process {pid} from {path} is not running (a stale PID file; removed)")]
    NotRunning { pid: i32, path: PathBuf },
    #[error("process {pid} is not a ringmq process; not stopping it")]
    NotRingmq { pid: i32 },
    #[error("cannot signal process {pid}: {source}")]
    Signal { pid: i32, source: io::Error },
    #[error("process {pid} did not exit within {waited_s} s")]
    StillRunning { pid: i32, waited_s: u64 },
}

/// True while the process runs. An exited process that its parent has not reaped yet (a
/// zombie, state `Z` in /proc/PID/stat) has stopped.
fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S …": the state follows the last ')' (comm may contain spaces and parens).
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// Sends SIGTERM to the process recorded at `path` and waits up to `wait` for it to exit.
/// Returns its PID.
pub fn stop(path: &Path, wait: Duration) -> Result<i32, StopError> {
    let content =
        std::fs::read_to_string(path).map_err(|_| StopError::NoPidFile(path.to_path_buf()))?;
    let pid: i32 = content.trim().parse().map_err(|_| StopError::BadPidFile {
        path: path.to_path_buf(),
        content: content.clone(),
    })?;
    if pid <= 0 || !alive(pid) {
        let _ = std::fs::remove_file(path);
        return Err(StopError::NotRunning {
            pid,
            path: path.to_path_buf(),
        });
    }
    // The PID was recorded by ringmq; make sure it was not reused by something else since.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !String::from_utf8_lossy(&cmdline).contains("ringmq") {
        return Err(StopError::NotRingmq { pid });
    }
    // SAFETY: kill only sends a signal to the given PID.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(StopError::Signal {
            pid,
            source: io::Error::last_os_error(),
        });
    }
    let deadline = Instant::now() + wait;
    while alive(pid) {
        if Instant::now() > deadline {
            return Err(StopError::StillRunning {
                pid,
                waited_s: wait.as_secs(),
            });
        }
        // A command-line tool waiting for another process to exit: polling /proc is the
        // portable way (a pidfd would need the process to be our child).
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(pid)
}
