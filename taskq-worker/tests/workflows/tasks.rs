//! The tasks the workflow tests compose, and the run counts they leave behind.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use serde::{Deserialize, Serialize};
use taskq_core::{Run, Task, TaskContext, TaskError};
use taskq_worker::WorkerBuilder;

/// Runs per label: every task below counts itself under its `label`.
static RUNS: Mutex<Option<HashMap<String, Vec<serde_json::Value>>>> = Mutex::new(None);

fn count(label: &str, seen: serde_json::Value) {
    RUNS.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .entry(label.to_owned())
        .or_default()
        .push(seen);
}

/// What the runs under `label` saw, in the order they ran.
pub(crate) fn runs(label: &str) -> Vec<serde_json::Value> {
    RUNS.lock()
        .unwrap()
        .as_ref()
        .and_then(|runs| runs.get(label).cloned())
        .unwrap_or_default()
}

/// Waits up to ten seconds for a run under each of `labels`.
pub(crate) async fn wait_for_runs(labels: &[&str]) {
    for _ in 0..200 {
        if labels.iter().all(|label| !runs(label).is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Returns `n`.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "wf.number", max_retries = 0)]
pub(crate) struct Number {
    pub(crate) label: String,
    pub(crate) n: i64,
}

impl Run for Number {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        count(&self.label, self.n.into());
        Ok(self.n)
    }
}

/// Returns its input plus `add`.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "wf.add", max_retries = 0)]
pub(crate) struct Add {
    pub(crate) label: String,
    #[task(input)]
    pub(crate) n: i64,
    pub(crate) add: i64,
}

impl Add {
    pub(crate) fn step(label: &str, add: i64) -> Self {
        Self {
            label: label.to_owned(),
            n: 0,
            add,
        }
    }
}

impl Run for Add {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        count(&self.label, self.n.into());
        Ok(self.n + self.add)
    }
}

/// Squares `n`; fails permanently when `n` is `fail_on`, and retryably on its first
/// `flaky` attempts.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "wf.square", max_retries = 3)]
pub(crate) struct Square {
    pub(crate) label: String,
    pub(crate) n: i64,
    #[serde(default)]
    pub(crate) fail_on: Option<i64>,
    #[serde(default)]
    pub(crate) flaky: u32,
}

impl Square {
    pub(crate) fn of(label: &str, n: i64) -> Self {
        Self {
            label: label.to_owned(),
            n,
            fail_on: None,
            flaky: 0,
        }
    }
}

impl Run for Square {
    type Output = i64;
    async fn run(self, ctx: TaskContext) -> Result<i64, TaskError> {
        count(&self.label, self.n.into());
        if self.fail_on == Some(self.n) {
            return Err(TaskError::permanent(format!("refusing {}", self.n)));
        }
        if ctx.attempt() < self.flaky {
            return Err(ctx.retry_after(Duration::from_millis(10), "flaky"));
        }
        Ok(self.n * self.n)
    }
}

/// Squares its input (a step after a step).
#[derive(Task, Serialize, Deserialize)]
#[task(name = "wf.square_input", max_retries = 0)]
pub(crate) struct SquareInput {
    pub(crate) label: String,
    #[task(input)]
    pub(crate) n: i64,
}

impl Run for SquareInput {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        count(&self.label, self.n.into());
        Ok(self.n * self.n)
    }
}

/// Sums its inputs (a chord's callback); records every input it saw.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "wf.sum", max_retries = 0)]
pub(crate) struct Sum {
    pub(crate) label: String,
    #[task(input)]
    pub(crate) values: Vec<i64>,
}

impl Sum {
    pub(crate) fn callback(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            values: Vec::new(),
        }
    }
}

impl Run for Sum {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        count(&self.label, serde_json::json!(self.values));
        Ok(self.values.iter().sum())
    }
}

/// Counts the members that succeeded and failed (a settled chord's callback).
#[derive(Task, Serialize, Deserialize)]
#[task(name = "wf.tally", max_retries = 0)]
pub(crate) struct Tally {
    pub(crate) label: String,
    #[task(input)]
    pub(crate) outcomes: Vec<taskq_core::workflow::Settled<i64>>,
}

impl Run for Tally {
    type Output = (usize, usize);
    async fn run(self, _ctx: TaskContext) -> Result<(usize, usize), TaskError> {
        count(&self.label, serde_json::to_value(&self.outcomes)?);
        let ok = self
            .outcomes
            .iter()
            .filter(|o| matches!(o, taskq_core::workflow::Settled::Ok(_)))
            .count();
        Ok((ok, self.outcomes.len() - ok))
    }
}

/// Records what it was given (a callback).
#[derive(Task, Serialize, Deserialize)]
#[task(name = "wf.note", max_retries = 0)]
pub(crate) struct Note {
    pub(crate) label: String,
    #[task(input)]
    pub(crate) seen: serde_json::Value,
}

impl Note {
    /// A callback that records its input under `label`.
    pub(crate) fn callback(label: &str) -> taskq_core::workflow::Signature {
        taskq_core::workflow::Signature::step(&Note {
            label: label.to_owned(),
            seen: serde_json::Value::Null,
        })
        .expect("a note encodes")
    }
}

impl Run for Note {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        count(&self.label, self.seen);
        Ok(())
    }
}

/// Sleeps `ms`, then returns its input.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "wf.sleep", max_retries = 0)]
pub(crate) struct Sleep {
    pub(crate) label: String,
    pub(crate) ms: u64,
}

impl Run for Sleep {
    type Output = u64;
    async fn run(self, _ctx: TaskContext) -> Result<u64, TaskError> {
        count(&self.label, self.ms.into());
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(self.ms)
    }
}

/// Returns `n` copies of `x` (a large output from small arguments).
#[derive(Task, Serialize, Deserialize)]
#[task(name = "wf.repeat", max_retries = 0)]
pub(crate) struct Repeat {
    pub(crate) label: String,
    pub(crate) n: usize,
}

impl Run for Repeat {
    type Output = String;
    async fn run(self, _ctx: TaskContext) -> Result<String, TaskError> {
        count(&self.label, self.n.into());
        Ok("x".repeat(self.n))
    }
}

/// Returns a JSON value nested `depth` arrays deep.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "wf.deep", max_retries = 0)]
pub(crate) struct Deep {
    pub(crate) label: String,
    pub(crate) depth: usize,
}

impl Run for Deep {
    type Output = serde_json::Value;
    async fn run(self, _ctx: TaskContext) -> Result<serde_json::Value, TaskError> {
        count(&self.label, self.depth.into());
        let mut value = serde_json::Value::Null;
        for _ in 0..self.depth {
            value = serde_json::Value::Array(vec![value]);
        }
        Ok(value)
    }
}

pub(crate) fn all_tasks(builder: WorkerBuilder) -> WorkerBuilder {
    builder
        .register::<Number>()
        .register::<Add>()
        .register::<Square>()
        .register::<SquareInput>()
        .register::<Sum>()
        .register::<Note>()
        .register::<Tally>()
        .register::<Sleep>()
        .register::<Repeat>()
        .register::<Deep>()
}
