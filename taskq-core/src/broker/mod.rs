//! The broker roles and the [`Broker`] that bundles them.
//!
//! A broker plays up to six roles, each a trait with its own conformance suite, split by who
//! calls it:
//!
//! | role | called by | what it does |
//! |---|---|---|
//! | [`Transport`] | client, worker | enqueue, fetch, settle (ack, retry, requeue, dead-letter), promote, uniqueness |
//! | [`Membership`] | worker heartbeat and reaper | leases, recovery of lost workers' messages, worker reports; only for transports that need a reaper |
//! | [`ControlChannel`] | client, CLI, worker | broadcast ping and revoke as a stream, persisted revocations |
//! | [`Inspector`] | CLI, dashboard | stats snapshot, paged dead letters, lookup by id, requeue, purge, workers |
//!
//! plus [`RateLimiter`], the state shared by workers for global rate limits, and
//! [`TaskCatalog`], the tasks' declared options for producers that enqueue by name.
//! Implementations:
//! [`MemoryBroker`] here, `RedisBroker` in `taskq-redis`, `AmqpBroker` in `taskq-amqp` (no
//! [`Membership`]: RabbitMQ redelivers a lost consumer's messages itself).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
//! use std::{sync::Arc, time::Duration};
//! use taskq_core::{Broker, Inspector, MemoryBroker};
//! let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
//! let inspector: Arc<dyn Inspector> = broker.clone();   // each role is its own object too
//! assert!(broker.membership().is_some(), "the memory broker needs a reaper");
//! assert!(inspector.queues().await?.is_empty());
//! # Ok(()) }
//! ```

mod catalog;
mod control;
mod inspector;
mod membership;
mod memory;
mod outcomes;
mod rate_limiter;
mod transport;
mod types;

pub use catalog::{TaskCatalog, TaskDeclaration};
pub use control::{ControlChannel, ControlMessage, ControlStream, WorkerInfo};
pub use inspector::{
    last_minutes, minute_of, minute_start, rank_partitions, HeldMessage, Inspector, MinuteCounts,
    Page, PartitionStats, ScheduledMessage, HISTORY_KEPT_MINUTES,
};
pub use membership::{LostWorker, Membership, LOST_WORKERS_KEPT};
pub use memory::{MemoryBroker, MemoryBrokerConfig};
pub use outcomes::{
    bundle, tally, unbundle, Histogram, Outcome, OutcomeFilter, TaskNumbers, OUTCOME_ERROR_BYTES,
    OUTCOME_STATES, RECENT_OUTCOMES_KEPT, RECENT_OUTCOMES_TTL,
};
pub use rate_limiter::RateLimiter;
pub use transport::Transport;
pub use types::{
    local_hostname, DeadLetter, DeadReason, Delivery, KeyedFlow, KeyedOutcome, OutboundMessage,
    PassesDue, PayloadFields, QueueStats, Receipt, RecoveryReport, WorkerId,
};

use std::time::Duration;

/// Liveness granted to a worker that fetches before its first heartbeat: its messages are
/// recovered if no heartbeat follows within this time.
pub const FETCH_LEASE: Duration = Duration::from_secs(30);

/// A broker: a [`Transport`] with its control channel, inspector, rate limiter and task
/// catalog, and the
/// membership role when its transport needs a reaper.
///
/// Held as `Arc<dyn Broker>` by clients and workers; any role can be taken from it as its own
/// trait object (`let inspector: Arc<dyn Inspector> = broker;`).
pub trait Broker: Transport + ControlChannel + Inspector + RateLimiter + TaskCatalog {
    /// Worker leases and recovery, or `None` when the server redelivers a lost consumer's
    /// messages by itself (no heartbeat, no reaper needed).
    fn membership(&self) -> Option<&dyn Membership>;

    /// The concrete broker, for extensions that work with one kind only (a transactional
    /// enqueue writes into its own database's tables); `None` unless it opts in.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// Compile-time check that [`Broker`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn Broker) {}
