//! The run loop: fetch into free slots, spawn executions, shut down warm.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use taskq_core::{Client, DeadReason, Envelope, WorkerId};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    acker::Acker,
    control::{self, Revocations},
    execute::{self, Leftover},
    hooks::Hooks,
    maintenance,
    metrics::{self, Event},
    registry::Registry,
    Result, Worker, WorkerConfig,
};

/// What a worker did between start and shutdown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Attempts that failed and were scheduled again.
    pub retried: u64,
    /// Invocations that ended as FAILURE.
    pub failed: u64,
    /// Messages moved to dead letters (failures, malformed, unknown tasks).
    pub dead_lettered: u64,
    /// Invocations that ended as EXPIRED without running.
    pub expired: u64,
    /// Invocations that ended as REVOKED (skipped, or stopped while running).
    pub revoked: u64,
    /// Messages put back unfinished on shutdown.
    pub requeued: u64,
}

/// Counters behind [`WorkerReport`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) succeeded: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) revoked: AtomicU64,
    pub(crate) requeued: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> WorkerReport {
        WorkerReport {
            succeeded: self.succeeded.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            revoked: self.revoked.load(Ordering::Relaxed),
            requeued: self.requeued.load(Ordering::Relaxed),
        }
    }
}

/// State shared by the run loop and every execution.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub(crate) client: Client,
    pub(crate) registry: Registry,
    pub(crate) config: WorkerConfig,
    pub(crate) worker: WorkerId,
    /// Execution slots (concurrency).
    pub(crate) slots: Arc<Semaphore>,
    /// Fires when shutdown starts: no more fetching, unstarted messages go back.
    pub(crate) stopping: CancellationToken,
    /// Fires when the grace period ends: running executions are stopped and requeued.
    pub(crate) hard_stop: CancellationToken,
    pub(crate) counters: Counters,
    /// Writes results and acknowledges finished messages in batches.
    pub(crate) acker: Acker,
    /// Revoked ids and running executions that a revocation may stop.
    pub(crate) revocations: Revocations,
    /// User callbacks on outcomes.
    pub(crate) hooks: Hooks,
    /// When this worker started, for its published info.
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    /// This host's name, for its published info.
    pub(crate) host: String,
}

impl Runtime {
    /// Counts one outcome in the worker's report and, if enabled, in its metrics.
    pub(crate) fn record(&self, event: Event, envelope: &Envelope) {
        let counter = match event {
            Event::Started => None,
            Event::Succeeded => Some(&self.counters.succeeded),
            Event::Failed => Some(&self.counters.failed),
            Event::Retried => Some(&self.counters.retried),
            Event::Revoked => Some(&self.counters.revoked),
            Event::Expired => Some(&self.counters.expired),
        };
        if let Some(counter) = counter {
            Counters::bump(counter);
        }
        if self.config.metrics {
            metrics::count(event, envelope);
        }
    }

    /// Counts a dead letter.
    pub(crate) fn record_dead_letter(&self, queue: &str, reason: DeadReason) {
        Counters::bump(&self.counters.dead_lettered);
        if self.config.metrics {
            metrics::dead_lettered(queue, reason);
        }
    }

    /// Records how long a message waited before it started, if metrics are on.
    pub(crate) fn record_queue_wait(
        &self,
        envelope: &Envelope,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        if self.config.metrics {
            metrics::queue_wait(envelope, now);
        }
    }

    /// Records how long an attempt ran, if metrics are on.
    pub(crate) fn record_run_time(&self, envelope: &Envelope, took: std::time::Duration) {
        if self.config.metrics {
            metrics::run_time(envelope, took);
        }
    }
}

