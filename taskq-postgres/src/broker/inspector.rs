//! The PostgreSQL broker's operator queries ([`Inspector`]): counts, listings in fetch order,
//! dead letters newest first, requeue and purge, each one statement or one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{postgres::PgRow, Row};
use taskq_core::{
    history::{last_minutes, minute_of, minute_start},
    rank_partitions, DeadLetter, DeadReason, HeldMessage, Inspector, LostWorker, MinuteCounts,
    OutboundMessage, Outcome, OutcomeFilter, Page, PartitionStats, PayloadFields, QueueStats,
    Result, ScheduledMessage, TaskId, TaskNumbers, WorkerInfo, RECENT_OUTCOMES_KEPT,
};

use super::PostgresBroker;
use crate::error::pg_error;

/// `page` as SQL `OFFSET` and `LIMIT`.
fn window(page: Page) -> (i64, i64) {
    let clamp = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    (clamp(page.offset), clamp(page.limit))
}

fn uuids(ids: &[TaskId]) -> Vec<uuid::Uuid> {
    ids.iter().map(|id| *id.as_uuid()).collect()
}

/// A `dead_letters` row (queue, reason, error, worker, at, payload) as a [`DeadLetter`].
fn dead_letter(row: &PgRow) -> Result<DeadLetter> {
    let reason: String = row.try_get("reason").map_err(pg_error)?;
    Ok(DeadLetter::new(
        row.try_get::<String, _>("queue").map_err(pg_error)?,
        row.try_get::<String, _>("payload").map_err(pg_error)?,
        reason.parse().unwrap_or(DeadReason::Failed),
        row.try_get("error").map_err(pg_error)?,
        row.try_get("worker").map_err(pg_error)?,
        row.try_get("at").map_err(pg_error)?,
    ))
}

const DEAD_COLUMNS: &str = "queue, reason, error, worker, at, payload";

#[async_trait]
impl Inspector for PostgresBroker {
    async fn queues(&self) -> Result<Vec<String>> {
        sqlx::query_scalar(
            &self
                .names()
                .fill("SELECT name FROM @s.queues ORDER BY name"),
        )
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let row = sqlx::query(&self.names().fill(
            "SELECT
                 (SELECT count(*) FROM @s.messages
                  WHERE queue = $1 AND worker IS NULL AND due_at IS NULL AND partition IS NULL)
                 + (SELECT count(*) FROM @s.messages
                    WHERE queue = $1 AND worker IS NULL AND due_at IS NULL AND partition IS NOT NULL),
                 (SELECT count(*) FROM @s.messages WHERE queue = $1 AND worker IS NULL AND due_at IS NOT NULL),
                 (SELECT count(*) FROM @s.messages WHERE queue = $1 AND worker IS NOT NULL),
                 (SELECT count(*) FROM @s.dead_letters WHERE queue = $1),
                 (SELECT coalesce(max(dead_dropped), 0) FROM @s.queues WHERE name = $1),
                 (SELECT coalesce(bool_or(paused), false) FROM @s.queues WHERE name = $1),
                 (SELECT array_agg(head.payload) FROM generate_series(0, 9) AS level(n)
                  CROSS JOIN LATERAL (
                      (SELECT payload FROM @s.messages
                       WHERE queue = $1 AND worker IS NULL AND due_at IS NULL
                         AND partition IS NULL AND priority = level.n
                       ORDER BY pos LIMIT 1)
                      UNION ALL
                      (SELECT payload FROM @s.messages
                       WHERE queue = $1 AND worker IS NULL AND due_at IS NULL
                         AND partition IS NOT NULL AND priority = level.n
                       ORDER BY turn, pos LIMIT 1)
                  ) head)",
        ))
        .bind(queue)
        .fetch_one(self.pool())
        .await
        .map_err(pg_error)?;
        let count = |index: usize| -> Result<usize> {
            let n: i64 = row.try_get(index).map_err(pg_error)?;
            Ok(usize::try_from(n).unwrap_or_default())
        };
        let paused: bool = row.try_get(5).map_err(pg_error)?;
        let heads: Option<Vec<String>> = row.try_get(6).map_err(pg_error)?;
        let dropped: i64 = row.try_get(4).map_err(pg_error)?;
        let mut stats = QueueStats::default();
        stats.pending = count(0)?;
        stats.scheduled = count(1)?;
        stats.processing = count(2)?;
        stats.dead = count(3)?;
        stats.dead_dropped = u64::try_from(dropped).unwrap_or_default();
        stats.paused = paused;
        stats.oldest_pending = heads
            .unwrap_or_default()
            .iter()
            .filter_map(|payload| PayloadFields::read(payload).created_at)
            .min();
        Ok(stats)
    }

