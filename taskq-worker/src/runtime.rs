//! The run loop: start the stages, fetch into free slots, spawn executions, shut down warm.
//!
//! Data flows one way: [`fetch_loop`] hands each delivery to an [`Executor`], which runs it and
//! hands the outcome to the [`Settler`]; every stage counts through the [`Recorder`]. Background
//! duties ([`Maintenance`]) and the control [`Listener`] run beside them. This module builds
//! all of them from the [`Worker`] and is the only one that knows them all.

use std::{future::Future, sync::Arc, time::Duration};

use taskq_core::{Broker, Delivery, WorkerId};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    broker_call::{broker_backoff, Backoff},
    control::{self, Listener},
    execute::{self, ExecutionSettings, Executor, Leftover},
    lease::Lease,
    maintenance::{self, Maintenance},
    report::{Recorder, WorkerReport},
    revocations::Revocations,
    settle::Settler,
    Result, Worker, WorkerConfig,
};

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
    let rate_limited = registry.rate_limited();
    if !rate_limited.is_empty() && !client.broker().keeps_rate_limits() {
        return Err(crate::error::invalid_config(format!(
            "{} declare(s) a rate limit, which this broker cannot keep (it has no shared \
             state: use the Redis broker, or drop the limit)",
            rate_limited.join(", ")
        )));
    }
    if let Err(err) =
        crate::celery_intake::check(client.broker().as_ref(), &config.celery_queues).await
    {
        return Err(crate::error::invalid_config(taskq_core::error_chain(&err)));
    }
    // Where signatures are checked, the group outcomes a chord's callback is fed from are too.
    let client = match &config.signatures {
        Some(keyring) => client.with_outcome_keys(keyring.clone()),
        None => client,
    };
    let shared = Shared {
        recorder: Arc::new(Recorder::new(config.metrics)),
        revocations: Arc::new(Revocations::default()),
        client,
        registry,
        config,
        hooks,
        asked_to_stop: CancellationToken::new(),
    };
    // The worker stops when its program says so or when an operator asks it by name.
    let asked = shared.asked_to_stop.clone();
    let shutdown = async move {
        tokio::select! {
            () = shutdown => {}
            () = asked.cancelled() => {}
        }
    };
    tokio::pin!(shutdown);
    let mut id = id;
    loop {
        let span = tracing::info_span!("worker", worker = %id);
        let ended = shared
            .incarnation(id.clone(), shutdown.as_mut())
            .instrument(span)
            .await?;
        match ended {
            Ended::Shutdown => break,
            Ended::LeaseLost => {
                let fresh = WorkerId::generate();
                tracing::warn!(
                    worker = %id,
                    rejoining_as = %fresh,
                    "this worker lost its lease (paused or cut off longer than its liveness TTL; another worker recovered its messages): its runs were stopped, it rejoins under a fresh identity"
                );
                shared.recorder.lease_lost();
                id = fresh;
            }
        }
    }
    let report = shared.recorder.report();
    tracing::info!(?report, "worker stopped");
    Ok(report)
}

/// What every incarnation of a worker shares: its tasks, settings and counters.
struct Shared {
    client: taskq_core::Client,
    registry: crate::registry::Registry,
    config: WorkerConfig,
    hooks: crate::hooks::Hooks,
    recorder: Arc<Recorder>,
    revocations: Arc<Revocations>,
    /// Cancelled by a control message asking this worker to shut down.
    asked_to_stop: CancellationToken,
}

/// Why an incarnation ended.
enum Ended {
    /// The shutdown future completed: the worker stops.
    Shutdown,
    /// The worker's lease was recovered by another worker: it rejoins under a fresh identity.
    LeaseLost,
}