pub(crate) async fn run(
    worker: Worker,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WorkerReport> {
    let Worker {
        client,
        registry,
        config,
        id,
        hooks,
    } = worker;
    let held_limit = config.concurrency + config.prefetch;
    let runtime = Arc::new(Runtime {
        slots: Arc::new(Semaphore::new(config.concurrency)),
        client,
        registry,
        config,
        worker: id,
        stopping: CancellationToken::new(),
        hard_stop: CancellationToken::new(),
        counters: Counters::default(),
        acker: Acker::new(),
        revocations: Revocations::default(),
        hooks,
        started_at: chrono::Utc::now(),
        host: taskq_core::local_hostname(),
    });
    let span = tracing::info_span!("worker", worker = %runtime.worker);
    async move {
        tracing::info!(queues = ?runtime.config.queues, concurrency = runtime.config.concurrency, "worker started");
        log_durability_warnings(&runtime).await;
        publish_declarations(&runtime).await;
        let acker = Acker::start(&runtime);
        maintenance::round(&runtime).await;
        maintenance::slow_round(&runtime).await;
        let maintenance_stop = CancellationToken::new();
        let maintenance = tokio::spawn(
            maintenance::run(runtime.clone(), maintenance_stop.clone()).in_current_span(),
        );
        let control = tokio::spawn(
            control::listen(runtime.clone(), maintenance_stop.clone()).in_current_span(),
        );

        let held = Arc::new(Semaphore::new(held_limit));
        let mut executions = JoinSet::new();
        let mut leftovers = Vec::new();
        fetch_loop(&runtime, &held, &mut executions, &mut leftovers, shutdown).await;

        tracing::info!(in_flight = executions.len(), "shutting down");
        runtime.stopping.cancel();
        let grace = runtime.config.shutdown_grace;
        let drained = tokio::time::timeout(grace, drain(&mut executions, &mut leftovers)).await;
        if drained.is_err() {
            tracing::warn!(remaining = executions.len(), ?grace, "grace period over; stopping runs");
            runtime.hard_stop.cancel();
            drain(&mut executions, &mut leftovers).await;
        }
        runtime.acker.close();
        if let Err(err) = acker.await {
            tracing::error!(error = %err, "acker task failed");
        }
        give_back(&runtime, leftovers).await;
        maintenance_stop.cancel();
        let _ = maintenance.await;
        let _ = control.await;
        if let Some(membership) = runtime.client.broker().membership() {
            membership
                .deregister(&runtime.worker, &runtime.config.queues)
                .await?;
        }
        let report = runtime.counters.report();
        tracing::info!(?report, "worker stopped");
        Ok(report)
    }
    .instrument(span)
    .await
}

/// Publishes what the registered tasks declare, so that producers enqueueing by name (CLI,
/// beat, other services) route and retry them as declared. A failure is logged: by-name
/// producers then fall back to the defaults, and this worker still runs what it receives.
async fn publish_declarations(runtime: &Runtime) {
    let declarations = runtime.registry.declarations();
    if let Err(err) = runtime.client.broker().publish_tasks(&declarations).await {
        tracing::warn!(error = %err, "publishing task declarations failed");
    }
}

/// Says loudly when the broker's settings can lose acknowledged tasks.
async fn log_durability_warnings(runtime: &Runtime) {
    match runtime.client.broker().durability_warnings().await {
        Ok(warnings) => {
            for warning in warnings {
                tracing::warn!("{warning}");
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "could not check the broker's durability settings")
        }
    }
}

async fn drain(executions: &mut JoinSet<Option<Leftover>>, leftovers: &mut Vec<Leftover>) {
    while let Some(joined) = executions.join_next().await {
        collect(joined, leftovers);
    }
}

fn collect(
    joined: Result<Option<Leftover>, tokio::task::JoinError>,
    leftovers: &mut Vec<Leftover>,
) {
    match joined {
        Ok(Some(leftover)) => leftovers.push(leftover),
        Ok(None) => {}
        // Executions catch task panics themselves; reaching this is a bug in the worker. The
        // message stays in the processing set, which deregistration gives back.
        Err(err) => tracing::error!(error = %err, "execution task failed"),
    }
}

/// Puts unstarted and interrupted messages back at the head of their queues, in fetch order,
/// without spending a retry.
async fn give_back(runtime: &Runtime, mut leftovers: Vec<Leftover>) {
    if leftovers.is_empty() {
        return;
    }
    leftovers.sort_by_key(|(seq, _)| *seq);
    let deliveries: Vec<_> = leftovers.into_iter().map(|(_, d)| d).collect();
    match runtime
        .client
        .broker()
        .requeue(&runtime.worker, &deliveries)
        .await
    {
        Ok(requeued) => {
            runtime
                .counters
                .requeued
                .fetch_add(requeued as u64, Ordering::Relaxed);
        }
        // Deregistration, or else another worker's reaper, returns them.
        Err(err) => tracing::warn!(error = %err, "requeue on shutdown failed"),
    }
}

/// Fetches into free holding slots and spawns one execution per message until `shutdown`.
async fn fetch_loop(
    runtime: &Arc<Runtime>,
    held: &Arc<Semaphore>,
    executions: &mut JoinSet<Option<Leftover>>,
    leftovers: &mut Vec<Leftover>,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let broker = runtime.client.broker();
    let mut failures = 0u32;
    let mut seq = 0u64;
    let mut order = QueueOrder::new(
        &runtime.config.queues,
        runtime.config.queue_weights.as_deref(),
    );
    loop {
        let mut permits = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            permit = held.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // the semaphore is never closed
            },
        };
        let extra = held.available_permits().min(runtime.config.fetch_batch - 1);
        if extra > 0 {
            if let Ok(more) = held.clone().try_acquire_many_owned(extra as u32) {
                permits.merge(more);
            }
        }
        let wanted = permits.num_permits();
        // Dropping a fetch mid-flight is safe: deregistration returns whatever reached this
        // worker's processing set.
        let fetched = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            fetched = broker.fetch(&runtime.worker, order.next(), wanted, runtime.config.fetch_wait) => fetched,
        };
        while let Some(joined) = executions.try_join_next() {
            collect(joined, leftovers);
        }
        let deliveries = match fetched {
            Ok(deliveries) => {
                failures = 0;
                deliveries
            }
            Err(err) => {
                failures += 1;
                let delay = maintenance::broker_backoff(failures);
                tracing::warn!(error = %err, ?delay, "fetch failed; backing off");
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        for delivery in deliveries {
            seq += 1;
            match permits.split(1) {
                Some(permit) => {
                    executions.spawn(execute::execute(runtime.clone(), seq, delivery, permit));
                }
                // A broker returned more than asked for: give the surplus back at shutdown.
                None => leftovers.push((seq, delivery)),
            }
        }
    }
}

