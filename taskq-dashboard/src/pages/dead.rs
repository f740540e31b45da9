//! `/dead`: dead letters, paged and filtered by reason and task; one shown whole; requeue one or
//! all, delete one.

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Form,
};
use maud::{html, Markup};
use taskq_core::{DeadLetter, Page, PayloadFields, TaskId};

use super::{act, pick_queue, queue::pager, queue_select, ActionForm};
use crate::{
    layout,
    state::{Shared, MAX_PAGE},
};

/// Dead letters listed per page.
const PER_PAGE: usize = 50;

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Filter {
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    offset: usize,
}

impl Filter {
    fn active(&self) -> bool {
        self.reason.as_deref().is_some_and(|r| !r.is_empty())
            || self.task.as_deref().is_some_and(|t| !t.is_empty())
    }

    fn matches(&self, letter: &DeadLetter) -> bool {
        let reason_ok = self
            .reason
            .as_deref()
            .filter(|r| !r.is_empty())
            .is_none_or(|r| letter.reason.to_string() == r);
        let task_ok = self
            .task
            .as_deref()
            .filter(|t| !t.is_empty())
            .is_none_or(|t| PayloadFields::read(&letter.payload).task.as_deref() == Some(t));
        reason_ok && task_ok
    }

    fn query(&self, queue: &str) -> String {
        let mut query = format!("/dead?queue={}", layout::url_part(queue));
        for (key, value) in [("reason", &self.reason), ("task", &self.task)] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                query.push_str(&format!("&{key}={}", layout::url_part(value)));
            }
        }
        query
    }
}

pub(crate) async fn list(
    State(state): State<Shared>,
    Query(filter): Query<Filter>,
) -> Result<Markup, Response> {
    let inspector = state.client.inspector();
    let pick = pick_queue(&state, filter.queue.as_deref(), |s| s.dead).await?;
    let Some(queue) = pick.chosen.clone() else {
        return Ok(layout::page(
            &state,
            "Dead letters",
            html! { p.note { "No queue yet." } },
        ));
    };
    let q = layout::url_part(&queue);
    // A filter looks through a bounded window, so a page stays fast with a million letters.
    let window = if filter.active() {
        MAX_PAGE * 5
    } else {
        PER_PAGE
    };
    let scanned = inspector
        .dead_letters(&queue, Page::new(filter.offset, window))
        .await
        .map_err(layout::broker_error)?;
    let shown: Vec<&DeadLetter> = scanned
        .iter()
        .filter(|l| filter.matches(l))
        .take(PER_PAGE)
        .collect();
    let base = filter.query(&queue);
    let body = html! {
        form.filters method="get" action="/dead" {
            (queue_select(&pick, &queue))
            label { "Reason " input name="reason" value=(filter.reason.as_deref().unwrap_or("")) placeholder="e.g. retries_exhausted"; }
            label { "Task " input name="task" value=(filter.task.as_deref().unwrap_or("")) placeholder="e.g. emails.send"; }
            button type="submit" { "Filter" }
        }
        (layout::action(&state, &format!("/dead/{q}/requeue-all"), "Requeue all dead letters of this queue",
            Some("Requeue every dead letter of this queue?")))
        @if shown.is_empty() {
            p.note { "No dead letters here." }
        } @else {
            table #dead {
                thead { tr { th { "When" } th { "Task id" } th { "Task" } th { "Reason" } th { "Error" } th { "" } } }
                tbody {
                    @for letter in &shown {
                        @let fields = PayloadFields::read(&letter.payload);
                        tr data-id=[letter.id] {
                            td { (layout::time(letter.at)) }
                            td { @if let Some(id) = letter.id { a href=(format!("/dead/{q}/{id}")) { (id) } } @else { "unreadable" } }
                            td { (fields.task.as_deref().unwrap_or("?")) }
                            td { (letter.reason) }
                            td.error { (letter.error.as_deref().unwrap_or("")) }
                            td.actions {
                                @if let Some(id) = letter.id {
                                    (layout::action(&state, &format!("/dead/{q}/{id}/requeue"), "Requeue", None))
                                    (layout::action(&state, &format!("/dead/{q}/{id}/delete"), "Delete", Some("Delete this dead letter for good?")))
                                }
                            }
                        }
                    }
                }
            }
        }
        (pager(&base, filter.offset, window, scanned.len()))
    };
    Ok(layout::page(&state, "Dead letters", body))
}

