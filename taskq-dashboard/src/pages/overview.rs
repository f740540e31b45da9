//! `/`: every queue's counts, the last hour's processed and failed per minute, live.

use axum::{extract::State, response::Response};
use maud::html;
use serde::Serialize;
use taskq_core::{Client, MinuteCounts, QueueStats};

use crate::{layout, state::Shared};

/// Minutes the chart shows.
pub(crate) const CHART_MINUTES: usize = 60;

/// What the overview shows; also what `/events` sends.
#[derive(Debug, Serialize)]
pub(crate) struct Overview {
    pub(crate) queues: Vec<QueueRow>,
    pub(crate) history: Vec<MinuteCounts>,
    pub(crate) workers: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct QueueRow {
    pub(crate) queue: String,
    #[serde(flatten)]
    pub(crate) stats: QueueStats,
    /// Seconds the oldest ready message has waited.
    pub(crate) oldest_pending_seconds: Option<i64>,
    /// The queue's own `[processed, failed]` per minute, the chart's minutes (its breakdown:
    /// pairs of numbers, so a hundred queues add little to every event).
    pub(crate) minutes: Vec<[u64; 2]>,
}

/// Reads the overview: per queue one stats call and one history call, every queue's in
/// flight at once.
pub(crate) async fn read(client: &Client) -> taskq_core::Result<Overview> {
    let inspector = client.inspector();
    let now = client.clock().now();
    let names = inspector.queues().await?;
    let per_queue = futures_util::future::try_join_all(names.iter().map(|queue| async {
        let stats = inspector.stats(queue).await?;
        let minutes = inspector.history(queue, CHART_MINUTES).await?;
        Ok::<_, taskq_core::Error>((stats, minutes))
    }))
    .await?;
    let mut queues = Vec::new();
    let mut history: Vec<MinuteCounts> = Vec::new();
    for (queue, (stats, minutes)) in names.into_iter().zip(per_queue) {
        let own = minutes.iter().map(|m| [m.processed, m.failed]).collect();
        if history.is_empty() {
            history = minutes;
        } else {
            for (total, minute) in history.iter_mut().zip(minutes) {
                total.processed += minute.processed;
                total.failed += minute.failed;
            }
        }
        queues.push(QueueRow {
            minutes: own,
            oldest_pending_seconds: stats
                .oldest_pending
                .map(|at| (now - at).num_seconds().max(0)),
            queue,
            stats,
        });
    }
    if history.is_empty() {
        history = taskq_core::history::last_minutes(now, CHART_MINUTES)
            .into_iter()
            .map(|m| MinuteCounts::new(taskq_core::history::minute_start(m), 0, 0))
            .collect();
    }
    let workers = inspector.workers().await?.len();
    Ok(Overview {
        queues,
        history,
        workers,
    })
}

pub(crate) async fn page(State(state): State<Shared>) -> Result<maud::Markup, Response> {
    let overview = read(&state.client).await.map_err(layout::broker_error)?;
    // Read with the page, not in `read`: the live stream calls that every two seconds and
    // the page does not redraw warnings.
    let warnings = state
        .client
        .broker()
        .durability_warnings()
        .await
        .map_err(layout::broker_error)?;
    // The whole overview, as `/events` sends it: the script draws the chart from it.
    let data = serde_json::to_string(&overview).unwrap_or_default();
    let body = html! {
        @for warning in &warnings {
            p.warning role="alert" { (warning) }
        }
        section.cards {
            div.card { span.label { "Workers" } span.value #workers { (overview.workers) } }
            div.card title="Tasks acknowledged in the last hour: succeeded, or ended revoked or expired. Each task counts once, however many attempts it took." { span.label { "Finished tasks, last hour" } span.value #processed-hour { (overview.history.iter().map(|m| m.processed).sum::<u64>()) } }
            div.card title="Tasks dead-lettered in the last hour: failed for good (retries exhausted or not retryable), malformed, unknown task. Failed attempts that were retried are not counted." { span.label { "Dead-lettered tasks, last hour" } span.value #failed-hour { (overview.history.iter().map(|m| m.failed).sum::<u64>()) } }
        }
        section {
            h2 { "Finished and dead-lettered tasks per minute, last hour" }
            label { "Chart of " select #chart-queue {
                option value="" { "every queue" }
                @for row in &overview.queues { option value=(row.queue) { (row.queue) } }
            } }
            p.legend #chart-legend {
                span.swatch.processed {} " finished (acknowledged; each task once)"
                span.swatch.failed {} " dead-lettered (failed for good; retried attempts not counted)"
                " · times in your browser's time zone"
            }
            canvas #chart width="900" height="180" data-overview=(data) aria-label="finished and dead-lettered tasks per minute over the last hour" {}
        }
        section {
            h2 { "Queues" }
            @if overview.queues.is_empty() {
                p.note { "No queue has received a message yet." }
            } @else {
                table #queues {
                    thead { tr { th { "Queue" } th.num { "Pending" } th.num { "Scheduled" } th.num { "Processing" } th.num { "Dead" } th.num { "Oldest pending" } th { "State" } } }
                    tbody {
                        @for row in &overview.queues {
                            tr data-queue=(row.queue) {
                                td { a href=(format!("/queues/{}", layout::url_part(&row.queue))) { (row.queue) } }
                                td.num data-field="pending" { (row.stats.pending) }
                                td.num data-field="scheduled" { (row.stats.scheduled) }
                                td.num data-field="processing" { (row.stats.processing) }
                                td.num data-field="dead" { a href=(format!("/dead?queue={}", layout::url_part(&row.queue))) { (row.stats.dead) } }
                                td.num data-field="oldest_pending_seconds" { (row.oldest_pending_seconds.map(|s| format!("{s} s")).unwrap_or_else(|| "-".into())) }
                                td.state data-field="paused" { @if row.stats.paused { "paused" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&state, "Overview", body))
}
