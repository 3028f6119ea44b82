//! Deleting a topic's data (DELETE_TOPIC_IN_BROKER, Java's `MessageStore.deleteTopics`): its
//! consume queues on this shard go, in memory at once (a send to the name afterwards starts
//! new queues at offset 0) and on disk. The records stay in the commitlog until retention
//! removes their segments, as in Java; so that a recovery does not queue them again, the
//! deletion waits until the commitlog is durable up to where it happened and writes a
//! checkpoint past it.

use std::io;
use std::time::Duration;

use super::commitlog::appender::Durability;
use super::error::{StoreError, StoreResult};
use super::io::Storage;
use super::MessageStore;

/// How long a deletion waits for the commitlog to be durable before giving up on the
/// checkpoint (the queues are gone anyway; a crash before the next checkpoint would queue the
/// topic's last records again).
const DELETE_DURABLE_WAIT: Duration = Duration::from_secs(10);

impl<S: Storage> MessageStore<S> {
    /// Deletes `topic`'s consume queues of this shard; returns how many there were.
    pub async fn delete_topic(&self, topic: &str) -> StoreResult<usize> {
        let inner = &*self.inner;
        let queues = inner.queues.remove_topic(topic);
        let io_err = |e: io::Error| {
            StoreError::io("deleting topic queues", inner.queues.topic_dir(topic), e)
        };
        for cq in &queues {
            cq.remove_files(&inner.storage).await.map_err(io_err)?;
        }
        let end = inner.commitlog.written();
        match inner.commitlog.wait_durable(end, DELETE_DURABLE_WAIT).await {
            Durability::Durable => self.write_checkpoint().await?,
            other => tracing::warn!(
                topic,
                ?other,
                "deleted topic's records not yet durable; no checkpoint past them"
            ),
        }
        // A flush that was writing when the files went may have made one again; a queue of
        // the name created since belongs to the new topic and stays.
        for cq in queues
            .iter()
            .filter(|q| inner.queues.get(topic, q.queue_id).is_none())
        {
            cq.remove_files(&inner.storage).await.map_err(io_err)?;
        }
        let dir = inner.queues.topic_dir(topic);
        if inner.queues.get_topic_count(topic) == 0 {
            match inner.storage.remove_dir(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(topic, dir = %dir.display(), error = %e,
                    "the deleted topic's queue directory stays"),
            }
        }
        Ok(queues.len())
    }
}
