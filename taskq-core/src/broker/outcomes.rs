//! How runs ended, as brokers keep them for operators: a capped per-queue record of recent
//! outcomes (searchable by task name, state and time) and per-minute counters per task (how
//! many ended in each state, runtime and queue-wait histograms), both written by the calls
//! that settle the messages, so that keeping them costs no extra round trip.
//!
//! The worker attaches an [`Outcome`] to the [`Delivery`](super::Delivery) it settles (encoded
//! there, on the task's own thread, not in the acker); the broker appends the settle call's
//! outcomes to the record (Redis one list entry each; PostgreSQL one row per call, a
//! [`bundle`]) and adds their [`tally`] to the minute's counters.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{TaskId, TaskState};

/// About how many outcomes a queue's record of recent outcomes keeps; older ones fall off (on
/// PostgreSQL a whole [`bundle`] at a time, so a record holds between this less one batch and
/// this).
pub const RECENT_OUTCOMES_KEPT: usize = 10_000;

/// How long a queue's record of recent outcomes outlives its last write (a queue nobody uses
/// any more does not keep it forever).
pub const RECENT_OUTCOMES_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The states a run ends in, as outcomes record them (RETRY: it failed and runs again).
pub const OUTCOME_STATES: [TaskState; 5] = [
    TaskState::Success,
    TaskState::Failure,
    TaskState::Retry,
    TaskState::Revoked,
    TaskState::Expired,
];

/// Longest error text an outcome keeps, in bytes (the task's result record keeps it whole).
pub const OUTCOME_ERROR_BYTES: usize = 300;

/// How one run of a message ended, as a queue's record of recent outcomes keeps it. Field
/// names are short: a busy queue writes one per task.
///
/// ```
/// use taskq_core::{Outcome, TaskId, TaskState};
/// let outcome = Outcome::new(TaskId::new(), "emails.send", TaskState::Failure, chrono::Utc::now())
///     .with_error("x".repeat(1000));
/// let read = Outcome::decode(&outcome.encode()).unwrap();
/// assert_eq!(read.task, "emails.send");
/// assert_eq!(read.error.unwrap().len(), taskq_core::OUTCOME_ERROR_BYTES);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Outcome {
    /// The task id.
    pub id: TaskId,
    /// The task's name.
    #[serde(rename = "t")]
    pub task: String,
    /// How the run ended: SUCCESS, FAILURE, RETRY (failed; another attempt is scheduled),
    /// REVOKED or EXPIRED.
    #[serde(rename = "s")]
    pub state: TaskState,
    /// When it ended.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub at: DateTime<Utc>,
    /// How long the attempt ran, µs (none when it never started: expired, revoked, unknown).
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    pub runtime_us: Option<u64>,
    /// How long it waited in the queue before starting, µs.
    #[serde(rename = "wt", default, skip_serializing_if = "Option::is_none")]
    pub wait_us: Option<u64>,
    /// The attempt that ended (0 for the first).
    #[serde(rename = "n", default)]
    pub attempt: u32,
    /// The worker that ran it.
    #[serde(rename = "w", default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The error, cut to [`OUTCOME_ERROR_BYTES`].
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    /// Task `id` of `task` ended in `state` at `at`.
    pub fn new(id: TaskId, task: impl Into<String>, state: TaskState, at: DateTime<Utc>) -> Self {
        Self {
            id,
            task: task.into(),
            state,
            at,
            runtime_us: None,
            wait_us: None,
            attempt: 0,
            worker: None,
            error: None,
        }
    }

    /// How long the attempt ran.
    pub fn with_runtime(mut self, runtime: Duration) -> Self {
        self.runtime_us = Some(micros(runtime));
        self
    }

    /// How long it waited in the queue.
    pub fn with_wait(mut self, wait: Duration) -> Self {
        self.wait_us = Some(micros(wait));
        self
    }

    /// Which attempt this was (0 for the first).
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The worker that ran it.
    pub fn with_worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    /// The error, cut to [`OUTCOME_ERROR_BYTES`] on a character boundary.
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        let mut error = error.into();
        if error.len() > OUTCOME_ERROR_BYTES {
            let mut end = OUTCOME_ERROR_BYTES;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
        }
        self.error = Some(error);
        self
    }

    /// How long the attempt ran, when it ran.
    pub fn runtime(&self) -> Option<Duration> {
        self.runtime_us.map(Duration::from_micros)
    }

    /// How long it waited in the queue, when known.
    pub fn wait(&self) -> Option<Duration> {
        self.wait_us.map(Duration::from_micros)
    }

    /// The compact JSON brokers store.
    pub fn encode(&self) -> String {
        // A struct of strings, numbers and a TaskId: serialization cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads what [`Outcome::encode`] wrote; `None` for anything else.
    pub fn decode(stored: &str) -> Option<Self> {
        serde_json::from_str(stored).ok()
    }

    /// Whether it passes `filter`.
    pub fn matches(&self, filter: &OutcomeFilter) -> bool {
        filter.task.as_deref().is_none_or(|task| self.task == task)
            && filter.state.is_none_or(|state| self.state == state)
            && filter.since.is_none_or(|since| self.at >= since)
            && filter.until.is_none_or(|until| self.at <= until)
    }
}

