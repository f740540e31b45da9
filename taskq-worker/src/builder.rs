//! [`WorkerBuilder`]: registers tasks and sets options, then builds a [`Worker`].

use std::time::Duration;

use taskq_core::{Client, Run, WorkerId};

use crate::{
    error::{invalid_config, Error},
    hooks::{Hooks, On},
    registry::Registry,
    HookError, Result, TaskEvent, Worker, WorkerConfig,
};

/// Builds a [`Worker`]; start with [`Worker::builder`].
///
/// ```
/// use std::time::Duration;
/// use serde::{Deserialize, Serialize};
/// use taskq_core::{Client, Run, Task, TaskContext, TaskError};
/// use taskq_worker::Worker;
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
/// let worker = Worker::builder(Client::in_memory())
///     .register::<Add>()
///     .concurrency(8)
///     .shutdown_grace(Duration::from_secs(10))
///     .build()?;
/// assert_eq!(worker.queues(), ["default"]);
/// # Ok::<(), taskq_worker::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "call build() to get a Worker"]
pub struct WorkerBuilder {
    client: Client,
    registry: Registry,
    config: WorkerConfig,
    hooks: Hooks,
    error: Option<Error>,
}

impl WorkerBuilder {
    pub(crate) fn new(client: Client) -> Self {
        Self {
            client,
            registry: Registry::default(),
            config: WorkerConfig::default(),
            hooks: Hooks::default(),
            error: None,
        }
    }

    /// Calls `hook` after each successful run, just before its result is stored. Errors and
    /// panics are logged.
    pub fn on_success(
        mut self,
        hook: impl Fn(&TaskEvent<'_>) -> Result<(), HookError> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.add(On::Success, hook);
        self
    }

    /// Calls `hook` when a task ends as FAILURE.
    pub fn on_failure(
        mut self,
        hook: impl Fn(&TaskEvent<'_>) -> Result<(), HookError> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.add(On::Failure, hook);
        self
    }

    /// Calls `hook` when a failed attempt is scheduled again.
    pub fn on_retry(
        mut self,
        hook: impl Fn(&TaskEvent<'_>) -> Result<(), HookError> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.add(On::Retry, hook);
        self
    }

    /// Calls `hook` when a message goes to dead letters (any reason).
    pub fn on_dead_letter(
        mut self,
        hook: impl Fn(&TaskEvent<'_>) -> Result<(), HookError> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.add(On::DeadLetter, hook);
        self
    }

    /// Consumes queues by weight instead of strict order: each fetch starts with the queue a
    /// smooth weighted round robin picks (weights 3 and 1 give the first queue three fetches
    /// in four), then takes the others in their listed order. Replaces [`Self::queues`].
    pub fn queue_weights<I, S>(mut self, weights: I) -> Self
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let (queues, weights): (Vec<String>, Vec<u32>) = weights
            .into_iter()
            .map(|(q, w)| (q.into(), w.max(1)))
            .unzip();
        self.config.queues = queues;
        self.config.queue_weights = Some(weights);
        self
    }

    /// Registers the handler of task `T` under `T::NAME`.
    pub fn register<T: Run>(mut self) -> Self {
        if let Err(err) = self.registry.register::<T>() {
            self.error.get_or_insert(err);
        }
        self
    }

    /// Consumes `queues` in this order of preference instead of the tasks' default queues.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Also serves these queues of Python's Celery (protocol 2, JSON; on Redis): what
    /// `app.send_task(...)` puts there runs the registered task of that name, and its result
    /// is written where `AsyncResult(id).get()` reads it. See `docs/celery.md`.
    pub fn celery_queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.celery_queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Most executions at once (default 32).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.config.concurrency = concurrency;
        self
    }

    /// Messages held ahead of a free execution slot (default 32).
    pub fn prefetch(mut self, prefetch: usize) -> Self {
        self.config.prefetch = prefetch;
        self
    }

    /// Time in-flight runs get to finish on shutdown before they are stopped and requeued
    /// (default 30 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// Hard time limit for tasks that set none (default: none).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.config.default_timeout = Some(timeout);
        self
    }

    /// Time a running task gets to react to a revocation with terminate (its cancellation
    /// signal) before it is stopped (default 5 s).
    pub fn revoke_grace(mut self, grace: Duration) -> Self {
        self.config.revoke_grace = grace;
        self
    }

    /// Records metrics (`taskq_*`, see the README) through the `metrics` facade; install a
    /// recorder such as `metrics-exporter-prometheus` to export them. Off by default: labels
    /// cost a few allocations per task.
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.config.metrics = enabled;
        self
    }

