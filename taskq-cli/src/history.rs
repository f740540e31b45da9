//! `taskq history`: how recent runs ended, newest first, from each queue's record of recent
//! outcomes in the broker (the dashboard's `/history`), searched by queue, task, state and age.

use std::time::Duration;

use serde_json::json;
use taskq_core::{Client, Outcome, OutcomeFilter, OUTCOME_STATES};

use crate::{table, Failure};

/// What `taskq history` searches for.
pub(crate) struct Search {
    pub(crate) queue: Option<String>,
    pub(crate) task: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) within: Option<Duration>,
    pub(crate) limit: usize,
}

pub(crate) async fn history(
    client: &Client,
    search: Search,
    json: bool,
) -> Result<String, Failure> {
    let broker = client.broker();
    if !broker.keeps_outcomes() {
        return Err(
            "this broker keeps no record of how tasks ended (RabbitMQ has nowhere to \
                    keep one): `taskq result ID` shows one task's result"
                .into(),
        );
    }
    let mut filter = OutcomeFilter::default();
    if let Some(task) = search.task {
        filter = filter.task(task);
    }
    if let Some(state) = search.state {
        let wanted = state.to_ascii_uppercase();
        let state = OUTCOME_STATES
            .into_iter()
            .find(|s| s.as_str() == wanted)
            .ok_or_else(|| {
                format!("`{state}` is not a state a run ends in: SUCCESS, FAILURE, RETRY, REVOKED or EXPIRED")
            })?;
        filter = filter.state(state);
    }
    if let Some(within) = search.within {
        let since = chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
        filter = filter.since(client.clock().now() - since);
    }
    let queues = match search.queue {
        Some(queue) => vec![queue],
        None => broker.queues().await?,
    };
    let mut found: Vec<(String, Outcome)> = Vec::new();
    for queue in queues {
        for outcome in broker
            .recent_outcomes(&queue, &filter, search.limit)
            .await?
        {
            found.push((queue.clone(), outcome));
        }
    }
    found.sort_by_key(|(_, outcome)| std::cmp::Reverse(outcome.at));
    found.truncate(search.limit);
    if json {
        let listed: Vec<_> = found
            .iter()
            .map(|(queue, o)| {
                json!({
                    "id": o.id, "task": o.task, "queue": queue, "state": o.state,
                    "ended_at": o.at, "attempt": o.attempt, "runtime_us": o.runtime_us,
                    "wait_us": o.wait_us, "worker": o.worker, "error": o.error,
                })
            })
            .collect();
        return Ok(serde_json::Value::Array(listed).to_string());
    }
    if found.is_empty() {
        return Ok("no run matches".to_owned());
    }
    let rows: Vec<Vec<String>> = found
        .iter()
        .map(|(queue, o)| {
            vec![
                o.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                o.id.to_string(),
                o.task.clone(),
                queue.clone(),
                o.state.to_string(),
                (o.attempt + 1).to_string(),
                duration(o.runtime()),
                duration(o.wait()),
                table::shorten(o.error.as_deref().unwrap_or(""), 60),
            ]
        })
        .collect();
    Ok(table::render(
        &[
            "ENDED (UTC)",
            "ID",
            "TASK",
            "QUEUE",
            "STATE",
            "ATTEMPT",
            "RAN",
            "WAITED",
            "ERROR",
        ],
        &rows,
    ))
}

/// A duration in ms with a tenth, or "-".
fn duration(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
    )
}
