//! [`Client`]: enqueue typed tasks and get their results.

use std::{
    future::{Future, IntoFuture},
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;

use crate::{
    envelope::DEFAULT_MAX_PAYLOAD_BYTES, Broker, Clock, Envelope, Error, MemoryBroker,
    MemoryResultBackend, OutboundMessage, Result, ResultBackend, Run, Task, TaskId, TaskOptions,
    TaskResult, TaskState,
};

/// The handle applications use to enqueue tasks and read results; cheap to clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use serde::{Deserialize, Serialize};
/// use taskq_core::{Client, Run, Task, TaskContext, TaskError};
///
/// #[derive(Task, Serialize, Deserialize)]
/// #[task(name = "math.add")]
/// struct Add { a: i64, b: i64 }
///
/// impl Run for Add {
///     type Output = i64;
///     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> { Ok(self.a + self.b) }
/// }
///
/// let client = Client::in_memory();
/// let handle = client.enqueue(Add { a: 1, b: 2 }).await?;
/// assert_eq!(client.broker().stats("default").await?.pending, 1);
/// # let _ = handle;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker: Arc<dyn Broker>,
    backend: Arc<dyn ResultBackend>,
    clock: Clock,
    max_payload_bytes: usize,
}

impl Client {
    /// A client on a fresh [`MemoryBroker`] and [`MemoryResultBackend`].
    pub fn in_memory() -> Self {
        Self::new(
            Arc::new(MemoryBroker::new()),
            Arc::new(MemoryResultBackend::new()),
        )
    }

    /// A client on the given broker and result backend.
    pub fn new(broker: Arc<dyn Broker>, backend: Arc<dyn ResultBackend>) -> Self {
        let clock = broker.clock();
        Self {
            inner: Arc::new(Inner {
                broker,
                backend,
                clock,
                max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            }),
        }
    }

    /// The same client with another payload limit (default 1 MiB per encoded envelope).
    pub fn with_max_payload_bytes(self, limit: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                broker: self.inner.broker.clone(),
                backend: self.inner.backend.clone(),
                clock: self.inner.clock,
                max_payload_bytes: limit,
            }),
        }
    }

    /// The broker messages go through.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// The broker's operator queries (counts, dead letters, workers, requeue, purge).
    pub fn inspector(&self) -> Arc<dyn crate::Inspector> {
        self.inner.broker.clone()
    }

    /// The result backend.
    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        &self.inner.backend
    }

    /// The broker's clock.
    pub fn clock(&self) -> Clock {
        self.inner.clock
    }

    /// The payload limit in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.inner.max_payload_bytes
    }

    /// Starts an enqueue of `task` with its default options; `.await` it to send.
    ///
    /// See [`Enqueue`] for per-call options (countdown, ETA, expiry, priority, queue, id).
    pub fn enqueue<T: Run>(&self, task: T) -> Enqueue<'_, T::Output> {
        let envelope = self.envelope_for(&task);
        Enqueue::new(self, envelope, T::options())
    }

    /// Starts an enqueue by task name with JSON arguments, for producers that do not link the
    /// task's Rust type (CLI, beat, other services).
    pub fn enqueue_by_name(
        &self,
        name: &str,
        args: &serde_json::Value,
    ) -> Enqueue<'_, serde_json::Value> {
        let options = TaskOptions::new();
        let envelope = Envelope::new(name, args, options.queue(), self.clock().now());
        Enqueue::new(self, envelope, options)
    }

    /// Enqueues one invocation of the task named `name` per element of `args`, in one broker
    /// call, with default options; returns their ids in order.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// let client = taskq_core::Client::in_memory();
    /// let ids = client
    ///     .enqueue_many_by_name("demo.add", (0..3).map(|i| serde_json::json!({"a": i, "b": 1})))
    ///     .await?;
    /// assert_eq!(ids.len(), 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::enqueue_many`].
    pub async fn enqueue_many_by_name(
        &self,
        name: &str,
        args: impl IntoIterator<Item = serde_json::Value>,
    ) -> Result<Vec<TaskId>> {
        let options = TaskOptions::new();
        let now = self.clock().now();
        let mut messages = Vec::new();
        for args in args {
            let mut envelope = Envelope::new(name, &args, options.queue(), now)?;
            envelope.priority = options.priority();
            messages.push(OutboundMessage::from_envelope(
                &envelope,
                self.max_payload_bytes(),
            )?);
        }
        let ids: Vec<TaskId> = messages.iter().map(|m| m.id).collect();
        self.broker().enqueue(messages).await?;
        enqueued(name, options.queue(), ids.len() as u64);
        Ok(ids)
    }

    /// Enqueues many invocations of one task in one broker call.
    ///
    /// # Errors
    ///
    /// The first encoding error, or the broker's error; on a broker error none were enqueued
    /// by the in-memory broker and an unknown subset by a networked one (ids are returned only
    /// on success, so re-sending is the caller's choice).
    pub async fn enqueue_many<T: Run>(
        &self,
        tasks: impl IntoIterator<Item = T>,
    ) -> Result<Vec<AsyncResult<T::Output>>> {
        let options = T::options();
        let now = self.clock().now();
        let mut messages = Vec::new();
        for task in tasks {
            let mut envelope = self.envelope_for(&task)?;
            apply_defaults(&mut envelope, &options, now);
            messages.push(OutboundMessage::from_envelope(
                &envelope,
                self.max_payload_bytes(),
            )?);
        }
        let handles = messages.iter().map(|m| self.result_handle(m.id)).collect();
        let count = messages.len() as u64;
        self.broker().enqueue(messages).await?;
        enqueued(T::NAME, options.queue(), count);
        Ok(handles)
    }

    /// The stored record of any task, untyped; `None` while nothing is known (PENDING).
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn result(&self, id: TaskId) -> Result<Option<TaskResult>> {
        self.backend().get(id).await
    }

    /// Revokes `id` for a day: workers skip it and record REVOKED; with `terminate`, a running
    /// execution is stopped too (its future is dropped). Persisted, so workers that were not
    /// listening at the time still honour it.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// let client = taskq_core::Client::in_memory();
    /// let id = taskq_core::TaskId::new();
    /// client.revoke(id, false).await?;
    /// assert_eq!(client.broker().revoked().await?, vec![id]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The broker's error.
    pub async fn revoke(&self, id: TaskId, terminate: bool) -> Result<()> {
        self.broker().revoke(id, terminate, REVOCATION_TTL).await
    }

    /// A typed handle for a task id obtained elsewhere.
    pub fn result_handle<T>(&self, id: TaskId) -> AsyncResult<T> {
        AsyncResult {
            id,
            backend: self.inner.backend.clone(),
            _output: PhantomData,
        }
    }

    fn envelope_for<T: Task>(&self, task: &T) -> Result<Envelope> {
        Envelope::new(T::NAME, task, T::options().queue(), self.clock().now())
    }
}

