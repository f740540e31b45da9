//! `/scheduled`: messages waiting for their time (countdowns, ETAs, retries in backoff),
//! soonest first, paged, filtered by task name; run one now or delete it, or every one the
//! filter matches at once.

use axum::{
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    Form,
};
use chrono::{DateTime, SecondsFormat, Utc};
use maud::{html, Markup};
use taskq_core::{Envelope, Page, TaskId};

use super::{act, pick_queue, queue::pager, queue_select};
use crate::{
    layout,
    state::{AppState, Shared},
};

/// Scheduled messages per page.
const PER_PAGE: usize = 50;

/// Scheduled messages a bulk action looks at, soonest first: past this many it stops and says
/// so (another click goes on), so that one click never scans a million-message set.
const BULK_SCANNED: usize = 10_000;

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Which {
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    offset: usize,
    /// Only messages of this task.
    #[serde(default)]
    task: Option<String>,
}

/// The task of a scheduled message, when its payload reads as an envelope.
fn task_of(payload: &str) -> Option<String> {
    taskq_core::PayloadFields::read(payload).task
}

pub(crate) async fn list(
    State(state): State<Shared>,
    Query(which): Query<Which>,
) -> Result<Markup, Response> {
    let pick = pick_queue(&state, which.queue.as_deref(), |s| s.scheduled).await?;
    let Some(queue) = pick.chosen.clone() else {
        return Ok(layout::page(
            &state,
            "Scheduled",
            html! { p.note { "No queue yet." } },
        ));
    };
    let inspector = state.client.inspector();
    let task = which.task.as_deref().filter(|t| !t.is_empty());
    let waiting = match task {
        // Filtered: the page's share of the matches among the first BULK_SCANNED.
        Some(task) => matching(&*inspector, &queue, task)
            .await
            .map_err(layout::broker_error)?
            .into_iter()
            .skip(which.offset)
            .take(PER_PAGE)
            .collect(),
        None => inspector
            .scheduled(&queue, Page::new(which.offset, PER_PAGE))
            .await
            .map_err(layout::broker_error)?,
    };
    let q = layout::url_part(&queue);
    let task_part = task
        .map(|t| format!("&task={}", layout::url_part(t)))
        .unwrap_or_default();
    let body = html! {
        form.filters method="get" action="/scheduled" {
            (queue_select(&pick, &queue))
            label { "Task " input type="text" name="task" value=[task] placeholder="any"; }
            button type="submit" { "Show" }
        }
        @if let Some(task) = task {
            @if !waiting.is_empty() && !state.read_only {
                form.action.bulk method="post" action=(format!("/scheduled/{q}/bulk")) data-confirm=(format!("Run every scheduled {task} of this queue now?")) {
                    input type="hidden" name="csrf" value=(state.csrf.token());
                    input type="hidden" name="task" value=(task);
                    input type="hidden" name="verb" value="run";
                    button type="submit" { "Run every " (task) " now" }
                }
                form.action.bulk method="post" action=(format!("/scheduled/{q}/bulk")) data-confirm=(format!("Delete every scheduled {task} of this queue for good?")) {
                    input type="hidden" name="csrf" value=(state.csrf.token());
                    input type="hidden" name="task" value=(task);
                    input type="hidden" name="verb" value="delete";
                    button type="submit" { "Delete every " (task) }
                }
                p.note { "Bulk actions act on every match among the first " (BULK_SCANNED) " scheduled messages (soonest first)." }
            }
        }
        @if waiting.is_empty() {
            p.note { "Nothing is scheduled here." }
        } @else {
            table #scheduled {
                thead { tr { th { "Due" } th { "Task id" } th { "Task" } th.num { "Attempt" } th { "Last error" } th { "" } } }
                tbody {
                    @for message in &waiting {
                        @let envelope = Envelope::decode(&message.payload, usize::MAX).ok();
                        tr {
                            td { (layout::time(message.due)) }
                            td { @match &envelope { Some(e) => a href=(format!("/tasks?id={}", e.id)) { (e.id) }, None => "unreadable" } }
                            td { (envelope.as_ref().map_or("?", |e| e.task.as_str())) }
                            td.num { (envelope.as_ref().map_or(0, |e| e.attempt)) }
                            td.error { (envelope.as_ref().and_then(|e| e.last_error.as_deref()).unwrap_or("")) }
                            td.actions {
                                @if let Some(e) = &envelope {
                                    (settle_button(&state, &queue, e.id, message.due, "run", "Run now", None))
                                    (settle_button(&state, &queue, e.id, message.due, "delete", "Delete", Some("Delete this scheduled message for good?")))
                                }
                            }
                        }
                    }
                }
            }
        }
        (pager(&format!("/scheduled?queue={q}{task_part}"), which.offset, PER_PAGE, waiting.len()))
    };
    Ok(layout::page(&state, "Scheduled and retrying", body))
}

