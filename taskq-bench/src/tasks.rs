//! The benchmark's no-op tasks and a completion counter the drain workloads wait on.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use taskq_core::{Run, Task, TaskContext, TaskError};
use tokio::sync::Notify;

/// Runs counted since the last [`reset`].
static DONE: AtomicUsize = AtomicUsize::new(0);
/// Woken when [`DONE`] reaches [`TARGET`].
static FINISHED: Notify = Notify::const_new();
static TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Starts counting runs towards `target`.
pub(crate) fn reset(target: usize) {
    DONE.store(0, Ordering::SeqCst);
    TARGET.store(target, Ordering::SeqCst);
}

/// Completes once `target` runs were counted.
pub(crate) async fn finished() {
    loop {
        let notified = FINISHED.notified();
        if DONE.load(Ordering::SeqCst) >= TARGET.load(Ordering::SeqCst) {
            return;
        }
        notified.await;
    }
}

fn count() {
    if DONE.fetch_add(1, Ordering::Relaxed) + 1 == TARGET.load(Ordering::Relaxed) {
        FINISHED.notify_waiters();
    }
}

/// A no-op whose result is stored.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "bench.noop", max_retries = 0)]
pub(crate) struct Noop {
    pub(crate) n: u64,
}

impl Run for Noop {
    type Output = u64;

    async fn run(self, _ctx: TaskContext) -> Result<u64, TaskError> {
        count();
        Ok(self.n)
    }
}

/// A chord's callback: sums its members' outputs.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "bench.sum", max_retries = 0)]
pub(crate) struct Sum {
    #[task(input)]
    pub(crate) values: Vec<u64>,
}

impl Run for Sum {
    type Output = u64;

    async fn run(self, _ctx: TaskContext) -> Result<u64, TaskError> {
        Ok(self.values.iter().sum())
    }
}

/// A no-op without a stored result.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "bench.noop_quiet", max_retries = 0, ignore_result)]
pub(crate) struct QuietNoop {
    pub(crate) n: u64,
}

impl Run for QuietNoop {
    type Output = u64;

    async fn run(self, _ctx: TaskContext) -> Result<u64, TaskError> {
        count();
        Ok(self.n)
    }
}
