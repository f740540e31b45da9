//! Worker metrics through the `metrics` facade; exported in Prometheus format when the binary
//! installs a recorder (`--metrics-addr`). The runtime calls these only when the worker
//! was built with [`crate::WorkerBuilder::metrics`]: building labels costs allocations per
//! task even when no recorder listens.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `taskq_tasks_started_total` | counter | task, queue |
//! | `taskq_tasks_succeeded_total` | counter | task, queue |
//! | `taskq_tasks_failed_total` | counter | task, queue |
//! | `taskq_tasks_retried_total` | counter | task, queue |
//! | `taskq_tasks_dead_lettered_total` | counter | queue, reason |
//! | `taskq_tasks_revoked_total` | counter | task, queue |
//! | `taskq_tasks_expired_total` | counter | task, queue |
//! | `taskq_tasks_recovered_total` | counter | (none): messages returned from lost workers |
//! | `taskq_task_run_seconds` | histogram | task, queue |
//! | `taskq_task_queue_wait_seconds` | histogram | task, queue: from enqueue (or ETA) to start |
//! | `taskq_tasks_in_flight` | gauge | (none) |
//!
//! `taskq_tasks_enqueued_total{task,queue}` is recorded by the client (taskq-core).

use std::time::Duration;

use chrono::{DateTime, Utc};
use taskq_core::{DeadReason, Envelope};

/// What happened to one execution, for its counter.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Started,
    Succeeded,
    Failed,
    Retried,
    Revoked,
    Expired,
}

impl Event {
    fn name(self) -> &'static str {
        match self {
            Event::Started => "taskq_tasks_started_total",
            Event::Succeeded => "taskq_tasks_succeeded_total",
            Event::Failed => "taskq_tasks_failed_total",
            Event::Retried => "taskq_tasks_retried_total",
            Event::Revoked => "taskq_tasks_revoked_total",
            Event::Expired => "taskq_tasks_expired_total",
        }
    }
}

pub(crate) fn count(event: Event, envelope: &Envelope) {
    metrics::counter!(event.name(), "task" => envelope.task.clone(), "queue" => envelope.queue.clone())
        .increment(1);
}

pub(crate) fn dead_lettered(queue: &str, reason: DeadReason) {
    metrics::counter!("taskq_tasks_dead_lettered_total", "queue" => queue.to_owned(), "reason" => reason.as_str())
        .increment(1);
}

pub(crate) fn recovered(count: usize) {
    metrics::counter!("taskq_tasks_recovered_total").increment(count as u64);
}

pub(crate) fn run_time(envelope: &Envelope, took: Duration) {
    metrics::histogram!("taskq_task_run_seconds", "task" => envelope.task.clone(), "queue" => envelope.queue.clone())
        .record(took.as_secs_f64());
}

pub(crate) fn queue_wait(envelope: &Envelope, now: DateTime<Utc>) {
    let waited = envelope.queue_wait(now);
    metrics::histogram!("taskq_task_queue_wait_seconds", "task" => envelope.task.clone(), "queue" => envelope.queue.clone())
        .record(waited.as_secs_f64());
}

pub(crate) fn in_flight(running: usize) {
    metrics::gauge!("taskq_tasks_in_flight").set(running as f64);
}
