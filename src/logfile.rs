//! Log files where RocketMQ operators look: `~/logs/rocketmqlogs/namesrv.log` and `broker.log`
//! (Java's logback files under `${user.home}/logs/rocketmqlogs`), besides stderr.
//!
//! Rotation is by size, as Java's `SizeBasedTriggeringPolicy` + `FixedWindowRollingPolicy` do:
//! when `broker.log` would pass `max_file_bytes`, `broker.log` becomes `broker.1.log`,
//! `broker.1.log` becomes `broker.2.log`, …, and the oldest beyond `max_files` is removed (Java
//! keeps 10 gzipped files of 128 MiB in `otherdays/`; ringmq keeps them uncompressed beside
//! the current one).
//!
//! No request path waits for the disk: lines go through tracing-appender's non-blocking
//! writer (a bounded queue and one worker thread that does the file I/O; lines are dropped,
//! and counted, when the worker falls behind). A log file that cannot be opened or written
//! (a read-only or full disk, a path under a file) is reported once on stderr and retried
//! every [`REOPEN_INTERVAL`]; the process keeps serving and keeps logging to stderr.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Java's `maxFileSize` of the broker's and nameserver's logs (128 MiB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 128 << 20;
/// Java's `maxIndex`: rotated files kept besides the current one.
pub const DEFAULT_MAX_FILES: u32 = 10;
/// How long a log file that could not be opened or written is left alone before retrying.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(10);
/// Lines the non-blocking writer queues for its worker before it drops lines.
const BUFFERED_LINES_MAX: usize = 64 * 1024;

/// Where and how a process writes its log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFileOptions {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// The file's name without `.log` (`broker`, `namesrv`, `controller`).
    pub name: String,
    /// Size past which the file is rotated (at least 4 KiB).
    pub max_file_bytes: u64,
    /// Rotated files kept (`<name>.1.log` … `<name>.<max_files>.log`); 0 keeps none.
    pub max_files: u32,
}

/// Java's default directory: `$HOME/logs/rocketmqlogs` (`${user.home}/logs/rocketmqlogs`).
pub fn default_dir() -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join("logs").join("rocketmqlogs")
}

/// A log file rotated by size. Lives on the non-blocking writer's worker thread.
pub struct RotatingFile {
    opts: LogFileOptions,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// When opening or writing last failed (no retry before [`REOPEN_INTERVAL`]).
    failed_at: Option<Instant>,
}

impl RotatingFile {
    /// Opens (or tries to open) `<dir>/<name>.log`. Never fails: a file that cannot be opened
    /// is reported on stderr and retried later.
    pub fn new(opts: LogFileOptions) -> RotatingFile {
        let mut file = RotatingFile {
            opts,
            file: None,
            size: 0,
            failed_at: None,
        };
        file.open();
        file
    }

    /// The current file's path.
    pub fn path(&self) -> PathBuf {
        self.opts.dir.join(format!("{}.log", self.opts.name))
    }

    fn rotated(&self, n: u32) -> PathBuf {
        self.opts.dir.join(format!("{}.{n}.log", self.opts.name))
    }

    fn open(&mut self) {
        let path = self.path();
        let opened = fs::create_dir_all(&self.opts.dir).and_then(|()| {
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            let size = file.metadata()?.len();
            Ok((file, size))
        });
        match opened {
            Ok((file, size)) => {
                if self.failed_at.take().is_some() {
                    eprintln!("ringmq: writing the log file {} again", path.display());
                }
                self.file = Some(file);
                self.size = size;
            }
            Err(e) => self.fail("open", &e),
        }
    }

    /// Reports a failure once (until the file works again) and leaves the file alone for a while.
    fn fail(&mut self, what: &str, e: &io::Error) {
        if self.failed_at.is_none() {
            eprintln!(
                "ringmq: cannot {what} the log file {} ({e}); logging to stderr only, retrying \
                 every {} s",
                self.path().display(),
                REOPEN_INTERVAL.as_secs()
            );
        }
        self.file = None;
        self.failed_at = Some(Instant::now());
    }

