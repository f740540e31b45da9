//! [`Client`]: enqueue typed tasks and get their results.

use std::{sync::Arc, time::Duration};

use crate::{
    backend::{MemoryResultBackend, ResultBackend},
    broker::{Broker, HeldMessage, Inspector, MemoryBroker, PayloadFields},
    client_core::ClientCore,
    clock::Clock,
    encryption::Encryption,
    enqueue::Enqueue,
    error::Result,
    id::TaskId,
    plan::encode_args,
    result::{TaskResult, TaskState},
    result_handle::AsyncResult,
    signing::{Keyring, SigningKey},
    task::Run,
    workflow::{
        self, Chain, ChainResult, Finished, Group, GroupNode, GroupResult, Node, PreparedWorkflow,
        WorkflowKind, WorkflowRecord,
    },
};

/// A chain's root id, kind, last step's id and nodes.
fn chain_parts<O>(chain: Chain<O>) -> Result<(TaskId, WorkflowKind, TaskId, Vec<Node>)> {
    let nodes = chain.into_nodes()?;
    let (root, kind) = match nodes.first() {
        Some(Node::Group(group)) => (group.id, WorkflowKind::Chord),
        _ => (TaskId::new(), WorkflowKind::Chain),
    };
    let last = nodes.last().map(Node::output_id).unwrap_or(root);
    Ok((root, kind, last, nodes))
}

