//! The one enqueue path: typed, bulk, by-name and beat enqueues all turn (task name, arguments,
//! the task's declared options, per-call options) into an envelope in one function (`plan`), and send it
//! through [`Enqueue`] or [`Client::enqueue_many`](crate::Client::enqueue_many).
//!
//! Precedence, for every option: a per-call setting wins over what the task declares
//! (`#[task(...)]`, or the declaration a worker published for producers that enqueue by name),
//! which wins over the default. Between `countdown` and `eta`, and between `expires_in` and
//! `expires_at`, the call made last wins. A by-name enqueue of a task nobody declared goes to
//! `default` with priority 0 and leaves `max_retries` unset, so the worker that runs it applies
//! the task's own setting.

use std::{
    collections::BTreeMap,
    future::{Future, IntoFuture},
    marker::PhantomData,
    pin::Pin,
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::{AsyncResult, Client, Envelope, Error, Priority, Result, TaskId, TaskOptions};

/// Header carrying the uniqueness key, so the worker can release it when the task finishes.
pub const UNIQUE_KEY_HEADER: &str = "taskq-unique-key";

/// The header naming where a task's result is delivered, for result backends that deliver
/// results to the process that sent the task instead of storing them (RabbitMQ's reply
/// queues, `?results=rpc`): set by the client from [`ResultBackend::reply_to`], read by the
/// worker into [`TaskResult::reply_to`](crate::TaskResult::reply_to). Signed like every header.
///
/// [`ResultBackend::reply_to`]: crate::ResultBackend::reply_to
pub const REPLY_TO_HEADER: &str = "taskq-reply-to";

/// A point in time given either as a delay from the enqueue or as an instant.
#[derive(Clone, Copy, Debug)]
enum When {
    After(Duration),
    At(DateTime<Utc>),
}

impl When {
    fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            When::After(delay) => now + to_chrono(delay),
            When::At(at) => at,
        }
    }
}

/// What one call says, each field unset unless the caller set it.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallOptions {
    queue: Option<String>,
    priority: Option<u8>,
    max_retries: Option<u32>,
    eta: Option<When>,
    expires: Option<When>,
    id: Option<TaskId>,
    headers: BTreeMap<String, String>,
    unique_for: Option<Duration>,
    unique_key: Option<String>,
    /// Keep the uniqueness key for its whole window, even once the task finished.
    unique_until_expired: bool,
    on_success: Vec<crate::workflow::Signature>,
    on_failure: Vec<crate::workflow::Signature>,
}

/// An envelope ready to send, and the uniqueness claim that must guard its enqueue.
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) envelope: Envelope,
    pub(crate) unique: Option<(String, Duration)>,
}