    async fn dead_letters(&self, queue: &str, page: Page) -> Result<Vec<DeadLetter>> {
        let (offset, limit) = window(page);
        let rows = sqlx::query(&self.names().fill(&format!(
            "SELECT {DEAD_COLUMNS} FROM @s.dead_letters WHERE queue = $1
             ORDER BY seq DESC OFFSET $2 LIMIT $3"
        )))
        .bind(queue)
        .bind(offset)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)?;
        rows.iter().map(dead_letter).collect()
    }

    async fn find_dead_letter(&self, queue: &str, id: TaskId) -> Result<Option<DeadLetter>> {
        let row = sqlx::query(&self.names().fill(&format!(
            "SELECT {DEAD_COLUMNS} FROM @s.dead_letters WHERE queue = $1 AND id = $2
             ORDER BY seq DESC LIMIT 1"
        )))
        .bind(queue)
        .bind(id.as_uuid())
        .fetch_optional(self.pool())
        .await
        .map_err(pg_error)?;
        row.as_ref().map(dead_letter).transpose()
    }

    async fn requeue_dead(&self, queue: &str, ids: Option<&[TaskId]>) -> Result<usize> {
        let mut tx = self.pool().begin().await.map_err(pg_error)?;
        let rows = sqlx::query(&self.names().fill(&format!(
            "DELETE FROM @s.dead_letters WHERE queue = $1 AND ($2::uuid[] IS NULL OR id = ANY($2))
             RETURNING seq, {DEAD_COLUMNS}"
        )))
        .bind(queue)
        .bind(ids.map(uuids))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        let mut letters = Vec::with_capacity(rows.len());
        for row in &rows {
            let seq: i64 = row.try_get("seq").map_err(pg_error)?;
            letters.push((seq, dead_letter(row)?));
        }
        // Newest first, as they are listed; back at the tail, with their attempts reset.
        letters.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        let moved = letters.len();
        let messages: Vec<OutboundMessage> = letters
            .into_iter()
            .map(|(_, letter)| {
                let payload = letter.requeue_payload();
                // Back in its partition, which only the payload remembers.
                let partition = PayloadFields::read_partition(&payload);
                let mut message = OutboundMessage::from_parts(
                    letter.id.unwrap_or_default(),
                    queue,
                    letter.priority(),
                    None,
                    payload,
                );
                message.partition = partition.partition.map(Arc::from);
                message.partition_limit = partition.partition_limit;
                message
            })
            .collect();
        if !messages.is_empty() {
            let messages: Vec<&OutboundMessage> = messages.iter().collect();
            self.insert_through(&mut *tx, &messages).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(moved)
    }

    async fn purge_dead(&self, queue: &str, older_than: Option<DateTime<Utc>>) -> Result<usize> {
        let done = sqlx::query(&self.names().fill(
            "DELETE FROM @s.dead_letters WHERE queue = $1 AND ($2::timestamptz IS NULL OR at < $2)",
        ))
        .bind(queue)
        .bind(older_than)
        .execute(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or_default())
    }

    fn pauses_queues(&self) -> bool {
        true
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        // Resuming notifies, so that idle workers look again at once.
        sqlx::query(&self.names().fill(
            "WITH set AS (
                 INSERT INTO @s.queues (name, paused) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET paused = EXCLUDED.paused
             )
             SELECT pg_notify('@ready', '') WHERE NOT $2",
        ))
        .bind(queue)
        .bind(paused)
        .execute(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn purge_queue(&self, queue: &str) -> Result<usize> {
        let done = sqlx::query(
            &self
                .names()
                .fill("DELETE FROM @s.messages WHERE queue = $1 AND worker IS NULL"),
        )
        .bind(queue)
        .execute(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or_default())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let infos: Vec<String> = sqlx::query_scalar(
            &self
                .names()
                .fill("SELECT info FROM @s.worker_infos WHERE until > now() ORDER BY id"),
        )
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(infos
            .iter()
            .filter_map(|info| serde_json::from_str(info).ok())
            .collect())
    }

    async fn lost_workers(&self) -> Result<Vec<LostWorker>> {
        let rows = sqlx::query(
            &self
                .names()
                .fill("SELECT id, lost_at, info FROM @s.lost_workers ORDER BY seq DESC"),
        )
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)?;
        let mut lost = Vec::with_capacity(rows.len());
        for row in rows {
            let info: Option<String> = row.try_get(2).map_err(pg_error)?;
            lost.push(LostWorker::new(
                row.try_get::<String, _>(0).map_err(pg_error)?,
                row.try_get(1).map_err(pg_error)?,
                info.and_then(|info| serde_json::from_str(&info).ok()),
            ));
        }
        Ok(lost)
    }

    async fn pending(&self, queue: &str, page: Page) -> Result<Vec<String>> {
        let (offset, limit) = window(page);
        // Unkeyed messages in fetch order, then a partitioned queue's keyed ones by turns; each
        // read through its own index, at most offset + limit of each.
        sqlx::query_scalar(&self.names().fill(
            "SELECT payload FROM (
                 (SELECT payload, 0 AS kind, priority, NULL::bigint AS turn, pos FROM @s.messages
                  WHERE queue = $1 AND worker IS NULL AND due_at IS NULL AND partition IS NULL
                  ORDER BY priority DESC, pos LIMIT $2 + $3)
                 UNION ALL
                 (SELECT payload, 1, priority, turn, pos FROM @s.messages
                  WHERE queue = $1 AND worker IS NULL AND due_at IS NULL AND partition IS NOT NULL
                  ORDER BY priority DESC, turn, pos LIMIT $2 + $3)
             ) ready
             ORDER BY kind, priority DESC, turn, pos OFFSET $2 LIMIT $3",
        ))
        .bind(queue)
        .bind(offset)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)
    }

    async fn held(&self, queue: &str, limit: usize) -> Result<Vec<HeldMessage>> {
        let rows = sqlx::query(&self.names().fill(
            "SELECT worker, payload FROM @s.messages WHERE queue = $1 AND worker IS NOT NULL
             ORDER BY worker, pos LIMIT $2",
        ))
        .bind(queue)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                Ok(HeldMessage::new(
                    row.try_get::<String, _>("worker").map_err(pg_error)?,
                    row.try_get::<String, _>("payload").map_err(pg_error)?,
                ))
            })
            .collect()
    }

    async fn scheduled(&self, queue: &str, page: Page) -> Result<Vec<ScheduledMessage>> {
        let (offset, limit) = window(page);
        let rows = sqlx::query(&self.names().fill(
            "SELECT due_at, payload FROM @s.messages
             WHERE queue = $1 AND worker IS NULL AND due_at IS NOT NULL
             ORDER BY due_at, pos OFFSET $2 LIMIT $3",
        ))
        .bind(queue)
        .bind(offset)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)?;
        rows.iter()
            .map(|row| {
                Ok(ScheduledMessage::new(
                    row.try_get(0).map_err(pg_error)?,
                    row.try_get::<String, _>(1).map_err(pg_error)?,
                ))
            })
            .collect()
    }

    async fn settle_scheduled(
        &self,
        queue: &str,
        id: TaskId,
        due: DateTime<Utc>,
        run_now: bool,
    ) -> Result<bool> {
        let statement = if run_now {
            "WITH moved AS (
                 UPDATE @s.messages SET due_at = NULL, pos = nextval('@s.tail_positions')
                 WHERE tag = (SELECT tag FROM @s.messages
                              WHERE queue = $1 AND id = $2 AND due_at = $3 AND worker IS NULL
                              LIMIT 1 FOR UPDATE)
                 RETURNING 1
             ), notified AS (
                 SELECT pg_notify('@ready', '') WHERE EXISTS (SELECT 1 FROM moved)
             )
             SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM notified)"
        } else {
            "WITH gone AS (
                 DELETE FROM @s.messages
                 WHERE tag = (SELECT tag FROM @s.messages
                              WHERE queue = $1 AND id = $2 AND due_at = $3 AND worker IS NULL
                              LIMIT 1 FOR UPDATE)
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM gone), 0::bigint"
        };
        let row = sqlx::query(&self.names().fill(statement))
            .bind(queue)
            .bind(id.as_uuid())
            .bind(due)
            .fetch_one(self.pool())
            .await
            .map_err(pg_error)?;
        let settled: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(settled > 0)
    }

    async fn delete_dead(&self, queue: &str, ids: &[TaskId]) -> Result<usize> {
        let done = sqlx::query(
            &self
                .names()
                .fill("DELETE FROM @s.dead_letters WHERE queue = $1 AND id = ANY($2)"),
        )
        .bind(queue)
        .bind(uuids(ids))
        .execute(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(usize::try_from(done.rows_affected()).unwrap_or_default())
    }

    async fn history(&self, queue: &str, minutes: usize) -> Result<Vec<MinuteCounts>> {
        let now = self.now();
        let wanted = last_minutes(now, minutes);
        let since = wanted.first().copied().unwrap_or_else(|| minute_of(now));
        let rows = sqlx::query(&self.names().fill(
            "SELECT minute, processed, failed FROM @s.history WHERE queue = $1 AND minute >= $2",
        ))
        .bind(queue)
        .bind(since)
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)?;
        let mut counts = std::collections::HashMap::new();
        for row in rows {
            let minute: i64 = row.try_get(0).map_err(pg_error)?;
            let processed: i64 = row.try_get(1).map_err(pg_error)?;
            let failed: i64 = row.try_get(2).map_err(pg_error)?;
            counts.insert(minute, (processed, failed));
        }
        let unsigned = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(wanted
            .into_iter()
            .map(|minute| {
                let (processed, failed) = counts.get(&minute).copied().unwrap_or_default();
                MinuteCounts::new(minute_start(minute), unsigned(processed), unsigned(failed))
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
        // In chunks of bundles, newest first, until the page is full, the record ends, or
        // entries turn older than the filter's start (as on Redis).
        const CHUNK: usize = 64;
        let statement = self.names().fill(
            "SELECT seq, bundle FROM @s.outcomes WHERE queue = $1 AND seq < $2
             ORDER BY seq DESC LIMIT $3",
        );
        let (mut found, mut before, mut read) = (Vec::new(), i64::MAX, 0);
        while read < RECENT_OUTCOMES_KEPT {
            let rows = sqlx::query(&statement)
                .bind(queue)
                .bind(before)
                .bind(CHUNK as i64)
                .fetch_all(self.pool())
                .await
                .map_err(pg_error)?;
            let mut chunk = Vec::with_capacity(rows.len());
            for row in &rows {
                before = row.try_get(0).map_err(pg_error)?;
                chunk.push(row.try_get::<String, _>(1).map_err(pg_error)?);
            }
            read += chunk.len();
            if filter.collect(&chunk, limit, &mut found) || chunk.len() < CHUNK {
                break;
            }
        }
        Ok(found)
    }

    async fn task_numbers(&self, queue: &str, minutes: usize) -> Result<Vec<TaskNumbers>> {
        let now = self.now();
        let since = last_minutes(now, minutes)
            .first()
            .copied()
            .unwrap_or_else(|| minute_of(now));
        let rows = sqlx::query(&self.names().fill(
            "SELECT field, sum(count)::bigint FROM @s.task_counts
             WHERE queue = $1 AND minute >= $2 GROUP BY field",
        ))
        .bind(queue)
        .bind(since)
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)?;
        let mut fields = Vec::with_capacity(rows.len());
        for row in rows {
            let field: String = row.try_get(0).map_err(pg_error)?;
            let count: i64 = row.try_get(1).map_err(pg_error)?;
            fields.push((field, u64::try_from(count).unwrap_or_default()));
        }
        Ok(TaskNumbers::from_fields(fields))
    }

    async fn partitions(&self, queue: &str, limit: usize) -> Result<Vec<PartitionStats>> {
        // Held messages are a partition's running count while it has a limit (its slots).
        let rows = sqlx::query(&self.names().fill(
            "SELECT partition, pending, running, part_limit FROM (
                 SELECT partition,
                        count(*) FILTER (WHERE worker IS NULL AND due_at IS NULL) AS pending,
                        CASE WHEN max(part_limit) IS NULL THEN 0
                             ELSE count(*) FILTER (WHERE worker IS NOT NULL) END AS running,
                        max(part_limit) AS part_limit
                 FROM @s.messages WHERE queue = $1 AND partition IS NOT NULL
                 GROUP BY partition
             ) busy
             WHERE pending > 0 OR running > 0
             ORDER BY pending DESC, running DESC, partition
             LIMIT $2",
        ))
        .bind(queue)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)?;
        let mut busy = Vec::with_capacity(rows.len());
        for row in rows {
            let count = |index: usize| -> Result<usize> {
                let n: i64 = row.try_get(index).map_err(pg_error)?;
                Ok(usize::try_from(n).unwrap_or_default())
            };
            let part_limit: Option<i32> = row.try_get(3).map_err(pg_error)?;
            busy.push(PartitionStats::new(
                row.try_get::<String, _>(0).map_err(pg_error)?,
                count(1)?,
                count(2)?,
                part_limit.and_then(|l| u32::try_from(l).ok()),
            ));
        }
        Ok(rank_partitions(busy, limit))
    }
}