/// Task name plus a stable digest (UUID v5) of the encoded arguments.
fn default_unique_key(envelope: &Envelope) -> String {
    let digest = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, envelope.args.get().as_bytes());
    format!("{}:{digest}", envelope.task)
}

/// Counts enqueues in `taskq_tasks_enqueued_total{task,queue}` (a no-op without a recorder).
fn enqueued(task: &str, queue: &str, count: u64) {
    metrics::counter!("taskq_tasks_enqueued_total", "task" => task.to_owned(), "queue" => queue.to_owned())
        .increment(count);
}

/// How long a revocation is remembered.
const REVOCATION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

fn apply_defaults(envelope: &mut Envelope, options: &TaskOptions, now: DateTime<Utc>) {
    envelope.priority = options.priority();
    envelope.max_retries = Some(options.max_retries());
    if let Some(ttl) = options.expires() {
        envelope.expires = Some(now + to_chrono(ttl));
    }
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
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
/// assert_eq!(client.broker().stats("reports").await?.scheduled, 1);
/// # let _ = handle;
/// # Ok(()) }
/// ```
#[must_use = "an enqueue does nothing until it is awaited"]
#[derive(Debug)]
pub struct Enqueue<'a, O> {
    client: &'a Client,
    envelope: Result<Envelope>,
    options: TaskOptions,
    countdown: Option<Duration>,
    expires_in: Option<Duration>,
    priority: Option<u8>,
    unique_key: Option<String>,
    _output: PhantomData<fn() -> O>,
}

/// Header carrying the uniqueness key, so the worker can release it when the task finishes.
pub const UNIQUE_KEY_HEADER: &str = "taskq-unique-key";

impl<'a, O> Enqueue<'a, O> {
    fn new(client: &'a Client, envelope: Result<Envelope>, options: TaskOptions) -> Self {
        Self {
            client,
            envelope,
            options,
            countdown: None,
            expires_in: None,
            priority: None,
            unique_key: None,
            _output: PhantomData,
        }
    }

    /// Makes this enqueue unique for `window`: while an earlier invocation with the same key
    /// (default: task name and arguments) has not finished, return its handle instead.
    pub fn unique_for(mut self, window: Duration) -> Self {
        self.options = self.options.with_unique_for(window);
        self
    }