impl Shared {
    /// Runs the worker under identity `id` until shutdown or until it learns it lost its lease.
    async fn incarnation(
        &self,
        id: WorkerId,
        shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Ended> {
        let (client, config) = (&self.client, &self.config);
        let broker = client.broker().clone();
        let recorder = &self.recorder;
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let hard_stop = CancellationToken::new();
        let lease_lost = CancellationToken::new();
        let lease = Arc::new(Lease::new(
            config.liveness_ttl,
            broker.membership().is_some(),
        ));
        let settler = Arc::new(Settler::new(
            client.clone(),
            id.clone(),
            config.result_ttl,
            hard_stop.clone(),
            recorder.clone(),
        ));
        // A task's panic is reported with where it happened.
        crate::execute::note_panic_locations();
        let executor = Arc::new(Executor {
            registry: self.registry.clone(),
            settings: ExecutionSettings {
                max_payload_bytes: config.max_payload_bytes,
                track_started: config.track_started,
                result_ttl: config.result_ttl,
                default_timeout: config.default_timeout,
                signatures: config.signatures.clone(),
                encryption: config.encryption.clone(),
            },
            worker: id.clone(),
            clock: client.clock(),
            slots: slots.clone(),
            stopping: CancellationToken::new(),
            hard_stop: hard_stop.clone(),
            revocations: self.revocations.clone(),
            rate_limiter: broker.clone(),
            progress: client.backend().clone(),
            progress_store: Arc::new(client.backend().clone()),
            settler: settler.clone(),
            recorder: recorder.clone(),
            hooks: self.hooks.clone(),
            lease: lease.clone(),
        });
        let maintenance = Maintenance {
            broker: broker.clone(),
            client: client.clone(),
            result_ttl: config.result_ttl,
            worker: id.clone(),
            info: maintenance::worker_info(
                &id,
                &config.queues,
                config.concurrency,
                broker.clock().now(),
            ),
            heartbeat_interval: config.heartbeat_interval,
            liveness_ttl: config.liveness_ttl,
            max_redeliveries: config.max_redeliveries,
            signatures: config.signatures.clone(),
            slots,
            revocations: self.revocations.clone(),
            recorder: recorder.clone(),
            lease_lost: lease_lost.clone(),
            lease: lease.clone(),
            turns: crate::turns::Turns::default(),
            clock_skew_ms: parking_lot::Mutex::new(None),
        };
        let listener = Listener {
            channel: broker.clone(),
            worker: id.clone(),
            revocations: self.revocations.clone(),
            revoke_grace: config.revoke_grace,
            shutdown: self.asked_to_stop.clone(),
        };
        tracing::info!(queues = ?config.queues, concurrency = config.concurrency, "worker started");
        log_durability_warnings(broker.as_ref()).await;
        if let Err(err) = broker.publish_tasks(&self.registry.declarations()).await {
            // By-name producers then fall back to defaults; this worker still runs its tasks.
            tracing::warn!(error = %err, "publishing task declarations failed");
        }
        let acker = settler.start_acker();
        maintenance.round(true).await;
        maintenance.slow_round(0).await;
        let published = maintenance.info.clone();
        let background_stop = CancellationToken::new();
        let background = [
            tokio::spawn(maintenance.run(background_stop.clone()).in_current_span()),
            tokio::spawn(control::listen(listener, background_stop.clone()).in_current_span()),
            tokio::spawn(
                crate::celery_intake::run(
                    broker.clone(),
                    config.celery_queues.clone(),
                    background_stop.clone(),
                )
                .in_current_span(),
            ),
        ];

        let held = Arc::new(Semaphore::new(config.concurrency + config.prefetch));
        let mut executions = JoinSet::new();
        let mut leftovers = Vec::new();
        let fetcher = Fetcher {
            broker: broker.as_ref(),
            executor: &executor,
            worker: &id,
            config,
            lease_lost: &lease_lost,
        };
        let ended = fetcher
            .run(&held, &mut executions, &mut leftovers, shutdown)
            .await;

        executor.stopping.cancel();
        let grace = match ended {
            Ended::Shutdown => {
                tracing::info!(in_flight = executions.len(), "shutting down");
                config.shutdown_grace
            }
            // Its messages belong to other workers now: stop at once (every outcome they
            // would settle is fenced anyway).
            Ended::LeaseLost => Duration::ZERO,
        };
        let grace_ends = tokio::time::Instant::now() + grace;
        let drained =
            tokio::time::timeout_at(grace_ends, drain(&mut executions, &mut leftovers)).await;
        if drained.is_err() {
            if matches!(ended, Ended::Shutdown) {
                tracing::warn!(
                    remaining = executions.len(),
                    ?grace,
                    "grace period over; stopping runs"
                );
            }
            hard_stop.cancel();
            drain(&mut executions, &mut leftovers).await;
        }
        // The acker's last flush also ends with the grace period: a broker that stays down
        // must not hold the shutdown forever (what it could not settle is recovered).
        settler.close();
        let mut acker = acker;
        let settled = match tokio::time::timeout_at(grace_ends, &mut acker).await {
            Ok(settled) => settled,
            Err(_) => {
                if matches!(ended, Ended::Shutdown) {
                    tracing::warn!(
                        ?grace,
                        "grace period over while settling; leaving the rest to recovery"
                    );
                }
                hard_stop.cancel();
                acker.await
            }
        };
        if let Err(err) = settled {
            tracing::error!(error = %err, "acker task failed");
        }
        settler.requeue(&in_fetch_order(leftovers)).await;
        background_stop.cancel();
        for task in background {
            let _ = task.await;
        }
        // After a lost lease this returns what the worker still held on queues whose lease it
        // kept (a lease is per queue).
        if let Some(membership) = broker.membership() {
            membership.deregister(&id, &config.queues).await?;
        }
        // Operators see it leave at once, not when its record expires (after the leases: a
        // broker that is down fails the deregistration first, without a wait for this).
        if let Err(err) = broker.withdraw_worker_info(&published).await {
            tracing::warn!(error = %err, "could not withdraw the worker's info");
        }
        broker.release_worker(&id).await?;
        Ok(ended)
    }
}

/// Says loudly when the broker's settings can lose acknowledged tasks.
async fn log_durability_warnings(broker: &dyn Broker) {
    match broker.durability_warnings().await {
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

/// Unstarted and interrupted messages in the order they were fetched, so that giving them
/// back keeps their order.
fn in_fetch_order(mut leftovers: Vec<Leftover>) -> Vec<Delivery> {
    leftovers.sort_by_key(|(seq, _)| *seq);
    leftovers
        .into_iter()
        .map(|(_, delivery)| delivery)
        .collect()
}

/// What the fetch loop needs.
struct Fetcher<'a> {
    broker: &'a dyn Broker,
    executor: &'a Arc<Executor>,
    worker: &'a WorkerId,
    config: &'a WorkerConfig,
    /// Fires when a heartbeat learns the lease is gone.
    lease_lost: &'a CancellationToken,
}

impl Fetcher<'_> {
    /// Fetches into free holding slots and spawns one execution per message until `shutdown`
    /// or until the worker learns (from a fetch or a heartbeat) that its lease is gone.
    async fn run(
        &self,
        held: &Arc<Semaphore>,
        executions: &mut JoinSet<Option<Leftover>>,
        leftovers: &mut Vec<Leftover>,
        mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Ended {
        let config = self.config;
        let mut backoff = Backoff::new(broker_backoff());
        let mut seq = 0u64;
        let mut order = QueueOrder::new(&config.queues, config.queue_weights.as_deref());
        loop {
            let mut permits = tokio::select! {
                biased;
                _ = &mut shutdown => return Ended::Shutdown,
                _ = self.lease_lost.cancelled() => return Ended::LeaseLost,
                permit = held.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return Ended::Shutdown, // the semaphore is never closed
                },
            };
            let extra = held.available_permits().min(config.fetch_batch - 1);
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
                _ = &mut shutdown => return Ended::Shutdown,
                _ = self.lease_lost.cancelled() => return Ended::LeaseLost,
                fetched = self.broker.fetch(self.worker, order.next(), wanted, config.fetch_wait) => fetched,
            };
            while let Some(joined) = executions.try_join_next() {
                collect(joined, leftovers);
            }
            let deliveries = match fetched {
                Ok(deliveries) => {
                    backoff.reset();
                    deliveries
                }
                Err(taskq_core::Error::LeaseLost { .. }) => return Ended::LeaseLost,
                // The worker never gives up fetching otherwise, whatever the error: it waits
                // longer.
                Err(err) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %err, ?delay, "fetch failed; backing off");
                    tokio::select! {
                        _ = &mut shutdown => return Ended::Shutdown,
                        _ = self.lease_lost.cancelled() => return Ended::LeaseLost,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            for delivery in deliveries {
                seq += 1;
                match permits.split(1) {
                    Some(permit) => {
                        // In the worker's span, so every task's log lines name the worker.
                        // Boxed: the execution's state is ~4 KB, and tokio would copy it
                        // into its task cell on every spawn; a box moves as a pointer. The box
                        // is made by the first poll, on the thread that runs the execution and
                        // most likely frees it: a large block allocated on one thread and freed
                        // on another costs glibc's allocator a lock on the first's arena.
                        let executor = self.executor.clone();
                        executions.spawn(
                            async move {
                                Box::pin(execute::execute(executor, seq, delivery, permit)).await
                            }
                            .in_current_span(),
                        );
                    }
                    // A broker returned more than asked for: give the surplus back at shutdown.
                    None => leftovers.push((seq, delivery)),
                }
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
