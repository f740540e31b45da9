//! The one error type of taskq-core.

use std::time::Duration;

use crate::{id::TaskId, result::TaskState};

/// Everything that can go wrong talking to a broker or result backend, or waiting for a result.
///
/// Decide with the predicates, never with the message text:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let client = taskq_core::Client::in_memory();
/// let err = client.result_handle::<u8>(taskq_core::TaskId::new()).wait(Duration::ZERO).await.unwrap_err();
/// assert!(err.is_transient() && !err.is_task_failure());
/// assert_eq!(err.to_string(), "timed out after 0ns waiting for the result");
/// # }
/// ```
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Task arguments or a result could not be turned into JSON.
    #[error("failed to serialize {what}")]
    Serialize {
        /// What was being serialized.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored envelope or result could not be read back.
    #[error("failed to deserialize {what}")]
    Deserialize {
        /// What was being deserialized.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// An encoded envelope is larger than the configured limit.
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the encoded envelope.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The queue holds as many messages as its capacity allows; retry later (flow control).
    #[error("queue `{queue}` is full ({capacity} messages)")]
    QueueFull {
        /// The queue that is full.
        queue: String,
        /// Its capacity.
        capacity: usize,
    },
    /// An option or argument is out of range.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Waiting for a result ran out of time; the task may still finish later.
    #[error("timed out after {0:?} waiting for the result")]
    Timeout(Duration),
    /// The task reached a final state other than success.
    #[error("task {id} ended in state {state}: {message}")]
    TaskFailed {
        /// The task.
        id: TaskId,
        /// Its final state (FAILURE, REVOKED or EXPIRED).
        state: TaskState,
        /// The last error the task reported.
        message: String,
    },
    /// Members of a group ended without success; the others' outputs are in their results.
    #[error("group {id}: {} of {} members failed; first: {}", failed.len(), failed.len() + succeeded, failed.first().map(|(id, state, message)| format!("{id} ended {state}: {message}")).unwrap_or_default())]
    GroupFailed {
        /// The group.
        id: TaskId,
        /// How many members succeeded.
        succeeded: usize,
        /// Each failed member: its id, final state and error.
        failed: Vec<(TaskId, TaskState, String)>,
    },
    /// The broker or backend was shut down.
    #[error("broker is closed")]
    Closed,
    /// The worker's lease is gone: it was presumed dead (paused or cut off for longer than
    /// its liveness TTL) and its messages were recovered by another worker. It must stop
    /// working under this identity; nothing was fetched or renewed.
    #[error("worker {worker} lost its lease: its messages were recovered by another worker")]
    LeaseLost {
        /// The worker's id.
        worker: String,
    },
    /// The broker cannot do what the call asks (a feature its model does not have); nothing
    /// was sent.
    #[error("{feature} is not supported by this broker: {reason}")]
    Unsupported {
        /// The feature, as the docs name it, e.g. `"partition keys"`.
        feature: &'static str,
        /// Why this broker cannot, and what can.
        reason: &'static str,
    },
    /// A command to the broker or result store failed (the source names the server's error).
    #[error("{transport} command failed")]
    Broker {
        /// Which transport, e.g. `"redis"`.
        transport: &'static str,
        /// True for failures a later retry may fix (lost connection, timeout, failover); false
        /// for ones it cannot (a script or permission error).
        transient: bool,
        /// The client library's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// True when trying the same call again later may succeed (lost connection, full queue).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::QueueFull { .. } | Error::Timeout(_) => true,
            Error::Broker { transient, .. } => *transient,
            _ => false,
        }
    }

    /// True when the task itself failed, was revoked or expired (as opposed to taskq failing).
    pub fn is_task_failure(&self) -> bool {
        matches!(self, Error::TaskFailed { .. } | Error::GroupFailed { .. })
    }
}

/// The whole chain in one line ([`error_chain`]), not the variant's fields: what
/// `fn main() -> taskq::Result<()>` prints when it fails is then the message an operator
/// needs, with the place (URL, file) the failing layer named.
///
/// ```
/// let err = taskq_core::Error::Broker {
///     transport: "redis",
///     transient: true,
///     source: "cannot reach Redis at redis://cache:6379 (is Redis running there?)".into(),
/// };
/// assert_eq!(
///     format!("{err:?}"),
///     "redis command failed: cannot reach Redis at redis://cache:6379 (is Redis running there?)"
/// );
/// ```
impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&error_chain(self))
    }
}

/// `Result` with taskq-core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, joined by `: ` (for logs and one-line CLI errors).
///
/// ```
/// let err = taskq_core::Error::Deserialize {
///     what: "task result",
///     source: serde_json::from_str::<u8>("x").unwrap_err(),
/// };
/// assert!(taskq_core::error_chain(&err).starts_with("failed to deserialize task result: expected value"));
/// ```
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Many errors repeat their source in their own message: say each cause once.
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}
