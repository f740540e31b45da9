//! `/history`: recent outcomes (how runs ended, newest first), searchable by queue, task name,
//! state and time, read from each queue's capped record that the settling calls write
//! (`Inspector::recent_outcomes`).

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::Response,
};
use maud::{html, Markup};
use taskq_core::{Outcome, OutcomeFilter, OUTCOME_STATES};

use crate::{layout, state::Shared};

/// Outcomes listed at most.
const SHOWN: usize = 100;

/// How far back the filter looks, by the broker's clock.
const WINDOWS: [(&str, &str, Option<i64>); 5] = [
    ("", "any time", None),
    ("5m", "last 5 minutes", Some(5)),
    ("1h", "last hour", Some(60)),
    ("6h", "last 6 hours", Some(360)),
    ("24h", "last day", Some(1440)),
];

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Search {
    #[serde(default)]
    queue: String,
    #[serde(default)]
    task: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    within: String,
}

pub(crate) async fn page(
    State(state): State<Shared>,
    Query(search): Query<Search>,
) -> Result<Markup, Response> {
    let inspector = state.client.inspector();
    if !inspector.keeps_outcomes() {
        let body = html! {
            p.note #outcomes-unkept { "This broker keeps no record of how tasks ended (RabbitMQ has nowhere to keep one): look a task up by its id on the Tasks page, where its result is." }
        };
        return Ok(layout::page(&state, "History", body));
    }
    let filter = filter_of(&search, state.client.broker().clock().now())?;
    let queues = inspector.queues().await.map_err(layout::broker_error)?;
    let searched: Vec<&String> = queues
        .iter()
        .filter(|q| search.queue.is_empty() || **q == search.queue)
        .collect();
    let found = futures_util::future::try_join_all(
        searched
            .iter()
            .map(|queue| inspector.recent_outcomes(queue, &filter, SHOWN)),
    )
    .await
    .map_err(layout::broker_error)?;
    let mut rows: Vec<(&str, Outcome)> = searched
        .iter()
        .zip(found)
        .flat_map(|(queue, outcomes)| outcomes.into_iter().map(move |o| (queue.as_str(), o)))
        .collect();
    rows.sort_by_key(|(_, outcome)| std::cmp::Reverse(outcome.at));
    rows.truncate(SHOWN);
    let body = html! {
        form.filters method="get" action="/history" {
            label { "Queue " select name="queue" {
                option value="" { "every queue" }
                @for q in &queues { option value=(q) selected[*q == search.queue] { (q) } }
            } }
            label { "Task " input type="text" name="task" value=(search.task) placeholder="any task"; }
            label { "State " select name="state" {
                option value="" { "any state" }
                @for s in OUTCOME_STATES { option value=(s) selected[s.as_str() == search.state] { (s) } }
            } }
            label { "When " select name="within" {
                @for (value, label, _) in WINDOWS { option value=(value) selected[value == search.within] { (label) } }
            } }
            button type="submit" { "Search" }
        }
        p.note { "How runs ended, newest first (at most " (SHOWN) " shown). Each queue keeps its last " (taskq_core::RECENT_OUTCOMES_KEPT) " outcomes, written by the calls that settle them; a RETRY is an attempt that failed and will run again." }
        @if rows.is_empty() {
            p.note #no-outcomes { "Nothing matches." }
        } @else {
            table #history {
                thead { tr { th { "Ended" } th { "Queue" } th { "Task" } th { "State" } th { "Attempt" } th { "Ran" } th { "Waited" } th { "Task id" } th { "Error" } } }
                tbody {
                    @for (queue, outcome) in &rows {
                        tr data-id=(outcome.id) data-task=(outcome.task) data-ended=(outcome.state) {
                            td.num { (layout::time(outcome.at)) }
                            td { (queue) }
                            td { (outcome.task) }
                            td.state data-state=(outcome.state) { (outcome.state) }
                            td.num { (outcome.attempt + 1) }
                            td.num { (duration(outcome.runtime())) }
                            td.num { (duration(outcome.wait())) }
                            td { a href=(format!("/tasks?id={}", outcome.id)) { (outcome.id) } }
                            td { @if let Some(error) = &outcome.error { code.error { (error) } } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&state, "History", body))
}

/// The filter a search asks for; a state or window that is not one the form offers is a 400.
fn filter_of(
    search: &Search,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<OutcomeFilter, Response> {
    let mut filter = OutcomeFilter::default();
    let task = search.task.trim();
    if !task.is_empty() {
        filter = filter.task(task);
    }
    if !search.state.is_empty() {
        let state = OUTCOME_STATES
            .into_iter()
            .find(|s| s.as_str() == search.state)
            .ok_or_else(|| {
                layout::error(
                    StatusCode::BAD_REQUEST,
                    &format!("`{}` is not a state a run ends in", search.state),
                )
            })?;
        filter = filter.state(state);
    }
    let window = WINDOWS
        .iter()
        .find(|(value, _, _)| *value == search.within)
        .ok_or_else(|| {
            layout::error(
                StatusCode::BAD_REQUEST,
                &format!("`{}` is not a time window this page offers", search.within),
            )
        })?;
    if let Some(minutes) = window.2 {
        filter = filter.since(now - chrono::Duration::minutes(minutes));
    }
    Ok(filter)
}

/// A duration as people read it, to about three significant digits; "-" when unknown.
///
/// Three digits in the unit that keeps the number between 1 and 1,000: `850 µs`, `50.2 ms`,
/// `1.25 s`.
pub(crate) fn duration(duration: Option<std::time::Duration>) -> String {
    let Some(duration) = duration else {
        return "-".to_owned();
    };
    let us = duration.as_secs_f64() * 1e6;
    let (value, unit) = if us < 1e3 {
        (us, "µs")
    } else if us < 1e6 {
        (us / 1e3, "ms")
    } else {
        (us / 1e6, "s")
    };
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.decimals$} {unit}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_read_with_three_digits() {
        let shown = |us| super::duration(Some(Duration::from_micros(us)));
        assert_eq!(shown(850), "850 µs");
        assert_eq!(shown(50_200), "50.2 ms");
        assert_eq!(shown(1_250_000), "1.25 s");
        assert_eq!(super::duration(None), "-");
    }
}
