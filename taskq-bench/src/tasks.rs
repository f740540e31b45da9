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

/// Microseconds since the benchmark process started: a clock producers and the worker share.
pub(crate) fn now_us() -> u64 {
    static BASE: std::sync::LazyLock<std::time::Instant> =
        std::sync::LazyLock::new(std::time::Instant::now);
    BASE.elapsed().as_micros() as u64
}

/// Enqueue-to-start latencies (µs) recorded by [`Stamp`] runs since the last [`take_starts`].
static STARTS: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

/// The latencies recorded so far, emptying the record.
pub(crate) fn take_starts() -> Vec<u64> {
    std::mem::take(&mut *STARTS.lock().unwrap())
}

/// W3's and W4's task: records how long it waited between its enqueue (`sent_us`) and its start.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "bench.stamp", max_retries = 0)]
pub(crate) struct Stamp {
    pub(crate) sent_us: u64,
}

impl Run for Stamp {
    type Output = ();

    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        let waited = now_us().saturating_sub(self.sent_us);
        STARTS.lock().unwrap().push(waited);
        Ok(())
    }
}
