//! What a task is: [`Task`] (name and options, derived), [`Run`] (the handler the user writes),
//! [`TaskError`] (what happens after a failure) and [`TaskContext`] (what a run knows).

use std::{borrow::Cow, collections::BTreeMap, fmt, future::Future, sync::Arc, time::Duration};

use serde::{de::DeserializeOwned, Serialize};
use tokio_util::sync::CancellationToken;

use crate::{envelope::DEFAULT_QUEUE, Envelope, RetryPolicy, TaskId};

/// Retries allowed after the first attempt when a task does not say (Celery's default).
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// A typed task: a serializable struct of arguments with a stable wire name.
///
/// Implement it with `#[derive(Task)]` and `#[task(name = "...", ...)]`; the keys set the
/// defaults in [`TaskOptions`]. The handler lives in [`Run`].
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use taskq_core::{Task, TaskOptions};
///
/// #[derive(Task, Serialize, Deserialize)]
/// #[task(name = "emails.send", queue = "emails", max_retries = 5, timeout = "30s")]
/// struct SendEmail { to: String }
///
/// assert_eq!(SendEmail::NAME, "emails.send");
/// assert_eq!(SendEmail::options().queue(), "emails");
/// assert_eq!(SendEmail::options().max_retries(), 5);
/// ```
pub trait Task: Serialize + DeserializeOwned + Send + 'static {
    /// The stable name under which workers find the handler.
    const NAME: &'static str;

    /// Defaults for every invocation; a call may override them.
    fn options() -> TaskOptions;
}

/// The handler of a [`Task`]: runs one invocation and returns its typed output.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use taskq_core::{Run, Task, TaskContext, TaskError};
///
/// #[derive(Task, Serialize, Deserialize)]
/// #[task(name = "math.add")]
/// struct Add { a: i64, b: i64 }
///
/// impl Run for Add {
///     type Output = i64;
///     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
///         Ok(self.a + self.b)
///     }
/// }
/// ```
pub trait Run: Task {
    /// What a successful run returns; stored as JSON in the result backend.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Runs one attempt. Errors decide whether another attempt follows (see [`TaskError`]).
    fn run(self, ctx: TaskContext) -> impl Future<Output = Result<Self::Output, TaskError>> + Send;
}

/// Per-task defaults, set by `#[task(...)]` and overridable per call.
///
/// ```
/// use std::time::Duration;
/// use taskq_core::TaskOptions;
/// let options = TaskOptions::new().with_queue("reports").with_timeout(Duration::from_secs(5));
/// assert_eq!(options.queue(), "reports");
/// assert_eq!(options.max_retries(), taskq_core::DEFAULT_MAX_RETRIES);
/// ```
#[derive(Clone, Debug)]
pub struct TaskOptions {
    queue: Cow<'static, str>,
    max_retries: u32,
    timeout: Option<Duration>,
    priority: u8,
    expires: Option<Duration>,
    ignore_result: bool,
    retry_policy: RetryPolicy,
    soft_timeout: Option<Duration>,
    at_most_once: bool,
    unique_for: Option<Duration>,
    rate_limit: Option<RateLimit>,
}

impl TaskOptions {
    /// Queue `default`, [`DEFAULT_MAX_RETRIES`], no time limit, priority 0, results kept.
    pub fn new() -> Self {
        Self {
            queue: Cow::Borrowed(DEFAULT_QUEUE),
            max_retries: DEFAULT_MAX_RETRIES,
            timeout: None,
            priority: 0,
            expires: None,
            ignore_result: false,
            retry_policy: RetryPolicy::default(),
            soft_timeout: None,
            at_most_once: false,
            unique_for: None,
            rate_limit: None,
        }
    }

    /// Soft time limit per attempt: the task's cancellation signal fires so it can clean up;
    /// the hard limit ([`TaskOptions::with_timeout`]) still applies.
    pub fn with_soft_timeout(mut self, soft: Duration) -> Self {
        self.soft_timeout = Some(soft);
        self
    }

    /// Acknowledges before running: a worker crash loses the run instead of repeating it.
    /// Such tasks are not retried.
    pub fn with_at_most_once(mut self, at_most_once: bool) -> Self {
        self.at_most_once = at_most_once;
        self
    }

    /// An enqueue with the same task name and arguments within `window` of an earlier one
    /// (that has not finished) returns the earlier task's id instead of enqueueing again.
    pub fn with_unique_for(mut self, window: Duration) -> Self {
        self.unique_for = Some(window);
        self
    }

    /// At most this many starts per period across all workers; limited runs wait in the
    /// scheduled set.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// The soft time limit, if any.
    pub fn soft_timeout(&self) -> Option<Duration> {
        self.soft_timeout
    }

    /// True when the task is acknowledged before it runs.
    pub fn at_most_once(&self) -> bool {
        self.at_most_once
    }

    /// The uniqueness window, if any.
    pub fn unique_for(&self) -> Option<Duration> {
        self.unique_for
    }

    /// The rate limit, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// Routes invocations to `queue`.
    pub fn with_queue(mut self, queue: impl Into<Cow<'static, str>>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Allows `max_retries` retries after the first attempt.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Hard time limit per attempt: the run is dropped and the attempt fails.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Priority 0 (lowest, default) to 9 (highest); values above 9 are clamped.
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = crate::Priority::new(priority).get();
        self
    }

