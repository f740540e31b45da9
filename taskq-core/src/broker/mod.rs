//! The [`Broker`] trait: the queue operations a worker and a client need, and the types they
//! exchange.
//!
//! A message's life, in broker terms:
//!
//! ```text
//! enqueue ──► pending ──fetch──► processing(worker) ──ack──► gone
//!    │           ▲                 │   │   │
//!    │ (eta)     │ promote         │   │   └─dead_letter──► dead
//!    ▼           │                 │   └─retry(at)──► scheduled
//! scheduled ─────┘                 └─requeue / recover_lost_workers──► pending (head)
//! ```
//!
//! Every transition out of `processing` is *fenced*: it happens only if the message is still in
//! the calling worker's processing set, and reports whether it did. A worker whose messages were
//! already recovered by another worker's reaper therefore changes nothing.

mod control;
mod memory;
mod types;

pub use control::{ControlMessage, WorkerInfo};
pub use memory::{MemoryBroker, MemoryBrokerConfig};
pub use types::{
    DeadLetter, DeadReason, Delivery, OutboundMessage, PayloadFields, QueueStats, RecoveryReport,
    WorkerId,
};

use std::time::Duration;

use async_trait::async_trait;

use crate::{Clock, Result};

/// Liveness granted to a worker that fetches before its first heartbeat: its messages are
/// recovered if no heartbeat follows within this time.
pub const FETCH_LEASE: Duration = Duration::from_secs(30);

