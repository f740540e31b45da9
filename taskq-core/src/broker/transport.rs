//! [`Transport`]: the role that moves messages.

use std::time::Duration;

use async_trait::async_trait;

use super::{DeadReason, Delivery, KeyedFlow, KeyedOutcome, OutboundMessage, PassesDue, WorkerId};
use crate::{clock::Clock, error::Result, id::TaskId};

/// Moves messages: enqueue, fetch into a worker's hands, settle (ack, retry, requeue,
/// dead-letter), promote due scheduled messages.
///
/// Lifecycle of one message:
///
/// ```text
/// enqueue ──► pending ──fetch──► held by a worker ──ack──► gone
///    │           ▲                 │   │   │
///    │ (eta)     │ promote         │   │   └─dead_letter──► dead
///    ▼           │                 │   └─retry(next)──► scheduled
/// scheduled ─────┘                 └─requeue──► pending (head)
/// ```
///
/// Every settle is *fenced*: it happens only if the message is still held by the calling
/// worker, and reports whether it did, so a worker whose messages were handed to someone else
/// (recovered by a reaper, redelivered by the server) changes nothing. Uniqueness lives here
/// because its claim must be atomic with the enqueue it guards.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use std::time::Duration;
/// use taskq_core::{Envelope, Inspector, MemoryBroker, OutboundMessage, Transport, WorkerId};
///
/// let broker = MemoryBroker::new();
/// let envelope = Envelope::new("demo.add", &serde_json::json!({"a": 1}), "default", broker.clock().now())?;
/// broker.enqueue(vec![OutboundMessage::from_envelope(&envelope, 1 << 20)?]).await?;
///
/// let worker = WorkerId::generate();
/// let held = broker.fetch(&worker, &["default".to_owned()], 10, Duration::ZERO).await?;
/// assert_eq!(broker.stats("default").await?.processing, 1);
/// assert_eq!(broker.ack(&worker, &held).await?, 1);
/// assert_eq!(broker.ack(&worker, &held).await?, 0, "fenced: already gone");
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// The clock this transport schedules by (ETA, expiry, backoff).
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
    ) -> Result<Option<TaskId>>;

    /// Whether [`Transport::enqueue_unique`] works on this transport (true unless it says
    /// otherwise). Workflows need it: a worker sends each next step once per id through it, so
    /// producers refuse chains, groups and callbacks where it is missing, before sending
    /// anything, instead of letting workers meet the refusal after the first step ran.
    fn supports_unique(&self) -> bool {
        true
    }

    /// Whether this transport keeps partitions ([`OutboundMessage::partition`]): round-robin
    /// between a queue's partitions and a per-partition running limit. Producers refuse a
    /// partitioned message before sending anything where it does not; the default refuses.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Unsupported`] saying why this transport cannot.
    fn check_partitions(&self) -> Result<()> {
        Err(crate::Error::Unsupported {
            feature: "partition keys",
            reason: "this broker keeps no per-partition queues; use Redis, PostgreSQL or the in-memory broker",
        })
    }

    /// Enqueues `message` under per-key flow control ([`KeyedFlow`]: debounce or throttle),
    /// deciding and writing in one atomic step. To replace a pending invocation's arguments
    /// the message must carry that invocation's id: the first call says which
    /// ([`KeyedOutcome::Resend`]) and the producer sends again with `expect` set to it.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Unsupported`] where the transport keeps no per-key state (the default).
    async fn enqueue_keyed(
        &self,
        message: OutboundMessage,
        flow: &KeyedFlow,
        expect: Option<TaskId>,
    ) -> Result<KeyedOutcome> {
        let _ = (message, flow, expect);
        Err(crate::Error::Unsupported {
            feature: "debounce and throttle",
            reason:
                "this broker keeps no per-key state; use Redis, PostgreSQL or the in-memory broker",
        })
    }

    /// Releases `unique_key` of `queue` if task `id` holds it (the task finished).
    async fn release_unique(&self, queue: &str, unique_key: &str, id: TaskId) -> Result<()>;

    /// Puts `message` (a Celery protocol message in Kombu's JSON layout,
    /// [`crate::celery::message`]) in Celery's own queue `queue` (Kombu's list on Redis, the
    /// queue of that name on RabbitMQ), where Python Celery workers take it. Only brokers that
    /// share a server with Celery's transport can (Redis, RabbitMQ); others refuse.
    async fn send_celery(&self, queue: &str, message: String) -> Result<()> {
        let _ = (queue, message);
        Err(crate::Error::Unsupported {
            feature: "Celery-protocol queues",
            reason: "this broker does not share a server with Celery's transport (Redis and RabbitMQ do)",
        })
    }

    /// Moves up to `max` messages that Python's Celery put in its own queue `queue` into this
    /// broker's queue of the same name (atomically on Redis; on RabbitMQ at least once: taken,
    /// published with a confirm, then acknowledged), where workers fetch them like any other
    /// and read Kombu's JSON layout (`taskq_core::celery`); returns how many moved. With `max`
    /// 0 it only checks that it can. Only brokers that share a server with Celery's transport
    /// can (Redis, RabbitMQ); others refuse.
    async fn take_celery(&self, queue: &str, max: usize) -> Result<usize> {
        let _ = (queue, max);
        Err(crate::Error::Unsupported {
            feature: "Celery-protocol queues",
            reason: "this broker does not share a server with Celery's transport (Redis and RabbitMQ do)",
        })
    }

    /// Moves up to `max` ready messages from `queues` (in that order of preference, highest
    /// priority first within a queue) into `worker`'s hands and returns them.
    ///
    /// On a broker with a [`Membership`](super::Membership) role the fetch checks the
    /// worker's lease in the same step: a worker that never sent a heartbeat gets a short
    /// lease ([`FETCH_LEASE`](super::FETCH_LEASE)); one whose lease was recovered gets
    /// [`crate::Error::LeaseLost`] and nothing is moved, so nothing is ever fetched into hands
    /// no reaper watches.
    ///
    /// When none is ready, waits for one up to `wait` (an implementation may return an empty
    /// batch earlier, after its own longest blocking wait; callers loop). Fetch does not
    /// promote due scheduled messages: [`Transport::promote_scheduled`] does, and wakes
    /// waiting fetches when it does.
    async fn fetch(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;

    /// Removes finished messages; returns how many `worker` still held (fenced).
    async fn ack(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize>;

    /// Replaces a failed message by `next` (its next attempt) in `scheduled`, due at `next.eta`
    /// (or at once); false when `worker` no longer held it. The next attempt stays in the queue
    /// the message was delivered from, whatever `next.queue` says: the workers that consumed it
    /// there are the ones that will see it again, and on Redis Cluster the move stays in one slot.
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

    /// Which of `queues` need a reaper or a promotion pass now. A broker that keeps an index
    /// of when each queue next needs one (Redis on one server) answers from it in one read,
    /// so an idle fleet's passes cost one command whatever its queues (issue 31); the default
    /// answers every queue. A pass over a queue not named is always safe: workers make one
    /// over all of their queues now and then, which also writes the index again.
    async fn passes_due(&self, queues: &[String]) -> Result<PassesDue> {
        Ok(PassesDue::all(queues))
    }

    /// Measures this host's clock against the broker's and corrects [`Transport::clock`] by
    /// the difference; returns how far the host's clock is ahead (negative: behind), or `None`
    /// for a broker without a clock of its own (in-process). Workers call it periodically.
    async fn measure_clock(&self) -> Result<Option<chrono::Duration>> {
        Ok(None)
    }

    /// `worker` stops fetching for good (it is shutting down, after settling what it could):
    /// a transport that keeps per-worker state (a consumer channel) releases it, and whatever
    /// it had handed the worker and nobody settled goes back to its queue. The default does
    /// nothing (brokers with a [`Membership`](super::Membership) role return leftovers through
    /// `deregister`).
    async fn release_worker(&self, worker: &WorkerId) -> Result<()> {
        let _ = worker;
        Ok(())
    }

    /// Server settings that can lose acknowledged tasks, as warnings a worker logs at start.
    async fn durability_warnings(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// Compile-time check that [`Transport`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn Transport) {}
