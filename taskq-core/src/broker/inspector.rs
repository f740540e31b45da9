//! [`Inspector`]: what operators (the `taskq` CLI, a dashboard) ask of a deployment.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{DeadLetter, Outcome, OutcomeFilter, QueueStats, TaskNumbers, WorkerInfo};
use crate::{error::Result, id::TaskId};

/// A window of a list, newest first: skip `offset` entries, return at most `limit`.
///
/// ```
/// use taskq_core::Page;
/// let second = Page::first(50).next();
/// assert_eq!((second.offset, second.limit), (50, 50));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Page {
    /// Entries skipped.
    pub offset: usize,
    /// Most entries returned.
    pub limit: usize,
}

impl Page {
    /// The first `limit` entries.
    pub fn first(limit: usize) -> Self {
        Self { offset: 0, limit }
    }

    /// `limit` entries after skipping `offset`.
    pub fn new(offset: usize, limit: usize) -> Self {
        Self { offset, limit }
    }

    /// The page after this one.
    pub fn next(self) -> Self {
        Self {
            offset: self.offset.saturating_add(self.limit),
            limit: self.limit,
        }
    }
}

/// Operator queries and repairs, kept apart from the hot path: counts, dead letters, workers,
/// requeue and purge. Every call is bounded by its arguments (a page, one id, one queue), and
/// every repair moves each message atomically.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use taskq_core::{Client, Inspector, Page};
/// let client = Client::in_memory();
/// client.enqueue_by_name("demo.add", &serde_json::json!({})).await?;
/// let inspector = client.inspector();
/// assert_eq!(inspector.queues().await?, ["default"]);
/// assert_eq!(inspector.stats("default").await?.pending, 1);
/// assert!(inspector.dead_letters("default", Page::first(20)).await?.is_empty());
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Inspector: Send + Sync + std::fmt::Debug {
    /// Every queue that has received a message, sorted.
    async fn queues(&self) -> Result<Vec<String>>;

    /// Message counts of one queue, taken as one consistent snapshot.
    async fn stats(&self, queue: &str) -> Result<QueueStats>;

    /// One page of the dead letters of `queue`, newest first.
    async fn dead_letters(&self, queue: &str, page: Page) -> Result<Vec<DeadLetter>>;

    /// The dead letter of task `id` in `queue`, if there is one.
    async fn find_dead_letter(&self, queue: &str, id: TaskId) -> Result<Option<DeadLetter>>;

    /// Moves dead letters of `queue` back to its pending list (all of them, or those with the
    /// given ids), each atomically, with their attempt count reset; returns how many moved.
    async fn requeue_dead(&self, queue: &str, ids: Option<&[TaskId]>) -> Result<usize>;

    /// Deletes dead letters of `queue` (all, or those dead-lettered before `older_than`) in
    /// one atomic step; returns how many.
    async fn purge_dead(&self, queue: &str, older_than: Option<DateTime<Utc>>) -> Result<usize>;

    /// Deletes every pending and scheduled message of `queue` (not those held by workers, not
    /// dead letters); returns how many.
    async fn purge_queue(&self, queue: &str) -> Result<usize>;

    /// Whether [`set_paused`](Self::set_paused) can hold a queue back here (operators'
    /// pages offer it only then).
    fn pauses_queues(&self) -> bool {
        false
    }

    /// Pauses `queue` (`true`) or resumes it: while paused, every worker's fetch skips it
    /// (checked inside the fetch itself, so no fetch that starts after this returns takes
    /// from it); enqueues still land, running tasks finish, [`QueueStats::paused`] says so.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Unsupported`] where the broker cannot hold a queue back (the default).
    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let _ = (queue, paused);
        Err(crate::Error::Unsupported {
            feature: "pausing queues",
            reason: "this broker hands messages to consumers without a fetch to hold back; \
                     use Redis, PostgreSQL or the in-memory broker",
        })
    }

    /// Live workers' latest reports.
    async fn workers(&self) -> Result<Vec<WorkerInfo>>;

    /// Removes from [`queues`](Self::queues) every queue that holds nothing (ready, scheduled,
    /// processing or dead), that no worker consumes, and that no producer registered for
    /// `idle_for`; returns their names. Workers call it now and then, so the registry of a
    /// deployment whose queue names come and go (one per tenant, per test run) does not grow
    /// for ever. A forgotten queue comes back with its next message. The default forgets
    /// nothing (the memory broker's registry ends with its process).
    async fn forget_idle_queues(&self, idle_for: std::time::Duration) -> Result<Vec<String>> {
        let _ = idle_for;
        Ok(Vec::new())
    }

    /// Workers found lost recently, newest first (see
    /// [`Membership::record_lost`](super::Membership::record_lost)). The default knows none.
    async fn lost_workers(&self) -> Result<Vec<super::LostWorker>> {
        Ok(Vec::new())
    }

    /// One page of `queue`'s ready messages, as raw payloads, in the order workers will take
    /// them: highest priority first, oldest first within a level.
    async fn pending(&self, queue: &str, page: Page) -> Result<Vec<String>>;

    /// One page of `queue`'s scheduled messages (countdowns, ETAs, retries waiting out their
    /// backoff), soonest due first.
    async fn scheduled(&self, queue: &str, page: Page) -> Result<Vec<ScheduledMessage>>;

    /// Moves the scheduled message `id` of `queue`, due at `due` (as [`Inspector::scheduled`]
    /// listed it), to its pending list at once (`run_now`) or deletes it; false when it was
    /// no longer scheduled (promoted, or moved by someone else). Atomic.
    async fn settle_scheduled(
        &self,
        queue: &str,
        id: TaskId,
        due: DateTime<Utc>,
        run_now: bool,
    ) -> Result<bool>;

    /// Deletes the dead letters of `queue` with the given ids, each atomically; returns how
    /// many were deleted.
    async fn delete_dead(&self, queue: &str, ids: &[TaskId]) -> Result<usize>;

    /// Up to `limit` messages of `queue` that workers hold now (fetched: running, or
    /// prefetched and about to run), with the holding worker. Operators see running tasks
    /// here whether or not tasks record STARTED.
    async fn held(&self, queue: &str, limit: usize) -> Result<Vec<HeldMessage>>;

    /// Whether [`pending`](Self::pending) can list ready messages (RabbitMQ cannot without
    /// delivering them); where it cannot, operators' pages show the counts alone.
    fn lists_pending(&self) -> bool {
        true
    }

    /// Whether [`held`](Self::held) can see held messages (RabbitMQ keeps unacknowledged
    /// deliveries out of sight without its management plugin).
    fn sees_held(&self) -> bool {
        true
    }

    /// Messages of `queue` that ended per minute over the last `minutes` minutes (by the
    /// broker's clock), oldest first, one entry per minute (zeros included). Workers count
    /// them inside the calls that settle the messages, so history costs no extra round trip.
    async fn history(&self, queue: &str, minutes: usize) -> Result<Vec<MinuteCounts>>;

    /// Whether the broker keeps a record of recent outcomes and per-task counters (see
    /// [`recent_outcomes`](Self::recent_outcomes)); RabbitMQ has nowhere to keep them.
    fn keeps_outcomes(&self) -> bool {
        false
    }

    /// Up to `limit` of `queue`'s recent outcomes that pass `filter`, newest first, from its
    /// capped record ([`RECENT_OUTCOMES_KEPT`](super::RECENT_OUTCOMES_KEPT) per queue), which
    /// the calls settling the messages write. Empty where the broker keeps none.
    async fn recent_outcomes(
        &self,
        queue: &str,
        filter: &OutcomeFilter,
        limit: usize,
    ) -> Result<Vec<Outcome>> {
        let _ = (queue, filter, limit);
        Ok(Vec::new())
    }

    /// Per-task numbers of `queue` over the last `minutes` minutes (by the broker's clock),
    /// by task name: runs per state, runtime and queue-wait histograms. Empty where the
    /// broker keeps none.
    async fn task_numbers(&self, queue: &str, minutes: usize) -> Result<Vec<TaskNumbers>> {
        let _ = (queue, minutes);
        Ok(Vec::new())
    }

    /// The partitions of `queue` with work (pending or held by workers), most pending first,
    /// at most `limit` of them (see `docs/partitions.md`). Brokers without partitions have none.
    async fn partitions(&self, queue: &str, limit: usize) -> Result<Vec<PartitionStats>> {
        let _ = (queue, limit);
        Ok(Vec::new())
    }
}

