//! `/workers`: every live worker's report.

use axum::{extract::State, response::Response};
use maud::html;

use crate::{layout, state::Shared};

pub(crate) async fn page(State(state): State<Shared>) -> Result<maud::Markup, Response> {
    let inspector = state.client.inspector();
    let workers = inspector.workers().await.map_err(layout::broker_error)?;
    let lost = inspector
        .lost_workers()
        .await
        .map_err(layout::broker_error)?;
    let body = html! {
        @if workers.is_empty() {
            p.note { "No worker is running." }
        } @else {
            table #workers {
                thead { tr { th { "Worker" } th { "Host" } th.num { "Pid" } th { "Queues" } th.num { "In flight" } th.num { "Concurrency" } th { "Started" } th { "Last heartbeat" } th.num { "Clock skew" } } }
                tbody {
                    @for worker in &workers {
                        tr {
                            td { code { (worker.id) } }
                            td { (worker.host) }
                            td.num { (worker.pid) }
                            td { (worker.queues.join(", ")) }
                            td.num { (worker.in_flight) }
                            td.num { (worker.concurrency) }
                            td { (layout::time(worker.started_at)) }
                            td { (layout::time(worker.last_heartbeat)) }
                            td.num { (worker.clock_skew_ms.map(|ms| format!("{ms} ms")).unwrap_or_else(|| "-".into())) }
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
