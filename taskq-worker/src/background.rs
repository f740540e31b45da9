//! [`RunningWorker`]: a worker started in the background of an application (or a test), to be
//! stopped warm later, instead of the spawn-and-cancel lines every embedder writes.

use taskq_core::WorkerId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Result, Worker, WorkerReport};

/// A [`Worker`] running on the tokio runtime, from [`Worker::start`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use std::time::Duration;
/// use serde::{Deserialize, Serialize};
/// use taskq_core::{Client, Run, Task, TaskContext, TaskError};
/// use taskq_worker::Worker;
///
/// #[derive(Task, Serialize, Deserialize)]
/// #[task(name = "math.double")]
/// struct Double { n: i64 }
///
/// impl Run for Double {
///     type Output = i64;
///     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> { Ok(self.n * 2) }
/// }
///
/// let client = Client::in_memory();
/// let running = Worker::builder(client.clone()).register::<Double>().build()?.start();
/// let doubled = client.enqueue(Double { n: 21 }).await?.wait(Duration::from_secs(5)).await?;
/// assert_eq!(doubled, 42);
/// let report = running.stop().await?;
/// assert_eq!(report.succeeded, 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RunningWorker {
    id: WorkerId,
    stop: CancellationToken,
    handle: JoinHandle<Result<WorkerReport>>,
}

impl RunningWorker {
    pub(crate) fn spawn(worker: Worker) -> Self {
        let id = worker.id().clone();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
        Self { id, stop, handle }
    }

    /// The worker's id, as `taskq workers` and the dashboard show it.
    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    /// Shuts the worker down warm (as a first SIGTERM would: see [`Worker::run`]) and waits
    /// for its report.
    ///
    /// # Errors
    ///
    /// As [`Worker::run`].
    ///
    /// # Panics
    ///
    /// When the worker's task panicked (a bug in taskq: no single message can do it).
    pub async fn stop(self) -> Result<WorkerReport> {
        self.stop.cancel();
        self.handle.await.expect("the worker's task does not panic")
    }
}