    /// Heartbeat period and the liveness deadline after which others recover this worker's
    /// messages (defaults 1 s and 5 s).
    pub fn liveness(mut self, heartbeat_interval: Duration, ttl: Duration) -> Self {
        self.config.heartbeat_interval = heartbeat_interval;
        self.config.liveness_ttl = ttl;
        self
    }

    /// Edits the configuration in place, for the settings without a builder method of their
    /// own; what earlier calls set is kept.
    ///
    /// ```
    /// # use taskq_worker::Worker;
    /// # #[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
    /// # #[task(name = "noop")] struct Noop;
    /// # impl taskq_core::Run for Noop {
    /// #     type Output = ();
    /// #     async fn run(self, _: taskq_core::TaskContext) -> Result<(), taskq_core::TaskError> { Ok(()) }
    /// # }
    /// let worker = Worker::builder(taskq_core::Client::in_memory())
    ///     .register::<Noop>()
    ///     .concurrency(4)
    ///     .configure(|config| config.track_started = true)
    ///     .build()?;
    /// assert!(worker.config().track_started);
    /// assert_eq!(worker.config().concurrency, 4, "earlier settings are kept");
    /// # Ok::<(), taskq_worker::Error>(())
    /// ```
    pub fn configure(mut self, edit: impl FnOnce(&mut WorkerConfig)) -> Self {
        edit(&mut self.config);
        self
    }

    /// Verifies message signatures with `keyring` before anything runs: a message signed with
    /// a key the keyring does not hold, a retired key, or not matching its signature (and, for
    /// a [required](taskq_core::Keyring::required) keyring, an unsigned one) is dead-lettered
    /// as `bad_signature` and never run.
    ///
    /// ```
    /// use taskq_core::{Client, Keyring, SigningKey};
    /// let key = SigningKey::new("k1", vec![7; 32]);
    /// let builder = taskq_worker::Worker::builder(Client::in_memory())
    ///     .verify_signatures(Keyring::new(vec![key]).required());
    /// # let _ = builder;
    /// ```
    pub fn verify_signatures(mut self, keyring: taskq_core::Keyring) -> Self {
        self.config.signatures = Some(keyring);
        self
    }

    /// Opens sealed task arguments with `keys` and seals results with them (producers and
    /// result readers need the same keys); a message whose arguments do not open is
    /// dead-lettered as `undecryptable` and never run.
    ///
    /// ```
    /// use taskq_core::{Client, Encryption};
    /// let builder = taskq_worker::Worker::builder(Client::in_memory())
    ///     .encryption(Encryption::new("k1", [7; 32]));
    /// # let _ = builder;
    /// ```
    pub fn encryption(mut self, keys: taskq_core::Encryption) -> Self {
        self.config.encryption = Some(keys);
        self
    }

    /// Validates the configuration and builds the worker.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) for a task name registered twice or a
    /// configuration that cannot work (no tasks, zero concurrency, a liveness TTL not longer
    /// than the heartbeat interval).
    pub fn build(self) -> Result<Worker> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let mut config = self.config;
        if self.registry.is_empty() {
            return Err(invalid_config("no tasks registered"));
        }
        if config.concurrency == 0 {
            return Err(invalid_config("concurrency must be at least 1"));
        }
        if config.liveness_ttl <= config.heartbeat_interval {
            return Err(invalid_config(
                "liveness ttl must be longer than the heartbeat interval",
            ));
        }
        if config.queues.is_empty() {
            config.queues = self.registry.default_queues();
        }
        for queue in &config.celery_queues {
            if !config.queues.contains(queue) {
                config.queues.push(queue.clone());
            }
        }
        for queue in &config.queues {
            taskq_core::enqueue::check_name("queue", queue)
                .map_err(|err| invalid_config(taskq_core::error_chain(&err)))?;
        }
        config.fetch_batch = config.fetch_batch.max(1);
        if config
            .queue_weights
            .as_ref()
            .is_some_and(|w| w.len() != config.queues.len())
        {
            return Err(invalid_config("one weight per queue"));
        }
        Ok(Worker::new(
            self.client,
            self.registry,
            config,
            WorkerId::generate(),
            self.hooks,
        ))
    }
}