    /// Uses `key` instead of the task name and arguments to decide what counts as a duplicate.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    fn edit(mut self, f: impl FnOnce(&mut Envelope)) -> Self {
        if let Ok(envelope) = &mut self.envelope {
            f(envelope);
        }
        self
    }

    /// Runs no earlier than `delay` from now.
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.countdown = Some(delay);
        self
    }

    /// Runs no earlier than `at`.
    pub fn eta(self, at: DateTime<Utc>) -> Self {
        self.edit(|e| e.eta = Some(at))
    }

    /// Ends as EXPIRED instead of running if not started within `ttl` from now.
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.expires_in = Some(ttl);
        self
    }

    /// Ends as EXPIRED instead of running if not started by `at`.
    pub fn expires_at(self, at: DateTime<Utc>) -> Self {
        self.edit(|e| e.expires = Some(at))
    }

    /// Priority 0 (lowest) to 9 (highest) within the queue; larger values are clamped to 9.
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority.min(9));
        self
    }

    /// Routes this invocation to `queue` instead of the task's default.
    pub fn queue(self, queue: impl Into<String>) -> Self {
        let queue = queue.into();
        self.edit(|e| e.queue = queue)
    }

    /// Uses `id` instead of a random one (e.g. to make a retried enqueue idempotent).
    pub fn id(self, id: TaskId) -> Self {
        self.edit(|e| e.id = id)
    }

    /// Adds a header the task can read from its context.
    pub fn header(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let (key, value) = (key.into(), value.into());
        self.edit(|e| {
            e.headers.insert(key, value);
        })
    }

    /// Allows `max_retries` retries for this invocation.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.options = self.options.with_max_retries(max_retries);
        self
    }

    async fn send(self) -> Result<AsyncResult<O>> {
        let mut envelope = self.envelope?;
        let now = self.client.clock().now();
        let expires = envelope.expires;
        apply_defaults(&mut envelope, &self.options, now);
        if let Some(at) = expires {
            envelope.expires = Some(at);
        }
        if let Some(ttl) = self.expires_in {
            envelope.expires = Some(now + to_chrono(ttl));
        }
        if let Some(priority) = self.priority {
            envelope.priority = priority;
        }
        if let Some(delay) = self.countdown {
            envelope.eta = Some(now + to_chrono(delay));
        }
        if envelope.queue.is_empty() {
            return Err(Error::Invalid {
                what: "queue",
                reason: "queue name must not be empty".into(),
            });
        }
        if let Some(window) = self.options.unique_for() {
            let key = self
                .unique_key
                .unwrap_or_else(|| default_unique_key(&envelope));
            envelope
                .headers
                .insert(UNIQUE_KEY_HEADER.to_owned(), key.clone());
            let message =
                OutboundMessage::from_envelope(&envelope, self.client.max_payload_bytes())?;
            return match self
                .client
                .broker()
                .enqueue_unique(message, &key, window)
                .await?
            {
                None => {
                    enqueued(&envelope.task, &envelope.queue, 1);
                    Ok(self.client.result_handle(envelope.id))
                }
                Some(existing) => Ok(self.client.result_handle(existing)),
            };
        }
        let message = OutboundMessage::from_envelope(&envelope, self.client.max_payload_bytes())?;
        self.client.broker().enqueue(vec![message]).await?;
        enqueued(&envelope.task, &envelope.queue, 1);
        Ok(self.client.result_handle(envelope.id))
    }
}

impl<'a, O: Send + 'a> IntoFuture for Enqueue<'a, O> {
    type Output = Result<AsyncResult<O>>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A typed handle on one invocation's result.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use std::time::Duration;
/// use taskq_core::{Client, TaskId, TaskState};
/// let client = Client::in_memory();
/// let handle = client.result_handle::<u64>(TaskId::new());
/// assert_eq!(handle.state().await?, TaskState::Pending);
/// assert!(handle.wait(Duration::from_millis(10)).await.unwrap_err().is_transient());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncResult<T> {
    id: TaskId,
    backend: Arc<dyn ResultBackend>,
    _output: PhantomData<fn() -> T>,
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            backend: self.backend.clone(),
            _output: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> AsyncResult<T> {
    /// The invocation's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The current state; PENDING when nothing is recorded yet.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn state(&self) -> Result<TaskState> {
        Ok(self.info().await?.map_or(TaskState::Pending, |r| r.state))
    }

    /// The full stored record, if any.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn info(&self) -> Result<Option<TaskResult>> {
        self.backend.get(self.id).await
    }

    /// Waits up to `timeout` for the final state, woken by the result write, and returns the
    /// typed output.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if no final state arrived in time, [`Error::TaskFailed`] for FAILURE,
    /// REVOKED or EXPIRED, [`Error::Deserialize`] if the output does not match `T`.
    pub async fn wait(&self, timeout: Duration) -> Result<T> {
        match self.backend.wait(self.id, timeout).await? {
            Some(record) if record.state.is_ready() => self.output_of(record),
            _ => Err(Error::Timeout(timeout)),
        }
    }

    fn output_of(&self, record: TaskResult) -> Result<T> {
        if record.state != TaskState::Success {
            return Err(Error::TaskFailed {
                id: self.id,
                state: record.state,
                message: record.error.unwrap_or_default(),
            });
        }
        let raw = record.result.as_deref().map_or("null", |r| r.get());
        serde_json::from_str(raw).map_err(|source| Error::Deserialize {
            what: "task result",
            source,
        })
    }
}