/// One busy partition of a queue ([`Inspector::partitions`]).
///
/// ```
/// let busy = taskq_core::PartitionStats::new("tenant-42", 10, 1, Some(1));
/// assert!(busy.at_limit());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct PartitionStats {
    /// The partition key.
    pub key: String,
    /// Ready messages of the partition (not scheduled ones).
    pub pending: usize,
    /// Messages of the partition held by workers, counted while it has a limit (its slots).
    pub running: usize,
    /// Its running limit, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl PartitionStats {
    /// Counts of partition `key`.
    pub fn new(key: impl Into<String>, pending: usize, running: usize, limit: Option<u32>) -> Self {
        Self {
            key: key.into(),
            pending,
            running,
            limit,
        }
    }

    /// True when as many run as its limit allows (fetches skip it until one ends).
    pub fn at_limit(&self) -> bool {
        self.limit
            .is_some_and(|limit| self.running >= limit as usize)
    }
}

/// Sorts busy partitions most pending first (then most running, then by key) and keeps
/// `limit`; every broker reports them in this order.
pub fn rank_partitions(mut partitions: Vec<PartitionStats>, limit: usize) -> Vec<PartitionStats> {
    partitions.sort_by(|a, b| (b.pending, b.running, &a.key).cmp(&(a.pending, a.running, &b.key)));
    partitions.truncate(limit);
    partitions
}

