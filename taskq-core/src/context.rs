//! [`TaskContext`]: what one running attempt knows about itself (id, attempt, headers,
//! cancellation) and the one thing it may write, its progress.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, OnceLock},
    time::Duration,
};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    envelope::Envelope,
    error::{Error, Result},
    id::TaskId,
    result::{TaskResult, TaskState},
    retry::DEFAULT_MAX_RETRIES,
    task_error::TaskError,
};

/// What a running attempt knows about itself.
///
/// ```
/// use taskq_core::{Envelope, TaskContext};
/// let envelope = Envelope::new("t", &(), "default", chrono::Utc::now())?;
/// let ctx = TaskContext::detached(&envelope);
/// assert_eq!(ctx.attempt(), 0);
/// assert!(!ctx.is_cancelled());
/// # Ok::<(), taskq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TaskContext {
    id: TaskId,
    name: Arc<str>,
    queue: Arc<str>,
    attempt: u32,
    max_retries: u32,
    headers: Arc<BTreeMap<String, String>>,
    partition: Option<Arc<str>>,
    cancellation: CancellationToken,
    run: Option<CancellationToken>,
    reason: Option<Arc<OnceLock<CancelReason>>>,
    worker: Option<Arc<str>>,
    progress: Option<Arc<ProgressSink>>,
}

/// Why the worker asked a run to stop ([`TaskContext::cancel_reason`]), and what the run's
/// ending then means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// The worker is shutting down (SIGTERM, `RunningWorker::stop`): stop at a safe point and
    /// return. Unless the run returns `Ok`, its message goes back to the queue unchanged (the
    /// attempt is not counted) and runs again on another worker; one still running when the
    /// grace period ends is dropped and goes back the same way.
    Shutdown,
    /// The task was revoked with `terminate`: stop and return; the run ends REVOKED whatever
    /// it returns, and is dropped if it has not returned when the grace period ends.
    Revoked,
    /// The task's soft time limit passed: clean up and return. What it returns counts as
    /// usual (an error is retried or not as its retry policy says); the hard limit, if any,
    /// still drops it.
    SoftTimeLimit,
}

/// Where [`TaskContext::set_progress`] writes.
struct ProgressSink {
    store: Arc<dyn ProgressStore>,
    ttl: Duration,
}

/// The one write a running task makes to the result backend: its progress record. Every
/// [`ResultBackend`](crate::ResultBackend) is one; the context sees only this call, so what a
/// task is does not depend on where results are kept.
#[doc(hidden)]
#[async_trait::async_trait]
pub trait ProgressStore: Send + Sync + fmt::Debug {
    /// Stores `record` (state STARTED, with its progress) for `ttl`.
    async fn store_progress(&self, record: &TaskResult, ttl: Duration) -> Result<()>;
}

/// What a worker runtime knows about one attempt; built through `__private` by the worker
/// crate, not a public API.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub struct RunParts<'a> {
    /// The message being run.
    pub envelope: &'a Envelope,
    /// Retries allowed (the envelope's, else the task's).
    pub max_retries: u32,
    /// Fires when the worker shuts down.
    pub shutdown: CancellationToken,
    /// Fires for this run alone (soft time limit, revocation).
    pub run: Option<CancellationToken>,
    /// Why `run` fired, set before it fires.
    pub reason: Option<Arc<OnceLock<CancelReason>>>,
    /// The worker running it.
    pub worker: Option<Arc<str>>,
    /// Where progress goes, and for how long it is kept.
    pub progress: Option<(Arc<dyn ProgressStore>, Duration)>,
}