/// Encoded outcomes (oldest first, as a batch settles them) as one stored entry: how many,
/// then each on its own line, newest first. Returns the count and the entry.
///
/// ```
/// use taskq_core::{bundle, unbundle, Outcome, TaskId, TaskState};
/// let now = chrono::Utc::now();
/// let [a, b] = ["a", "b"].map(|t| Outcome::new(TaskId::new(), t, TaskState::Success, now).encode());
/// let (count, entry) = bundle([a.as_str(), b.as_str()].into_iter());
/// let tasks: Vec<String> = unbundle(&entry).map(|o| o.task).collect();
/// assert_eq!((count, tasks), (2, vec!["b".to_owned(), "a".to_owned()]));
/// ```
pub fn bundle<'a>(encoded: impl DoubleEndedIterator<Item = &'a str>) -> (usize, String) {
    let mut lines = String::new();
    let mut count = 0;
    for outcome in encoded.rev() {
        lines.push('\n');
        lines.push_str(outcome);
        count += 1;
    }
    (count, format!("{count}{lines}"))
}

/// The outcomes of a stored entry, newest first: a [`bundle`]'s, or the one an entry holds
/// when it is a single encoded outcome. Lines that do not read back are skipped.
pub fn unbundle(entry: &str) -> impl Iterator<Item = Outcome> + '_ {
    // JSON escapes line breaks inside strings: every line past a bundle's count is one
    // outcome, and a single outcome starts with its brace.
    let skip = usize::from(!entry.starts_with('{'));
    entry.split('\n').skip(skip).filter_map(Outcome::decode)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Which recent outcomes to list: every given condition must hold.
///
/// ```
/// use taskq_core::{OutcomeFilter, TaskState};
/// let filter = OutcomeFilter::default().task("emails.send").state(TaskState::Failure);
/// assert_eq!(filter.task.as_deref(), Some("emails.send"));
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct OutcomeFilter {
    /// Only this task.
    pub task: Option<String>,
    /// Only runs that ended in this state.
    pub state: Option<TaskState>,
    /// Only runs that ended at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only runs that ended at or before this time.
    pub until: Option<DateTime<Utc>>,
}