/// A message a worker holds ([`Inspector::held`]): its payload and the worker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldMessage {
    /// The worker holding it.
    pub worker: String,
    /// The message as the broker keeps it (an encoded envelope).
    pub payload: String,
}

impl HeldMessage {
    /// `payload`, held by `worker`.
    pub fn new(worker: impl Into<String>, payload: impl Into<String>) -> Self {
        Self {
            worker: worker.into(),
            payload: payload.into(),
        }
    }
}

/// A message waiting in a queue's scheduled set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduledMessage {
    /// When it becomes ready.
    pub due: DateTime<Utc>,
    /// The message as stored.
    pub payload: String,
}

impl ScheduledMessage {
    /// A message due at `due`.
    pub fn new(due: DateTime<Utc>, payload: impl Into<String>) -> Self {
        Self {
            due,
            payload: payload.into(),
        }
    }
}

/// How many messages of a queue ended in one minute.
///
/// ```
/// let minute = taskq_core::MinuteCounts::new(chrono::Utc::now(), 3, 1);
/// assert_eq!((minute.processed, minute.failed), (3, 1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct MinuteCounts {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Messages acknowledged (succeeded, or ended revoked or expired).
    pub processed: u64,
    /// Messages dead-lettered by a worker (failed for good, malformed, unknown task).
    pub failed: u64,
}

impl MinuteCounts {
    /// Counts for the minute starting at `minute`.
    pub fn new(minute: DateTime<Utc>, processed: u64, failed: u64) -> Self {
        Self {
            minute,
            processed,
            failed,
        }
    }
}

/// How long per-minute history is kept: two hours, so a one-hour chart always has it.
pub const HISTORY_KEPT_MINUTES: i64 = 120;

/// The minute (since the epoch) `at` falls in.
pub fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

/// When minute number `minute` starts.
pub fn minute_start(minute: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(minute.saturating_mul(60), 0).unwrap_or_default()
}

/// The last `minutes` minute numbers up to and including `now`'s, oldest first.
pub fn last_minutes(now: DateTime<Utc>, minutes: usize) -> Vec<i64> {
    let current = minute_of(now);
    (0..minutes as i64)
        .rev()
        .map(|back| current - back)
        .collect()
}

/// Compile-time check that [`Inspector`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn Inspector) {}