impl RunParts<'_> {
    /// The task's context.
    pub fn into_context(self) -> TaskContext {
        TaskContext::for_run(self)
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressSink")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    /// A context for running `envelope`'s task outside a worker, e.g. to unit-test a handler:
    /// never cancelled, no progress sink, the envelope's retry limit (or the default).
    pub fn detached(envelope: &Envelope) -> Self {
        Self::for_run(RunParts {
            envelope,
            max_retries: envelope.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
            shutdown: CancellationToken::new(),
            run: None,
            reason: None,
            worker: None,
            progress: None,
        })
    }

    /// The context a worker runtime builds for one attempt.
    pub(crate) fn for_run(parts: RunParts<'_>) -> Self {
        let envelope = parts.envelope;
        Self {
            id: envelope.id,
            name: Arc::from(envelope.task.as_str()),
            queue: Arc::from(envelope.queue.as_str()),
            attempt: envelope.attempt,
            max_retries: parts.max_retries,
            headers: Arc::new(envelope.headers.clone()),
            partition: envelope.partition.as_deref().map(Arc::from),
            cancellation: parts.shutdown,
            run: parts.run,
            reason: parts.reason,
            worker: parts.worker,
            progress: parts
                .progress
                .map(|(store, ttl)| Arc::new(ProgressSink { store, ttl })),
        }
    }

    /// Records progress (any JSON value) readable through the result handle while the task
    /// runs (state STARTED). A no-op for tasks that ignore results.
    ///
    /// # Errors
    ///
    /// When the value cannot be encoded or the backend write fails.
    pub async fn set_progress<P: Serialize + ?Sized>(&self, progress: &P) -> Result<()> {
        let Some(sink) = &self.progress else {
            return Ok(());
        };
        let value = serde_json::to_value(progress).map_err(|source| Error::Serialize {
            what: "progress",
            source,
        })?;
        let now = chrono::Utc::now();
        let mut record = TaskResult::new(self.id, &*self.name, TaskState::Started, now)
            .with_attempts(self.attempt + 1)
            .replying_as(&self.headers);
        record.progress = Some(value);
        record.worker = self.worker.as_deref().map(str::to_owned);
        sink.store.store_progress(&record, sink.ttl).await
    }

    /// A retryable error asking for the next attempt after exactly `delay`: `return
    /// Err(ctx.retry_after(delay, "busy"))`.
    pub fn retry_after(&self, delay: Duration, message: impl fmt::Display) -> TaskError {
        TaskError::retry_after(delay, message)
    }

    /// Id of the worker running this attempt, when run by a worker.
    pub fn worker(&self) -> Option<&str> {
        self.worker.as_deref()
    }

    /// The invocation's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The registered task name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue the invocation came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Earlier failed attempts: 0 on the first run.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Retries allowed after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// True when this is the last attempt retries allow.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_retries
    }

    /// Headers set at enqueue.
    pub fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }

    /// The partition (tenant) the invocation belongs to, if it has one (see
    /// `docs/partitions.md`).
    ///
    /// ```
    /// let mut envelope = taskq_core::Envelope::new("t", &(), "q", chrono::Utc::now())?;
    /// envelope.partition = Some("tenant-42".into());
    /// assert_eq!(taskq_core::TaskContext::detached(&envelope).partition(), Some("tenant-42"));
    /// # Ok::<(), taskq_core::Error>(())
    /// ```
    pub fn partition(&self) -> Option<&str> {
        self.partition.as_deref()
    }

    /// True once the worker asked this run to stop (shutdown, soft limit, revoke).
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled() || self.run.as_ref().is_some_and(|t| t.is_cancelled())
    }

    /// Why the worker asked this run to stop, once it has; see [`CancelReason`] for what the
    /// task should do in each case.
    ///
    /// ```
    /// # async fn step() {}
    /// use taskq_core::{CancelReason, TaskContext, TaskError};
    /// async fn long_job(ctx: TaskContext) -> Result<u32, TaskError> {
    ///     for done in 0..1000 {
    ///         tokio::select! {
    ///             _ = ctx.cancelled() => return match ctx.cancel_reason() {
    ///                 // Requeued whatever we return: say why, for the log.
    ///                 Some(CancelReason::Shutdown) => Err(TaskError::retryable("worker shutting down")),
    ///                 // Ends REVOKED whatever we return.
    ///                 Some(CancelReason::Revoked) => Err(TaskError::permanent("revoked")),
    ///                 // Counts as usual: keep what is done, or fail for a retry.
    ///                 _ => Ok(done),
    ///             },
    ///             _ = step() => {}
    ///         }
    ///     }
    ///     Ok(1000)
    /// }
    /// ```
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        let run_stopped = self
            .run
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled);
        if run_stopped {
            if let Some(reason) = self.reason.as_ref().and_then(|reason| reason.get()) {
                return Some(*reason);
            }
        }
        self.cancellation
            .is_cancelled()
            .then_some(CancelReason::Shutdown)
    }

    /// Completes when the worker asks this run to stop; select on it in long loops.
    pub async fn cancelled(&self) {
        match &self.run {
            Some(run) => {
                tokio::select! {
                    _ = self.cancellation.cancelled() => {}
                    _ = run.cancelled() => {}
                }
            }
            None => self.cancellation.cancelled().await,
        }
    }
}