    /// `<name>.log` → `<name>.1.log` → … → `<name>.<max_files>.log`, the oldest removed.
    fn rotate(&mut self) {
        self.file = None;
        let max = self.opts.max_files;
        let _ = fs::remove_file(self.rotated(max.max(1)));
        for n in (1..max).rev() {
            let _ = fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        let current = self.path();
        let moved = match max {
            0 => fs::remove_file(&current),
            _ => fs::rename(&current, self.rotated(1)),
        };
        if let Err(e) = moved {
            self.fail("rotate", &e);
            return;
        }
        self.open();
    }
}

impl Write for RotatingFile {
    /// Writes one formatted line. Errors are never returned (the line is dropped and the
    /// failure reported once): logging must not take the process down.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() {
            match self.failed_at {
                Some(at) if at.elapsed() < REOPEN_INTERVAL => return Ok(buf.len()),
                _ => self.open(),
            }
        }
        let max = self.opts.max_file_bytes.max(4096);
        if self.size > 0 && self.size + buf.len() as u64 > max {
            self.rotate();
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(buf.len());
        };
        match file.write_all(buf) {
            Ok(()) => self.size += buf.len() as u64,
            Err(e) => self.fail("write", &e),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(file) = self.file.as_mut() {
            let _ = file.flush();
        }
        Ok(())
    }
}

/// A non-blocking writer into `opts`' rotating file, and the guard that flushes it when
/// dropped (keep it for the life of the process).
pub fn non_blocking(
    opts: LogFileOptions,
) -> (
    tracing_appender::non_blocking::NonBlocking,
    tracing_appender::non_blocking::WorkerGuard,
) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES_MAX)
        .thread_name("ringmq-log")
        .finish(RotatingFile::new(opts))
}

/// Whether `path` names the "no log file" setting (`--log-dir none`).
pub fn is_off(path: &Path) -> bool {
    path.as_os_str().is_empty() || path == Path::new("none") || path == Path::new("off")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path, max_file_bytes: u64, max_files: u32) -> LogFileOptions {
        LogFileOptions {
            dir: dir.to_path_buf(),
            name: "broker".into(),
            max_file_bytes,
            max_files,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_rotate_by_size_and_only_the_newest_are_kept() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let logs = dir.path().join("logs/rocketmqlogs");
        let mut file = RotatingFile::new(opts(&logs, 4096, 2));
        // 1,024-byte lines: four fill a 4 KiB file.
        let line = |i: usize| format!("{i:04} {}\n", "x".repeat(1018));
        for i in 0..20 {
            file.write_all(line(i).as_bytes()).unwrap();
        }
        assert_eq!(names(&logs), ["broker.1.log", "broker.2.log", "broker.log"]);
        for name in names(&logs) {
            let len = fs::metadata(logs.join(&name)).unwrap().len();
            assert!(len <= 4096, "{name}: {len} bytes");
        }
        // The newest lines are in broker.log, the ones before in broker.1.log, then .2.
        let current = fs::read_to_string(logs.join("broker.log")).unwrap();
        assert!(current.starts_with("0016 ") && current.contains("0019 "));
        let older = fs::read_to_string(logs.join("broker.1.log")).unwrap();
        assert!(older.starts_with("0012 "), "{}", &older[..10]);
        let oldest = fs::read_to_string(logs.join("broker.2.log")).unwrap();
        assert!(oldest.starts_with("0008 "), "{}", &oldest[..10]);
    }

    #[test]
    fn a_log_file_that_cannot_be_opened_swallows_lines_and_recovers() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let blocker = dir.path().join("a-file");
        fs::write(&blocker, b"").unwrap();
        let mut file = RotatingFile::new(opts(&blocker.join("logs"), 4096, 2));
        assert!(file.file.is_none());
        assert_eq!(file.write(b"line\n").unwrap(), 5, "never an error");
        // Once the directory can be made, the next attempt after the interval writes.
        fs::remove_file(&blocker).unwrap();
        file.failed_at = Some(Instant::now() - REOPEN_INTERVAL);
        file.write_all(b"again\n").unwrap();
        let written = fs::read_to_string(blocker.join("logs/broker.log")).unwrap();
        assert_eq!(written, "again\n");
    }
}
