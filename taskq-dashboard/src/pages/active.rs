//! `/active`: what workers hold now across every queue (running, or prefetched and about to
//! run), read from the workers' processing lists; terminate one (revoke with terminate: the
//! worker stops it and records REVOKED).

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
    Form,
};
use maud::{html, Markup};
use taskq_core::{PayloadFields, TaskId};

use super::{act, ActionForm};
use crate::{layout, state::Shared};

/// Held messages shown per queue.
const PER_QUEUE: usize = 50;

pub(crate) async fn page(State(state): State<Shared>) -> Result<Markup, Response> {
    let inspector = state.client.inspector();
    if !inspector.sees_held() {
        let body = html! {
            p.note #held-unseen { "This broker does not show the messages its workers hold (RabbitMQ keeps unacknowledged deliveries out of sight without its management plugin); tasks that record STARTED show on their task pages." }
        };
        return Ok(layout::page(&state, "Active", body));
    }
    let queues = inspector.queues().await.map_err(layout::broker_error)?;
    let held = futures_util::future::try_join_all(
        queues.iter().map(|queue| inspector.held(queue, PER_QUEUE)),
    )
    .await
    .map_err(layout::broker_error)?;
    let rows: Vec<_> = queues
        .iter()
        .zip(held)
        .flat_map(|(queue, held)| held.into_iter().map(move |message| (queue, message)))
        .collect();
    let body = html! {
        p.note { "Held by workers now: running, or prefetched and about to run (at most " (PER_QUEUE) " per queue). Terminate revokes the task: its worker stops it and records REVOKED." }
        @if rows.is_empty() {
            p.note #nothing-active { "No worker holds a task." }
        } @else {
            table #active {
                thead { tr { th { "Task id" } th { "Task" } th { "Queue" } th { "Enqueued" } th { "Worker" } th { "" } } }
                tbody {
                    @for (queue, message) in &rows {
                        @let fields = PayloadFields::read(&message.payload);
                        tr data-id=[fields.id.map(|id| id.to_string())] {
                            td { @if let Some(id) = fields.id { a href=(format!("/tasks?id={id}")) { (id) } } @else { "-" } }
                            td { (fields.task.as_deref().unwrap_or("?")) }
                            td { a href=(format!("/queues/{}", layout::url_part(queue))) { (queue) } }
                            td { @if let Some(at) = fields.created_at { (layout::time(at)) } }
                            td { code { (message.worker) } }
                            td { @if let Some(id) = fields.id {
                                (layout::action(&state, &format!("/active/{id}/terminate"), "Terminate",
                                    Some("Stop this task? Its worker cancels it and records REVOKED.")))
                            } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&state, "Active", body))
}

pub(crate) async fn terminate(
    State(state): State<Shared>,
    Path(id): Path<TaskId>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let client = state.client.clone();
    let stop = async move {
        tracing::warn!(task.id = %id, "task terminated from the dashboard");
        client.revoke(id, true).await
    };
    act(&state, &headers, &form.csrf, "/active".to_owned(), stop).await
}
