//! The store's housekeeping task: every `flushIntervalConsumeQueue` it flushes consume
//! queues with at least `flushConsumeQueueLeastPages` dirty pages and seals full index maps;
//! every `flushConsumeQueueThoroughInterval` it flushes all of them and writes the
//! checkpoint. Failures are logged and retried next round: queues and index can always be
//! rebuilt from the commitlog, so they never block appends. Runs on the shard's executor
//! until the store closes.

use std::time::{Duration, Instant};

use futures_lite::future;

use super::io::Storage;
use super::MessageStore;

/// Bytes of a "page" in `flushConsumeQueueLeastPages` (Java's OS page).
const PAGE_BYTES: u64 = 4096;

pub(crate) async fn run<S: Storage>(store: MessageStore<S>) {
    let cfg = store.inner.cfg.clone();
    let interval = Duration::from_millis(cfg.flush_interval_consume_queue_ms);
    let thorough = Duration::from_millis(cfg.flush_consume_queue_thorough_interval_ms);
    let least_bytes = u64::from(cfg.flush_consume_queue_least_pages) * PAGE_BYTES;
    let mut last_thorough = Instant::now();
    loop {
        let stop = store.inner.commitlog.stop.wait_for(1);
        let stopped = future::or(
            async {
                let _ = stop.await;
                true
            },
            async {
                glommio::timer::sleep(interval).await;
                false
            },
        )
        .await;
        if stopped {
            return;
        }
        let result = if last_thorough.elapsed() >= thorough {
            last_thorough = Instant::now();
            store.write_checkpoint().await
        } else {
            store.flush_queues_and_index(least_bytes).await
        };
        if let Err(e) = result {
            if let Some(suppressed) = store.inner.commitlog.log_now("queues-and-index") {
                tracing::error!(error = %e, suppressed,
                    "flushing consume queues or index failed; will retry");
            }
        }
    }
}
