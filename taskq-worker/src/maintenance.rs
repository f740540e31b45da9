//! Background duties of every worker: heartbeat, reaping lost workers, promoting due messages.

use std::{sync::Arc, time::Duration};

use taskq_core::{Membership, WorkerInfo};
use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;

/// Scheduled messages promoted per round; more wait for the next round.
const PROMOTE_BATCH: usize = 1000;

/// Rounds between two publications of the worker's info and refreshes of the revoked set:
/// both have faster paths (pub/sub) or tolerate a few seconds, and an idle worker should cost
/// only a few Redis commands per second.
const SLOW_EVERY: u64 = 5;

/// Runs one round at once, then every heartbeat interval, until `stop` fires.
pub(crate) async fn run(runtime: Arc<Runtime>, stop: CancellationToken) {
    let interval = runtime.config.heartbeat_interval;
    let mut rounds = 0u64;
    loop {
        round(&runtime).await;
        rounds += 1;
        if rounds.is_multiple_of(SLOW_EVERY) {
            slow_round(&runtime).await;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One heartbeat, one reaper pass (for brokers with a [`Membership`] role) and one promotion
/// pass; failures are logged, not fatal.
pub(crate) async fn round(runtime: &Runtime) {
    let broker = runtime.client.broker();
    let queues = &runtime.config.queues;
    if let Some(membership) = broker.membership() {
        heartbeat_and_reap(runtime, membership).await;
    }
    if let Err(err) = broker.promote_scheduled(queues, PROMOTE_BATCH).await {
        tracing::warn!(error = %err, "promoting scheduled messages failed");
    }
}

async fn heartbeat_and_reap(runtime: &Runtime, membership: &dyn Membership) {
    let queues = &runtime.config.queues;
    if let Err(err) = membership
        .heartbeat(&runtime.worker, queues, runtime.config.liveness_ttl)
        .await
    {
        tracing::warn!(error = %err, "heartbeat failed");
    }
    match membership
        .recover_lost_workers(queues, runtime.config.max_redeliveries)
        .await
    {
        Ok(report) if !report.workers.is_empty() => {
            if runtime.config.metrics {
                crate::metrics::recovered(report.requeued + report.dead_lettered);
            }
            tracing::warn!(
                workers = ?report.workers,
                requeued = report.requeued,
                dead_lettered = report.dead_lettered,
                "recovered messages of lost workers"
            );
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "reaper pass failed"),
    }
}

/// Publishes the worker's info and refreshes the revoked set (every [`SLOW_EVERY`] rounds, and
/// once at start).
pub(crate) async fn slow_round(runtime: &Runtime) {
    let broker = runtime.client.broker();
    let queues = &runtime.config.queues;
    let mut info = WorkerInfo::new(
        runtime.worker.as_str(),
        &runtime.host,
        queues.clone(),
        runtime.config.concurrency,
        runtime.started_at,
    );
    info.in_flight = runtime.config.concurrency - runtime.slots.available_permits();
    if runtime.config.metrics {
        crate::metrics::in_flight(info.in_flight);
    }
    info.last_heartbeat = chrono::Utc::now();
    if let Some(membership) = broker.membership() {
        if let Err(err) = membership
            .publish_worker_info(&info, runtime.config.liveness_ttl)
            .await
        {
            tracing::warn!(error = %err, "publishing worker info failed");
        }
    }
    match broker.revoked().await {
        Ok(ids) => runtime.revocations.refresh(ids),
        Err(err) => tracing::warn!(error = %err, "reading revocations failed"),
    }
}

/// Capped exponential backoff with full jitter for broker errors: 50 ms doubling to 5 s.
pub(crate) fn broker_backoff(failures: u32) -> Duration {
    let ceiling = 50u64.saturating_mul(1 << failures.min(7)).min(5_000);
    Duration::from_millis(fastrand::u64(ceiling / 2..=ceiling))
}