async fn find(state: &Shared, queue: &str, id: &str) -> Result<DeadLetter, Response> {
    let id: TaskId = id
        .parse()
        .map_err(|_| layout::error(StatusCode::BAD_REQUEST, "not a task id"))?;
    state
        .client
        .inspector()
        .find_dead_letter(queue, id)
        .await
        .map_err(layout::broker_error)?
        .ok_or_else(|| {
            layout::error(
                StatusCode::NOT_FOUND,
                &format!("no dead letter {id} in queue {queue}"),
            )
        })
}

pub(crate) async fn show(
    State(state): State<Shared>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Markup, Response> {
    let letter = find(&state, &queue, &id).await?;
    let q = layout::url_part(&queue);
    let body = html! {
        dl.record {
            dt { "Queue" } dd { a href=(format!("/dead?queue={q}")) { (queue) } }
            dt { "Reason" } dd { (letter.reason) }
            dt { "When" } dd { (layout::time(letter.at)) }
            @if let Some(worker) = &letter.worker { dt { "Worker" } dd { code { (worker) } } }
            @if let Some(error) = &letter.error { dt { "Error" } dd { pre.error { (error) } } }
            dt { "Message" } dd { (layout::json_block(&letter.payload, Some(&format!("/dead/{q}/{id}/payload.json")))) }
        }
        div.buttons {
            (layout::action(&state, &format!("/dead/{q}/{id}/requeue"), "Requeue", None))
            (layout::action(&state, &format!("/dead/{q}/{id}/delete"), "Delete", Some("Delete this dead letter for good?")))
        }
    };
    Ok(layout::page(&state, &format!("Dead letter {id}"), body))
}

pub(crate) async fn payload(
    State(state): State<Shared>,
    Path((queue, id)): Path<(String, String)>,
) -> Response {
    match find(&state, &queue, &id).await {
        Ok(letter) => (
            [
                (header::CONTENT_TYPE, "application/json".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{id}.json\""),
                ),
            ],
            letter.payload,
        )
            .into_response(),
        Err(response) => response,
    }
}

async fn act_on_one(
    state: &Shared,
    headers: &HeaderMap,
    csrf: &str,
    queue: &str,
    id: &str,
    requeue: bool,
) -> Response {
    let Ok(id) = id.parse::<TaskId>() else {
        return layout::error(StatusCode::BAD_REQUEST, "not a task id");
    };
    let inspector = state.client.inspector();
    let back = format!("/dead?queue={}", layout::url_part(queue));
    if requeue {
        act(
            state,
            headers,
            csrf,
            back,
            inspector.requeue_dead(queue, Some(&[id])),
        )
        .await
    } else {
        act(
            state,
            headers,
            csrf,
            back,
            inspector.delete_dead(queue, &[id]),
        )
        .await
    }
}

pub(crate) async fn requeue(
    State(state): State<Shared>,
    Path((queue, id)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    act_on_one(&state, &headers, &form.csrf, &queue, &id, true).await
}

pub(crate) async fn delete(
    State(state): State<Shared>,
    Path((queue, id)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    act_on_one(&state, &headers, &form.csrf, &queue, &id, false).await
}

pub(crate) async fn requeue_all(
    State(state): State<Shared>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let back = format!("/dead?queue={}", layout::url_part(&queue));
    let inspector = state.client.inspector();
    act(
        &state,
        &headers,
        &form.csrf,
        back,
        inspector.requeue_dead(&queue, None),
    )
    .await
}
