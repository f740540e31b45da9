//! The demo tasks: `demo.add`, `demo.sleep`, `demo.fail`, `demo.panic`, the workflow steps
//! `demo.step` and `demo.collect`, and a worker `main`.

use std::{io::Write, time::Duration};

use clap::Parser;
use serde::{Deserialize, Serialize};
use taskq::cli::WorkerArgs;
use taskq_core::{Run, Task, TaskContext, TaskError};
use taskq_worker::WorkerBuilder;

/// `demo.add {a, b}` returns `a + b`.
#[derive(Debug, Task, Serialize, Deserialize)]
#[task(name = "demo.add")]
pub struct Add {
    /// First addend.
    pub a: i64,
    /// Second addend.
    pub b: i64,
}

impl Run for Add {
    type Output = i64;

    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.a + self.b)
    }
}

/// `demo.sleep {ms, ledger?}` sleeps `ms` milliseconds; with `ledger`, appends one line
/// `<task-id> <worker-id>` to that file per execution (fault tests count these lines).
#[derive(Debug, Task, Serialize, Deserialize)]
#[task(name = "demo.sleep")]
pub struct Sleep {
    /// How long to sleep.
    pub ms: u64,
    /// File to append an execution record to.
    #[serde(default)]
    pub ledger: Option<String>,
}

impl Run for Sleep {
    type Output = u64;

    async fn run(self, ctx: TaskContext) -> Result<u64, TaskError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        if let Some(path) = &self.ledger {
            append_to_ledger(path, &ctx, "sleep")?;
        }
        Ok(self.ms)
    }
}

/// `demo.fail {times}` fails its first `times` attempts, then returns the attempt number.
#[derive(Debug, Task, Serialize, Deserialize)]
#[task(name = "demo.fail", max_retries = 10)]
pub struct Fail {
    /// Attempts that fail before one succeeds.
    pub times: u32,
}

impl Run for Fail {
    type Output = u32;

    async fn run(self, ctx: TaskContext) -> Result<u32, TaskError> {
        if ctx.attempt() < self.times {
            return Err(TaskError::retry_after(
                Duration::from_millis(100),
                format!("demo failure {} of {}", ctx.attempt() + 1, self.times),
            ));
        }
        Ok(ctx.attempt())
    }
}

/// `demo.panic {}` panics; the worker records a failed attempt and carries on.
#[derive(Debug, Task, Serialize, Deserialize)]
#[task(name = "demo.panic", max_retries = 0)]
pub struct Panic {}

impl Run for Panic {
    type Output = ();

    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        panic!("demo.panic was asked to panic")
    }
}

/// Appends one line `<task-id> <worker-id> <what>` to `ledger` (one short append is atomic on
/// Linux, so lines from several processes never interleave and their order is time order).
fn append_to_ledger(ledger: &str, ctx: &TaskContext, what: &str) -> std::io::Result<()> {
    let line = format!("{} {} {what}\n", ctx.id(), ctx.worker().unwrap_or("-"));
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(ledger)?
        .write_all(line.as_bytes())
}

/// `demo.step {n, ms, ledger?}`: a chain step. Receives its predecessor's output in `n`,
/// writes `step <n>` to the ledger as it starts, sleeps `ms` and returns `n + 1`.
#[derive(Debug, Task, Serialize, Deserialize)]
#[task(name = "demo.step")]
pub struct Step {
    /// The predecessor's output (the step's position in a chain of steps).
    #[task(input)]
    pub n: u64,
    /// How long to sleep.
    pub ms: u64,
    /// File to append a start record to.
    #[serde(default)]
    pub ledger: Option<String>,
}

impl Run for Step {
    type Output = u64;

    async fn run(self, ctx: TaskContext) -> Result<u64, TaskError> {
        if let Some(ledger) = &self.ledger {
            append_to_ledger(ledger, &ctx, &format!("step {}", self.n))?;
        }
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(self.n + 1)
    }
}

/// `demo.collect {values, ledger?}`: a chord's callback. Receives every member's output in
/// `values`, writes `collect <count> <sum>` to the ledger and returns the sum.
#[derive(Debug, Task, Serialize, Deserialize)]
#[task(name = "demo.collect")]
pub struct Collect {
    /// The members' outputs, in member order.
    #[task(input)]
    pub values: Vec<u64>,
    /// File to append a record to.
    #[serde(default)]
    pub ledger: Option<String>,
}

impl Run for Collect {
    type Output = u64;

    async fn run(self, ctx: TaskContext) -> Result<u64, TaskError> {
        let sum = self.values.iter().sum();
        if let Some(ledger) = &self.ledger {
            append_to_ledger(
                ledger,
                &ctx,
                &format!("collect {} {sum}", self.values.len()),
            )?;
        }
        Ok(sum)
    }
}

/// `demo.tenant {tenant, ms, ledger?, mark_end}`: one tenant's job, in partition `tenant` (the
/// queue takes turns between tenants). With `ledger`, appends
/// `<task-id> <worker-id> start <tenant> <unix ms>` as it starts and, with `mark_end`,
/// `<task-id> <worker-id> end <tenant> <unix ms>` after sleeping `ms`.
#[derive(Debug, Task, Serialize, Deserialize)]
#[task(name = "demo.tenant", partition = "tenant")]
pub struct TenantJob {
    /// The tenant: the task's partition key.
    pub tenant: String,
    /// How long to sleep.
    pub ms: u64,
    /// File to append start (and end) records to.
    #[serde(default)]
    pub ledger: Option<String>,
    /// Also record the end of the run.
    #[serde(default)]
    pub mark_end: bool,
}

impl Run for TenantJob {
    type Output = ();

    async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        let mark = |what: &str| match &self.ledger {
            Some(ledger) => append_to_ledger(
                ledger,
                &ctx,
                &format!("{what} {} {}", self.tenant, unix_millis()),
            ),
            None => Ok(()),
        };
        mark("start")?;
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        if self.mark_end {
            mark("end")?;
        }
        Ok(())
    }
}

/// Now, in ms since the Unix epoch (the ledger's clock: every process on one host shares it).
fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
}

/// Registers every demo task.
pub fn register(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .register::<Add>()
        .register::<Sleep>()
        .register::<Fail>()
        .register::<Panic>()
        .register::<Step>()
        .register::<Collect>()
        .register::<TenantJob>()
}

/// Flags of the demo worker.
#[derive(Debug, Parser)]
#[command(about = "A taskq worker with the demo tasks registered")]
pub struct DemoWorkerCli {
    /// Worker flags.
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// `main` of the demo worker: parse flags, run until SIGINT/SIGTERM, report a failure on one
/// line.
pub async fn worker_main() -> std::process::ExitCode {
    DemoWorkerCli::parse().worker.main(register).await
}