impl OutcomeFilter {
    /// Only this task.
    pub fn task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// Only this state.
    pub fn state(mut self, state: TaskState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only runs that ended at or after `since`.
    pub fn since(mut self, since: DateTime<Utc>) -> Self {
        self.since = Some(since);
        self
    }

    /// Only runs that ended at or before `until`.
    pub fn until(mut self, until: DateTime<Utc>) -> Self {
        self.until = Some(until);
        self
    }

    /// Adds to `found` the outcomes of `chunk` (stored entries, each an encoded outcome or a
    /// [`bundle`], newest first, as brokers read their record a chunk at a time) that pass, up to `limit` in all. True when the
    /// search is over: the page is full, or entries turned older than `since` (by more than a
    /// minute: workers' clocks and batches leave a record only roughly in time order).
    ///
    /// ```
    /// use taskq_core::{bundle, Outcome, OutcomeFilter, TaskId, TaskState};
    /// let entry = Outcome::new(TaskId::new(), "t", TaskState::Success, chrono::Utc::now()).encode();
    /// let (_, stored) = bundle([entry.as_str(), "junk"].into_iter());
    /// let mut found = Vec::new();
    /// assert!(!OutcomeFilter::default().collect(&[stored], 5, &mut found));
    /// assert_eq!(found.len(), 1, "what does not read back is skipped");
    /// ```
    pub fn collect<S: AsRef<str>>(
        &self,
        chunk: &[S],
        limit: usize,
        found: &mut Vec<Outcome>,
    ) -> bool {
        let settled = chrono::Duration::minutes(1);
        for outcome in chunk.iter().flat_map(|entry| unbundle(entry.as_ref())) {
            if found.len() >= limit {
                return true;
            }
            if self.since.is_some_and(|since| outcome.at < since - settled) {
                return true;
            }
            if outcome.matches(self) {
                found.push(outcome);
            }
        }
        found.len() >= limit
    }
}

/// Buckets per doubling of a duration in the histograms: a bucket's middle is within 9 % of
/// any duration in it.
const BUCKETS_PER_DOUBLING: f64 = 4.0;

/// The histogram bucket of a duration of `us` microseconds.
fn bucket_of(us: u64) -> u32 {
    // 0 µs and 1 µs share bucket 0.
    ((us.max(1) as f64).log2() * BUCKETS_PER_DOUBLING).floor() as u32
}

/// The geometric middle of a bucket, µs.
fn bucket_middle(bucket: u32) -> f64 {
    ((f64::from(bucket) + 0.5) / BUCKETS_PER_DOUBLING).exp2()
}

/// The counter increments a batch of outcomes adds to its queue's minute: per task, how many
/// ended in each state (`<task> <STATE>`), and histogram buckets of runtime (`<task> rt <b>`)
/// and queue wait (`<task> wt <b>`). Task names hold no spaces, so a field reads back
/// unambiguously. Brokers add these to the minute the batch is settled in.
///
/// ```
/// use taskq_core::{tally, Outcome, TaskId, TaskState};
/// let now = chrono::Utc::now();
/// let ran = |ms| Outcome::new(TaskId::new(), "t", TaskState::Success, now)
///     .with_runtime(std::time::Duration::from_millis(ms));
/// let fields = tally([ran(50), ran(50)].iter());
/// assert!(fields.contains(&("t SUCCESS".to_owned(), 2)));
/// ```
pub fn tally<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<(&str, Field), u64> = BTreeMap::new();
    for outcome in outcomes {
        let task = outcome.task.as_str();
        *counts
            .entry((task, Field::State(outcome.state)))
            .or_default() += 1;
        if let Some(us) = outcome.runtime_us {
            *counts
                .entry((task, Field::Runtime(bucket_of(us))))
                .or_default() += 1;
        }
        if let Some(us) = outcome.wait_us {
            *counts
                .entry((task, Field::Wait(bucket_of(us))))
                .or_default() += 1;
        }
    }
    counts
        .into_iter()
        .map(|((task, field), count)| (field.name(task), count))
        .collect()
}

/// One counter of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    State(TaskState),
    Runtime(u32),
    Wait(u32),
}

impl Field {
    fn name(self, task: &str) -> String {
        match self {
            Field::State(state) => format!("{task} {}", state.as_str()),
            Field::Runtime(bucket) => format!("{task} rt {bucket}"),
            Field::Wait(bucket) => format!("{task} wt {bucket}"),
        }
    }
}

fn state_named(name: &str) -> Option<TaskState> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// A duration histogram with quarter-doubling buckets (see [`tally`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: BTreeMap<u32, u64>,
}

impl Histogram {
    /// How many durations it holds.
    pub fn count(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The `q` quantile (0.5 for the median), as its bucket's middle; `None` when empty.
    ///
    /// ```
    /// use taskq_core::{tally, Outcome, TaskId, TaskState, TaskNumbers};
    /// let now = chrono::Utc::now();
    /// let outcomes: Vec<_> = (1..=100).map(|ms| Outcome::new(TaskId::new(), "t", TaskState::Success, now)
    ///     .with_runtime(std::time::Duration::from_millis(ms))).collect();
    /// let numbers = TaskNumbers::from_fields(tally(outcomes.iter()));
    /// let p50 = numbers[0].runtime.quantile(0.5).unwrap().as_secs_f64() * 1e3;
    /// assert!((45.0..=55.0).contains(&p50), "{p50}");
    /// ```
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&bucket, &count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_secs_f64(bucket_middle(bucket) / 1e6));
            }
        }
        None
    }

    fn add(&mut self, bucket: u32, count: u64) {
        *self.buckets.entry(bucket).or_default() += count;
    }
}

