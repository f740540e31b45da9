//! `/workers`: every live worker's report; ping them all, or ask one to shut down (warm: it
//! finishes what it runs and gives back what it prefetched).

use std::time::Duration;

use axum::{
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
    Form,
};
use futures_util::StreamExt;
use maud::html;
use taskq_core::{ControlMessage, TaskId};

use super::{act, ActionForm};
use crate::{layout, state::Shared};

/// How long a ping waits for answers.
const PING_WAIT: Duration = Duration::from_secs(1);

pub(crate) async fn page(State(state): State<Shared>) -> Result<maud::Markup, Response> {
    let inspector = state.client.inspector();
    let workers = inspector.workers().await.map_err(layout::broker_error)?;
    let lost = inspector
        .lost_workers()
        .await
        .map_err(layout::broker_error)?;
    let body = html! {
        p { a #ping href="/workers/ping" { "Ping every worker" } }
        @if workers.is_empty() {
            p.note { "No worker is running." }
        } @else {
            table #workers {
                thead { tr { th { "Worker" } th { "Host" } th.num { "Pid" } th { "Queues" } th.num { "In flight" } th.num { "Concurrency" } th { "Started" } th { "Last heartbeat" } th.num { "Clock skew" } th { "" } } }
                tbody {
                    @for worker in &workers {
                        tr data-worker=(worker.id) {
                            td { code { (worker.id) } }
                            td { (worker.host) }
                            td.num { (worker.pid) }
                            td { (worker.queues.join(", ")) }
                            td.num { (worker.in_flight) }
                            td.num { (worker.concurrency) }
                            td { (layout::time(worker.started_at)) }
                            td { (layout::time(worker.last_heartbeat)) }
                            td.num { (worker.clock_skew_ms.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "-".into())) }
                            td { (layout::action(&state, &format!("/workers/{}/shutdown", layout::url_part(&worker.id)), "Shut down",
                                Some("Shut this worker down? It takes nothing more, finishes what it runs within its grace period, and exits."))) }
                        }
                    }
                }
            }
        }
        p.note { "Workers that stopped heartbeating drop off this list; their messages are recovered by the others." }
        h2 { "Recently lost" }
        @if lost.is_empty() {
            p.note { "No worker was found lost recently." }
        } @else {
            table #lost-workers {
                thead { tr { th { "Worker" } th { "Lost" } th { "Host" } th.num { "Pid" } th { "Queues" } th { "Last heartbeat" } } }
                tbody {
                    @for worker in &lost {
                        tr {
                            td { code { (worker.id) } }
                            td { (layout::time(worker.lost_at)) }
                            @if let Some(info) = &worker.last_info {
                                td { (info.host) } td.num { (info.pid) } td { (info.queues.join(", ")) } td { (layout::time(info.last_heartbeat)) }
                            } @else {
                                td colspan="4" { "no report left" }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&state, "Workers", body))
}

/// `/workers/ping`: asks every worker to answer and lists who did within [`PING_WAIT`].
pub(crate) async fn ping(State(state): State<Shared>) -> Result<maud::Markup, Response> {
    let broker = state.client.broker();
    let mut replies = broker
        .subscribe_control()
        .await
        .map_err(layout::broker_error)?;
    let nonce = TaskId::new().to_string();
    let sent = tokio::time::Instant::now();
    broker
        .broadcast(&ControlMessage::Ping {
            nonce: nonce.clone(),
        })
        .await
        .map_err(layout::broker_error)?;
    let mut answers = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout_at(sent + PING_WAIT, replies.next()).await {
        if let ControlMessage::Pong {
            nonce: answered,
            worker,
            ..
        } = message
        {
            if answered == nonce {
                answers.push((worker, sent.elapsed()));
            }
        }
    }
    let body = html! {
        @if answers.is_empty() {
            p.note #no-answer { "No worker answered within " (PING_WAIT.as_secs()) " s." }
        } @else {
            table #pongs {
                thead { tr { th { "Worker" } th.num { "Answered in" } } }
                tbody {
                    @for (worker, after) in &answers {
                        tr { td { code { (worker) } } td.num { (format!("{:.1} ms", after.as_secs_f64() * 1000.0)) } }
                    }
                }
            }
        }
        p { a href="/workers" { "Back to the workers" } }
    };
    Ok(layout::page(&state, "Ping", body))
}

/// Asks worker `worker` to shut down warm (the control message it answers by name).
pub(crate) async fn shutdown(
    State(state): State<Shared>,
    Path(worker): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let broker = state.client.broker().clone();
    let ask = async move {
        tracing::warn!(%worker, "worker asked to shut down from the dashboard");
        broker.broadcast(&ControlMessage::Shutdown { worker }).await
    };
    act(&state, &headers, &form.csrf, "/workers".to_owned(), ask).await
}
