//! `/workers`: every live worker's report.

use axum::{extract::State, response::Response};
use maud::html;

use crate::{layout, server::Shared};

pub(crate) async fn page(State(state): State<Shared>) -> Result<maud::Markup, Response> {
    let workers = state
        .client
        .inspector()
        .workers()
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
    };
    Ok(layout::page(&state, "Workers", body))
}