/// Builds the envelope of one invocation: `declared` is what the task declares (`None` when a
/// by-name producer knows nothing of it), `call` what this call says.
pub(crate) fn plan(
    name: &str,
    args: Box<RawValue>,
    declared: Option<&TaskOptions>,
    call: &CallOptions,
    now: DateTime<Utc>,
    encryption: Option<&crate::Encryption>,
) -> Result<Planned> {
    let queue = call
        .queue
        .clone()
        .or_else(|| declared.map(|d| d.queue().to_owned()))
        .unwrap_or_else(|| crate::DEFAULT_QUEUE.to_owned());
    check_name("queue", &queue)?;
    check_name("task name", name)?;
    let mut envelope = Envelope::from_raw_args(name, args, queue, now);
    if let Some(id) = call.id {
        envelope.id = id;
    }
    envelope.priority = call
        .priority
        .or_else(|| declared.map(TaskOptions::priority))
        .map_or(Priority::LOWEST, Priority::new)
        .get();
    envelope.max_retries = call
        .max_retries
        .or_else(|| declared.map(TaskOptions::max_retries));
    envelope.eta = call.eta.map(|when| when.resolve(now));
    envelope.expires = call
        .expires
        .or_else(|| declared.and_then(TaskOptions::expires).map(When::After))
        .map(|when| when.resolve(now));
    envelope.headers = call.headers.clone();
    if !call.on_success.is_empty() || !call.on_failure.is_empty() {
        for callback in call.on_success.iter().chain(&call.on_failure) {
            callback.validate()?;
        }
        let mut flow = crate::workflow::Flow {
            on_success: call.on_success.clone(),
            on_failure: call.on_failure.clone(),
            ..Default::default()
        };
        if let Some(keys) = encryption {
            for callback in flow.on_success.iter_mut().chain(&mut flow.on_failure) {
                callback.seal_args(keys);
            }
        }
        envelope.flow = Some(encode_args(&flow)?);
    }
    let window = call
        .unique_for
        .or_else(|| declared.and_then(TaskOptions::unique_for));
    let unique = window.map(|window| {
        let key = call
            .unique_key
            .clone()
            .unwrap_or_else(|| default_unique_key(&envelope, encryption));
        // The header is what tells the worker to release the key when the task ends.
        if !call.unique_until_expired {
            envelope
                .headers
                .insert(UNIQUE_KEY_HEADER.to_owned(), key.clone());
        }
        (key, window)
    });
    Ok(Planned { envelope, unique })
}

/// Longest queue or task name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// Checks a queue or task name before it becomes part of a key: not empty, at most
/// [`MAX_NAME_BYTES`], no whitespace or control characters, and no `{` or `}` (a queue's keys
/// share the hash tag `{<queue>}`; a brace would break it, an empty one scatters them).
///
/// ```
/// assert!(taskq_core::enqueue::check_name("queue", "emails-eu").is_ok());
/// for bad in ["", "a b", "}x", "{x}", "tab\there"] {
///     assert!(taskq_core::enqueue::check_name("queue", bad).is_err(), "{bad:?}");
/// }
/// ```
///
/// # Errors
///
/// [`Error::Invalid`] naming what is wrong.
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    // Every enqueue checks two names: printable ASCII without braces is the common case and
    // needs no character decoding.
    if !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
    {
        return Ok(());
    }
    let reason = if name.is_empty() {
        "the name is empty".to_owned()
    } else if name.len() > MAX_NAME_BYTES {
        format!(
            "the name is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        )
    } else if let Some(bad) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '{' | '}'))
    {
        format!(
            "`{}` contains {bad:?}; use letters, digits and punctuation other than braces",
            name.escape_debug()
        )
    } else {
        return Ok(());
    };
    Err(Error::Invalid { what, reason })
}

/// Task name plus a stable digest of the encoded arguments: a UUID v5, or with encryption a
/// keyed digest (a plain hash of sealed arguments would let anyone confirm a guessed value).
fn default_unique_key(envelope: &Envelope, encryption: Option<&crate::Encryption>) -> String {
    let args = envelope.args.get().as_bytes();
    let digest = match encryption {
        Some(keys) => keys.digest(args),
        None => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, args),
    };
    format!("{}:{digest}", envelope.task)
}

/// Counts enqueues in `taskq_tasks_enqueued_total{task,queue}` (a no-op without a recorder).
pub(crate) fn count_enqueued(task: &str, queue: &str, count: u64) {
    metrics::counter!("taskq_tasks_enqueued_total", "task" => task.to_owned(), "queue" => queue.to_owned())
        .increment(count);
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Encodes task arguments once, for [`plan`].
pub(crate) fn encode_args<A: serde::Serialize + ?Sized>(args: &A) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(args).map_err(|source| Error::Serialize {
        what: "task arguments",
        source,
    })
}

/// Where the task's declared options come from.
#[derive(Debug)]
enum Declared {
    /// The producer links the task's type.
    Known(TaskOptions),
    /// Looked up in the broker's [`TaskCatalog`](crate::TaskCatalog) when sent.
    ByName,
}