/// The queue order of each fetch: fixed (strict priority), or led by the queue a smooth
/// weighted round robin picks (nginx's algorithm: deterministic, and over any window of
/// `sum(weights)` fetches each queue leads exactly its weight's share).
#[derive(Debug)]
pub(crate) struct QueueOrder {
    queues: Vec<String>,
    weights: Option<Vec<i64>>,
    current: Vec<i64>,
    ordered: Vec<String>,
}

impl QueueOrder {
    pub(crate) fn new(queues: &[String], weights: Option<&[u32]>) -> Self {
        Self {
            queues: queues.to_vec(),
            weights: weights.map(|w| w.iter().map(|&w| i64::from(w)).collect()),
            current: vec![0; queues.len()],
            ordered: queues.to_vec(),
        }
    }

    pub(crate) fn next(&mut self) -> &[String] {
        let Some(weights) = &self.weights else {
            return &self.queues;
        };
        let total: i64 = weights.iter().sum();
        for (current, weight) in self.current.iter_mut().zip(weights) {
            *current += weight;
        }
        let lead = (0..self.current.len())
            .max_by_key(|&i| (self.current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        self.current[lead] -= total;
        self.ordered.clear();
        self.ordered.push(self.queues[lead].clone());
        self.ordered.extend(
            self.queues
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != lead)
                .map(|(_, q)| q.clone()),
        );
        &self.ordered
    }
}

#[cfg(test)]
mod tests {
    use super::QueueOrder;

    #[test]
    fn weighted_order_leads_by_weight_deterministically() {
        let queues = vec!["a".to_owned(), "b".to_owned()];
        let mut order = QueueOrder::new(&queues, Some(&[3, 1]));
        let leads: String = (0..8).map(|_| order.next()[0].clone()).collect();
        assert_eq!(leads, "aabaaaba");
        assert_eq!(order.next(), ["a", "b"]);
    }

    #[test]
    fn strict_order_is_the_listed_order() {
        let queues = vec!["a".to_owned(), "b".to_owned()];
        let mut order = QueueOrder::new(&queues, None);
        assert_eq!(order.next(), ["a", "b"]);
        assert_eq!(order.next(), ["a", "b"]);
    }
}
