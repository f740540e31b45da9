//! Tasks and a running-worker fixture shared by the worker tests.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskq_core::{Client, Error, Run, Task, TaskContext, TaskError, TaskState};
pub(crate) use taskq_worker::RunningWorker;
use taskq_worker::{Worker, WorkerBuilder};
use tokio::sync::mpsc;

/// Builds the worker `builder` describes and starts it in the background.
pub(crate) fn start_worker(builder: WorkerBuilder) -> RunningWorker {
    builder.build().expect("valid worker").start()
}

/// Fast liveness so recovery tests take simulated seconds, not minutes.
pub(crate) fn builder(client: &Client) -> WorkerBuilder {
    Worker::builder(client.clone()).liveness(Duration::from_millis(100), Duration::from_millis(500))
}

/// Sends its label to a channel when it runs, then sleeps `ms`.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "test.record", max_retries = 0)]
pub(crate) struct Record {
    pub(crate) label: String,
    pub(crate) ms: u64,
}

pub(crate) type Log = mpsc::UnboundedSender<String>;

/// Where `Record` and friends report; set per test through a tokio task-local would be nicer,
/// but workers spawn tasks, so a process-wide registry keyed by label prefix is used instead.
static LOGS: std::sync::Mutex<Vec<(String, Log)>> = std::sync::Mutex::new(Vec::new());

/// Creates a log for labels starting with `prefix`.
pub(crate) fn log(prefix: &str) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    LOGS.lock().unwrap().push((prefix.to_owned(), tx));
    rx
}

pub(crate) fn report(label: &str) {
    for (prefix, tx) in LOGS.lock().unwrap().iter() {
        if label.starts_with(prefix.as_str()) {
            let _ = tx.send(label.to_owned());
        }
    }
}

impl Run for Record {
    type Output = String;
    async fn run(self, _ctx: TaskContext) -> Result<String, TaskError> {
        report(&self.label);
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(self.label)
    }
}

/// Fails its first `fail_times` attempts (retryable), then returns the attempt number.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "test.flaky", max_retries = 3)]
pub(crate) struct Flaky {
    pub(crate) fail_times: u32,
}

impl Run for Flaky {
    type Output = u32;
    async fn run(self, ctx: TaskContext) -> Result<u32, TaskError> {
        if ctx.attempt() < self.fail_times {
            return Err(TaskError::retryable(format!(
                "flaky attempt {}",
                ctx.attempt()
            )));
        }
        Ok(ctx.attempt())
    }
}

/// Fails permanently.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "test.reject", max_retries = 5)]
pub(crate) struct Reject;

impl Run for Reject {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::permanent("not worth retrying"))
    }
}

/// Panics.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "test.panic", max_retries = 1)]
pub(crate) struct Panic;

impl Run for Panic {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        panic!("kaboom")
    }
}

/// Sleeps far past its time limit.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "test.slow", max_retries = 0, timeout = "2s")]
pub(crate) struct Slow;

impl Run for Slow {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

/// A task with a structured output.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "test.stats")]
pub(crate) struct Stats {
    pub(crate) values: Vec<f64>,
}

/// Output of [`Stats`].
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) count: usize,
    pub(crate) mean: f64,
    pub(crate) label: Option<String>,
}

impl Run for Stats {
    type Output = Summary;
    async fn run(self, ctx: TaskContext) -> Result<Summary, TaskError> {
        let count = self.values.len();
        Ok(Summary {
            count,
            mean: self.values.iter().sum::<f64>() / count as f64,
            label: ctx.headers().get("label").cloned(),
        })
    }
}

/// The whole test worker: every task above.
pub(crate) fn all_tasks(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .register::<Record>()
        .register::<Flaky>()
        .register::<Reject>()
        .register::<Panic>()
        .register::<Slow>()
        .register::<Stats>()
}

/// Waits until `check` holds, advancing the paused clock in small steps.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..2_000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Asserts that waiting for a task failed because it ended in `state` (FAILURE, REVOKED,
/// EXPIRED), not because of a timeout or a broker error.
pub(crate) fn assert_ended_in<T: std::fmt::Debug>(waited: Result<T, Error>, state: TaskState) {
    match waited {
        Err(Error::TaskFailed { state: ended, .. }) if ended == state => {}
        other => panic!("expected the task to end {state}, got {other:?}"),
    }
}

/// The default queue's dead letters once there are `count` of them (the paused clock jumps
/// through the polling), asserting that many arrived.
pub(crate) async fn dead_letters_of_default_queue(
    client: &Client,
    count: usize,
) -> Vec<taskq_core::DeadLetter> {
    let mut dead = Vec::new();
    for _ in 0..500 {
        dead = client
            .broker()
            .dead_letters(taskq_core::DEFAULT_QUEUE, taskq_core::Page::first(10))
            .await
            .unwrap();
        if dead.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(dead.len(), count, "{dead:?}");
    dead
}

/// A worker that took `count` messages of the default queue and vanished: it sent one short
/// heartbeat and never another, so a reaper finds its lease lapsed.
pub(crate) async fn vanished_worker_holding(client: &Client, count: usize) -> taskq_core::WorkerId {
    let lost = taskq_core::WorkerId::generate();
    let queues = [taskq_core::DEFAULT_QUEUE.to_owned()];
    let membership = client.broker().membership().expect("a broker with leases");
    membership
        .heartbeat(&lost, &queues, Duration::from_millis(200))
        .await
        .unwrap();
    let held = client
        .broker()
        .fetch(&lost, &queues, count, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(held.len(), count, "the vanished worker holds its messages");
    lost
}