/// What an awaited enqueue did.
#[derive(Debug)]
#[non_exhaustive]
pub enum Sent<O> {
    /// The invocation was enqueued.
    Enqueued(AsyncResult<O>),
    /// A unique enqueue found its key held; the handle is the holder's.
    Duplicate(AsyncResult<O>),
}

impl<O> Sent<O> {
    /// The handle, whichever happened.
    pub fn into_handle(self) -> AsyncResult<O> {
        match self {
            Sent::Enqueued(handle) | Sent::Duplicate(handle) => handle,
        }
    }
}

/// One pending enqueue with per-call options; `.await` sends it and yields an [`AsyncResult`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use std::time::Duration;
/// use taskq_core::Client;
/// let client = Client::in_memory();
/// let handle = client
///     .enqueue_by_name("reports.build", &serde_json::json!({"day": "2026-11-22"}))
///     .queue("reports")
///     .priority(7)
///     .countdown(Duration::from_secs(60))
///     .expires_in(Duration::from_secs(3600))
///     .header("tenant", "acme")
///     .await?;
/// assert_eq!(client.inspector().stats("reports").await?.scheduled, 1);
/// # let _ = handle;
/// # Ok(()) }
/// ```
#[must_use = "an enqueue does nothing until it is awaited"]
#[derive(Debug)]
pub struct Enqueue<'a, O> {
    client: &'a Client,
    name: String,
    args: Result<Box<RawValue>>,
    declared: Declared,
    call: CallOptions,
    _output: PhantomData<fn() -> O>,
}

impl<'a, O> Enqueue<'a, O> {
    /// An enqueue of a task whose type the producer links.
    pub(crate) fn typed(
        client: &'a Client,
        name: &str,
        args: Result<Box<RawValue>>,
        options: TaskOptions,
    ) -> Self {
        Self::new(client, name, args, Declared::Known(options))
    }

    /// An enqueue by name; the declared options are looked up when it is sent.
    pub(crate) fn by_name(client: &'a Client, name: &str, args: Result<Box<RawValue>>) -> Self {
        Self::new(client, name, args, Declared::ByName)
    }

    fn new(
        client: &'a Client,
        name: &str,
        args: Result<Box<RawValue>>,
        declared: Declared,
    ) -> Self {
        Self {
            client,
            name: name.to_owned(),
            args,
            declared,
            call: CallOptions::default(),
            _output: PhantomData,
        }
    }

    /// Makes this enqueue unique for `window`: while an earlier invocation with the same key
    /// (default: task name and arguments) has not finished, return its handle instead.
    pub fn unique_for(mut self, window: Duration) -> Self {
        self.call.unique_for = Some(window);
        self
    }

