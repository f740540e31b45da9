//! [`WorkerConfig`]: the worker's knobs with production defaults.

use std::time::Duration;

use taskq_core::{DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_RESULT_TTL};

/// Tunables of a [`Worker`](crate::Worker); set through [`WorkerBuilder`](crate::WorkerBuilder).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Queues consumed, in order of preference (strict priority). Empty: the registered tasks'
    /// default queues.
    pub queues: Vec<String>,
    /// Queues Python's Celery sends to (Kombu's lists, on Redis), served besides `queues`:
    /// their messages are moved into taskq's queue of the same name and run like any other
    /// (see `docs/celery.md`).
    pub celery_queues: Vec<String>,
    /// Most executions running at once.
    pub concurrency: usize,
    /// Messages fetched ahead of a free execution slot.
    pub prefetch: usize,
    /// Most messages one fetch asks for.
    pub fetch_batch: usize,
    /// How long one fetch waits for work when the queues are empty.
    pub fetch_wait: Duration,
    /// Time in-flight runs get to finish after shutdown is requested.
    pub shutdown_grace: Duration,
    /// How often liveness is renewed and lost workers are looked for.
    pub heartbeat_interval: Duration,
    /// How long after its last heartbeat a worker counts as lost.
    pub liveness_ttl: Duration,
    /// Recoveries from lost workers before a message is dead-lettered as poison.
    pub max_redeliveries: u32,
    /// Hard time limit for tasks that do not set their own.
    pub default_timeout: Option<Duration>,
    /// Largest envelope accepted from the broker.
    pub max_payload_bytes: usize,
    /// Writes a STARTED record before each run (one extra backend write per task).
    pub track_started: bool,
    /// How long results are kept after their last write.
    pub result_ttl: Duration,
    /// Weights per queue (same order as `queues`) for weighted instead of strict order.
    pub queue_weights: Option<Vec<u32>>,
    /// Time a running task gets between a revocation with terminate (its cancellation signal)
    /// and being stopped.
    pub revoke_grace: Duration,
    /// Records `taskq_*` metrics through the `metrics` facade.
    pub metrics: bool,
    /// Keys whose signatures are accepted, and whether unsigned messages are refused; `None`
    /// runs every message (see `taskq_core::signing`).
    pub signatures: Option<taskq_core::Keyring>,
    /// Keys that open sealed task arguments and seal results (see `taskq_core::encryption`).
    pub encryption: Option<taskq_core::Encryption>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            celery_queues: Vec::new(),
            concurrency: 32,
            prefetch: 32,
            fetch_batch: 64,
            fetch_wait: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(1),
            liveness_ttl: Duration::from_secs(5),
            max_redeliveries: 3,
            default_timeout: None,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            track_started: false,
            result_ttl: DEFAULT_RESULT_TTL,
            queue_weights: None,
            revoke_grace: Duration::from_secs(5),
            metrics: false,
            signatures: None,
            encryption: None,
        }
    }
}
