//! The Redis broker as a [`Transport`]: enqueue, fetch, settle and promote, each one script or
//! one command.

use std::time::Duration;

use async_trait::async_trait;
use taskq_core::{
    tally, Clock, DeadLetter, DeadReason, Delivery, Error, KeyedFlow, KeyedOutcome,
    OutboundMessage, PassesDue, Result, TaskId, Transport, WorkerId, RECENT_OUTCOMES_KEPT,
    RECENT_OUTCOMES_TTL,
};

use super::{millis, QueueBatch, RedisBroker};
use taskq_core::history::{minute_of, HISTORY_KEPT_MINUTES};

/// How long a minute of history is kept, ms.
const HISTORY_KEPT_MS: i64 = HISTORY_KEPT_MINUTES * 60_000;
use crate::{error::redis_error, keys::QueueKeys, scripts, server::by_slot};

impl RedisBroker {
    /// Celery's queues cannot be served on a cluster: Kombu's lists and taskq's queue fall in
    /// different slots, and Celery's Redis transport does not run on a cluster either.
    fn refuse_celery_on_a_cluster(&self) -> Result<()> {
        if self.shared.server.is_cluster() {
            return Err(Error::Unsupported {
                feature: "Celery-protocol queues",
                reason: "Celery's Redis transport does not run on Redis Cluster: serve Celery's queues from a single Redis or a Sentinel group",
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Transport for RedisBroker {
    fn clock(&self) -> Clock {
        self.shared.clock.clone()
    }

    async fn measure_clock(&self) -> Result<Option<chrono::Duration>> {
        self.sync_clock().await.map(Some)
    }

    async fn enqueue(&self, messages: Vec<OutboundMessage>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = self.now();
        // Per queue: ready payloads by level (one variadic LPUSH each, in order) and scheduled
        // members. Keys are built once per queue, not per message.
        let mut batches: Vec<QueueBatch<'_>> = Vec::new();
        for message in &messages {
            let index = match batches.iter().position(|b| b.queue == message.queue) {
                Some(index) => index,
                None => {
                    batches.push(QueueBatch::new(&message.queue));
                    batches.len() - 1
                }
            };
            let batch = &mut batches[index];
            let level = message.priority.min(9);
            match (message.eta, &message.partition) {
                (Some(eta), _) if eta > now => batch
                    .scheduled
                    .push((millis(eta), format!("{level}{}", message.payload))),
                (_, Some(key)) => {
                    batch.push_partitioned(level, key, message.partition_limit, &message.payload)
                }
                _ => batch.ready[usize::from(level)].push(&message.payload),
            }
        }
        let new_queues: Vec<&str> = batches
            .iter()
            .map(|b| b.queue)
            .filter(|q| !self.knows_queue(q))
            .collect();
        self.register_queues(&new_queues).await?;
        if self.shared.server.is_cluster() {
            // One script per queue, each on its master: a queue's part is all or nothing.
            let writes = batches
                .iter()
                .map(|batch| async move { self.enqueue_by_script(&[batch]).await });
            futures_util::future::try_join_all(writes).await?;
        } else if self.shared.config.max_queue_length().is_some()
            || batches.iter().any(|batch| !batch.partitioned.is_empty())
        {
            // Bounded queues, or partitions: the bound is checked and the batch written (each
            // partition joining its level's turns) in one script.
            let all: Vec<&QueueBatch<'_>> = batches.iter().collect();
            self.enqueue_by_script(&all).await?;
        } else {
            // One server, no bound: the whole batch in one transaction (all or nothing), plain
            // commands (cheaper than a script).
            let mut pipe = redis::pipe();
            if batches.iter().map(QueueBatch::commands).sum::<usize>() > 1 {
                pipe.atomic();
            }
            for batch in &batches {
                batch.write_into(&mut pipe, self.due_index());
            }
            let mut conn = self.conn();
            pipe.query_async::<()>(&mut conn)
                .await
                .map_err(redis_error)?;
            conn.replicate(
                self.shared.durable.as_ref(),
                &QueueKeys::new(batches[0].queue).wake(),
            )
            .await?;
        }
        Ok(())
    }

    async fn enqueue_unique(
        &self,
        message: OutboundMessage,
        unique_key: &str,
        ttl: Duration,
    ) -> Result<Option<TaskId>> {
        let now = self.now();
        let keys = QueueKeys::new(&message.queue);
        let level = message.priority.min(9);
        let due = message.eta.filter(|eta| *eta > now).map_or(0, millis);
        let limit = self.shared.config.max_queue_length();
        let partition = message.partition.as_deref().unwrap_or_default();
        let partition_limit = message
            .partition_limit
            .map(|l| l.to_string())
            .unwrap_or_default();
        let mut invocation = scripts::ENQUEUE_UNIQUE.prepare_invoke();
        invocation
            .key(keys.unique(unique_key))
            .key(keys.pending(level))
            .key(keys.scheduled())
            .key(keys.wake());
        for key in keys.pending_ascending() {
            invocation.key(key);
        }
        let holder: String = invocation
            .arg(&message.payload)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg(due)
            .arg(millis(now))
            .arg(level)
            .arg(message.id.to_string())
            .arg(limit.unwrap_or(0))
            .arg(keys.prefix())
            .arg(partition)
            .arg(partition_limit)
            .arg(self.due_index())
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        if holder == "!full" {
            return Err(Error::QueueFull {
                queue: message.queue.clone(),
                capacity: limit.unwrap_or(0),
            });
        }
        self.conn()
            .replicate(self.shared.durable.as_ref(), &keys.wake())
            .await?;
        if !holder.is_empty() {
            return Ok(Some(holder.parse().unwrap_or_default()));
        }
        if !self.knows_queue(&message.queue) {
            self.register_queues(&[&message.queue]).await?;
        }
        Ok(None)
    }

    fn check_partitions(&self) -> Result<()> {
        Ok(())
    }

    async fn enqueue_keyed(
        &self,
        message: OutboundMessage,
        flow: &KeyedFlow,
        expect: Option<TaskId>,
    ) -> Result<KeyedOutcome> {
        let now = self.now();
        let keys = QueueKeys::new(&message.queue);
        let level = message.priority.min(9);
        let (mode, max_wait) = (flow.mode(), flow.max_wait().map_or(0, ms));
        let bound = self.shared.config.max_queue_length();
        let mut invocation = scripts::ENQUEUE_KEYED.prepare_invoke();
        invocation
            .key(keys.flow(flow.key()))
            .key(keys.scheduled())
            .key(keys.pending(level))
            .key(keys.wake());
        for key in keys.pending_ascending() {
            invocation.key(key);
        }
        let (kind, id): (String, String) = invocation
            .arg(mode)
            .arg(&message.payload)
            .arg(message.id.to_string())
            .arg(level)
            .arg(millis(now))
            .arg(ms(flow.window()).max(1))
            .arg(max_wait)
            .arg(expect.map(|id| id.to_string()).unwrap_or_default())
            .arg(keys.prefix())
            .arg(message.partition.as_deref().unwrap_or_default())
            .arg(
                message
                    .partition_limit
                    .map(|l| l.to_string())
                    .unwrap_or_default(),
            )
            .arg(bound.unwrap_or(0))
            .arg(self.due_index())
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let answered = id.clone();
        let id = || -> Result<TaskId> {
            id.parse().map_err(|_| Error::Broker {
                transport: "redis",
                transient: false,
                source: format!("enqueue_keyed.lua answered `{kind}` with id `{id}`").into(),
            })
        };
        let outcome = match kind.as_str() {
            "written" => KeyedOutcome::Written(id()?),
            "dropped" => KeyedOutcome::Dropped(id()?),
            "resend" if answered.is_empty() => KeyedOutcome::Resend(None),
            "resend" => KeyedOutcome::Resend(Some(id()?)),
            _ => {
                return Err(Error::QueueFull {
                    queue: message.queue.clone(),
                    capacity: bound.unwrap_or(0),
                })
            }
        };
        if matches!(outcome, KeyedOutcome::Written(_)) {
            self.conn()
                .replicate(self.shared.durable.as_ref(), &keys.wake())
                .await?;
            if !self.knows_queue(&message.queue) {
                self.register_queues(&[&message.queue]).await?;
            }
        }
        Ok(outcome)
    }

    async fn release_unique(&self, queue: &str, unique_key: &str, id: TaskId) -> Result<()> {
        let _: i64 = scripts::RELEASE_UNIQUE
            .key(QueueKeys::new(queue).unique(unique_key))
            .arg(id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn send_celery(&self, queue: &str, message: String) -> Result<()> {
        self.refuse_celery_on_a_cluster()?;
        // Kombu's consumers take from the right of the queue's list; producers push left.
        let _: i64 = redis::cmd("LPUSH")
            .arg(queue)
            .arg(message)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn take_celery(&self, queue: &str, max: usize) -> Result<usize> {
        self.refuse_celery_on_a_cluster()?;
        let keys = QueueKeys::new(queue);
        let mut script = scripts::CELERY_INTAKE.prepare_invoke();
        for list in taskq_core::celery::kombu_priority_lists(queue) {
            script.key(list);
        }
        for step in taskq_core::celery::KOMBU_PRIORITY_STEPS {
            script.key(keys.pending(taskq_core::celery::level_of_kombu_step(step)));
        }
        let moved: usize = script
            .key(keys.wake())
            .arg(max)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        if moved > 0 && !self.knows_queue(queue) {
            self.register_queues(&[queue]).await?;
        }
        Ok(moved)
    }

    async fn fetch(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let result = self.fetch_inner(worker, queues, max.max(1), wait).await;
        if result.is_err() {
            // The reply may have been lost after the server moved messages: look next time.
            self.mark_unreconciled(worker);
        }
        result
    }

    async fn ack(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        let mut acked = 0;
        for (queue, group) in Self::by_queue(deliveries) {
            let keys = QueueKeys::new(queue);
            let mut invocation = scripts::ACK.prepare_invoke();
            invocation
                .key(keys.processing(worker.as_str()))
                .key(keys.redeliveries())
                .key(keys.history(minute_of(self.now())))
                .key(keys.outcomes())
                .arg(HISTORY_KEPT_MS)
                .arg(keys.prefix())
                .arg(group.len());
            for delivery in &group {
                invocation
                    .arg(delivery.payload())
                    .arg(delivery.id().map(|id| id.to_string()).unwrap_or_default());
            }
            outcome_args(&mut invocation, group.iter().copied());
            for delivery in &group {
                let partition = super::fetch::held_slot(delivery);
                if !partition.is_empty() {
                    invocation.arg(delivery.payload()).arg(partition).arg(1);
                }
            }
            let count: usize = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            self.replicate_settle(&keys.wake()).await;
            acked += count;
        }
        self.release(worker, deliveries);
        Ok(acked)
    }

    async fn retry(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        next: OutboundMessage,
    ) -> Result<bool> {
        let now = self.now();
        // The next attempt stays in the queue it was delivered from (one slot on a cluster),
        // whatever queue its envelope names.
        let keys = QueueKeys::new(delivery.queue());
        let level = next.priority.min(9);
        let due = next.eta.map_or(millis(now), millis);
        let mut invocation = scripts::RETRY.prepare_invoke();
        invocation
            .key(keys.processing(worker.as_str()))
            .key(keys.scheduled())
            .key(keys.pending(level))
            .key(keys.wake())
            .key(keys.outcomes())
            .key(keys.history(minute_of(now)))
            .arg(delivery.payload())
            .arg(&next.payload)
            .arg(due)
            .arg(millis(now))
            .arg(level)
            .arg(keys.prefix())
            .arg(super::fetch::held_slot(delivery))
            .arg(next.partition.as_deref().unwrap_or_default())
            .arg(
                next.partition_limit
                    .map(|l| l.to_string())
                    .unwrap_or_default(),
            );
        outcome_args(&mut invocation, std::iter::once(delivery));
        invocation.arg(self.due_index());
        let moved: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        self.replicate_settle(&keys.wake()).await;
        self.release(worker, std::slice::from_ref(delivery));
        Ok(moved == 1)
    }

    async fn requeue(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        let mut requeued = 0;
        for (queue, group) in Self::by_queue(deliveries) {
            let keys = QueueKeys::new(queue);
            let mut invocation = scripts::REQUEUE.prepare_invoke();
            invocation.key(keys.processing(worker.as_str()));
            for key in keys.pending_ascending() {
                invocation.key(key);
            }
            invocation.key(keys.wake()).arg(keys.prefix());
            for delivery in &group {
                invocation
                    .arg(delivery.priority().min(9))
                    .arg(delivery.payload())
                    .arg(delivery.partition().unwrap_or_default())
                    .arg(u8::from(!super::fetch::held_slot(delivery).is_empty()));
            }
            let count: usize = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            self.replicate_settle(&keys.wake()).await;
            requeued += count;
        }
        self.release(worker, deliveries);
        Ok(requeued)
    }

    async fn dead_letter(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        reason: DeadReason,
        error: Option<String>,
    ) -> Result<bool> {
        let letter = DeadLetter::new(
            delivery.queue(),
            delivery.payload(),
            reason,
            error,
            Some(worker.to_string()),
            self.now(),
        );
        let record = serde_json::to_string(&letter).map_err(|source| Error::Serialize {
            what: "dead letter",
            source,
        })?;
        let keys = QueueKeys::new(delivery.queue());
        let mut invocation = scripts::DEAD_LETTER.prepare_invoke();
        invocation
            .key(keys.processing(worker.as_str()))
            .key(keys.dead())
            .key(keys.redeliveries())
            .key(keys.dead_dropped())
            .key(keys.history(minute_of(self.now())))
            .key(keys.dead_bytes())
            .key(keys.outcomes())
            .arg(delivery.payload())
            .arg(record)
            .arg(self.shared.config.max_dead_letters())
            .arg(delivery.id().map(|id| id.to_string()).unwrap_or_default())
            .arg(HISTORY_KEPT_MS)
            .arg(self.shared.config.max_dead_letter_bytes())
            .arg(keys.prefix())
            .arg(super::fetch::held_slot(delivery));
        outcome_args(&mut invocation, std::iter::once(delivery));
        let (moved, dropped): (i64, i64) = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        self.replicate_settle(&keys.wake()).await;
        self.release(worker, std::slice::from_ref(delivery));
        if dropped > 0 {
            tracing::warn!(queue = delivery.queue(), dropped, "dead-letter list full: dropped the oldest (raise max_dead_letters or max_dead_letter_bytes, or requeue or purge them)");
        }
        Ok(moved == 1)
    }

    async fn promote_scheduled(&self, queues: &[String], limit: usize) -> Result<usize> {
        let now = millis(self.now());
        let due_index = self.due_index();
        if !due_index.is_empty() {
            // The due index named these queues (or this is a pass over all): the script
            // promotes and writes each one's entry again, which a pass over all must do even
            // where nothing is due yet.
            return self.promote_each(queues, limit, now, |_| true).await;
        }
        // A cluster keeps no index, and most rounds find nothing due: one `ZCOUNT` per queue,
        // pipelined (one round trip per slot), says so without the script and the commands
        // inside it (issue 31).
        let scheduled: Vec<String> = queues
            .iter()
            .map(|q| QueueKeys::new(q).scheduled())
            .collect();
        let groups = by_slot(self.shared.server.is_cluster(), scheduled, String::as_str);
        let counts = groups.iter().map(|group| {
            let mut pipe = redis::pipe();
            for key in group {
                pipe.cmd("ZCOUNT").arg(key).arg("-inf").arg(now);
            }
            let mut conn = self.conn();
            async move { pipe.query_async::<Vec<usize>>(&mut conn).await }
        });
        let counts = futures_util::future::try_join_all(counts)
            .await
            .map_err(redis_error)?;
        let due: std::collections::HashSet<&str> = groups
            .iter()
            .flatten()
            .zip(counts.iter().flatten())
            .filter(|(_, count)| **count > 0)
            .map(|(key, _)| key.as_str())
            .collect();
        self.promote_each(queues, limit, now, |scheduled| due.contains(scheduled))
            .await
    }

    async fn passes_due(&self, queues: &[String]) -> Result<PassesDue> {
        let due_index = self.due_index();
        if due_index.is_empty() {
            return Ok(PassesDue::all(queues));
        }
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(due_index)
            .arg("-inf")
            .arg(millis(self.now()))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut passes = PassesDue::default();
        if due.is_empty() {
            return Ok(passes);
        }
        let due: std::collections::HashSet<String> = due.into_iter().collect();
        for queue in queues {
            let keys = QueueKeys::new(queue);
            if due.contains(&keys.workers()) {
                passes.reap.push(queue.clone());
            }
            if due.contains(&keys.scheduled()) {
                passes.promote.push(queue.clone());
            }
        }
        Ok(passes)
    }

    async fn release_worker(&self, worker: &WorkerId) -> Result<()> {
        // Its blocking connection (a single-queue worker on one server) closes with it.
        self.forget_blocking(worker).await;
        Ok(())
    }

    async fn durability_warnings(&self) -> Result<Vec<String>> {
        self.conn()
            .durability_warnings(self.shared.config.durable())
            .await
    }
}

impl RedisBroker {
    /// Runs `promote_scheduled.lua` on each of `queues` whose scheduled set `wanted` names,
    /// until `limit` messages moved; returns how many did.
    async fn promote_each(
        &self,
        queues: &[String],
        limit: usize,
        now: i64,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<usize> {
        let mut moved = 0;
        for queue in queues {
            let keys = QueueKeys::new(queue);
            if moved >= limit || !wanted(&keys.scheduled()) {
                continue;
            }
            let mut invocation = scripts::PROMOTE_SCHEDULED.prepare_invoke();
            invocation.key(keys.scheduled());
            for key in keys.pending_ascending() {
                invocation.key(key);
            }
            invocation.key(keys.wake());
            invocation
                .arg(now)
                .arg(limit - moved)
                .arg(keys.prefix())
                .arg(self.due_index());
            let count: usize = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            moved += count;
        }
        Ok(moved)
    }
}

/// A duration in whole milliseconds, the unit of every window in Redis.
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Appends the outcomes `deliveries` carry to a settling script's arguments, as
/// `lua/lib/outcomes.lua` reads them: the record's cap, history's and the record's lifetimes,
/// the outcomes (encoded when they were attached, on the tasks' own threads), and the batch's
/// counter increments (one per task and field, not per message).
fn outcome_args<'a>(
    invocation: &mut redis::ScriptInvocation<'_>,
    deliveries: impl Iterator<Item = &'a Delivery> + Clone,
) {
    let encoded = deliveries.clone().filter_map(Delivery::encoded_outcome);
    invocation
        .arg(RECENT_OUTCOMES_KEPT)
        .arg(HISTORY_KEPT_MS)
        .arg(RECENT_OUTCOMES_TTL.as_millis() as u64)
        .arg(encoded.clone().count());
    for outcome in encoded {
        invocation.arg(outcome);
    }
    let counters = tally(deliveries.filter_map(Delivery::outcome));
    invocation.arg(counters.len());
    for (field, increment) in counters {
        invocation.arg(field).arg(increment);
    }
}