/// A POST button for one scheduled message; it carries the due time, which finds the message
/// without scanning the whole scheduled set.
fn settle_button(
    state: &AppState,
    queue: &str,
    id: TaskId,
    due: DateTime<Utc>,
    verb: &str,
    label: &str,
    confirm: Option<&str>,
) -> Markup {
    if state.read_only {
        return html! {};
    }
    html! {
        form.action method="post" action=(format!("/scheduled/{}/{id}/{verb}", layout::url_part(queue))) data-confirm=[confirm] {
            input type="hidden" name="csrf" value=(state.csrf.token());
            input type="hidden" name="due" value=(due.to_rfc3339_opts(SecondsFormat::Nanos, true));
            button type="submit" { (label) }
        }
    }
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct SettleForm {
    #[serde(default)]
    csrf: String,
    due: String,
}

pub(crate) async fn settle(
    State(state): State<Shared>,
    Path((queue, id, verb)): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(form): Form<SettleForm>,
) -> Response {
    let (Ok(id), Ok(due)) = (
        id.parse::<TaskId>(),
        DateTime::parse_from_rfc3339(&form.due),
    ) else {
        return layout::error(StatusCode::BAD_REQUEST, "not a task id and due time");
    };
    let run_now = match verb.as_str() {
        "run" => true,
        "delete" => false,
        _ => return layout::error(StatusCode::NOT_FOUND, "no such action"),
    };
    let back = format!("/scheduled?queue={}", layout::url_part(&queue));
    let inspector = state.client.inspector();
    let settle = inspector.settle_scheduled(&queue, id, due.with_timezone(&Utc), run_now);
    act(&state, &headers, &form.csrf, back, settle).await
}

/// The scheduled messages of `task` among the first [`BULK_SCANNED`] of `queue`, soonest
/// first.
async fn matching(
    inspector: &dyn taskq_core::Inspector,
    queue: &str,
    task: &str,
) -> taskq_core::Result<Vec<taskq_core::ScheduledMessage>> {
    const PAGE: usize = 1_000;
    let mut found = Vec::new();
    let mut offset = 0;
    while offset < BULK_SCANNED {
        let page = inspector.scheduled(queue, Page::new(offset, PAGE)).await?;
        let last = page.len() < PAGE;
        offset += page.len();
        found.extend(
            page.into_iter()
                .filter(|message| task_of(&message.payload).as_deref() == Some(task)),
        );
        if last {
            break;
        }
    }
    Ok(found)
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct BulkForm {
    #[serde(default)]
    csrf: String,
    task: String,
    verb: String,
}

/// Runs now, or deletes, every scheduled message of one task (among the first
/// [`BULK_SCANNED`]), each atomically; one another client moved meanwhile is skipped.
pub(crate) async fn bulk(
    State(state): State<Shared>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<BulkForm>,
) -> Response {
    let run_now = match form.verb.as_str() {
        "run" => true,
        "delete" => false,
        _ => return layout::error(StatusCode::NOT_FOUND, "no such action"),
    };
    let back = format!(
        "/scheduled?queue={}&task={}",
        layout::url_part(&queue),
        layout::url_part(&form.task)
    );
    let inspector = state.client.inspector();
    let settle_all = async {
        let mut settled = 0;
        for message in matching(&*inspector, &queue, &form.task).await? {
            let Some(id) = taskq_core::PayloadFields::read(&message.payload).id else {
                continue;
            };
            if inspector
                .settle_scheduled(&queue, id, message.due, run_now)
                .await?
            {
                settled += 1;
            }
        }
        tracing::warn!(%queue, task = %form.task, run_now, settled, "scheduled messages settled in bulk from the dashboard");
        Ok(settled)
    };
    act(&state, &headers, &form.csrf, back, settle_all).await
}