/// A message transport with at-least-once delivery into per-worker processing sets.
///
/// Implementations: [`MemoryBroker`] (in-process) and `taskq_redis::RedisBroker`. All methods are
/// cancel-safe in the sense that a dropped call leaves every message in exactly one place.
///
/// A message's round trip, as a worker drives it:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use std::time::Duration;
/// use taskq_core::{Broker, Envelope, MemoryBroker, OutboundMessage, WorkerId};
///
/// let broker = MemoryBroker::new();
/// let envelope = Envelope::new("demo.add", &serde_json::json!({"a": 1}), "default", broker.clock().now())?;
/// broker.enqueue(vec![OutboundMessage::from_envelope(&envelope, 1 << 20)?]).await?;
///
/// let worker = WorkerId::generate();
/// let queues = ["default".to_owned()];
/// broker.heartbeat(&worker, &queues, Duration::from_secs(5)).await?;
/// let held = broker.fetch(&worker, &queues, 10, Duration::ZERO).await?;
/// assert_eq!(broker.stats("default").await?.processing, 1);
/// assert_eq!(broker.ack(&worker, &held).await?, 1);
/// assert_eq!(broker.ack(&worker, &held).await?, 0, "fenced: already gone");
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Broker: Send + Sync + std::fmt::Debug {
    /// The clock this broker schedules by (ETA, expiry, backoff).
    fn clock(&self) -> Clock;

    /// Adds messages: those with a future `eta` to `scheduled`, the rest to `pending`.
    ///
    /// All or nothing per call where the transport allows; [`crate::Error::QueueFull`] when a
    /// bounded queue has no room.
    async fn enqueue(&self, messages: Vec<OutboundMessage>) -> Result<()>;

    /// Enqueues `message` only if no message claimed `unique_key` on its queue within `ttl`;
    /// returns `None` when it was enqueued, or the id of the task holding the key. Claim and
    /// enqueue are one atomic step, so racing producers (several beat replicas firing one slot)
    /// enqueue it exactly once.
    async fn enqueue_unique(
        &self,
        message: OutboundMessage,
        unique_key: &str,
        ttl: Duration,
    ) -> Result<Option<crate::TaskId>>;

    /// Releases `unique_key` of `queue` if task `id` holds it (the task finished).
    async fn release_unique(&self, queue: &str, unique_key: &str, id: crate::TaskId) -> Result<()>;

    /// Admits one start of `task` under `limit`, shared by all workers; returns `None` when
    /// admitted, or how long to wait before the next start may be admitted.
    async fn rate_limit(
        &self,
        queue: &str,
        task: &str,
        limit: crate::RateLimit,
    ) -> Result<Option<Duration>>;

    /// Moves up to `max` ready messages from `queues` (in that order of preference, highest
    /// priority first within a queue) into `worker`'s processing set and returns them.
    ///
    /// Waits up to `wait` for the first message when none is ready; returns an empty batch
    /// after that.
    async fn fetch(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;

    /// Removes finished messages from `worker`'s processing set; returns how many were still
    /// there (fenced).
    async fn ack(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize>;

    /// Replaces a failed message by `next` (its next attempt) in `scheduled`, due at `next.eta`
    /// (or at once); false when `worker` no longer held it.
    async fn retry(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        next: OutboundMessage,
    ) -> Result<bool>;

    /// Puts messages back at the head of `pending` unchanged (no retry spent), e.g. work a
    /// shutting-down worker did not finish; returns how many it still held.
    async fn requeue(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize>;

    /// Moves a message to the queue's dead letters with `reason` and `error`; false when
    /// `worker` no longer held it.
    async fn dead_letter(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        reason: DeadReason,
        error: Option<String>,
    ) -> Result<bool>;

    /// Moves up to `limit` due messages of `queues` from `scheduled` to `pending`; returns how
    /// many moved. Safe to run from every worker at once.
    async fn promote_scheduled(&self, queues: &[String], limit: usize) -> Result<usize>;

    /// Registers `worker` as alive on `queues` until `ttl` from now.
    async fn heartbeat(&self, worker: &WorkerId, queues: &[String], ttl: Duration) -> Result<()>;

    /// Returns the processing sets of workers on `queues` whose liveness deadline passed to the
    /// head of `pending`; a message recovered more than `max_redeliveries` times goes to dead
    /// letters with [`DeadReason::WorkerLost`]. Each lost worker is recovered exactly once even
    /// when many callers race.
    async fn recover_lost_workers(
        &self,
        queues: &[String],
        max_redeliveries: u32,
    ) -> Result<RecoveryReport>;

    /// Returns whatever is still in `worker`'s processing set to the head of `pending` and
    /// removes the worker from the live set; the last call of a worker shutting down.
    async fn deregister(&self, worker: &WorkerId, queues: &[String]) -> Result<()>;

    /// Publishes what a worker reports about itself for operators, kept for `ttl`.
    async fn publish_worker_info(&self, info: &WorkerInfo, ttl: Duration) -> Result<()>;

    /// Live workers' latest reports.
    async fn workers(&self) -> Result<Vec<WorkerInfo>>;

    /// Marks `id` revoked for `ttl` (persisted, so workers that were not listening still skip
    /// it) and broadcasts the revocation.
    async fn revoke(&self, id: crate::TaskId, terminate: bool, ttl: Duration) -> Result<()>;

    /// Ids revoked and not yet expired.
    async fn revoked(&self) -> Result<Vec<crate::TaskId>>;

    /// Sends `message` to every subscriber of the control channel.
    async fn broadcast(&self, message: &ControlMessage) -> Result<()>;

    /// Subscribes to the control channel; messages sent after this returns are received.
    async fn subscribe_control(
        &self,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<ControlMessage>>;

    /// Every queue that has received a message, sorted.
    async fn queues(&self) -> Result<Vec<String>>;

    /// Moves dead letters of `queue` back to its pending list (all of them, or those with the
    /// given ids), each atomically, with their attempt count reset; returns how many moved.
    async fn requeue_dead(&self, queue: &str, ids: Option<&[crate::TaskId]>) -> Result<usize>;

    /// Deletes dead letters of `queue` (all, or those dead-lettered before `older_than`);
    /// returns how many.
    async fn purge_dead(
        &self,
        queue: &str,
        older_than: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<usize>;

    /// Deletes every pending and scheduled message of `queue` (not those held by workers, not
    /// dead letters); returns how many.
    async fn purge_queue(&self, queue: &str) -> Result<usize>;

    /// Server settings that can lose acknowledged tasks, as warnings a worker logs at start.
    async fn durability_warnings(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Message counts of one queue.
    async fn stats(&self, queue: &str) -> Result<QueueStats>;

    /// The newest `limit` dead letters of `queue`, newest first.
    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>>;
}

/// Compile-time check that [`Broker`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn Broker) {}
