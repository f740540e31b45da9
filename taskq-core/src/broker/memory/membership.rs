//! The memory broker's worker leases and reaper ([`Membership`]).
//!
//! Leases are per (worker, queue), as on Redis: a reaper of queue `a` recovers what a lost
//! worker held from `a` and leaves its messages of other queues to those queues' reapers.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryBroker, State};
use crate::broker::{LostWorker, LOST_WORKERS_KEPT};
use crate::{
    broker::{DeadLetter, DeadReason, Membership, RecoveryReport, WorkerId},
    error::Error,
    error::Result,
};

impl State {
    /// Takes everything `worker` holds from `queue`, oldest hand-out first.
    fn take_held(&mut self, worker: &WorkerId, queue: &str) -> Vec<super::Message> {
        let Some(held) = self.workers.get_mut(worker) else {
            return Vec::new();
        };
        let mut taken: Vec<_> = held
            .processing
            .extract_if(|_, (q, _)| &**q == queue)
            .map(|(tag, (_, message))| (tag, message))
            .collect();
        taken.sort_by_key(|(tag, _)| *tag);
        if held.processing.is_empty() && held.leases.is_empty() {
            self.workers.remove(worker);
        }
        // Their partitions' slots come back with them, not earlier.
        if let Some(q) = self.queues.get_mut(queue) {
            for (_, message) in &taken {
                q.ready.release(message);
            }
        }
        taken.into_iter().map(|(_, message)| message).collect()
    }

    /// Workers whose lease on `queue` ended before `now`; their lease is removed (the claim
    /// that makes each recovery happen once).
    fn claim_lost(&mut self, queue: &str, now: DateTime<Utc>) -> Vec<WorkerId> {
        let mut lost = Vec::new();
        for (id, worker) in &mut self.workers {
            if worker.leases.get(queue).is_some_and(|until| *until < now) {
                worker.leases.remove(queue);
                lost.push(id.clone());
            }
        }
        lost.sort();
        lost
    }
}

#[async_trait]
impl Membership for MemoryBroker {
    async fn heartbeat(&self, worker: &WorkerId, queues: &[String], ttl: Duration) -> Result<()> {
        let deadline = self.shared.clock.now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        let mut state = self.lock();
        let state = &mut *state;
        let renewing = !state.joined.insert(worker.clone());
        let leases = &mut state.workers.entry(worker.clone()).or_default().leases;
        if renewing && queues.iter().any(|queue| !leases.contains_key(queue)) {
            return Err(Error::LeaseLost {
                worker: worker.to_string(),
            });
        }
        for queue in queues {
            leases.insert(queue.clone(), deadline);
        }
        Ok(())
    }

    async fn recover_lost_workers(
        &self,
        queues: &[String],
        max_redeliveries: u32,
    ) -> Result<RecoveryReport> {
        let now = self.shared.clock.now();
        let caps = self.shared.config.dead_caps();
        let mut state = self.lock();
        let mut report = RecoveryReport::default();
        for queue_name in queues {
            for worker in state.claim_lost(queue_name, now) {
                // Pushed to the head one by one, newest first, so the oldest ends up first.
                for message in state.take_held(&worker, queue_name).into_iter().rev() {
                    let queue = state.queues.entry(queue_name.clone()).or_default();
                    let count = queue.redeliveries.entry(message.id).or_default();
                    *count += 1;
                    let count = *count;
                    if count > max_redeliveries {
                        queue.redeliveries.remove(&message.id);
                        let letter = DeadLetter::new(
                            queue_name.as_str(),
                            &*message.payload,
                            DeadReason::WorkerLost,
                            Some(format!("recovered from lost workers {count} times")),
                            Some(worker.to_string()),
                            now,
                        );
                        queue.dead.push(letter, caps);
                        report.dead_lettered += 1;
                        report
                            .poisoned
                            .push((message.id, message.payload.to_string()));
                    } else {
                        queue.push_front(message);
                        report.requeued += 1;
                    }
                }
                if !report.workers.contains(&worker) {
                    report.workers.push(worker);
                }
            }
        }
        drop(state);
        if report.requeued > 0 {
            self.shared.ready.notify_waiters();
        }
        Ok(report)
    }

    async fn deregister(&self, worker: &WorkerId, queues: &[String]) -> Result<()> {
        let mut state = self.lock();
        let mut requeued = false;
        for queue in queues {
            if let Some(held) = state.workers.get_mut(worker) {
                held.leases.remove(queue);
            }
            for message in state.take_held(worker, queue).into_iter().rev() {
                state
                    .queues
                    .entry(queue.clone())
                    .or_default()
                    .push_front(message);
                requeued = true;
            }
        }
        drop(state);
        if requeued {
            self.shared.ready.notify_waiters();
        }
        Ok(())
    }

    async fn record_lost(&self, workers: &[WorkerId], at: DateTime<Utc>) -> Result<()> {
        let mut state = self.lock();
        for worker in workers {
            let info = state
                .infos
                .get(worker.as_str())
                .map(|(info, _)| info.clone());
            state
                .lost
                .push_front(LostWorker::new(worker.as_str(), at, info));
        }
        state.lost.truncate(LOST_WORKERS_KEPT);
        Ok(())
    }
}
