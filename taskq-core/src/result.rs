//! Task states and the stored outcome of one invocation.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::id::TaskId;

/// Where an invocation is in its life, as recorded in the result backend.
///
/// ```
/// use taskq_core::TaskState;
/// assert!(TaskState::Success.is_ready() && !TaskState::Retry.is_ready());
/// assert_eq!(serde_json::to_string(&TaskState::Expired)?, r#""EXPIRED""#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum TaskState {
    /// Nothing is known about the id (not enqueued, not started, or the result expired).
    Pending,
    /// A worker has taken the message.
    Received,
    /// The task is running.
    Started,
    /// An attempt failed and another is scheduled.
    Retry,
    /// Finished with a result.
    Success,
    /// Failed for good (permanent error or retries exhausted).
    Failure,
    /// Revoked before it ran.
    Revoked,
    /// Its `expires` passed before it ran.
    Expired,
}

impl TaskState {
    /// True for the final states: SUCCESS, FAILURE, REVOKED and EXPIRED.
    pub fn is_ready(self) -> bool {
        matches!(
            self,
            TaskState::Success | TaskState::Failure | TaskState::Revoked | TaskState::Expired
        )
    }

    /// Whether a record in this state may be overwritten by one in `next`: results are
    /// monotonic. SUCCESS is never replaced; another final state only by a final state (a
    /// requeued dead letter ends again); a state in progress by anything. So a worker that
    /// was presumed dead and comes back cannot write RETRY, STARTED or FAILURE over the
    /// SUCCESS of the copy that ran elsewhere, and a waiter never sees a final state undone.
    ///
    /// ```
    /// use taskq_core::TaskState::*;
    /// assert!(!Success.may_become(Failure));
    /// assert!(!Failure.may_become(Retry));
    /// assert!(Failure.may_become(Success));
    /// assert!(Started.may_become(Retry));
    /// ```
    pub fn may_become(self, next: TaskState) -> bool {
        match self {
            TaskState::Success => false,
            final_state if final_state.is_ready() => next.is_ready(),
            _ => true,
        }
    }

    /// The wire spelling, e.g. `"SUCCESS"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "PENDING",
            TaskState::Received => "RECEIVED",
            TaskState::Started => "STARTED",
            TaskState::Retry => "RETRY",
            TaskState::Success => "SUCCESS",
            TaskState::Failure => "FAILURE",
            TaskState::Revoked => "REVOKED",
            TaskState::Expired => "EXPIRED",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored record of one invocation, as JSON in the result backend.
///
/// ```
/// use taskq_core::{TaskId, TaskResult, TaskState};
/// let record = TaskResult::new(TaskId::new(), "demo.add", TaskState::Failure, chrono::Utc::now())
///     .with_error("boom")
///     .with_attempts(4);
/// let json = serde_json::to_value(&record)?;
/// assert_eq!(json["state"], "FAILURE");
/// assert_eq!(json["attempts"], 4);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskResult {
    /// The invocation.
    pub id: TaskId,
    /// Registered task name.
    pub task: String,
    /// Current state.
    pub state: TaskState,
    /// The task's output as JSON, on SUCCESS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    /// The last error, on RETRY, FAILURE, REVOKED and EXPIRED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The errors of the attempts before this one, oldest first (at most
    /// [`EARLIER_ERRORS_KEPT`](crate::EARLIER_ERRORS_KEPT) + 1): how a retried failure changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_errors: Vec<String>,
    /// Attempts made so far (1 after the first run).
    pub attempts: u32,
    /// Progress reported by the running task (`TaskContext::set_progress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<serde_json::Value>,
    /// Id of the worker that wrote this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When the current attempt started, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When this record was written.
    pub updated_at: DateTime<Utc>,
    /// Where a delivering result backend sends this record (the task's
    /// [`REPLY_TO_HEADER`](crate::headers::REPLY_TO_HEADER)); routing, not part of the stored record.
    #[serde(skip)]
    pub reply_to: Option<String>,
    /// The invocation came in Celery's protocol ([`crate::headers::CELERY_HEADER`]): a backend
    /// that can also writes the record where Celery's client reads it
    /// ([`crate::celery::meta_record`]); routing, not part of the stored record.
    #[serde(skip)]
    pub celery: bool,
}

impl TaskResult {
    /// A record for `id` in `state`, written at `now`.
    pub fn new(id: TaskId, task: impl Into<String>, state: TaskState, now: DateTime<Utc>) -> Self {
        Self {
            id,
            task: task.into(),
            state,
            result: None,
            error: None,
            earlier_errors: Vec::new(),
            attempts: 0,
            progress: None,
            worker: None,
            started_at: None,
            updated_at: now,
            reply_to: None,
            celery: false,
        }
    }

    /// Sets where a delivering result backend sends the record: the reply address the
    /// invocation's `headers` carry, if any (builder style).
    pub fn replying_as(mut self, headers: &std::collections::BTreeMap<String, String>) -> Self {
        self.reply_to = headers.get(crate::headers::REPLY_TO_HEADER).cloned();
        self.celery = headers.contains_key(crate::headers::CELERY_HEADER);
        self
    }

    /// Sets the output (builder style).
    pub fn with_result(mut self, result: Box<RawValue>) -> Self {
        self.result = Some(result);
        self
    }

    /// Sets the errors of earlier attempts, oldest first (builder style).
    pub fn with_earlier_errors(mut self, errors: Vec<String>) -> Self {
        self.earlier_errors = errors;
        self
    }

    /// Sets the error (builder style).
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// Sets the number of attempts (builder style).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Sets the worker id (builder style).
    pub fn with_worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    /// Sets when the attempt started (builder style).
    pub fn with_started_at(mut self, started_at: DateTime<Utc>) -> Self {
        self.started_at = Some(started_at);
        self
    }
}
