//! `/scheduled`: messages waiting for their time (countdowns, ETAs, retries in backoff),
//! soonest first, paged; run one now, or delete it.

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

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Which {
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    offset: usize,
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
    let waiting = inspector
        .scheduled(&queue, Page::new(which.offset, PER_PAGE))
        .await
        .map_err(layout::broker_error)?;
    let body = html! {
        form.filters method="get" action="/scheduled" {
            (queue_select(&pick, &queue))
            button type="submit" { "Show" }
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
        (pager(&format!("/scheduled?queue={}", layout::url_part(&queue)), which.offset, PER_PAGE, waiting.len()))
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
