//! [`ControlChannel`]: messages broadcast to every worker rather than delivered to one, and
//! the persisted revocations that back them.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::{error::Result, id::TaskId};

/// A subscription to the control channel: every message broadcast after it was opened, until
/// it is dropped.
pub type ControlStream = BoxStream<'static, ControlMessage>;

/// Broadcast to every listening worker (ping, revoke), revocations persisted so that a worker
/// that was not listening still honours them, and what workers report about themselves.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use futures_util::StreamExt;
/// use taskq_core::{ControlChannel, ControlMessage, MemoryBroker};
/// let broker = MemoryBroker::new();
/// let mut control = broker.subscribe_control().await?;
/// broker.broadcast(&ControlMessage::Ping { nonce: "n1".into() }).await?;
/// assert_eq!(control.next().await, Some(ControlMessage::Ping { nonce: "n1".into() }));
/// # Ok(()) }
/// ```
#[async_trait]
pub trait ControlChannel: Send + Sync + std::fmt::Debug {
    /// Sends `message` to every subscriber of the control channel.
    async fn broadcast(&self, message: &ControlMessage) -> Result<()>;

    /// Subscribes to the control channel; messages sent after this returns are received.
    async fn subscribe_control(&self) -> Result<ControlStream>;

    /// Marks `id` revoked for `ttl` (persisted, so workers that were not listening still skip
    /// it) and broadcasts the revocation.
    async fn revoke(&self, id: TaskId, terminate: bool, ttl: Duration) -> Result<()>;

    /// Ids revoked and not yet expired.
    async fn revoked(&self) -> Result<Vec<TaskId>>;

    /// Publishes what a worker reports about itself for operators (`taskq workers`), kept for
    /// `ttl`; the worker refreshes it well within that. Every broker keeps it, including those
    /// without a [`Membership`](crate::Membership) role.
    async fn publish_worker_info(&self, info: &WorkerInfo, ttl: Duration) -> Result<()>;

    /// Withdraws the record of a worker that stopped, so that it leaves `taskq workers` now
    /// rather than when its record would have expired (records outlive a few publications).
    /// By default the record is published again to expire at once.
    async fn withdraw_worker_info(&self, info: &WorkerInfo) -> Result<()> {
        self.publish_worker_info(info, Duration::from_millis(1))
            .await
    }
}

/// Compile-time check that [`ControlChannel`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn ControlChannel) {}

/// A message on the control channel (Redis pub/sub `taskq:control`, an in-process broadcast
/// channel for the memory broker). Workers act on `Ping` and `Revoke`; everyone may listen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ControlMessage {
    /// Every live worker answers with a [`ControlMessage::Pong`] carrying `nonce`.
    Ping {
        /// Chosen by the pinger to recognise the answers.
        nonce: String,
    },
    /// A worker's answer to a ping.
    Pong {
        /// The ping's nonce.
        nonce: String,
        /// The answering worker.
        worker: String,
        /// When the worker answered.
        at: DateTime<Utc>,
    },
    /// Do not run `id`; with `terminate`, also stop it if it is running.
    Revoke {
        /// The task.
        id: TaskId,
        /// Stop a running execution too.
        terminate: bool,
    },
    /// The worker `worker` shuts down as on SIGTERM: it takes nothing more, lets running
    /// tasks finish within its grace period, gives back what it prefetched, and exits its run.
    Shutdown {
        /// The worker's id (as `taskq workers` lists it).
        worker: String,
    },
}

/// What a worker publishes about itself for operators, refreshed with every heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker's id.
    pub id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Queues consumed, in order of preference.
    pub queues: Vec<String>,
    /// Most executions at once.
    pub concurrency: usize,
    /// Executions running now.
    pub in_flight: usize,
    /// When the worker started.
    pub started_at: DateTime<Utc>,
    /// When this record was written.
    pub last_heartbeat: DateTime<Utc>,
    /// How far this host's clock is ahead of the broker's (negative: behind), ms, as last
    /// measured; absent for brokers without a clock of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_ms: Option<i64>,
}

impl WorkerInfo {
    /// A record for worker `id` of this process on `host`.
    pub fn new(
        id: &str,
        host: &str,
        queues: Vec<String>,
        concurrency: usize,
        started_at: DateTime<Utc>,
    ) -> Self {
        Self {
            id: id.to_owned(),
            host: host.to_owned(),
            pid: std::process::id(),
            queues,
            concurrency,
            in_flight: 0,
            started_at,
            last_heartbeat: started_at,
            clock_skew_ms: None,
        }
    }
}