    /// Invocations not started within `expires` of being enqueued end as EXPIRED.
    pub fn with_expires(mut self, expires: Duration) -> Self {
        self.expires = Some(expires);
        self
    }

    /// Skips writing results; waiting on such a task times out.
    pub fn with_ignore_result(mut self, ignore: bool) -> Self {
        self.ignore_result = ignore;
        self
    }

    /// Sets the backoff between attempts.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// The queue invocations go to.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Retries allowed after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The hard time limit per attempt, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The default priority.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The default time to live of an invocation, if any.
    pub fn expires(&self) -> Option<Duration> {
        self.expires
    }

    /// True when results are not stored.
    pub fn ignore_result(&self) -> bool {
        self.ignore_result
    }

    /// The backoff between attempts.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry_policy
    }
}

impl Default for TaskOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// A rate: `count` starts per `period`, e.g. `"100/s"`, `"10/m"`, `"5/30s"`.
///
/// ```
/// use std::time::Duration;
/// use taskq_core::RateLimit;
/// let limit: RateLimit = "100/s".parse()?;
/// assert_eq!(limit.interval(), Duration::from_millis(10));
/// assert!("ten per day".parse::<RateLimit>().is_err());
/// # Ok::<(), String>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    count: u32,
    period: Duration,
}

impl RateLimit {
    /// `count` starts per `period` (count at least 1).
    pub fn new(count: u32, period: Duration) -> Self {
        Self {
            count: count.max(1),
            period,
        }
    }

    /// The spacing between two starts.
    pub fn interval(&self) -> Duration {
        self.period / self.count
    }
}

impl std::str::FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, period) = crate::rate_grammar::parse_rate(text)?;
        Ok(Self::new(count, period))
    }
}

/// Why an attempt failed, and whether another attempt should follow.
///
/// Any `std::error::Error` converts into a *retryable* `TaskError` through `?`, because most
/// failures in background work (timeouts, lost connections) are transient. Use
/// [`TaskError::permanent`] for failures that no retry will fix.
///
/// ```
/// use std::time::Duration;
/// use taskq_core::TaskError;
/// let err = TaskError::permanent("no such user");
/// assert!(!err.is_retryable());
/// let err = TaskError::retry_after(Duration::from_secs(30), "rate limited");
/// assert_eq!(err.retry_delay(), Some(Duration::from_secs(30)));
/// ```
#[derive(Clone, Debug)]
pub struct TaskError {
    retryable: bool,
    retry_after: Option<Duration>,
    message: String,
}

impl TaskError {
    /// A failure that may succeed on a later attempt (backoff from the retry policy).
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self {
            retryable: true,
            retry_after: None,
            message: message.to_string(),
        }
    }

    /// A failure no retry will fix: the task ends as FAILURE at once.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self {
            retryable: false,
            retry_after: None,
            message: message.to_string(),
        }
    }

    /// A retryable failure whose next attempt should wait exactly `delay`.
    pub fn retry_after(delay: Duration, message: impl fmt::Display) -> Self {
        Self {
            retryable: true,
            retry_after: Some(delay),
            message: message.to_string(),
        }
    }

    /// True when another attempt may follow (if retries are left).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The delay the task asked for, overriding the retry policy.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(err: E) -> Self {
        Self::retryable(crate::error_chain(&err))
    }
}

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
    cancellation: CancellationToken,
    run: Option<CancellationToken>,
    worker: Option<Arc<str>>,
    progress: Option<Arc<ProgressSink>>,
}

/// Where [`TaskContext::set_progress`] writes.
struct ProgressSink {
    backend: Arc<dyn crate::ResultBackend>,
    ttl: Duration,
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
    /// The worker running it.
    pub worker: Option<Arc<str>>,
    /// Where progress goes, and for how long it is kept.
    pub progress: Option<(Arc<dyn crate::ResultBackend>, Duration)>,
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
            cancellation: parts.shutdown,
            run: parts.run,
            worker: parts.worker,
            progress: parts
                .progress
                .map(|(backend, ttl)| Arc::new(ProgressSink { backend, ttl })),
        }
    }

    /// Records progress (any JSON value) readable through the result handle while the task
    /// runs (state STARTED). A no-op for tasks that ignore results.
    ///
    /// # Errors
    ///
    /// When the value cannot be encoded or the backend write fails.
    pub async fn set_progress<P: Serialize + ?Sized>(&self, progress: &P) -> crate::Result<()> {
        let Some(sink) = &self.progress else {
            return Ok(());
        };
        let value = serde_json::to_value(progress).map_err(|source| crate::Error::Serialize {
            what: "progress",
            source,
        })?;
        let now = chrono::Utc::now();
        let mut record =
            crate::TaskResult::new(self.id, &*self.name, crate::TaskState::Started, now)
                .with_attempts(self.attempt + 1)
                .replying_as(&self.headers);
        record.progress = Some(value);
        record.worker = self.worker.as_deref().map(str::to_owned);
        sink.backend.store(&record, sink.ttl).await
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

    /// True once the worker asked this run to stop (shutdown, soft limit, revoke).
    pub fn is_cancelled(&self) -> bool {
        self.cancellation.is_cancelled() || self.run.as_ref().is_some_and(|t| t.is_cancelled())
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
