//! [`Membership`]: worker leases and the reaper, for transports that need one.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{RecoveryReport, WorkerId, WorkerInfo};
use crate::error::Result;

/// Worker liveness: who holds which messages, and recovering the messages of workers that
/// stopped renewing their lease.
///
/// Transports that keep fetched messages in per-worker lists (memory, Redis) implement it and
/// every worker runs a heartbeat and a reaper against it. Transports whose server redelivers a
/// lost consumer's messages by itself (AMQP) return `None` from
/// [`Broker::membership`](super::Broker::membership), and workers skip both.
///
/// Lifecycle of one worker: `heartbeat` (renewed every interval) → fetches under that lease →
/// `deregister` at a clean exit; if the lease lapses instead, any caller of
/// `recover_lost_workers` returns the worker's messages to their queues, exactly once.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use std::time::Duration;
/// use taskq_core::{Membership, MemoryBroker, WorkerId};
/// let broker = MemoryBroker::new();
/// let worker = WorkerId::generate();
/// let queues = ["default".to_owned()];
/// broker.heartbeat(&worker, &queues, Duration::from_secs(5)).await?;
/// assert!(broker.recover_lost_workers(&queues, 3).await?.workers.is_empty());
/// broker.deregister(&worker, &queues).await?;
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Membership: Send + Sync + std::fmt::Debug {
    /// Takes or renews `worker`'s lease on `queues` until `ttl` from now. A worker's first
    /// heartbeat takes the lease; every later one renews only a lease the worker still holds.
    ///
    /// # Errors
    ///
    /// [`crate::Error::LeaseLost`] when a later heartbeat finds the lease gone on any of
    /// `queues` (a reaper recovered the worker): nothing is renewed, and the worker must stop
    /// and rejoin under a fresh identity. A lease that lapsed but was not recovered yet is
    /// renewed.
    async fn heartbeat(&self, worker: &WorkerId, queues: &[String], ttl: Duration) -> Result<()>;

    /// Returns the held messages of workers on `queues` whose liveness deadline passed to the
    /// head of `pending`; a message recovered more than `max_redeliveries` times goes to dead
    /// letters with [`DeadReason::WorkerLost`](super::DeadReason::WorkerLost). Each lost worker
    /// is recovered exactly once even when many callers race. Workers registered only on other
    /// queues are left to the reapers of those queues.
    async fn recover_lost_workers(
        &self,
        queues: &[String],
        max_redeliveries: u32,
    ) -> Result<RecoveryReport>;

    /// How many workers hold leases on the least shared of `queues` (the caller among them),
    /// or `None` when the broker does not count them. A worker spaces its reaper and promotion
    /// passes by this count, so that a fleet makes about the same number of passes whatever
    /// its size; without a count it makes them every heartbeat.
    async fn peers(&self, queues: &[String]) -> Result<Option<usize>> {
        let _ = queues;
        Ok(None)
    }

    /// Returns the messages of processing lists on `queues` whose worker holds no lease at all
    /// to the head of `pending`, once they have been seen orphaned for at least `grace`, with
    /// poison counting as in [`Membership::recover_lost_workers`]. The lease protocol does not
    /// leave such lists; the sweep is the backstop for whatever it does not foresee. Brokers
    /// whose processing sets cannot outlive their lease (memory) find none.
    async fn sweep_orphans(
        &self,
        queues: &[String],
        grace: Duration,
        max_redeliveries: u32,
    ) -> Result<RecoveryReport> {
        let _ = (queues, grace, max_redeliveries);
        Ok(RecoveryReport::default())
    }

    /// Returns whatever `worker` still holds on `queues` to the head of `pending` and removes
    /// the worker from the live set of those queues; the last call of a worker shutting down.
    async fn deregister(&self, worker: &WorkerId, queues: &[String]) -> Result<()>;

    /// Notes, for operators, that `workers` were found lost at `at` (their messages were just
    /// recovered), with their last reports; the most recent [`LOST_WORKERS_KEPT`] are kept
    /// ([`Inspector::lost_workers`](super::Inspector::lost_workers)). The default keeps nothing.
    async fn record_lost(&self, workers: &[WorkerId], at: DateTime<Utc>) -> Result<()> {
        let _ = (workers, at);
        Ok(())
    }
}

/// How many recently lost workers are remembered.
pub const LOST_WORKERS_KEPT: usize = 50;

/// A worker found lost by a reaper: when, and what it last reported about itself.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct LostWorker {
    /// The worker's id.
    pub id: String,
    /// When its messages were recovered.
    pub lost_at: DateTime<Utc>,
    /// Its last report, if it had not expired.
    pub last_info: Option<WorkerInfo>,
}

impl LostWorker {
    /// A worker `id` found lost at `lost_at`.
    pub fn new(
        id: impl Into<String>,
        lost_at: DateTime<Utc>,
        last_info: Option<WorkerInfo>,
    ) -> Self {
        Self {
            id: id.into(),
            lost_at,
            last_info,
        }
    }
}

/// Compile-time check that [`Membership`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn Membership) {}
