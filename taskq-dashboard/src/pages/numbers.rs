//! `/numbers`: per task and per queue over the last hour: runs by how they ended, failure
//! rate, throughput, runtime and queue-wait percentiles, from the counters the settling calls
//! add to each minute (`Inspector::task_numbers`), so they hold whichever worker ran the task
//! and survive a dashboard restart.

use axum::{extract::State, response::Response};
use maud::{html, Markup};
use taskq_core::{TaskNumbers, TaskState};

use super::history::duration;
use crate::{layout, state::Shared};

/// The span the numbers cover.
const MINUTES: usize = 60;

pub(crate) async fn page(State(state): State<Shared>) -> Result<Markup, Response> {
    let inspector = state.client.inspector();
    if !inspector.keeps_outcomes() {
        let body = html! {
            p.note #outcomes-unkept { "This broker keeps no per-task counters (RabbitMQ has nowhere to keep them): the workers' Prometheus metrics have the same numbers (docs/observability.md)." }
        };
        return Ok(layout::page(&state, "Numbers", body));
    }
    let queues = inspector.queues().await.map_err(layout::broker_error)?;
    let numbers = futures_util::future::try_join_all(
        queues
            .iter()
            .map(|queue| inspector.task_numbers(queue, MINUTES)),
    )
    .await
    .map_err(layout::broker_error)?;
    let per_queue: Vec<(&String, Vec<TaskNumbers>)> = queues
        .iter()
        .zip(numbers)
        .filter(|(_, tasks)| !tasks.is_empty())
        .collect();
    let body = html! {
        p.note { "The last hour, by the broker's clock. Runs count attempts: a task retried twice and then successful is two RETRY and one SUCCESS; the failure rate is (FAILURE + RETRY) ÷ runs. Percentiles are read from histograms with buckets 19 % wide (within 9 % of the true value)." }
        @if per_queue.is_empty() {
            p.note #no-numbers { "Nothing ended in the last hour." }
        } @else {
            table #task-numbers {
                thead { tr {
                    th { "Queue" } th { "Task" } th { "Runs" } th { "Succeeded" } th { "Failed" } th { "Retried" }
                    th { "Failure rate" } th { "Per minute" }
                    th { "Ran p50" } th { "p95" } th { "p99" } th { "Waited p50" } th { "p95" } th { "p99" }
                } }
                tbody {
                    @for (queue, tasks) in &per_queue {
                        @for task in tasks { (row(queue, &task.task, task, false)) }
                        @if tasks.len() > 1 { (row(queue, "all tasks", &total(tasks), true)) }
                    }
                }
            }
        }
    };
    Ok(layout::page(&state, "Numbers", body))
}

/// One table row: a task's numbers, or a queue's total.
fn row(queue: &str, name: &str, numbers: &TaskNumbers, total: bool) -> Markup {
    let quantile = |h: &taskq_core::Histogram, q| duration(h.quantile(q));
    html! {
        tr.total[total] data-queue=(queue) data-task=(name) {
            td { (queue) }
            td { @if total { em { (name) } } @else { (name) } }
            td.num data-runs=(numbers.runs()) { (numbers.runs()) }
            td.num { (numbers.count(TaskState::Success)) }
            td.num { (numbers.count(TaskState::Failure)) }
            td.num { (numbers.count(TaskState::Retry)) }
            td.num { @match numbers.failure_rate() { Some(rate) => (format!("{:.1} %", rate * 100.0)), None => "-" } }
            td.num { (format!("{:.1}", numbers.runs() as f64 / MINUTES as f64)) }
            td.num data-runtime-p50-us=[numbers.runtime.quantile(0.5).map(|d| d.as_micros())] { (quantile(&numbers.runtime, 0.5)) }
            td.num { (quantile(&numbers.runtime, 0.95)) }
            td.num { (quantile(&numbers.runtime, 0.99)) }
            td.num { (quantile(&numbers.wait, 0.5)) }
            td.num { (quantile(&numbers.wait, 0.95)) }
            td.num { (quantile(&numbers.wait, 0.99)) }
        }
    }
}

/// A queue's tasks added up.
fn total(tasks: &[TaskNumbers]) -> TaskNumbers {
    let mut all = TaskNumbers::default();
    for task in tasks {
        all.merge(task);
    }
    all
}
