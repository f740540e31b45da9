//! What a task is: [`Task`] (name and options, derived), [`Run`] (the handler the user writes)
//! and [`TaskOptions`] (its defaults); what a run knows is in `context.rs`, how it fails in
//! `task_error.rs`.

use std::{borrow::Cow, future::Future, time::Duration};

use serde::{de::DeserializeOwned, Serialize};

use crate::{
    arguments::ArgumentShape,
    context::TaskContext,
    envelope::DEFAULT_QUEUE,
    retry::{RetryPolicy, DEFAULT_MAX_RETRIES},
    task_error::TaskError,
};

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
    arguments: Option<ArgumentShape>,
    partition_field: Option<Cow<'static, str>>,
    partition_concurrency: Option<u32>,
    partition_rate_limit: Option<RateLimit>,
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
            arguments: None,
            soft_timeout: None,
            at_most_once: false,
            unique_for: None,
            rate_limit: None,
            partition_field: None,
            partition_concurrency: None,
            partition_rate_limit: None,
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
        self.priority = crate::priority::Priority::new(priority).get();
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

    /// The arguments' shape (`#[derive(Task)]` records it), published with the task's
    /// declaration so producers without the type can check arguments before sending.
    #[must_use]
    pub fn with_arguments(mut self, shape: ArgumentShape) -> Self {
        self.arguments = Some(shape);
        self
    }

    /// The arguments' shape, when known.
    pub fn arguments(&self) -> Option<&ArgumentShape> {
        self.arguments.as_ref()
    }

    /// Takes each invocation's partition key (see `docs/partitions.md`) from the argument
    /// field `field` (a string or a number; an invocation without it has no partition).
    ///
    /// ```
    /// let options = taskq_core::TaskOptions::new().with_partition_field("account_id");
    /// assert_eq!(options.partition_field(), Some("account_id"));
    /// ```
    #[must_use]
    pub fn with_partition_field(mut self, field: impl Into<Cow<'static, str>>) -> Self {
        self.partition_field = Some(field.into());
        self
    }

    /// The argument field that holds the partition key, if any.
    pub fn partition_field(&self) -> Option<&str> {
        self.partition_field.as_deref()
    }

    /// At most `limit` invocations of one partition run at once, across every worker of the
    /// queue (at least 1).
    ///
    /// ```
    /// let options = taskq_core::TaskOptions::new().with_partition_concurrency(1);
    /// assert_eq!(options.partition_concurrency(), Some(1));
    /// ```
    #[must_use]
    pub fn with_partition_concurrency(mut self, limit: u32) -> Self {
        self.partition_concurrency = Some(limit.max(1));
        self
    }

    /// The per-partition running limit, if any.
    pub fn partition_concurrency(&self) -> Option<u32> {
        self.partition_concurrency
    }

    /// At most `limit` starts per period of each partition's invocations across all workers
    /// (a GCRA keyed by the partition, like [`TaskOptions::with_rate_limit`]); invocations
    /// without a partition are not limited by it.
    ///
    /// ```
    /// let options = taskq_core::TaskOptions::new().with_partition_rate_limit("10/s".parse().unwrap());
    /// assert!(options.partition_rate_limit().is_some());
    /// ```
    #[must_use]
    pub fn with_partition_rate_limit(mut self, limit: RateLimit) -> Self {
        self.partition_rate_limit = Some(limit);
        self
    }

    /// The per-partition rate limit, if any.
    pub fn partition_rate_limit(&self) -> Option<RateLimit> {
        self.partition_rate_limit
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
