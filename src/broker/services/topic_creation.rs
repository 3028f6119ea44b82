//! Topics created on demand: a send to a topic that does not exist yet (auto-creation from its
//! template), and the group topics a consumer's failures need (retry, DLQ). The control shard
//! owns the topic table, so the creation runs there (other shards ask it over the mesh and
//! take the answer into their replica); the processors that need it see only this interface,
//! not the shard or the control shard's tables.

use crate::protocol::register::TopicConfig;

/// Creates topics for processors. Implemented by the shard's wiring over the control shard's
/// topic table (or the mesh to it).
// The futures are awaited on the shard thread that made them: no `Send` bound is wanted.
#[allow(async_fn_in_trait)]
pub trait TopicCreation {
    /// `topic` created for a send if `default_topic` (its template) allows it; `None` when it
    /// may not be auto-created (or its creation could not be made durable).
    async fn create_for_send(
        &self,
        topic: &str,
        default_topic: &str,
        queue_nums: i32,
        sys_flag: i32,
    ) -> Option<TopicConfig>;

    /// The group topic `name` (retry, DLQ, the transaction half topic), created with `queues`
    /// queues if missing; `None` when it cannot be.
    async fn ensure_group_topic(&self, name: &str, queues: i32) -> Option<TopicConfig>;
}
