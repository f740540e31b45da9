//! Queue signals for autoscalers and alerts in the Prometheus text format, read from the
//! broker on each scrape (not from the workers, so a queue nobody consumes still reports):
//! per queue pending, scheduled, processing, dead, the oldest pending message's age, and the
//! completion and failure rates over the last five whole minutes. Served by the dashboard at
//! `/metrics` and by `taskq metrics serve`.
//!
//! The exporter's text comes from metrics-exporter-prometheus through a recorder local to the
//! scrape, so names, labels and escaping follow the format without a hand-written encoder.

use metrics::{describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;
use taskq_core::{Client, Inspector, QueueStats, Result};

/// Whole minutes the rates average over.
const RATE_MINUTES: usize = 5;

/// The scrape: every queue's signals, in the Prometheus text format.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// let client = taskq_core::Client::in_memory();
/// client.enqueue_by_name("reports.build", &serde_json::json!({})).await?;
/// let text = taskq_dashboard::queue_metrics(&client).await?;
/// assert!(text.contains("taskq_queue_pending{queue=\"default\"} 1"), "{text}");
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// The broker's error.
pub async fn queue_metrics(client: &Client) -> Result<String> {
    let inspector = client.inspector();
    let now = client.clock().now();
    let mut queues = Vec::new();
    for queue in inspector.queues().await? {
        let stats = inspector.stats(&queue).await?;
        let (completed, failed) = rates(inspector.as_ref(), &queue).await?;
        let partitions = inspector.partitions(&queue, usize::MAX).await?;
        let signals = QueueSignals {
            stats,
            completed,
            failed,
            busy_partitions: partitions.len(),
            partitions_at_limit: partitions.iter().filter(|p| p.at_limit()).count(),
        };
        queues.push((queue, signals));
    }
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        for (queue, signals) in &queues {
            record(queue, signals, now);
        }
    });
    Ok(handle.render())
}

/// What one queue's series say.
struct QueueSignals {
    stats: QueueStats,
    completed: f64,
    failed: f64,
    busy_partitions: usize,
    partitions_at_limit: usize,
}

/// Completions and failures per second over the last [`RATE_MINUTES`] whole minutes.
async fn rates(inspector: &dyn Inspector, queue: &str) -> Result<(f64, f64)> {
    let mut minutes = inspector.history(queue, RATE_MINUTES + 1).await?;
    minutes.pop(); // the current minute, not whole yet
    let seconds = (minutes.len().max(1) * 60) as f64;
    let processed: u64 = minutes.iter().map(|m| m.processed).sum();
    let failed: u64 = minutes.iter().map(|m| m.failed).sum();
    Ok((processed as f64 / seconds, failed as f64 / seconds))
}

fn describe() {
    describe_gauge!("taskq_queue_pending", "Messages ready to run");
    describe_gauge!(
        "taskq_queue_scheduled",
        "Messages waiting for their ETA, countdown or retry backoff"
    );
    describe_gauge!(
        "taskq_queue_processing",
        "Messages workers hold (running or about to run)"
    );
    describe_gauge!("taskq_queue_dead", "Dead letters kept");
    describe_gauge!(
        "taskq_queue_oldest_pending_age_seconds",
        "How long the oldest ready message has waited (0 when none waits)"
    );
    describe_gauge!(
        "taskq_queue_completed_per_second",
        "Messages that ended successfully per second, over the last five whole minutes"
    );
    describe_gauge!(
        "taskq_queue_failed_per_second",
        "Messages that ended failed per second, over the last five whole minutes"
    );
    describe_gauge!(
        "taskq_queue_busy_partitions",
        "Partitions (tenants) with ready or running messages"
    );
    describe_gauge!(
        "taskq_queue_partitions_at_limit",
        "Partitions running as many messages as their limit allows"
    );
}

fn record(queue: &str, signals: &QueueSignals, now: chrono::DateTime<chrono::Utc>) {
    let stats = &signals.stats;
    let labels = [("queue", queue.to_owned())];
    gauge!("taskq_queue_pending", &labels).set(stats.pending as f64);
    gauge!("taskq_queue_scheduled", &labels).set(stats.scheduled as f64);
    gauge!("taskq_queue_processing", &labels).set(stats.processing as f64);
    gauge!("taskq_queue_dead", &labels).set(stats.dead as f64);
    let age = stats.oldest_pending.map_or(0.0, |at| {
        (now - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    gauge!("taskq_queue_oldest_pending_age_seconds", &labels).set(age);
    gauge!("taskq_queue_completed_per_second", &labels).set(signals.completed);
    gauge!("taskq_queue_failed_per_second", &labels).set(signals.failed);
    gauge!("taskq_queue_busy_partitions", &labels).set(signals.busy_partitions as f64);
    gauge!("taskq_queue_partitions_at_limit", &labels).set(signals.partitions_at_limit as f64);
}

/// `GET /metrics` on the dashboard, behind its access rules.
pub(crate) async fn serve(
    axum::extract::State(state): axum::extract::State<crate::state::Shared>,
) -> axum::response::Response {
    scrape(&state.client).await
}

/// [`queue_metrics`] as a response with the text format's content type.
async fn scrape(client: &Client) -> axum::response::Response {
    match queue_metrics(client).await {
        Ok(text) => axum::response::IntoResponse::into_response((
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            text,
        )),
        Err(err) => crate::layout::broker_error(err),
    }
}

/// Serves only `/metrics` on `listen` until `shutdown`: the queue signals for Prometheus and
/// autoscalers (KEDA), without the dashboard's pages (`taskq metrics serve`). It shows counts
/// and rates only, no task content, and needs no login.
///
/// # Errors
///
/// When `listen` cannot be bound.
pub async fn serve_queue_metrics(
    client: Client,
    listen: std::net::SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::result::Result<(), crate::DashboardError> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "queue metrics listening");
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let client = client.clone();
            async move { scrape(&client).await }
        }),
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