/// One task's numbers over a span of minutes, read back from the counters [`tally`] wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskNumbers {
    /// The task's name.
    pub task: String,
    /// Runs that ended in each state (RETRY counts failed attempts that will be retried).
    pub ended: BTreeMap<TaskState, u64>,
    /// How long attempts ran.
    pub runtime: Histogram,
    /// How long messages waited in the queue before starting.
    pub wait: Histogram,
}

impl TaskNumbers {
    /// Per-task numbers from counter fields (any number of minutes, added up), by task name.
    /// Fields that are not a task's (the queue's own `processed` and `failed`) are skipped.
    pub fn from_fields(fields: impl IntoIterator<Item = (String, u64)>) -> Vec<TaskNumbers> {
        let mut tasks: BTreeMap<String, TaskNumbers> = BTreeMap::new();
        for (field, count) in fields {
            let mut parts = field.split(' ');
            let (Some(task), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let bucket = parts.next().and_then(|b| b.parse::<u32>().ok());
            let numbers = tasks.entry(task.to_owned()).or_insert_with(|| TaskNumbers {
                task: task.to_owned(),
                ..TaskNumbers::default()
            });
            match (kind, bucket) {
                ("rt", Some(bucket)) => numbers.runtime.add(bucket, count),
                ("wt", Some(bucket)) => numbers.wait.add(bucket, count),
                (state, None) => {
                    if let Some(state) = state_named(state) {
                        *numbers.ended.entry(state).or_default() += count;
                    }
                }
                _ => {}
            }
        }
        tasks.into_values().collect()
    }

    /// Runs that ended in `state`.
    pub fn count(&self, state: TaskState) -> u64 {
        self.ended.get(&state).copied().unwrap_or_default()
    }

    /// Runs that ended, in any state.
    pub fn runs(&self) -> u64 {
        self.ended.values().sum()
    }

    /// The share of runs that failed (FAILURE or RETRY), 0 to 1; `None` without runs.
    pub fn failure_rate(&self) -> Option<f64> {
        let runs = self.runs();
        (runs > 0).then(|| {
            (self.count(TaskState::Failure) + self.count(TaskState::Retry)) as f64 / runs as f64
        })
    }

    /// Adds `other`'s counts (the same task on another queue).
    pub fn merge(&mut self, other: &TaskNumbers) {
        for (state, count) in &other.ended {
            *self.ended.entry(*state).or_default() += count;
        }
        for (bucket, count) in &other.runtime.buckets {
            self.runtime.add(*bucket, *count);
        }
        for (bucket, count) in &other.wait.buckets {
            self.wait.add(*bucket, *count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_durations_within_a_tenth() {
        for us in [1u64, 7, 150, 50_000, 3_600_000_000] {
            let middle = bucket_middle(bucket_of(us));
            let off = (middle - us as f64).abs() / us as f64;
            assert!(off < 0.1 || us < 2, "{us} µs read back as {middle}");
        }
    }

    #[test]
    fn counters_read_back_per_task_and_state() {
        let now = Utc::now();
        let outcomes = [
            Outcome::new(TaskId::new(), "a", TaskState::Success, now)
                .with_runtime(Duration::from_millis(50))
                .with_wait(Duration::from_millis(2)),
            Outcome::new(TaskId::new(), "a", TaskState::Retry, now)
                .with_runtime(Duration::from_millis(50)),
            Outcome::new(TaskId::new(), "b", TaskState::Expired, now),
        ];
        let mut fields = tally(outcomes.iter());
        fields.push(("processed".to_owned(), 3));
        let numbers = TaskNumbers::from_fields(fields);
        assert_eq!(numbers.len(), 2);
        let a = &numbers[0];
        assert_eq!((a.task.as_str(), a.runs(), a.runtime.count()), ("a", 2, 2));
        assert_eq!(a.failure_rate(), Some(0.5));
        assert_eq!(a.wait.count(), 1);
        assert_eq!(numbers[1].count(TaskState::Expired), 1);
    }

    #[test]
    fn a_filter_holds_every_condition() {
        let now = Utc::now();
        let outcome = Outcome::new(TaskId::new(), "a", TaskState::Failure, now);
        assert!(outcome.matches(&OutcomeFilter::default()));
        assert!(outcome.matches(&OutcomeFilter::default().task("a").state(TaskState::Failure)));
        assert!(!outcome.matches(&OutcomeFilter::default().task("b")));
        assert!(!outcome.matches(&OutcomeFilter::default().state(TaskState::Success)));
        assert!(
            !outcome.matches(&OutcomeFilter::default().since(now + chrono::Duration::seconds(1)))
        );
    }
}
