//! Metadata files written off the shard thread, newest content last.
//!
//! A change to `topics.json` or `subscriptionGroup.json` happens on a request path (a send that
//! auto-creates its topic, a consumer's first heartbeat, an admin command). Writing the file is
//! two atomic replacements, each a write, an fsync of the file and an fsync of its directory:
//! milliseconds on a quiet disk, seconds on a busy one — far too long to block the shard that
//! serves every other client. The shard encodes the table (cheap, and it needs the value) and
//! hands the bytes to a [`PersistJob`], which does the blocking half on glommio's blocking
//! thread pool. The request that made the change awaits the job when the client must not see
//! the change before it is durable; other changes detach it.
//!
//! Jobs of one file may finish in any order (an awaited job can overtake a detached one), so
//! each carries its sequence number and writes only if no newer content is on disk yet: every
//! job holds the whole table, so a newer one contains every older change.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{encode_for_persist, persist_encoded, MetadataError, MetadataFile};

/// One metadata file's writer, owned by the shard that owns the table.
#[derive(Debug)]
pub struct OrderedFile {
    path: PathBuf,
    last_queued: Cell<u64>,
    /// The sequence number of the newest content written, shared with the blocking threads.
    last_written: Arc<Mutex<u64>>,
}

impl OrderedFile {
    pub fn new(path: PathBuf) -> OrderedFile {
        OrderedFile {
            path,
            last_queued: Cell::new(0),
            last_written: Arc::new(Mutex::new(0)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encodes `value` now and returns the job that writes it.
    pub fn job<T: MetadataFile>(&self, value: &T) -> Result<PersistJob, MetadataError> {
        let bytes = encode_for_persist(&self.path, value)?;
        let seq = self.last_queued.get() + 1;
        self.last_queued.set(seq);
        Ok(PersistJob(Some(Job {
            path: self.path.clone(),
            bytes,
            seq,
            last_written: Arc::clone(&self.last_written),
        })))
    }
}

/// Content on its way to disk; `PersistJob::none()` when there is nothing to write (an
/// unchanged table, or a manager that does not persist).
#[must_use = "a metadata change is only written when its job runs"]
#[derive(Debug)]
pub struct PersistJob(Option<Job>);

#[derive(Debug)]
struct Job {
    path: PathBuf,
    bytes: Vec<u8>,
    seq: u64,
    last_written: Arc<Mutex<u64>>,
}

impl PersistJob {
    pub fn none() -> PersistJob {
        PersistJob(None)
    }

    /// True when there is something to write.
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Writes on glommio's blocking thread pool; the calling shard keeps serving meanwhile.
    /// Must run inside a glommio executor.
    pub async fn run(self) -> Result<(), MetadataError> {
        match self.0 {
            None => Ok(()),
            Some(job) => {
                glommio::executor()
                    .spawn_blocking(move || job.write())
                    .await
            }
        }
    }

    /// Writes on the calling thread: start-up, tests, and code outside a shard.
    pub fn run_blocking(self) -> Result<(), MetadataError> {
        self.0.map_or(Ok(()), Job::write)
    }

    /// Runs the job in the background on the current executor; a failure is logged with what
    /// changed (`what`), since nobody waits for it.
    pub fn detach(self, what: &'static str) {
        if self.0.is_none() {
            return;
        }
        glommio::spawn_local(async move {
            if let Err(error) = self.run().await {
                tracing::error!(%error, change = what, "cannot persist a metadata change");
            }
        })
        .detach();
    }
}

impl Job {
    fn write(self) -> Result<(), MetadataError> {
        // Held across the write: two jobs of one file never write at once, and one whose
        // content is older than what is on disk is skipped (the newer one contains it).
        let mut last = self.last_written.lock().unwrap_or_else(|e| e.into_inner());
        if *last >= self.seq {
            return Ok(());
        }
        persist_encoded(&self.path, &self.bytes)?;
        *last = self.seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::metadata::{load, TopicTable};

    fn table_with(names: &[&str]) -> TopicTable {
        let mut table = TopicTable::new();
        for name in names {
            table.upsert(crate::store::metadata::tests::topic(name, 4));
        }
        table
    }

    #[test]
    fn an_older_job_finishing_last_does_not_overwrite_newer_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = OrderedFile::new(dir.path().join("topics.json"));
        let older = file.job(&table_with(&["A"])).unwrap();
        let newer = file.job(&table_with(&["A", "B"])).unwrap();
        newer.run_blocking().unwrap();
        older.run_blocking().unwrap();
        let on_disk: TopicTable = load(file.path()).unwrap();
        assert!(on_disk.get("B").is_some(), "the newer table stays on disk");
    }

    #[test]
    fn jobs_run_off_the_executor_thread_and_in_order_when_awaited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.json");
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let file = OrderedFile::new(path.clone());
            let first = file.job(&table_with(&["A"])).unwrap();
            first.detach("test");
            let second = file.job(&table_with(&["A", "B"])).unwrap();
            second.run().await.unwrap();
            let on_disk: TopicTable = load(&path).unwrap();
            assert!(on_disk.get("A").is_some() && on_disk.get("B").is_some());
        });
        // The detached older job, whenever it ran, left the newer table in place.
        let on_disk: TopicTable = load(&path).unwrap();
        assert!(on_disk.get("B").is_some());
    }
}