    /// Uses `key` instead of the task name and arguments to decide what counts as a duplicate.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.call.unique_key = Some(key.into());
        self
    }

    /// Keeps the uniqueness key for the whole `unique_for` window, even after the task ended:
    /// an enqueue with the same key within the window is a duplicate whether the first has
    /// run or not. By default the worker releases the key when the task ends, so that the same
    /// work can be asked for again; keep it when the key marks work that must happen once, as
    /// the beat does for each slot.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// use std::time::Duration;
    /// let client = taskq_core::Client::in_memory();
    /// let once = || {
    ///     client
    ///         .enqueue_by_name("reports.daily", &serde_json::json!({}))
    ///         .unique_key("reports.daily:2026-12-05")
    ///         .unique_for(Duration::from_secs(86_400))
    ///         .unique_until_expired()
    /// };
    /// assert!(matches!(once().send().await?, taskq_core::Sent::Enqueued(_)));
    /// assert!(matches!(once().send().await?, taskq_core::Sent::Duplicate(_)));
    /// # Ok(()) }
    /// ```
    pub fn unique_until_expired(mut self) -> Self {
        self.call.unique_until_expired = true;
        self
    }

    /// Runs no earlier than `delay` from now (replaces an earlier `eta`).
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.call.eta = Some(When::After(delay));
        self
    }

    /// Runs no earlier than `at` (replaces an earlier `countdown`).
    pub fn eta(mut self, at: DateTime<Utc>) -> Self {
        self.call.eta = Some(When::At(at));
        self
    }

    /// Ends as EXPIRED instead of running if not started within `ttl` from now.
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.call.expires = Some(When::After(ttl));
        self
    }

    /// Ends as EXPIRED instead of running if not started by `at`.
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.call.expires = Some(When::At(at));
        self
    }

    /// Priority 0 (lowest) to 9 (highest) within the queue; larger values are clamped to 9.
    pub fn priority(mut self, priority: impl Into<Priority>) -> Self {
        self.call.priority = Some(priority.into().get());
        self
    }

    /// Routes this invocation to `queue` instead of the task's default.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.call.queue = Some(queue.into());
        self
    }

    /// Uses `id` instead of a random one, e.g. to know the id before the enqueue returns.
    ///
    /// Not an idempotency key by itself: two enqueues with one id are two invocations (both
    /// run, and share one result record). To enqueue once, add `.unique_for(window)`, whose
    /// claim is atomic with the enqueue (beat does this for every fire).
    pub fn id(mut self, id: TaskId) -> Self {
        self.call.id = Some(id);
        self
    }

    /// Adds a header the task can read from its context.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.call.headers.insert(key.into(), value.into());
        self
    }

    /// Sends `callback` when this invocation succeeds, with its output in the callback's
    /// input field (see [`Signature`](crate::workflow::Signature)); enqueued once however
    /// often the task runs.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// use taskq_core::{workflow::Signature, Client};
    /// let client = Client::in_memory();
    /// let notify = Signature::by_name("reports.notify", serde_json::json!({"to": "ops"})).input("report");
    /// client
    ///     .enqueue_by_name("reports.build", &serde_json::json!({"day": "2026-11-30"}))
    ///     .on_success(notify)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn on_success(mut self, callback: crate::workflow::Signature) -> Self {
        self.call.on_success.push(callback);
        self
    }

    /// Sends `callback` when this invocation ends as FAILURE, REVOKED or EXPIRED (after its
    /// retries; dead letters included), with a [`Failed`](crate::workflow::Failed) in its
    /// input field.
    pub fn on_failure(mut self, callback: crate::workflow::Signature) -> Self {
        self.call.on_failure.push(callback);
        self
    }

    /// Allows `max_retries` retries for this invocation.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.call.max_retries = Some(max_retries);
        self
    }

    /// Sends the enqueue and says whether it enqueued or found a unique key held.
    ///
    /// # Errors
    ///
    /// Encoding errors ([`Error::Serialize`], [`Error::PayloadTooLarge`]), an empty queue name
    /// ([`Error::Invalid`]), or the broker's error.
    pub async fn send(mut self) -> Result<Sent<O>> {
        let client = self.client;
        if !self.call.on_success.is_empty() || !self.call.on_failure.is_empty() {
            client.check_workflows_supported()?;
        }
        // By-name callbacks take the options their tasks declare, like workflow steps.
        client.resolve_callbacks(&mut self.call.on_success).await?;
        client.resolve_callbacks(&mut self.call.on_failure).await?;
        let declared = match self.declared {
            Declared::Known(options) => Some(options),
            Declared::ByName => client.declared_options(&self.name).await?,
        };
        let planned = plan(
            &self.name,
            self.args?,
            declared.as_ref(),
            &self.call,
            client.clock().now(),
            client.encryption(),
        )?;
        client.send_planned(planned).await
    }
}

impl<'a, O: Send + 'a> IntoFuture for Enqueue<'a, O> {
    type Output = Result<AsyncResult<O>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.send().await.map(Sent::into_handle) })
    }
}
