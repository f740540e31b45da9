//! [`Executor`]: everything an execution needs, and nothing else, built once per worker.

use std::{sync::Arc, time::Duration};

use taskq_core::{
    __private::ProgressStore, Clock, Encryption, Keyring, RateLimiter, ResultBackend, WorkerId,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    hooks::Hooks, lease::Lease, registry::Registry, report::Recorder, revocations::Revocations,
    settle::Settler,
};

/// The settings an execution reads.
#[derive(Clone, Debug)]
pub(crate) struct ExecutionSettings {
    /// Largest envelope accepted.
    pub(crate) max_payload_bytes: usize,
    /// Write a STARTED record before each run.
    pub(crate) track_started: bool,
    /// How long results (and progress) are kept.
    pub(crate) result_ttl: Duration,
    /// Hard time limit of tasks that set none.
    pub(crate) default_timeout: Option<Duration>,
    /// Signature checks, when configured.
    pub(crate) signatures: Option<Keyring>,
    /// Keys that open sealed arguments and seal results, when configured.
    pub(crate) encryption: Option<Encryption>,
}

/// Everything an execution needs, and nothing else.
#[derive(Debug)]
pub(crate) struct Executor {
    pub(crate) registry: Registry,
    pub(crate) settings: ExecutionSettings,
    pub(crate) worker: WorkerId,
    pub(crate) clock: Clock,
    /// Execution slots (concurrency).
    pub(crate) slots: Arc<Semaphore>,
    /// Fires when shutdown starts: unstarted messages go back; tasks see it in their context.
    pub(crate) stopping: CancellationToken,
    /// Fires when the grace period ends: running executions are stopped and requeued.
    pub(crate) hard_stop: CancellationToken,
    pub(crate) revocations: Arc<Revocations>,
    pub(crate) rate_limiter: Arc<dyn RateLimiter>,
    /// Where tasks report progress.
    pub(crate) progress: Arc<dyn ResultBackend>,
    /// The same backend, seen through the one write a task's context makes.
    pub(crate) progress_store: Arc<dyn ProgressStore>,
    pub(crate) settler: Arc<Settler>,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) hooks: Hooks,
    /// Nothing starts while the lease may have lapsed (a message started then could be
    /// running on another worker too).
    pub(crate) lease: Arc<Lease>,
}
