//! `/queues/{queue}`: one queue's counts, its busy partitions, the messages its workers hold,
//! and its ready messages, paged; pause, resume, purge.

use axum::{
    extract::{Path, Query, State},
    http::HeaderMap,
    response::Response,
    Form,
};
use maud::html;
use taskq_core::{Page, PayloadFields};

use super::{act, ActionForm, Paging};
use crate::{
    layout,
    state::{Shared, MAX_PAGE},
};

/// Ready messages per page.
const PER_PAGE: usize = 50;

pub(crate) async fn page(
    State(state): State<Shared>,
    Path(queue): Path<String>,
    Query(paging): Query<Paging>,
) -> Result<maud::Markup, Response> {
    let inspector = state.client.inspector();
    let stats = inspector
        .stats(&queue)
        .await
        .map_err(layout::broker_error)?;
    let limit = PER_PAGE.min(MAX_PAGE);
    // RabbitMQ cannot list ready messages without delivering them: its page shows the counts.
    let pending = if inspector.lists_pending() {
        inspector
            .pending(&queue, Page::new(paging.offset, limit))
            .await
            .map_err(layout::broker_error)?
    } else {
        Vec::new()
    };
    // What workers hold now (running or about to run), where the broker can tell.
    let held = if inspector.sees_held() {
        inspector
            .held(&queue, PER_PAGE)
            .await
            .map_err(layout::broker_error)?
    } else {
        Vec::new()
    };
    let partitions = inspector
        .partitions(&queue, PER_PAGE)
        .await
        .map_err(layout::broker_error)?;
    let q = layout::url_part(&queue);
    let body = html! {
        section.cards {
            div.card { span.label { "Pending" } span.value { (stats.pending) } }
            div.card { span.label { "Scheduled" } span.value { (stats.scheduled) } }
            div.card { span.label { "Processing" } span.value { (stats.processing) } }
            div.card { span.label { "Dead" } span.value { a href=(format!("/dead?queue={q}")) { (stats.dead) } } }
        }
        @if stats.paused {
            p.note #paused { "Paused: no worker takes from this queue until it is resumed (enqueues still land)." }
            (layout::action(&state, &format!("/queues/{q}/resume"), "Resume", None))
        } @else if inspector.pauses_queues() {
            (layout::action(&state, &format!("/queues/{q}/pause"), "Pause",
                Some("Pause this queue? No worker takes from it until it is resumed.")))
        }
        (layout::action(&state, &format!("/queues/{q}/purge"), "Purge pending and scheduled messages",
            Some("Delete every pending and scheduled message of this queue?")))
        @if !partitions.is_empty() {
            h2 { "Busy partitions, most pending first" }
            table #partitions {
                thead { tr { th { "Partition" } th.num { "Pending" } th.num { "Running" } th.num { "Limit" } th { "" } } }
                tbody {
                    @for partition in &partitions {
                        tr {
                            td { code { (partition.key) } }
                            td.num { (partition.pending) }
                            td.num { (partition.running) }
                            td.num { @if let Some(limit) = partition.limit { (limit) } @else { "-" } }
                            td { @if partition.at_limit() { "at limit" } }
                        }
                    }
                }
            }
        }
        @if !held.is_empty() {
            h2 { "Held by workers: running or about to run" }
            table #held {
                thead { tr { th { "Task id" } th { "Task" } th { "Worker" } } }
                tbody {
                    @for message in &held {
                        @let fields = PayloadFields::read(&message.payload);
                        tr {
                            td { @if let Some(id) = fields.id { a href=(format!("/tasks?id={id}")) { (id) } } @else { "-" } }
                            td { (fields.task.as_deref().unwrap_or("?")) }
                            td { code { (message.worker) } }
                        }
                    }
                }
            }
        }
        @if !inspector.sees_held() {
            p.note #held-unseen { "This broker does not show the messages its workers hold (RabbitMQ keeps unacknowledged deliveries out of sight without its management plugin); tasks that record STARTED show on their task pages." }
        }
        h2 { "Ready messages, in the order workers take them" }
        @if !inspector.lists_pending() {
            p.note #pending-unlisted { "This broker cannot list ready messages without delivering them (RabbitMQ: every delivery counts toward the poison cap); the counts above are its own." }
        } @else if pending.is_empty() {
            p.note { "Nothing is waiting." }
        } @else {
            table #pending {
                thead { tr { th { "#" } th { "Task id" } th { "Task" } th.num { "Priority" } th { "Enqueued" } th { "Arguments" } } }
                tbody {
                    @for (n, payload) in pending.iter().enumerate() {
                        @let fields = PayloadFields::read(payload);
                        tr {
                            td.num { (paging.offset + n + 1) }
                            td { @if let Some(id) = fields.id { a href=(format!("/tasks?id={id}")) { (id) } } @else { "-" } }
                            td { (fields.task.as_deref().unwrap_or("?")) }
                            td.num { (fields.priority) }
                            td { @if let Some(at) = fields.created_at { (layout::time(at)) } }
                            td { (layout::json_folded(payload)) }
                        }
                    }
                }
            }
        }
        (pager(&format!("/queues/{q}"), paging.offset, limit, pending.len()))
    };
    Ok(layout::page(&state, &format!("Queue {queue}"), body))
}

/// Previous / next links of a paged list.
pub(crate) fn pager(base: &str, offset: usize, limit: usize, shown: usize) -> maud::Markup {
    let join = if base.contains('?') { '&' } else { '?' };
    html! {
        nav.pager {
            @if offset > 0 { a rel="prev" href=(format!("{base}{join}offset={}", offset.saturating_sub(limit))) { "← previous" } }
            @if shown == limit { a rel="next" href=(format!("{base}{join}offset={}", offset + limit)) { "next →" } }
        }
    }
}

pub(crate) async fn purge(
    State(state): State<Shared>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let back = format!("/queues/{}", layout::url_part(&queue));
    let inspector = state.client.inspector();
    let purge = async {
        let purged = inspector.purge_queue(&queue).await?;
        tracing::warn!(%queue, purged, "queue purged from the dashboard");
        Ok(purged)
    };
    act(&state, &headers, &form.csrf, back, purge).await
}

pub(crate) async fn pause(
    State(state): State<Shared>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    set_paused(state, queue, headers, form, true).await
}

pub(crate) async fn resume(
    State(state): State<Shared>,
    Path(queue): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    set_paused(state, queue, headers, form, false).await
}

async fn set_paused(
    state: Shared,
    queue: String,
    headers: HeaderMap,
    form: ActionForm,
    paused: bool,
) -> Response {
    let back = format!("/queues/{}", layout::url_part(&queue));
    let inspector = state.client.inspector();
    let change = async {
        inspector.set_paused(&queue, paused).await?;
        tracing::warn!(%queue, paused, "queue paused or resumed from the dashboard");
        Ok(())
    };
    act(&state, &headers, &form.csrf, back, change).await
}
