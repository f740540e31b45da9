//! taskq-worker: the worker runtime of taskq.
//!
//! A [`Worker`] fetches messages from its queues into its own processing set, runs the
//! registered task, stores the result, and only then acknowledges. Failures are retried with
//! backoff through the broker's scheduled set; the last failure, undecodable messages and
//! unknown task names go to dead letters. A heartbeat keeps the worker's liveness deadline
//! fresh, and every worker's reaper returns the messages of lost workers to their queues.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use taskq_core::{Client, Run, Task, TaskContext, TaskError};
//! use taskq_worker::Worker;
//!
//! #[derive(Task, Serialize, Deserialize)]
//! #[task(name = "math.add")]
//! struct Add { a: i64, b: i64 }
//!
//! impl Run for Add {
//!     type Output = i64;
//!     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> { Ok(self.a + self.b) }
//! }
//!
//! let client = Client::in_memory();
//! let worker = Worker::builder(client.clone()).register::<Add>().build()?;
//! let running = worker.start(); // or `worker.run(shutdown_future).await` in place
//!
//! let sum = client.enqueue(Add { a: 2, b: 3 }).await?.wait(Duration::from_secs(5)).await?;
//! assert_eq!(sum, 5);
//!
//! let report = running.stop().await?;
//! assert_eq!(report.succeeded, 1);
//! # Ok(()) }
//! ```

mod background;
mod broker_call;
mod builder;
mod celery_intake;
mod config;
mod control;
mod error;
mod execute;
mod hooks;
mod lease;
mod maintenance;
mod metrics;
mod registry;
mod report;
mod revocations;
mod runtime;
mod settle;
mod turns;

pub use background::RunningWorker;
pub use builder::WorkerBuilder;
pub use config::WorkerConfig;
pub use error::{Error, Result};
pub use hooks::{HookError, TaskEvent};
pub use report::WorkerReport;

use std::future::Future;

use taskq_core::{Client, WorkerId};

use crate::registry::Registry;

/// A worker process's runtime: run it with [`Worker::run`] and a shutdown future.
#[derive(Debug)]
pub struct Worker {
    client: Client,
    registry: Registry,
    config: WorkerConfig,
    id: WorkerId,
    hooks: hooks::Hooks,
}

impl Worker {
    /// Starts building a worker that uses `client`'s broker and result backend.
    pub fn builder(client: Client) -> WorkerBuilder {
        WorkerBuilder::new(client)
    }

    fn new(
        client: Client,
        registry: Registry,
        config: WorkerConfig,
        id: WorkerId,
        hooks: hooks::Hooks,
    ) -> Self {
        Self {
            client,
            registry,
            config,
            id,
            hooks,
        }
    }

    /// This process start's unique id.
    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    /// The settings it runs with.
    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// The queues consumed, in order of preference.
    pub fn queues(&self) -> &[String] {
        &self.config.queues
    }

    /// Runs until `shutdown` completes, then shuts down warm: stops fetching, gives in-flight
    /// runs [`WorkerConfig::shutdown_grace`] to finish, stops the rest and requeues them (no
    /// retry spent), deregisters.
    ///
    /// Broker errors while running are logged and retried with backoff; they do not end the
    /// worker, and neither does any single message.
    ///
    /// # Errors
    ///
    /// Only when the final deregistration fails; the reaper of another worker then recovers
    /// whatever this one still held.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<WorkerReport> {
        runtime::run(self, shutdown).await
    }

    /// Runs in the background on the current tokio runtime until [`RunningWorker::stop`]: for
    /// a worker inside an application (beside an HTTP server) or a test.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(self) -> RunningWorker {
        RunningWorker::spawn(self)
    }
}
