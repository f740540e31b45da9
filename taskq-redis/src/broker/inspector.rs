//! The Redis broker's operator queries ([`Inspector`]).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use taskq_core::{
    history::{last_minutes, minute_start},
    rank_partitions, DeadLetter, Error, HeldMessage, Inspector, MinuteCounts, Outcome,
    OutcomeFilter, Page, PartitionStats, PayloadFields, QueueStats, Result, ScheduledMessage,
    TaskId, TaskNumbers, WorkerInfo, RECENT_OUTCOMES_KEPT,
};

use super::{millis, RedisBroker};
use crate::{
    error::redis_error,
    keys::{self, QueueKeys},
    scripts,
};

#[async_trait]
impl Inspector for RedisBroker {
    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        // Read-only (a read-only operator may list workers): entries past their deadline are
        // skipped here and pruned by the workers that publish their records.
        let now = millis(self.now());
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::WORKERS)
            .arg(now)
            .arg("+inf")
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| keys::worker_info(id)).collect();
        let records: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(records
            .into_iter()
            .flatten()
            .filter_map(|record| serde_json::from_str(&record).ok())
            .collect())
    }

    async fn pending(&self, queue: &str, page: Page) -> Result<Vec<String>> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let keys = QueueKeys::new(queue);
        scripts::invoke_read_only(
            &mut self.conn(),
            &scripts::PENDING_PAGE,
            &keys.pending_descending(),
            &[
                page.offset.to_string(),
                page.limit.to_string(),
                keys.prefix().to_owned(),
            ],
        )
        .await
        .map_err(redis_error)
    }

    async fn partitions(&self, queue: &str, limit: usize) -> Result<Vec<PartitionStats>> {
        /// Partitions looked at per call: the busiest are ranked among these.
        const MOST_SCANNED: usize = 10_000;
        let keys = QueueKeys::new(queue);
        let flat: Vec<redis::Value> = scripts::invoke_read_only(
            &mut self.conn(),
            &scripts::PARTITIONS,
            &[keys.partitions_ready()],
            &[
                keys.prefix().to_owned(),
                taskq_core::Priority::LEVELS.to_string(),
                MOST_SCANNED.to_string(),
            ],
        )
        .await
        .map_err(redis_error)?;
        let busy = flat
            .chunks_exact(4)
            .filter_map(|row| {
                let key: String = redis::from_redis_value(row[0].clone()).ok()?;
                let pending: usize = redis::from_redis_value(row[1].clone()).ok()?;
                let running: usize = redis::from_redis_value(row[2].clone()).ok()?;
                let limit: i64 = redis::from_redis_value(row[3].clone()).ok()?;
                Some(PartitionStats::new(
                    key,
                    pending,
                    running,
                    u32::try_from(limit).ok(),
                ))
            })
            .collect();
        Ok(rank_partitions(busy, limit))
    }

    async fn held(&self, queue: &str, limit: usize) -> Result<Vec<HeldMessage>> {
        let keys = QueueKeys::new(queue);
        let mut holders: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys.holders())
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        holders.sort();
        let mut held = Vec::new();
        for worker in holders {
            if held.len() >= limit {
                break;
            }
            // A processing list keeps the newest at its head: oldest first is from the tail.
            let mut payloads: Vec<String> = redis::cmd("LRANGE")
                .arg(keys.processing(&worker))
                .arg(0)
                .arg(-1)
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            payloads.reverse();
            let room = limit - held.len();
            held.extend(
                payloads
                    .into_iter()
                    .take(room)
                    .map(|payload| HeldMessage::new(worker.as_str(), payload)),
            );
        }
        Ok(held)
    }

    async fn scheduled(&self, queue: &str, page: Page) -> Result<Vec<ScheduledMessage>> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let members: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(QueueKeys::new(queue).scheduled())
            .arg(page.offset)
            .arg(page.offset.saturating_add(page.limit - 1))
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(members
            .into_iter()
            .map(|(member, score)| {
                let due = DateTime::from_timestamp_millis(score as i64).unwrap_or_default();
                // Members are the one-digit level followed by the payload.
                ScheduledMessage::new(due, member.get(1..).unwrap_or_default())
            })
            .collect())
    }

    async fn settle_scheduled(
        &self,
        queue: &str,
        id: TaskId,
        due: DateTime<Utc>,
        run_now: bool,
    ) -> Result<bool> {
        let keys = QueueKeys::new(queue);
        let mut invocation = scripts::SETTLE_SCHEDULED.prepare_invoke();
        invocation.key(keys.scheduled());
        for level in keys.pending_ascending() {
            invocation.key(level);
        }
        invocation
            .key(keys.wake())
            .arg(id.to_string())
            .arg(due.timestamp_millis())
            .arg(if run_now { "run" } else { "delete" })
            .arg(keys.prefix());
        let settled: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(settled == 1)
    }

    async fn delete_dead(&self, queue: &str, ids: &[TaskId]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut invocation = scripts::DELETE_DEAD.prepare_invoke();
        let keys = QueueKeys::new(queue);
        invocation.key(keys.dead()).key(keys.dead_bytes());
        for id in ids {
            invocation.arg(id.to_string());
        }
        invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn history(&self, queue: &str, minutes: usize) -> Result<Vec<MinuteCounts>> {
        let keys = QueueKeys::new(queue);
        let wanted = last_minutes(self.now(), minutes);
        let mut pipe = redis::pipe();
        for minute in &wanted {
            pipe.cmd("HMGET")
                .arg(keys.history(*minute))
                .arg("processed")
                .arg("failed");
        }
        let counts: Vec<(Option<u64>, Option<u64>)> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(wanted
            .into_iter()
            .zip(counts)
            .map(|(minute, (processed, failed))| {
                MinuteCounts::new(
                    minute_start(minute),
                    processed.unwrap_or(0),
                    failed.unwrap_or(0),
                )
            })
            .collect())
    }

    fn keeps_outcomes(&self) -> bool {
        true
    }

    async fn recent_outcomes(
        &self,
        queue: &str,
        filter: &OutcomeFilter,
        limit: usize,
    ) -> Result<Vec<Outcome>> {
        // Read in chunks, newest first, until the page is full, the record ends, or entries
        // turn older than the filter's start. The record is capped: reading it all is bounded.
        const CHUNK: usize = 1_000;
        let key = QueueKeys::new(queue).outcomes();
        let mut found = Vec::new();
        let mut start = 0;
        while start < RECENT_OUTCOMES_KEPT {
            let chunk: Vec<String> = redis::cmd("LRANGE")
                .arg(&key)
                .arg(start)
                .arg(start + CHUNK - 1)
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            if filter.collect(&chunk, limit, &mut found) || chunk.len() < CHUNK {
                break;
            }
            start += CHUNK;
        }
        Ok(found)
    }

    async fn task_numbers(&self, queue: &str, minutes: usize) -> Result<Vec<TaskNumbers>> {
        let keys = QueueKeys::new(queue);
        let mut pipe = redis::pipe();
        for minute in last_minutes(self.now(), minutes) {
            pipe.cmd("HGETALL").arg(keys.history(minute));
        }
        let hashes: Vec<Vec<(String, u64)>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(TaskNumbers::from_fields(hashes.into_iter().flatten()))
    }

    async fn lost_workers(&self) -> Result<Vec<taskq_core::LostWorker>> {
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(keys::LOST_WORKERS)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(records
            .iter()
            .filter_map(|record| serde_json::from_str(record).ok())
            .collect())
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let mut queues: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::QUEUES)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        queues.sort();
        Ok(queues)
    }

    async fn forget_idle_queues(&self, idle_for: std::time::Duration) -> Result<Vec<String>> {
        let cutoff = millis(self.now()) - i64::try_from(idle_for.as_millis()).unwrap_or(i64::MAX);
        let mut forgotten = Vec::new();
        for queue in self.queues().await? {
            let keys = QueueKeys::new(&queue);
            let mut idle_keys = keys.pending_ascending();
            idle_keys.extend([
                keys.scheduled(),
                keys.dead(),
                keys.workers(),
                keys.holders(),
            ]);
            let idle: i64 =
                scripts::invoke_read_only(&mut self.conn(), &scripts::QUEUE_IDLE, &idle_keys, &[])
                    .await
                    .map_err(redis_error)?;
            if idle == 0 {
                continue;
            }
            let removed: i64 = scripts::FORGET_QUEUE
                .key(keys::QUEUES)
                .key(keys::QUEUES_SEEN)
                .arg(&queue)
                .arg(cutoff)
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            if removed == 1 {
                self.settle_due(&[keys.workers(), keys.scheduled()]).await?;
                forgotten.push(queue);
            }
        }
        if !forgotten.is_empty() {
            tracing::info!(queues = ?forgotten, "forgot idle queues");
        }
        Ok(forgotten)
    }

    async fn requeue_dead(&self, queue: &str, ids: Option<&[TaskId]>) -> Result<usize> {
        let keys = QueueKeys::new(queue);
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.dead())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut moved = 0;
        // Oldest first, so requeued messages keep their original order.
        for record in records.iter().rev() {
            let Ok(letter) = serde_json::from_str::<DeadLetter>(record) else {
                continue;
            };
            if let Some(ids) = ids {
                if !letter.id.is_some_and(|id| ids.contains(&id)) {
                    continue;
                }
            }
            let requeued: i64 = scripts::REQUEUE_DEAD
                .key(keys.dead())
                .key(keys.pending(letter.priority()))
                .key(keys.wake())
                .key(keys.dead_bytes())
                .arg(record)
                .arg(letter.requeue_payload())
                .arg(keys.prefix())
                .arg(letter.priority())
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            moved += requeued as usize;
        }
        Ok(moved)
    }

    async fn purge_dead(&self, queue: &str, older_than: Option<DateTime<Utc>>) -> Result<usize> {
        let keys = QueueKeys::new(queue);
        let cutoff = older_than.map_or_else(String::new, |cutoff| {
            format!(
                "{}{:09}",
                cutoff.format("%Y-%m-%dT%H:%M:%S"),
                cutoff.timestamp_subsec_nanos().min(999_999_999)
            )
        });
        scripts::PURGE_DEAD
            .key(keys.dead())
            .key(keys.dead_bytes())
            .arg(cutoff)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn purge_queue(&self, queue: &str) -> Result<usize> {
        let keys = QueueKeys::new(queue);
        let mut script = scripts::PURGE_QUEUE.prepare_invoke();
        for key in keys.pending_ascending() {
            script.key(key);
        }
        script.key(keys.scheduled()).arg(keys.prefix());
        script
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let keys = QueueKeys::new(queue);
        let mut script_keys = keys.pending_ascending();
        script_keys.extend([
            keys.scheduled(),
            keys.dead(),
            keys.workers(),
            keys.dead_dropped(),
            keys.holders(),
        ]);
        let (pending, scheduled, processing, dead, oldest, dead_dropped, paused): (
            usize,
            usize,
            usize,
            usize,
            Vec<String>,
            u64,
            u8,
        ) = scripts::invoke_read_only(
            &mut self.conn(),
            &scripts::STATS,
            &script_keys,
            &[keys.processing_prefix(), keys.prefix().to_owned()],
        )
        .await
        .map_err(redis_error)?;
        let mut stats = QueueStats::default();
        stats.pending = pending;
        stats.scheduled = scheduled;
        stats.processing = processing;
        stats.dead = dead;
        stats.dead_dropped = dead_dropped;
        stats.oldest_pending = oldest
            .iter()
            .filter_map(|payload| PayloadFields::read(payload).created_at)
            .min();
        stats.paused = paused == 1;
        Ok(stats)
    }

    fn pauses_queues(&self) -> bool {
        true
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        let key = QueueKeys::new(queue).paused();
        let mut conn = self.conn();
        if paused {
            // When it was paused, for operators reading the key by hand.
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(self.now().timestamp_millis())
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
        } else {
            // Idle workers wait on the wake list: one token, so they look again at once.
            let wake = QueueKeys::new(queue).wake();
            let _: () = redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(&key)
                .ignore()
                .cmd("LPUSH")
                .arg(&wake)
                .arg("1")
                .ignore()
                .cmd("LTRIM")
                .arg(&wake)
                .arg(0)
                .arg(0)
                .ignore()
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
        }
        if !self.knows_queue(queue) {
            self.register_queues(&[queue]).await?;
        }
        Ok(())
    }

    async fn find_dead_letter(&self, queue: &str, id: TaskId) -> Result<Option<DeadLetter>> {
        let record: Option<String> = scripts::invoke_read_only(
            &mut self.conn(),
            &scripts::FIND_DEAD,
            &[QueueKeys::new(queue).dead()],
            &[id.to_string()],
        )
        .await
        .map_err(redis_error)?;
        record.as_deref().map(decode_dead_letter).transpose()
    }

    async fn dead_letters(&self, queue: &str, page: Page) -> Result<Vec<DeadLetter>> {
        if page.limit == 0 {
            return Ok(Vec::new());
        }
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(QueueKeys::new(queue).dead())
            .arg(page.offset)
            .arg(page.offset.saturating_add(page.limit - 1))
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        records
            .iter()
            .map(|record| decode_dead_letter(record))
            .collect()
    }
}

fn decode_dead_letter(record: &str) -> Result<DeadLetter> {
    serde_json::from_str(record).map_err(|source| Error::Deserialize {
        what: "dead letter",
        source,
    })
}
