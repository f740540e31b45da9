//! The Redis broker's worker leases and reaper ([`Membership`]).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskq_core::{Error, Membership, RecoveryReport, Result, WorkerId};

use super::{
    leases::{self, Leases, Step},
    millis, parse_poisoned, RecoverMode, RedisBroker,
};
use crate::{
    error::redis_error,
    keys::{self, QueueKeys},
    scripts,
    server::by_slot,
};

impl RedisBroker {
    /// Whether `worker` holds messages of `queue`, or may (its last fetch failed after
    /// moving some).
    fn may_hold(&self, worker: &WorkerId, queue: &str) -> bool {
        self.shared.unreconciled.lock().contains(worker)
            || self
                .held()
                .get(worker)
                .is_some_and(|queues| queues.contains_key(queue))
    }

    /// Renews `worker`'s short leases on `queues` to `deadline`: one `ZADD XX CH` each, no
    /// script, one round trip per slot (for all queues on a single server).
    async fn renew(&self, worker: &WorkerId, queues: &[&String], deadline: i64) -> Result<()> {
        if queues.is_empty() {
            return Ok(());
        }
        let leases: Vec<String> = queues.iter().map(|q| QueueKeys::new(q).workers()).collect();
        let groups = by_slot(self.shared.server.is_cluster(), leases, String::as_str);
        let renewals = groups.iter().map(|group| {
            let mut pipe = redis::pipe();
            for lease in group {
                pipe.cmd("ZADD")
                    .arg(lease)
                    .arg("XX")
                    .arg("CH")
                    .arg(deadline)
                    .arg(worker.as_str());
            }
            let mut conn = self.conn();
            async move {
                let changed: Vec<i64> = pipe.query_async(&mut conn).await?;
                Ok::<_, redis::RedisError>(group.iter().zip(changed).collect::<Vec<_>>())
            }
        });
        let renewed = futures_util::future::try_join_all(renewals)
            .await
            .map_err(redis_error)?;
        for (lease, changed) in renewed.into_iter().flatten() {
            // Not changed: gone (a reaper recovered the worker), or renewed to the same
            // millisecond by an earlier call, which the score tells apart.
            if changed == 0 && !self.holds_lease(lease, worker, deadline).await? {
                return Err(Error::LeaseLost {
                    worker: worker.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Parks `worker`'s lease on `queue` until `parked_until` (`park_lease.lua`), or renews it
    /// to `deadline` when its processing list holds messages after all.
    async fn park(
        &self,
        worker: &WorkerId,
        queue: &str,
        deadline: i64,
        parked_until: i64,
        joining: bool,
    ) -> Result<Parked> {
        let keys = QueueKeys::new(queue);
        let outcome: i64 = scripts::PARK_LEASE
            .key(keys.workers())
            .key(keys.processing(worker.as_str()))
            .arg(worker.as_str())
            .arg(deadline)
            .arg(parked_until)
            .arg(if joining { "1" } else { "0" })
            .arg(self.due_index())
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        match outcome {
            1 => Ok(Parked::Parked),
            2 => Ok(Parked::Short),
            _ => Err(Error::LeaseLost {
                worker: worker.to_string(),
            }),
        }
    }

    /// Writes the due index's entries of `sets` again (`settle_due.lua`): each the earliest
    /// score left, or none for an empty set. After a reaper pass, so the next comes when a
    /// lease may have ended; after a queue is forgotten, so its entries go. Nothing on a
    /// cluster, which keeps no index.
    pub(super) async fn settle_due(&self, sets: &[String]) -> Result<()> {
        let due_index = self.due_index();
        if due_index.is_empty() || sets.is_empty() {
            return Ok(());
        }
        let mut invocation = scripts::SETTLE_DUE.prepare_invoke();
        invocation.key(due_index);
        for set in sets {
            invocation.key(set);
        }
        invocation
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// Whether `worker` holds the lease `lease` until `deadline` or later.
    async fn holds_lease(&self, lease: &str, worker: &WorkerId, deadline: i64) -> Result<bool> {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(lease)
            .arg(worker.as_str())
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(score.is_some_and(|score| score >= deadline as f64))
    }
}

/// What parking a lease did.
enum Parked {
    Parked,
    /// The processing list held messages: the lease was renewed short instead.
    Short,
}

#[async_trait]
impl Membership for RedisBroker {
    async fn heartbeat(&self, worker: &WorkerId, queues: &[String], ttl: Duration) -> Result<()> {
        let now = millis(self.now());
        let holds: Vec<bool> = queues.iter().map(|q| self.may_hold(worker, q)).collect();
        // A worker's first heartbeat takes its leases, parked (a new worker holds nothing; a
        // fetch before it may have moved messages, which keep a short one).
        let (joining, steps, parked_until) = {
            let heartbeating = self.shared.heartbeating.lock();
            let known = heartbeating.get(worker);
            let steps: Vec<Step> = match known {
                Some(leases) => queues
                    .iter()
                    .zip(&holds)
                    .map(|(queue, &holds)| leases.step(queue, holds, now))
                    .collect(),
                None => vec![Step::Park; queues.len()],
            };
            let parked_for = known.map_or_else(
                || leases::parked_for_ms(leases::millis_of(ttl)),
                Leases::parked_for_ms,
            );
            (known.is_none(), steps, now + parked_for)
        };
        let deadline = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 16);
        let to_renew: Vec<&String> = queues
            .iter()
            .zip(&steps)
            .filter(|(_, step)| **step == Step::Renew)
            .map(|(queue, _)| queue)
            .collect();
        self.renew(worker, &to_renew, deadline).await?;
        let mut parked = Vec::new();
        for (queue, _) in queues.iter().zip(&steps).filter(|(_, s)| **s == Step::Park) {
            let outcome = self
                .park(worker, queue, deadline, parked_until, joining)
                .await?;
            parked.push((queue, outcome));
        }
        let mut heartbeating = self.shared.heartbeating.lock();
        let leases = heartbeating
            .entry(worker.clone())
            .or_insert_with(|| Leases::new(ttl));
        for queue in to_renew {
            leases.unparked(queue);
        }
        for (queue, outcome) in parked {
            match outcome {
                Parked::Parked => leases.parked(queue, parked_until),
                Parked::Short => leases.unparked(queue),
            }
        }
        Ok(())
    }

    async fn recover_lost_workers(
        &self,
        queues: &[String],
        max_redeliveries: u32,
    ) -> Result<RecoveryReport> {
        let now = millis(self.now());
        let mut report = RecoveryReport::default();
        // Per queue, the workers whose lease ended, in one round trip per slot.
        let leases: Vec<(&String, String)> = queues
            .iter()
            .map(|queue| (queue, QueueKeys::new(queue).workers()))
            .collect();
        let groups = by_slot(self.shared.server.is_cluster(), leases, |(_, lease)| {
            lease.as_str()
        });
        let reads = groups.into_iter().map(|group| {
            let mut pipe = redis::pipe();
            for (_, lease) in &group {
                pipe.cmd("ZRANGEBYSCORE")
                    .arg(lease)
                    .arg("-inf")
                    .arg(format!("({now}"));
            }
            let mut conn = self.conn();
            async move {
                let lost: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
                let queues = group.into_iter().map(|(queue, _)| queue);
                Ok::<_, redis::RedisError>(queues.zip(lost).collect::<Vec<_>>())
            }
        });
        let read = futures_util::future::try_join_all(reads)
            .await
            .map_err(redis_error)?;
        for (queue, lost) in read.into_iter().flatten() {
            for worker in lost {
                let (requeued, dead, poisoned) = self
                    .recover(queue, &worker, max_redeliveries, RecoverMode::Lost)
                    .await?;
                if requeued < 0 {
                    continue; // alive after all, or another reaper won
                }
                report.requeued += requeued as usize;
                report.dead_lettered += dead as usize;
                report.poisoned.extend(parse_poisoned(&poisoned));
                let worker = WorkerId::from_string(worker);
                if !report.workers.contains(&worker) {
                    report.workers.push(worker);
                }
            }
        }
        let leases: Vec<String> = queues.iter().map(|q| QueueKeys::new(q).workers()).collect();
        self.settle_due(&leases).await?;
        Ok(report)
    }

    async fn peers(&self, queues: &[String]) -> Result<Option<usize>> {
        let leases: Vec<String> = queues.iter().map(|q| QueueKeys::new(q).workers()).collect();
        let groups = by_slot(self.shared.server.is_cluster(), leases, String::as_str);
        let counts = groups.iter().map(|group| {
            let mut pipe = redis::pipe();
            for lease in group {
                pipe.cmd("ZCARD").arg(lease);
            }
            let mut conn = self.conn();
            async move { pipe.query_async::<Vec<usize>>(&mut conn).await }
        });
        let counts = futures_util::future::try_join_all(counts)
            .await
            .map_err(redis_error)?;
        Ok(counts.into_iter().flatten().min())
    }

    async fn sweep_orphans(
        &self,
        queues: &[String],
        grace: Duration,
        max_redeliveries: u32,
    ) -> Result<RecoveryReport> {
        let mut report = RecoveryReport::default();
        for queue in queues {
            let keys = QueueKeys::new(queue);
            let holders: Vec<String> = redis::cmd("SMEMBERS")
                .arg(keys.holders())
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            if holders.is_empty() {
                continue;
            }
            let leases: Vec<Option<f64>> = redis::cmd("ZMSCORE")
                .arg(keys.workers())
                .arg(&holders)
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            for worker in self.orphans_due(queue, &holders, &leases, grace) {
                let (requeued, dead, poisoned) = self
                    .recover(queue, &worker, max_redeliveries, RecoverMode::Orphan)
                    .await?;
                if requeued < 0 {
                    continue; // it took a lease meanwhile
                }
                if requeued + dead > 0 {
                    tracing::warn!(queue = %queue, worker = %worker, requeued, dead_lettered = dead, "returned an orphaned processing list (its worker held no lease)");
                }
                report.requeued += requeued as usize;
                report.dead_lettered += dead as usize;
                report.poisoned.extend(parse_poisoned(&poisoned));
                report.workers.push(WorkerId::from_string(worker));
            }
        }
        Ok(report)
    }

    async fn deregister(&self, worker: &WorkerId, queues: &[String]) -> Result<()> {
        for queue in queues {
            self.recover(queue, worker.as_str(), 0, RecoverMode::Deregister)
                .await?;
        }
        self.held().remove(worker);
        self.shared.heartbeating.lock().remove(worker);
        Ok(())
    }

    async fn record_lost(&self, workers: &[WorkerId], at: DateTime<Utc>) -> Result<()> {
        if workers.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = workers
            .iter()
            .map(|w| keys::worker_info(w.as_str()))
            .collect();
        let infos: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut records = Vec::with_capacity(workers.len());
        for (worker, info) in workers.iter().zip(infos) {
            let info = info.and_then(|raw| serde_json::from_str(&raw).ok());
            let lost = taskq_core::LostWorker::new(worker.as_str(), at, info);
            records.push(
                serde_json::to_string(&lost).map_err(|source| Error::Serialize {
                    what: "lost worker",
                    source,
                })?,
            );
        }
        redis::pipe()
            .cmd("LPUSH")
            .arg(keys::LOST_WORKERS)
            .arg(records)
            .ignore()
            .cmd("LTRIM")
            .arg(keys::LOST_WORKERS)
            .arg(0)
            .arg(taskq_core::LOST_WORKERS_KEPT - 1)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }
}

impl RedisBroker {
    pub(super) async fn recover(
        &self,
        queue: &str,
        worker: &str,
        max_redeliveries: u32,
        mode: RecoverMode,
    ) -> Result<(i64, i64, Vec<String>)> {
        let keys = QueueKeys::new(queue);
        let now = self.now();
        let mut invocation = scripts::RECOVER.prepare_invoke();
        invocation
            .key(keys.workers())
            .key(keys.processing(worker))
            .key(keys.redeliveries())
            .key(keys.dead())
            .key(keys.dead_dropped())
            .key(keys.holders())
            .key(keys.dead_bytes());
        for key in keys.pending_ascending() {
            invocation.key(key);
        }
        invocation.key(keys.wake());
        invocation
            .arg(worker)
            .arg(millis(now))
            .arg(max_redeliveries)
            .arg(self.shared.config.max_dead_letters())
            .arg(now.to_rfc3339())
            .arg(queue)
            .arg(match mode {
                RecoverMode::Lost => "0",
                RecoverMode::Deregister => "1",
                RecoverMode::Orphan => "2",
            })
            .arg(self.shared.config.max_dead_letter_bytes())
            .arg(keys.prefix());
        invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)
    }
}
