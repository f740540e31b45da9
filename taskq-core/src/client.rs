//! [`Client`]: enqueue typed tasks and get their results.

use std::{marker::PhantomData, sync::Arc, time::Duration};

use serde::de::DeserializeOwned;

use crate::{
    enqueue::{count_enqueued, encode_args, plan, CallOptions, Planned},
    envelope::DEFAULT_MAX_PAYLOAD_BYTES,
    Broker, Clock, Enqueue, Error, MemoryBroker, MemoryResultBackend, OutboundMessage, Result,
    ResultBackend, Run, Sent, TaskId, TaskOptions, TaskResult, TaskState,
};

/// How long a revocation is remembered.
const REVOCATION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

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
    /// How long an enqueue into a full queue waits for room before failing.
    room_wait: std::time::Duration,
    /// The key every envelope is signed with, when set.
    signing: Option<crate::SigningKey>,
    /// Keys arguments are sealed and results opened with, when set.
    encryption: Option<crate::Encryption>,
    /// How long the records of workflows this client sends are kept.
    workflow_ttl: std::time::Duration,
    /// The keys group members' outcomes must be signed with, when continuing workflows.
    outcome_keys: Option<crate::Keyring>,
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
                room_wait: std::time::Duration::ZERO,
                signing: None,
                encryption: None,
                workflow_ttl: crate::DEFAULT_RESULT_TTL,
                outcome_keys: None,
            }),
        }
    }

    /// The same client with another payload limit (default 1 MiB per encoded envelope).
    pub fn with_max_payload_bytes(self, limit: usize) -> Self {
        self.edited(|inner| inner.max_payload_bytes = limit)
    }

    /// The same client, whose enqueues into a full queue (flow control,
    /// [`Error::QueueFull`](crate::Error::QueueFull)) wait up to `wait` for room, retrying with
    /// backoff, instead of failing at once (default: no wait). Back-pressure for producers that
    /// can afford to slow down.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::{sync::Arc, time::Duration};
    /// use taskq_core::{Client, MemoryBroker, MemoryBrokerConfig, MemoryResultBackend};
    /// let broker = MemoryBroker::with_config(MemoryBrokerConfig::default().with_capacity(1));
    /// let client = Client::new(Arc::new(broker), Arc::new(MemoryResultBackend::new()))
    ///     .with_room_wait(Duration::from_millis(50));
    /// client.enqueue_by_name("a.task", &serde_json::json!({})).await.unwrap();
    /// let full = client.enqueue_by_name("a.task", &serde_json::json!({})).await;
    /// assert!(matches!(full, Err(taskq_core::Error::QueueFull { .. })));
    /// # }
    /// ```
    pub fn with_room_wait(self, wait: std::time::Duration) -> Self {
        self.edited(|inner| inner.room_wait = wait)
    }

    /// The same client, signing every envelope it sends with `key` (HMAC-SHA256; workers
    /// verify with a [`Keyring`](crate::Keyring)). See [`crate::signing`].
    ///
    /// ```
    /// use taskq_core::{Client, SigningKey};
    /// let client = Client::in_memory().with_signing_key(SigningKey::new("k1", vec![7; 32]));
    /// # let _ = client;
    /// ```
    pub fn with_signing_key(self, key: crate::SigningKey) -> Self {
        self.edited(|inner| inner.signing = Some(key))
    }

    /// The same client, sealing every task's arguments and opening results with `keys`
    /// (workers need the same keys). See [`crate::encryption`].
    ///
    /// ```
    /// use taskq_core::{Client, Encryption};
    /// let client = Client::in_memory().with_encryption(Encryption::new("k1", [7; 32]));
    /// # let _ = client;
    /// ```
    pub fn with_encryption(self, keys: crate::Encryption) -> Self {
        self.edited(|inner| inner.encryption = Some(keys))
    }

    /// The same client, keeping the records of the workflows it sends (a chain's members, a
    /// group's members and what follows it) for `ttl` (default 24 h, the default result TTL).
    /// Every member's report extends a group's record to the reporting worker's result TTL, so
    /// a group lives while its members keep finishing; set this to at least the longest time
    /// a group's first member may take to finish, or its record expires first and what follows
    /// the group cannot run.
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = taskq_core::Client::in_memory().with_workflow_ttl(Duration::from_secs(7 * 86_400));
    /// # let _ = client;
    /// ```
    pub fn with_workflow_ttl(self, ttl: std::time::Duration) -> Self {
        self.edited(|inner| inner.workflow_ttl = ttl)
    }

    /// The same client, which, continuing a workflow (a worker's client), trusts a group
    /// member's recorded outcome only when it is signed by a key of `keyring`, if the keyring
    /// requires signatures: a chord's callback takes its input from those records, in the
    /// result backend, where nothing else authenticates them. Workers set it from their own
    /// `verify_signatures` keyring; outcomes are signed with the client's signing key.
    ///
    /// ```
    /// use taskq_core::{Client, Keyring, SigningKey};
    /// let key = SigningKey::new("k1", vec![7; 32]);
    /// let client = Client::in_memory()
    ///     .with_signing_key(key.clone())
    ///     .with_outcome_keys(Keyring::new(vec![key]).required());
    /// # let _ = client;
    /// ```
    pub fn with_outcome_keys(self, keyring: crate::Keyring) -> Self {
        self.edited(|inner| inner.outcome_keys = Some(keyring))
    }

    /// The key outcomes are signed with, and the keys they are checked against.
    pub(crate) fn outcome_signing(&self) -> (Option<&crate::SigningKey>, Option<&crate::Keyring>) {
        (
            self.inner.signing.as_ref(),
            self.inner.outcome_keys.as_ref(),
        )
    }

    /// How long the records of workflows this client sends are kept.
    pub(crate) fn workflow_ttl(&self) -> std::time::Duration {
        self.inner.workflow_ttl
    }

    /// `envelope` as a message: arguments sealed, then signed, as the client is configured.
    pub(crate) fn outbound(&self, envelope: &crate::Envelope) -> Result<OutboundMessage> {
        let reply_to = self
            .inner
            .backend
            .reply_to()
            .filter(|_| !envelope.headers.contains_key(crate::REPLY_TO_HEADER));
        if self.inner.signing.is_none() && self.inner.encryption.is_none() && reply_to.is_none() {
            return OutboundMessage::from_envelope(envelope, self.max_payload_bytes());
        }
        let mut sent = envelope.clone();
        if let Some(reply_to) = reply_to {
            sent.headers
                .insert(crate::REPLY_TO_HEADER.to_owned(), reply_to.to_owned());
        }
        if let Some(keys) = &self.inner.encryption {
            let sealed = keys.seal(
                sent.args.get(),
                &crate::Encryption::associated(sent.id, &sent.task),
            );
            sent.args =
                serde_json::value::to_raw_value(&sealed).map_err(|source| Error::Serialize {
                    what: "sealed arguments",
                    source,
                })?;
        }
        if let Some(key) = &self.inner.signing {
            key.sign(&mut sent);
        }
        OutboundMessage::from_envelope(&sent, self.max_payload_bytes())
    }

    fn edited(&self, edit: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Inner {
            broker: self.inner.broker.clone(),
            backend: self.inner.backend.clone(),
            clock: self.inner.clock.clone(),
            max_payload_bytes: self.inner.max_payload_bytes,
            room_wait: self.inner.room_wait,
            signing: self.inner.signing.clone(),
            encryption: self.inner.encryption.clone(),
            workflow_ttl: self.inner.workflow_ttl,
            outcome_keys: self.inner.outcome_keys.clone(),
        };
        edit(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Sends `value` with `send`, again while it fails with a full queue, with backoff, for up
    /// to the client's room wait (copies of `value` are made only then).
    async fn waiting_for_room<V, T, F, Fut>(&self, value: V, send: F) -> Result<T>
    where
        V: Clone,
        F: Fn(V) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        if self.inner.room_wait.is_zero() {
            return send(value).await;
        }
        let deadline = tokio::time::Instant::now() + self.inner.room_wait;
        let backoff = crate::RetryPolicy::exponential(
            std::time::Duration::from_millis(5),
            std::time::Duration::from_millis(500),
        );
        let mut attempt = 0;
        loop {
            match send(value.clone()).await {
                Err(Error::QueueFull { .. }) if tokio::time::Instant::now() < deadline => {
                    let pause = backoff
                        .delay(attempt)
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// The keys arguments are sealed and results opened with, if any.
    pub(crate) fn encryption(&self) -> Option<&crate::Encryption> {
        self.inner.encryption.as_ref()
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
        self.inner.clock.clone()
    }

    /// The payload limit in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.inner.max_payload_bytes
    }

    /// Starts an enqueue of `task` with its declared options; `.await` it to send.
    ///
    /// See [`Enqueue`] for per-call options (countdown, ETA, expiry, priority, queue, id) and
    /// the [`enqueue`](crate::enqueue) module for how they combine with the declared ones.
    pub fn enqueue<T: Run>(&self, task: T) -> Enqueue<'_, T::Output> {
        Enqueue::typed(self, T::NAME, encode_args(&task), T::options())
    }

    /// Starts an enqueue by task name with JSON arguments, for producers that do not link the
    /// task's Rust type (CLI, beat, other services). The options the task declares are looked
    /// up in the broker's [`TaskCatalog`](crate::TaskCatalog) when it is sent.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// use taskq_core::{Client, TaskCatalog, TaskDeclaration, TaskOptions};
    /// let client = Client::in_memory();
    /// let declared = TaskOptions::new().with_queue("emails").with_max_retries(5);
    /// // What a worker registering `emails.send` publishes at start:
    /// client.broker().publish_tasks(&[TaskDeclaration::new("emails.send", &declared)]).await?;
    /// client.enqueue_by_name("emails.send", &serde_json::json!({"to": "a@b.c"})).await?;
    /// assert_eq!(client.inspector().stats("emails").await?.pending, 1);
    /// # Ok(()) }
    /// ```
    pub fn enqueue_by_name(
        &self,
        name: &str,
        args: &serde_json::Value,
    ) -> Enqueue<'_, serde_json::Value> {
        Enqueue::by_name(self, name, encode_args(args))
    }

    /// Enqueues one invocation of the task named `name` per element of `args`, in one broker
    /// call, with the task's declared options; returns their ids in order.
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
        let declared = self.declared_options(name).await?;
        let planned = args
            .into_iter()
            .map(|args| encode_args(&args))
            .collect::<Result<Vec<_>>>()?;
        self.send_many(name, planned, declared.as_ref()).await
    }

    /// Enqueues many invocations of one task in one broker call, each with the task's declared
    /// options.
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
        let args = tasks
            .into_iter()
            .map(|task| encode_args(&task))
            .collect::<Result<Vec<_>>>()?;
        let ids = self.send_many(T::NAME, args, Some(&T::options())).await?;
        Ok(ids.into_iter().map(|id| self.result_handle(id)).collect())
    }

    /// The options task `name` declared, as published in the broker's catalog.
    pub(crate) async fn declared_options(&self, name: &str) -> Result<Option<TaskOptions>> {
        Ok(self
            .broker()
            .task_declaration(name)
            .await?
            .map(|declared| declared.to_options()))
    }

    /// Plans and sends one enqueue per element of `args`, in one broker call; invocations of
    /// a task that declares uniqueness each go through their own guarded enqueue instead.
    async fn send_many(
        &self,
        name: &str,
        args: Vec<Box<serde_json::value::RawValue>>,
        declared: Option<&TaskOptions>,
    ) -> Result<Vec<TaskId>> {
        let now = self.clock().now();
        let call = CallOptions::default();
        // One task, one set of options: every invocation has the same queue and uniqueness.
        let planned = args
            .into_iter()
            .map(|args| plan(name, args, declared, &call, now, self.encryption()))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = planned.first() else {
            return Ok(Vec::new());
        };
        if first.unique.is_some() {
            let mut ids = Vec::with_capacity(planned.len());
            for planned in planned {
                ids.push(self.send_planned::<()>(planned).await?.into_handle().id());
            }
            return Ok(ids);
        }
        let queue = first.envelope.queue.clone();
        let messages = planned
            .iter()
            .map(|p| self.outbound(&p.envelope))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<TaskId> = messages.iter().map(|m| m.id).collect();
        self.waiting_for_room(messages, |messages| self.broker().enqueue(messages))
            .await?;
        count_enqueued(name, &queue, ids.len() as u64);
        Ok(ids)
    }

    /// Sends one planned enqueue: guarded by its uniqueness claim if it has one.
    pub(crate) async fn send_planned<O>(&self, planned: Planned) -> Result<Sent<O>> {
        let Planned { envelope, unique } = planned;
        let message = self.outbound(&envelope)?;
        if let Some((key, window)) = unique {
            let claimed = self
                .waiting_for_room(message, |message| {
                    self.broker().enqueue_unique(message, &key, window)
                })
                .await?;
            if let Some(holder) = claimed {
                return Ok(Sent::Duplicate(self.result_handle(holder)));
            }
        } else {
            self.waiting_for_room(vec![message], |messages| self.broker().enqueue(messages))
                .await?;
        }
        count_enqueued(&envelope.task, &envelope.queue, 1);
        Ok(Sent::Enqueued(self.result_handle(envelope.id)))
    }

    /// The stored record of any task, untyped; `None` while nothing is known (PENDING). A
    /// sealed result is opened when the client has the keys ([`Client::with_encryption`]).
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn result(&self, id: TaskId) -> Result<Option<TaskResult>> {
        Ok(self
            .backend()
            .get(id)
            .await?
            .map(|record| self.opened(record)))
    }

    /// The current states of `ids`, in order (PENDING where nothing is recorded): one read per
    /// id, all in flight at once (a multiplexed connection pipelines them), e.g. a group's
    /// members.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn states(&self, ids: &[TaskId]) -> Result<Vec<TaskState>> {
        let records =
            futures_util::future::try_join_all(ids.iter().map(|id| self.backend().get(*id)))
                .await?;
        Ok(records
            .into_iter()
            .map(|record| record.map_or(TaskState::Pending, |r| r.state))
            .collect())
    }

    /// `record` with its result opened when it is sealed and the client has the keys (left
    /// as it is otherwise).
    pub fn opened(&self, mut record: TaskResult) -> TaskResult {
        let Some(keys) = &self.inner.encryption else {
            return record;
        };
        let Some(sealed) = record
            .result
            .as_deref()
            .and_then(|raw| crate::Encryption::sealed_text(raw.get()))
        else {
            return record;
        };
        if let Ok(opened) = keys.open(
            &sealed,
            &crate::Encryption::associated(record.id, &record.task),
        ) {
            if let Ok(raw) = serde_json::value::RawValue::from_string(opened) {
                record.result = Some(raw);
            }
        }
        record
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
            encryption: self.inner.encryption.clone(),
            _output: PhantomData,
        }
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
    /// Opens sealed results.
    encryption: Option<crate::Encryption>,
    _output: PhantomData<fn() -> T>,
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            backend: self.backend.clone(),
            encryption: self.encryption.clone(),
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
        let opened;
        let raw = match crate::Encryption::sealed_text(raw) {
            Some(sealed) => {
                let keys = self.encryption.as_ref().ok_or_else(|| Error::Invalid {
                    what: "task result",
                    reason: "the result is encrypted; give the client the keys (Client::with_encryption)".into(),
                })?;
                opened = keys
                    .open(
                        &sealed,
                        &crate::Encryption::associated(self.id, &record.task),
                    )
                    .map_err(|err| Error::Invalid {
                        what: "task result",
                        reason: err.to_string(),
                    })?;
                opened.as_str()
            }
            None => raw,
        };
        serde_json::from_str(raw).map_err(|source| Error::Deserialize {
            what: "task result",
            source,
        })
    }
}