/// A group's id and its node.
fn group_parts<O>(group: Group<O>) -> Result<(TaskId, Node)> {
    let (id, members) = group.into_parts()?;
    let node = Node::Group(GroupNode {
        id,
        members,
        settled: false,
    });
    Ok((id, node))
}

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
    core: Arc<ClientCore>,
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
        Self {
            core: Arc::new(ClientCore::new(broker, backend)),
        }
    }

    /// A client whose core is this one's, changed by `edit`.
    fn edited(&self, edit: impl FnOnce(&mut ClientCore)) -> Self {
        let mut core = ClientCore::clone(&self.core);
        edit(&mut core);
        Self {
            core: Arc::new(core),
        }
    }

    /// The same client with another payload limit (default 1 MiB per encoded envelope).
    pub fn with_max_payload_bytes(self, limit: usize) -> Self {
        self.edited(|core| core.max_payload_bytes = limit)
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
    pub fn with_room_wait(self, wait: Duration) -> Self {
        self.edited(|core| core.room_wait = wait)
    }

    /// The same client, signing every envelope it sends with `key` (HMAC-SHA256; workers
    /// verify with a [`Keyring`](Keyring)). See [`crate::signing`].
    ///
    /// ```
    /// use taskq_core::{Client, SigningKey};
    /// let client = Client::in_memory().with_signing_key(SigningKey::new("k1", vec![7; 32]));
    /// # let _ = client;
    /// ```
    pub fn with_signing_key(self, key: SigningKey) -> Self {
        self.edited(|core| core.signing = Some(key))
    }

    /// The same client, sealing every task's arguments and opening results with `keys`
    /// (workers need the same keys). See [`crate::encryption`].
    ///
    /// ```
    /// use taskq_core::{Client, Encryption};
    /// let client = Client::in_memory().with_encryption(Encryption::new("k1", [7; 32]));
    /// # let _ = client;
    /// ```
    pub fn with_encryption(self, keys: Encryption) -> Self {
        self.edited(|core| core.encryption = Some(keys))
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
    pub fn with_workflow_ttl(self, ttl: Duration) -> Self {
        self.edited(|core| core.workflow_ttl = ttl)
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
    pub fn with_outcome_keys(self, keyring: Keyring) -> Self {
        self.edited(|core| core.outcome_keys = Some(keyring))
    }

    /// The same client, whose partitioned invocations into `queue` that name no limit (neither
    /// [`Enqueue::partition_concurrency`](crate::Enqueue::partition_concurrency) nor their task's
    /// `partition_concurrency`) get `limit`: at most that many of one partition held by
    /// workers at once, across the fleet (at least 1). A queue's limit for every tenant,
    /// without repeating it on every task. See docs/partitions.md.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), taskq_core::Error> {
    /// use std::time::Duration;
    /// use taskq_core::{Client, WorkerId};
    /// let client = Client::in_memory().with_partition_concurrency("exports", 1);
    /// for _ in 0..3 {
    ///     client.enqueue_by_name("export.run", &serde_json::json!({}))
    ///         .queue("exports").partition("tenant-7").await?;
    /// }
    /// let queues = ["exports".to_owned()];
    /// let held = client.broker().fetch(&WorkerId::generate(), &queues, 10, Duration::ZERO).await?;
    /// assert_eq!(held.len(), 1, "one of tenant-7's three at a time");
    /// # Ok(()) }
    /// ```
    pub fn with_partition_concurrency(self, queue: impl Into<String>, limit: u32) -> Self {
        self.edited(|core| {
            Arc::make_mut(&mut core.partition_limits).insert(queue.into(), limit.max(1));
        })
    }

    /// The broker messages go through.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.core.broker
    }

    /// The broker's operator queries (counts, dead letters, workers, requeue, purge).
    pub fn inspector(&self) -> Arc<dyn Inspector> {
        self.core.broker.clone()
    }

    /// Tasks for Python Celery workers, and their results (Redis): see [`crate::celery`].
    pub fn celery(&self) -> crate::celery::CeleryClient<'_> {
        crate::celery::CeleryClient::new(self)
    }

    /// The result backend.
    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        &self.core.backend
    }

    /// The broker's clock.
    pub fn clock(&self) -> Clock {
        self.core.clock.clone()
    }

    /// The payload limit in bytes.
    pub fn max_payload_bytes(&self) -> usize {
        self.core.max_payload_bytes
    }

    /// Starts an enqueue of `task` with its declared options; `.await` it to send.
    ///
    /// See [`Enqueue`] for per-call options (countdown, ETA, expiry, priority, queue, id) and
    /// the [`enqueue`](crate::enqueue) module for how they combine with the declared ones.
    pub fn enqueue<T: Run>(&self, task: T) -> Enqueue<'_, T::Output> {
        Enqueue::typed(&self.core, T::NAME, encode_args(&task), T::options())
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
        Enqueue::by_name(&self.core, name, encode_args(args))
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
        let declared = self.core.declared_options(name).await?;
        let planned = args
            .into_iter()
            .map(|args| encode_args(&args))
            .collect::<Result<Vec<_>>>()?;
        self.core.send_many(name, planned, declared.as_ref()).await
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
        let ids = self
            .core
            .send_many(T::NAME, args, Some(&T::options()))
            .await?;
        Ok(ids.into_iter().map(|id| self.result_handle(id)).collect())
    }

    /// Sends a chain (or a chord: a group followed by steps). Every id is assigned and the
    /// workflow's record is written before the first step is enqueued.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// use serde::{Deserialize, Serialize};
    /// use taskq_core::{workflow::chain, Client, Run, Task, TaskContext, TaskError};
    ///
    /// #[derive(Task, Serialize, Deserialize)]
    /// #[task(name = "math.double")]
    /// struct Double { #[task(input)] n: i64 }
    /// impl Run for Double {
    ///     type Output = i64;
    ///     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> { Ok(self.n * 2) }
    /// }
    ///
    /// let client = Client::in_memory();
    /// let sent = client
    ///     .send_chain(chain(Double { n: 1 }).then(Double { n: 0 }).then(Double { n: 0 }))
    ///     .await?;
    /// assert_eq!(client.inspector().stats("default").await?.pending, 1, "one step at a time");
    /// assert_eq!(client.workflow(sent.id()).await?.unwrap().members.len(), 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Encoding and validation errors ([`Error::Invalid`](crate::Error::Invalid) for an empty
    /// chain or group, or a bad name), or the broker's or backend's error.
    pub async fn send_chain<O>(&self, chain: Chain<O>) -> Result<ChainResult<O>> {
        let (root, kind, last, nodes) = chain_parts(chain)?;
        workflow::send_workflow(&self.core, root, kind, nodes).await?;
        Ok(ChainResult {
            id: root,
            last: self.result_handle(last),
        })
    }

    /// Plans a chain as [`Client::send_chain`] does and writes nothing: for writers the
    /// client does not own, such as the application's own database transaction
    /// (`taskq_postgres::WorkflowWithin`).
    ///
    /// # Errors
    ///
    /// As [`Client::send_chain`], but never the broker's or backend's.
    pub async fn prepare_chain<O>(
        &self,
        chain: Chain<O>,
    ) -> Result<PreparedWorkflow<ChainResult<O>>> {
        let (root, kind, last, nodes) = chain_parts(chain)?;
        let (_, plan) = workflow::plan_workflow(&self.core, root, kind, nodes).await?;
        let handle = ChainResult {
            id: root,
            last: self.result_handle(last),
        };
        Ok(plan.prepared(&self.core, handle))
    }

    /// Sends a group: every member is enqueued at once (in one broker call).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// use taskq_core::{workflow::{Group, Signature}, Client};
    /// let client = Client::in_memory();
    /// let members = (0..3).map(|i| Signature::by_name("math.square", serde_json::json!([i])));
    /// let sent = client.send_group(Group::<serde_json::Value>::of_signatures(members)).await?;
    /// assert_eq!(sent.members().len(), 3);
    /// assert_eq!(client.inspector().stats("default").await?.pending, 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Client::send_chain`].
    pub async fn send_group<O>(&self, group: Group<O>) -> Result<GroupResult<O>> {
        let (id, node) = group_parts(group)?;
        let record =
            workflow::send_workflow(&self.core, id, WorkflowKind::Group, vec![node]).await?;
        Ok(self.group_handle(&record))
    }

    /// Plans a group as [`Client::send_group`] does and writes nothing (see
    /// [`Client::prepare_chain`]).
    ///
    /// # Errors
    ///
    /// As [`Client::send_group`], but never the broker's or backend's.
    pub async fn prepare_group<O>(
        &self,
        group: Group<O>,
    ) -> Result<PreparedWorkflow<GroupResult<O>>> {
        let (id, node) = group_parts(group)?;
        let (record, plan) =
            workflow::plan_workflow(&self.core, id, WorkflowKind::Group, vec![node]).await?;
        let handle = self.group_handle(&record);
        Ok(plan.prepared(&self.core, handle))
    }

    /// The handle on a sent group: its members' results, in order.
    fn group_handle<O>(&self, record: &WorkflowRecord) -> GroupResult<O> {
        GroupResult {
            id: record.id,
            members: record
                .members
                .iter()
                .map(|member| self.result_handle(*member))
                .collect(),
        }
    }

    /// The record of a workflow (by the id its handle gives) or of a group inside one.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn workflow(&self, id: TaskId) -> Result<Option<WorkflowRecord>> {
        self.core.backend.workflow(id).await
    }

    /// Revokes every task of the workflow `id` that has not finished: pending ones are skipped
    /// and end REVOKED, steps not yet sent end REVOKED when their turn comes, and what follows
    /// them ends too. With `terminate`, running members are stopped. Returns how many ids were
    /// revoked (0 for an unknown workflow).
    ///
    /// # Errors
    ///
    /// The broker's or backend's error.
    pub async fn revoke_workflow(&self, id: TaskId, terminate: bool) -> Result<usize> {
        let Some(record) = self.workflow(id).await? else {
            return Ok(0);
        };
        let ids = if record.all.is_empty() {
            record.members
        } else {
            record.all
        };
        futures_util::future::try_join_all(ids.iter().map(|id| self.revoke(*id, terminate)))
            .await?;
        Ok(ids.len())
    }

    /// Continues the workflows of finished messages: sends the next steps (once per id, however
    /// often this runs for the same message), records group members' outcomes, sends a
    /// group's next step when its last member reports, and ends what will never run (with the
    /// failure that stopped it) so that no waiter hangs. For worker runtimes.
    ///
    /// Idempotent: a worker calls it after storing the results and before acknowledging, and
    /// a redelivered message calls it again.
    ///
    /// # Errors
    ///
    /// The broker's or backend's error; calling again later is safe.
    pub async fn advance_workflows(&self, finished: Vec<Finished>, ttl: Duration) -> Result<()> {
        workflow::advance(&self.core, finished, ttl).await
    }

    /// Where task `id` is held, if a worker holds it now (running, or fetched and about to
    /// run): its queue and the holding worker, read from the broker whether or not the task
    /// records STARTED. `None` when no worker holds it, and on brokers that cannot tell
    /// ([`Inspector::sees_held`](crate::Inspector::sees_held)). Reads every queue's held
    /// messages: an operator's call, not one for a hot path.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
    /// use std::time::Duration;
    /// use taskq_core::{Client, Transport, WorkerId};
    /// let client = Client::in_memory();
    /// let id = client.enqueue_by_name("reports.build", &serde_json::json!({})).await?.id();
    /// assert!(client.find_held(id).await?.is_none(), "queued, not held");
    /// let worker = WorkerId::generate();
    /// client.broker().fetch(&worker, &["default".into()], 1, Duration::ZERO).await?;
    /// let (queue, held) = client.find_held(id).await?.expect("held");
    /// assert_eq!((queue.as_str(), held.worker.as_str()), ("default", worker.as_str()));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The broker's error.
    pub async fn find_held(&self, id: TaskId) -> Result<Option<(String, HeldMessage)>> {
        /// Most held messages read per queue: a fleet holds at most the sum of its workers'
        /// concurrency and prefetch.
        const HELD_READ: usize = 10_000;
        let broker = &self.core.broker;
        if !broker.sees_held() {
            return Ok(None);
        }
        for queue in broker.queues().await? {
            let found = broker
                .held(&queue, HELD_READ)
                .await?
                .into_iter()
                .find(|held| PayloadFields::read(&held.payload).id == Some(id));
            if let Some(held) = found {
                return Ok(Some((queue, held)));
            }
        }
        Ok(None)
    }

    /// The stored record of any task, untyped; `None` while nothing is known (PENDING). A
    /// sealed result is opened when the client has the keys ([`Client::with_encryption`]).
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn result(&self, id: TaskId) -> Result<Option<TaskResult>> {
        Ok(self
            .core
            .backend
            .get(id)
            .await?
            .map(|record| self.core.opened(record)))
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
    pub fn opened(&self, record: TaskResult) -> TaskResult {
        self.core.opened(record)
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
        self.core.result_handle(id)
    }
}
