//! [`Enqueue`], the builder of one enqueue: it gathers the per-call options, and when awaited
//! plans the invocation and hands the plan to the client to send. Typed, bulk, by-name, beat and
//! callback enqueues all plan their envelopes in one function, whatever sends them.
//!
//! Precedence, for every option: a per-call setting wins over what the task declares
//! (`#[task(...)]`, or the declaration a worker published for producers that enqueue by name),
//! which wins over the default. Between `countdown` and `eta`, and between `expires_in` and
//! `expires_at`, the call made last wins. A by-name enqueue of a task nobody declared goes to
//! `default` with priority 0 and leaves `max_retries` unset, so the worker that runs it applies
//! the task's own setting.

use std::{
    future::{Future, IntoFuture},
    marker::PhantomData,
    pin::Pin,
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

pub use crate::headers::{RELAYED_HEADER, REPLY_TO_HEADER, UNIQUE_KEY_HEADER};
pub use crate::names::{check_name, MAX_NAME_BYTES};
use std::sync::Arc;

use crate::{
    broker::{Broker, OutboundMessage},
    client_core::{ClientCore, Placed},
    error::Result,
    id::TaskId,
    plan::{count_enqueued, plan, CallOptions, When},
    priority::Priority,
    result_handle::AsyncResult,
    task::TaskOptions,
    workflow::{self, Signature},
};

/// Where the task's declared options come from.
#[derive(Debug)]
enum Declared {
    /// The producer links the task's type.
    Known(Box<TaskOptions>),
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
    core: &'a ClientCore,
    name: String,
    args: Result<Box<RawValue>>,
    declared: Declared,
    call: CallOptions,
    _output: PhantomData<fn() -> O>,
}

impl<'a, O> Enqueue<'a, O> {
    /// An enqueue of a task whose type the producer links.
    pub(crate) fn typed(
        core: &'a ClientCore,
        name: &str,
        args: Result<Box<RawValue>>,
        options: TaskOptions,
    ) -> Self {
        Self::new(core, name, args, Declared::Known(Box::new(options)))
    }

    /// An enqueue by name; the declared options are looked up when it is sent.
    pub(crate) fn by_name(core: &'a ClientCore, name: &str, args: Result<Box<RawValue>>) -> Self {
        Self::new(core, name, args, Declared::ByName)
    }

    fn new(
        core: &'a ClientCore,
        name: &str,
        args: Result<Box<RawValue>>,
        declared: Declared,
    ) -> Self {
        Self {
            core,
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

    /// Puts this invocation in partition `key` (a tenant, an account, a document): the queue
    /// hands out its partitions' work in turn, so one partition's backlog does not hold up the
    /// others, and [`Enqueue::partition_concurrency`] caps how many of one partition run at
    /// once across the fleet. Overrides the task's `#[task(partition = "field")]`. Needs a
    /// broker that keeps partitions (Redis, in-memory); others refuse it with
    /// [`Error::Unsupported`](crate::Error::Unsupported). See `docs/partitions.md`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// let client = taskq_core::Client::in_memory();
    /// client.enqueue_by_name("reports.build", &serde_json::json!({})).partition("tenant-42").await?;
    /// assert_eq!(client.inspector().partitions("default", 10).await?[0].key, "tenant-42");
    /// # Ok(()) }
    /// ```
    pub fn partition(mut self, key: impl Into<String>) -> Self {
        self.call.partition = Some(key.into());
        self
    }

    /// At most `limit` invocations of this one's partition run at once, across every worker
    /// (at least 1; the latest enqueue of a partition sets its limit). Without a partition it
    /// does nothing.
    pub fn partition_concurrency(mut self, limit: u32) -> Self {
        self.call.partition_concurrency = Some(limit.max(1));
        self
    }

    /// Debounces on `key` (per queue): one invocation stays pending per key; each call
    /// replaces its arguments and moves its start to `window` after the call (see
    /// [`Enqueue::debounce_max_wait`] for a bound). Every call gets the handle of the one
    /// invocation that will run. Atomic with the enqueue, so racing producers keep one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> taskq_core::Result<()> {
    /// use std::time::Duration;
    /// let client = taskq_core::Client::in_memory();
    /// let mut ids = Vec::new();
    /// for n in 0..3 {
    ///     let call = client.enqueue_by_name("search.reindex", &serde_json::json!({ "n": n }));
    ///     ids.push(call.debounce("doc-7", Duration::from_secs(5)).await?.id());
    /// }
    /// assert!(ids.iter().all(|id| *id == ids[0]), "one invocation, the last arguments");
    /// assert_eq!(client.inspector().stats("default").await?.scheduled, 1);
    /// # Ok(()) }
    /// ```
    pub fn debounce(mut self, key: impl Into<String>, window: Duration) -> Self {
        self.call.flow = Some(crate::broker::KeyedFlow::Debounce {
            key: key.into(),
            window,
            max_wait: None,
        });
        self
    }

    /// Bounds a debounce: the pending invocation starts no later than `max_wait` after the
    /// first call of its burst, however many calls follow. Without
    /// [`Enqueue::debounce`] it does nothing.
    pub fn debounce_max_wait(mut self, max_wait: Duration) -> Self {
        if let Some(crate::broker::KeyedFlow::Debounce {
            max_wait: bound, ..
        }) = &mut self.call.flow
        {
            *bound = Some(max_wait);
        }
        self
    }

    /// Throttles on `key` (per queue): at most one run per `window`; a call inside a window
    /// is dropped and gets the handle of the window's run. Atomic with the enqueue.
    pub fn throttle(mut self, key: impl Into<String>, window: Duration) -> Self {
        self.call.flow = Some(crate::broker::KeyedFlow::Throttle {
            key: key.into(),
            window,
            keep_last: false,
        });
        self
    }

    /// [`Enqueue::throttle`], but the latest call inside a window is kept, to run when the
    /// window ends (its run then holds the next window); earlier extra calls are replaced.
    pub fn throttle_keep_last(mut self, key: impl Into<String>, window: Duration) -> Self {
        self.call.flow = Some(crate::broker::KeyedFlow::Throttle {
            key: key.into(),
            window,
            keep_last: true,
        });
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

    /// Marks an enqueue that an outbox relay will send later (`taskq_postgres::EnqueueOutbox`
    /// calls it). A relay killed between the broker's confirmation and its delete sends the
    /// message again: where the broker keeps uniqueness keys the relay's key stops the copy;
    /// where it does not (RabbitMQ), the message carries [`RELAYED_HEADER`] and a worker skips
    /// a copy whose success is already stored.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// let client = taskq_core::Client::in_memory(); // keeps uniqueness keys: no header needed
    /// let prepared = client.enqueue_by_name("emails.receipt", &serde_json::json!({})).relayed().prepare().await?;
    /// assert!(!prepared.message().payload.contains(taskq_core::RELAYED_HEADER));
    /// # Ok(()) }
    /// ```
    pub fn relayed(self) -> Self {
        if self.core.broker.supports_unique() {
            self
        } else {
            self.header(RELAYED_HEADER, "1")
        }
    }

    /// Sends `callback` when this invocation succeeds, with its output in the callback's
    /// input field (see [`Signature`]); enqueued once however
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
    pub fn on_success(mut self, callback: Signature) -> Self {
        self.call.on_success.push(callback);
        self
    }

    /// Sends `callback` when this invocation ends as FAILURE, REVOKED or EXPIRED (after its
    /// retries; dead letters included), with a [`Failed`](crate::workflow::Failed) in its
    /// input field.
    pub fn on_failure(mut self, callback: Signature) -> Self {
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
    /// Encoding errors ([`Error::Serialize`](crate::Error::Serialize),
    /// [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge)), an empty queue name
    /// ([`Error::Invalid`](crate::Error::Invalid)), or the broker's error.
    pub async fn send(self) -> Result<Sent<O>> {
        let core = self.core;
        let planned = self.planned().await?;
        Ok(match core.send_planned(planned).await? {
            Placed::Enqueued(id) => Sent::Enqueued(core.result_handle(id)),
            Placed::Duplicate(holder) => Sent::Duplicate(core.result_handle(holder)),
        })
    }

    /// Plans the enqueue and seals and signs its message as [`Enqueue::send`] would, but sends
    /// nothing: for transports the client does not own, such as the application's own
    /// database transaction (`taskq_postgres::EnqueueWithin`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// let client = taskq_core::Client::in_memory();
    /// let prepared = client.enqueue_by_name("reports.build", &serde_json::json!({})).prepare().await?;
    /// assert_eq!(prepared.message().queue, "default");
    /// assert_eq!(client.inspector().stats("default").await?.pending, 0, "nothing sent");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Enqueue::send`], but never the broker's.
    pub async fn prepare(self) -> Result<Prepared<'a, O>> {
        let core = self.core;
        let planned = self.planned().await?;
        Ok(Prepared {
            message: core.outbound(&planned.envelope)?,
            task: planned.envelope.task,
            unique: planned.unique,
            core,
            _output: PhantomData,
        })
    }

    /// Resolves the callbacks and declared options, then plans the envelope.
    async fn planned(mut self) -> Result<crate::plan::Planned> {
        let core = self.core;
        if !self.call.on_success.is_empty() || !self.call.on_failure.is_empty() {
            workflow::check_supported(core)?;
        }
        // By-name callbacks take the options their tasks declare, like workflow steps.
        workflow::resolve_callbacks(core, &mut self.call.on_success).await?;
        workflow::resolve_callbacks(core, &mut self.call.on_failure).await?;
        let declared = match self.declared {
            Declared::Known(options) => Some(*options),
            Declared::ByName => core.declared_options(&self.name).await?,
        };
        plan(
            &self.name,
            self.args?,
            declared.as_ref(),
            &self.call,
            core.planning(),
        )
    }
}

/// An enqueue planned, sealed and signed, not yet sent ([`Enqueue::prepare`]): the message to
/// write, the uniqueness claim that must guard it, and the handles to hand back once written.
#[derive(Debug)]
#[must_use = "a prepared enqueue does nothing until its message is written"]
pub struct Prepared<'a, O> {
    core: &'a ClientCore,
    message: OutboundMessage,
    task: String,
    unique: Option<(String, Duration)>,
    _output: PhantomData<fn() -> O>,
}

impl<O> Prepared<'_, O> {
    /// The message to write, exactly as the broker would receive it.
    pub fn message(&self) -> &OutboundMessage {
        &self.message
    }

    /// The uniqueness key and window that must guard the write, when the task declares one.
    pub fn unique(&self) -> Option<(&str, Duration)> {
        self.unique
            .as_ref()
            .map(|(key, window)| (key.as_str(), *window))
    }

    /// The broker of the client that prepared it: the writer checks it is its own.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.core.broker
    }

    /// What happened, once the writer wrote the message (`holder`: `None`) or found its
    /// uniqueness key held (`holder`: the holder's id).
    pub fn written(self, holder: Option<TaskId>) -> Sent<O> {
        match holder {
            None => {
                count_enqueued(&self.task, &self.message.queue, 1);
                Sent::Enqueued(self.core.result_handle(self.message.id))
            }
            Some(holder) => Sent::Duplicate(self.core.result_handle(holder)),
        }
    }
}

impl<'a, O: Send + 'a> IntoFuture for Enqueue<'a, O> {
    type Output = Result<AsyncResult<O>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { self.send().await.map(Sent::into_handle) })
    }
}
