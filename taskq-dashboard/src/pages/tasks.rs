//! `/tasks?id=`: one task's record (state, result or error, attempts, progress, times), or a
//! workflow's members; without an id, the recent failures.

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::Response,
};
use maud::{html, Markup};
use taskq_core::{workflow::WorkflowRecord, Page, TaskId, TaskState};

use crate::{layout, state::Shared};

/// Recent failures listed per queue.
const RECENT: usize = 10;

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Lookup {
    #[serde(default)]
    id: String,
}

pub(crate) async fn page(
    State(state): State<Shared>,
    Query(lookup): Query<Lookup>,
) -> Result<Markup, Response> {
    let id = lookup.id.trim();
    if id.is_empty() {
        let body = recent_failures(&state).await?;
        return Ok(layout::page(&state, "Tasks", body));
    }
    let id: TaskId = id.parse().map_err(|_| {
        layout::error(
            StatusCode::BAD_REQUEST,
            &format!("`{id}` is not a task id (a UUID like 67e55044-10b1-426f-9247-bb680e5fe0c8)"),
        )
    })?;
    let client = &state.client;
    if let Some(workflow) = client.workflow(id).await.map_err(layout::broker_error)? {
        let body = workflow_members(&state, &workflow).await?;
        return Ok(layout::page(&state, &format!("Workflow {id}"), body));
    }
    let record = client.result(id).await.map_err(layout::broker_error)?;
    let letter = dead_letter_of(&state, id, record.as_ref()).await?;
    // A running task without a STARTED record (no track_started) is still in a worker's hands.
    let held = match record {
        None => client.find_held(id).await.map_err(layout::broker_error)?,
        Some(_) => None,
    };
    let body = match (record, held) {
        (None, Some((queue, held))) => {
            let task = taskq_core::PayloadFields::read(&held.payload)
                .task
                .unwrap_or_default();
            html! {
                dl.record {
                    dt { "State" } dd.state data-state="RECEIVED" { "RECEIVED" }
                    dt { "Task" } dd { (task) }
                    dt { "Queue" } dd { (queue) }
                    dt { "Worker" } dd { code { (held.worker) } }
                }
                p.note { "Held by its worker: running or about to run. The task records no STARTED (track_started would)." }
            }
        }
        (None, None) => html! {
            p.note { "Nothing is recorded for " code { (id) } ": not run yet (PENDING), unknown, or its result expired." }
        },
        (Some(record), _) => html! {
            dl.record {
                dt { "State" } dd.state data-state=(record.state) { (record.state) }
                dt { "Task" } dd { (record.task) }
                dt { "Attempts" } dd { (record.attempts) }
                @if let Some(worker) = &record.worker { dt { "Worker" } dd { code { (worker) } } }
                @if let Some(started) = record.started_at { dt { "Started" } dd { (layout::time(started)) } }
                dt { "Updated" } dd { (layout::time(record.updated_at)) }
                @if let Some(progress) = &record.progress { dt { "Progress" } dd { (layout::json_block(&progress.to_string(), None)) } }
                @if let Some(error) = &record.error { dt { "Error" } dd { pre.error { (error) } } }
                @if !record.earlier_errors.is_empty() {
                    dt { "Earlier attempts" }
                    dd {
                        // Numbered by attempt: the list keeps the latest ones before this.
                        @let first = record.attempts.saturating_sub(record.earlier_errors.len() as u32);
                        ol #earlier-errors start=(first.max(1)) {
                            @for error in &record.earlier_errors { li { pre.error { (error) } } }
                        }
                    }
                }
                @if let Some(result) = &record.result { dt { "Result" } dd { (layout::json_block(result.get(), None)) } }
                @if let Some(letter) = &letter {
                    dt { "Dead letter" } dd { a href=(format!("/dead/{}/{id}", layout::url_part(&letter.queue))) { (letter.reason) " in " (letter.queue) } }
                    dt { "Message" } dd { (layout::json_block(&letter.payload, Some(&format!("/dead/{}/{id}/payload.json", layout::url_part(&letter.queue))))) }
                }
            }
        },
    };
    Ok(layout::page(&state, &format!("Task {id}"), body))
}

/// The dead letter of a task that ended FAILURE, if one is kept: it holds the message, so the
/// page can show the arguments the task ran with.
async fn dead_letter_of(
    state: &Shared,
    id: TaskId,
    record: Option<&taskq_core::TaskResult>,
) -> Result<Option<taskq_core::DeadLetter>, Response> {
    if record.is_none_or(|r| r.state != TaskState::Failure) {
        return Ok(None);
    }
    let inspector = state.client.inspector();
    for queue in inspector.queues().await.map_err(layout::broker_error)? {
        if let Some(letter) = inspector
            .find_dead_letter(&queue, id)
            .await
            .map_err(layout::broker_error)?
        {
            return Ok(Some(letter));
        }
    }
    Ok(None)
}

async fn workflow_members(state: &Shared, workflow: &WorkflowRecord) -> Result<Markup, Response> {
    let shown = &workflow.members[..workflow.members.len().min(crate::MAX_PAGE)];
    let states = state
        .client
        .states(shown)
        .await
        .map_err(layout::broker_error)?;
    let then: Vec<TaskId> = workflow.then.iter().map(|n| n.output_id()).collect();
    Ok(html! {
        p { "A " strong { (format!("{:?}", workflow.kind).to_lowercase()) } " of " (workflow.members.len()) " members, sent " (layout::time(workflow.created_at)) "." }
        table #members {
            thead { tr { th { "#" } th { "Member" } th { "State" } } }
            tbody {
                @for (n, (member, member_state)) in shown.iter().zip(&states).enumerate() {
                    tr { td.num { (n + 1) } td { a href=(format!("/tasks?id={member}")) { (member) } } td data-state=(member_state) { (member_state) } }
                }
            }
        }
        @if workflow.members.len() > shown.len() { p.note { (workflow.members.len() - shown.len()) " more members not listed." } }
        @if !then.is_empty() {
            h2 { "Then" }
            ul { @for id in &then { li { a href=(format!("/tasks?id={id}")) { (id) } } } }
        }
    })
}

async fn recent_failures(state: &Shared) -> Result<Markup, Response> {
    let inspector = state.client.inspector();
    let mut failures = Vec::new();
    for queue in inspector.queues().await.map_err(layout::broker_error)? {
        failures.extend(
            inspector
                .dead_letters(&queue, Page::first(RECENT))
                .await
                .map_err(layout::broker_error)?,
        );
    }
    failures.sort_by_key(|letter| std::cmp::Reverse(letter.at));
    failures.truncate(RECENT * 2);
    Ok(html! {
        p { "Look a task or workflow up by its id in the box above." }
        h2 { "Recent failures" }
        @if failures.is_empty() { p.note { "No dead letters." } }
        @else {
            table #recent-failures {
                thead { tr { th { "When" } th { "Queue" } th { "Task id" } th { "Reason" } th { "Error" } } }
                tbody {
                    @for letter in &failures {
                        tr {
                            td { (layout::time(letter.at)) }
                            td { (letter.queue) }
                            td { @if let Some(id) = letter.id { a href=(format!("/dead/{}/{id}", layout::url_part(&letter.queue))) { (id) } } @else { "-" } }
                            td { (letter.reason) }
                            td { (letter.error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    })
}
