//! The PostgreSQL broker as a [`Transport`]: enqueue (one statement per call, one
//! notification), fetch by `fetch()` (`FOR UPDATE SKIP LOCKED`, in the order of preference),
//! and the fenced transitions of a held message.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use taskq_core::{
    bundle, tally, Clock, DeadReason, Delivery, Error, KeyedFlow, KeyedOutcome, OutboundMessage,
    Receipt, Result, TaskId, Transport, WorkerId, RECENT_OUTCOMES_KEPT,
};
use tokio::time::Instant;

use super::{millis, PostgresBroker};
use crate::{
    error::{lease_error, pg_error},
    schema::Names,
};

/// The broker's recurring statements (every fetch, settle, heartbeat, reaper round and
/// rate-limited start), with the schema filled in once.
#[derive(Debug)]
pub(super) struct Statements {
    enqueue: String,
    enqueue_partitioned: String,
    enqueue_unique: String,
    enqueue_keyed: String,
    lock_queue: String,
    queue_size: String,
    release_unique: String,
    fetch: String,
    ack: String,
    retry: String,
    requeue: String,
    dead_letter: String,
    promote: String,
    pub(super) heartbeat: String,
    pub(super) recover: String,
    pub(super) rate_limit: String,
}

impl Statements {
    pub(super) fn new(names: &Names) -> Self {
        Self {
            enqueue: names.fill(
                "WITH known AS (
                     INSERT INTO @s.queues (name) SELECT DISTINCT q FROM unnest($1::text[]) q
                     ON CONFLICT DO NOTHING
                 ), added AS (
                     INSERT INTO @s.messages (queue, priority, id, payload, due_at)
                     SELECT t.queue, t.priority, t.id, t.payload,
                            CASE WHEN t.eta > now() THEN t.eta END
                     FROM unnest($1::text[], $2::smallint[], $3::uuid[], $4::text[], $5::timestamptz[])
                          WITH ORDINALITY AS t(queue, priority, id, payload, eta, ord)
                     ORDER BY t.ord
                     RETURNING due_at IS NULL AS ready
                 ), notified AS (
                     SELECT pg_notify('@ready', '') WHERE EXISTS (SELECT 1 FROM added WHERE ready)
                 )
                 SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM notified)",
            ),
            // As `enqueue`, each partition's messages given consecutive turns in call order
            // (migrations/0006_partitions_and_flow.sql); the plain enqueue stays as it was.
            enqueue_partitioned: names.fill(
                "WITH known AS (
                     INSERT INTO @s.queues (name) SELECT DISTINCT q FROM unnest($1::text[]) q
                     ON CONFLICT DO NOTHING
                 ), input AS (
                     SELECT * FROM unnest($1::text[], $2::smallint[], $3::uuid[], $4::text[],
                                          $5::timestamptz[], $6::text[], $7::integer[])
                          WITH ORDINALITY AS t(queue, priority, id, payload, eta, partition, part_limit, ord)
                 ), turns AS (
                     SELECT queue, partition, @s.take_turns(queue, partition, count(*)::integer) AS first
                     FROM input WHERE partition IS NOT NULL GROUP BY queue, partition
                 ), added AS (
                     INSERT INTO @s.messages (queue, priority, id, payload, due_at, partition, part_limit, turn)
                     SELECT i.queue, i.priority, i.id, i.payload,
                            CASE WHEN i.eta > now() THEN i.eta END, i.partition, i.part_limit,
                            t.first + row_number() OVER (PARTITION BY i.queue, i.partition ORDER BY i.ord) - 1
                     FROM input i LEFT JOIN turns t ON t.queue = i.queue AND t.partition = i.partition
                     ORDER BY i.ord
                     RETURNING due_at IS NULL AS ready
                 ), notified AS (
                     SELECT pg_notify('@ready', '') WHERE EXISTS (SELECT 1 FROM added WHERE ready)
                 )
                 SELECT (SELECT count(*) FROM added), (SELECT count(*) FROM notified)",
            ),
            enqueue_unique: names.fill(
                "WITH claim AS (
                     INSERT INTO @s.unique_keys AS u (queue, key, holder, until)
                     VALUES ($1, $6, $3, now() + $7 * interval '1 millisecond')
                     ON CONFLICT (queue, key) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
                     WHERE u.until <= now()
                     RETURNING holder
                 ), known AS (
                     INSERT INTO @s.queues (name) VALUES ($1) ON CONFLICT DO NOTHING
                 ), added AS (
                     INSERT INTO @s.messages (queue, priority, id, payload, due_at, partition, part_limit, turn)
                     SELECT $1, $2, $3, $4, CASE WHEN $5::timestamptz > now() THEN $5 END, $8::text, $9::integer,
                            CASE WHEN $8::text IS NOT NULL THEN @s.take_turns($1, $8, 1) END
                     WHERE EXISTS (SELECT 1 FROM claim)
                     RETURNING due_at IS NULL AS ready
                 ), notified AS (
                     SELECT pg_notify('@ready', '') WHERE EXISTS (SELECT 1 FROM added WHERE ready)
                 )
                 SELECT (SELECT holder FROM claim),
                        (SELECT holder FROM @s.unique_keys WHERE queue = $1 AND key = $6),
                        (SELECT count(*) FROM notified)",
            ),
            enqueue_keyed: names.fill(
                "SELECT kind, id FROM @s.enqueue_keyed($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            ),
            // Two statements: the count's snapshot must be taken after the lock is held.
            lock_queue: names.fill("SELECT pg_advisory_xact_lock(hashtext('@s.' || $1))"),
            queue_size: names.fill(
                "SELECT count(*) FROM @s.messages WHERE queue = $1 AND worker IS NULL",
            ),
            release_unique: names.fill(
                "DELETE FROM @s.unique_keys WHERE queue = $1 AND key = $2 AND holder = $3",
            ),
            fetch: names.fill(
                "SELECT tag, queue, priority, payload, id, pos, preference, partition
                 FROM @s.fetch($1, $2, $3)",
            ),
            ack: names.fill(
                "WITH gone AS (
                     DELETE FROM @s.messages WHERE tag = ANY($2) AND worker = $1 RETURNING queue
                 ), counted AS (
                     INSERT INTO @s.history (queue, minute, processed)
                     SELECT queue, @s.minute_now(), count(*) FROM gone GROUP BY queue
                     ON CONFLICT (queue, minute)
                     DO UPDATE SET processed = @s.history.processed + EXCLUDED.processed
                 ), pruned AS (
                     DELETE FROM @s.history
                     WHERE queue IN (SELECT queue FROM gone) AND minute <= @s.minute_now() - 120
                 )
                 SELECT (SELECT count(*) FROM gone),
                        @s.record_outcomes($3, $4, $5, $6, $7, $8, $9)",
            ),
            retry: names.fill(
                "WITH moved AS (
                     UPDATE @s.messages SET worker = NULL, payload = $3, priority = $4, id = $5,
                         due_at = CASE WHEN $6::timestamptz > now() THEN $6 END,
                         pos = nextval('@s.tail_positions')
                     WHERE tag = $1 AND worker = $2
                     RETURNING due_at IS NULL AS ready
                 ), notified AS (
                     SELECT pg_notify('@ready', '') WHERE EXISTS (SELECT 1 FROM moved WHERE ready)
                 )
                 SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM notified),
                        CASE WHEN EXISTS (SELECT 1 FROM moved)
                             THEN @s.record_outcomes($7, $8, $9, $10, $11, $12, $13) END",
            ),
            requeue: names.fill("SELECT @s.requeue($1, $2)"),
            heartbeat: names.fill("SELECT @s.heartbeat($1, $2, $3)"),
            recover: names
                .fill("SELECT worker, outcome, id, payload FROM @s.recover($1, $2, $3, $4)"),
            rate_limit: names.fill("SELECT @s.rate_limit($1, $2, $3)"),
            dead_letter: names.fill(
                "SELECT moved, CASE WHEN moved THEN @s.record_outcomes($7, $8, $9, $10, $11, $12, $13) END
                 FROM @s.dead_letter($1, $2, $3, $4, $5, $6) AS moved",
            ),
            promote: names.fill(
                "WITH due AS (
                     SELECT tag FROM @s.messages
                     WHERE queue = ANY($1) AND worker IS NULL AND due_at <= now()
                     ORDER BY due_at LIMIT $2
                     FOR UPDATE SKIP LOCKED
                 ), moved AS (
                     UPDATE @s.messages m SET due_at = NULL, pos = nextval('@s.tail_positions')
                     FROM due WHERE m.tag = due.tag
                     RETURNING 1
                 ), notified AS (
                     SELECT pg_notify('@ready', '') WHERE EXISTS (SELECT 1 FROM moved)
                 )
                 SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM notified)",
            ),
        }
    }
}

/// Messages split into the columns the enqueue statements bind.
struct Columns<'m> {
    queues: Vec<&'m str>,
    priorities: Vec<i16>,
    ids: Vec<uuid::Uuid>,
    payloads: Vec<&'m str>,
    etas: Vec<Option<DateTime<Utc>>>,
}

impl<'m> Columns<'m> {
    fn of(messages: &[&'m OutboundMessage]) -> Self {
        Self {
            queues: messages.iter().map(|m| m.queue.as_str()).collect(),
            priorities: messages.iter().map(|m| i16::from(m.priority)).collect(),
            ids: messages.iter().map(|m| *m.id.as_uuid()).collect(),
            payloads: messages.iter().map(|m| m.payload.as_str()).collect(),
            etas: messages.iter().map(|m| m.eta).collect(),
        }
    }
}

/// Each message's partition key and running limit (`None` for unkeyed ones).
fn partition_columns<'m>(
    messages: &[&'m OutboundMessage],
) -> (Vec<Option<&'m str>>, Vec<Option<i32>>) {
    messages
        .iter()
        .map(|m| {
            let limit = m
                .partition_limit
                .map(|l| i32::try_from(l).unwrap_or(i32::MAX));
            (m.partition.as_deref(), m.partition.as_ref().and(limit))
        })
        .unzip()
}

impl PostgresBroker {
    /// Within `tx`, refuses when adding `adding` messages per queue would pass the queue's
    /// bound (each queue locked for the rest of the transaction, in name order).
    async fn check_room(
        &self,
        tx: &mut sqlx::PgConnection,
        adding: &[(&str, usize)],
    ) -> Result<()> {
        let Some(capacity) = self.shared.config.capacity() else {
            return Ok(());
        };
        for (queue, count) in adding {
            sqlx::query(&self.shared.sql.lock_queue)
                .bind(queue)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
            let held: i64 = sqlx::query_scalar(&self.shared.sql.queue_size)
                .bind(queue)
                .fetch_one(&mut *tx)
                .await
                .map_err(pg_error)?;
            if usize::try_from(held).unwrap_or(usize::MAX) + count > capacity {
                return Err(Error::QueueFull {
                    queue: (*queue).to_owned(),
                    capacity,
                });
            }
        }
        Ok(())
    }
}

impl PostgresBroker {
    /// Adds `messages` through `executor` (the pool, or a transaction) in one statement,
    /// with one notification when any is ready.
    pub(super) async fn insert_through<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        messages: &[&OutboundMessage],
    ) -> Result<()> {
        let columns = Columns::of(messages);
        let partitioned = messages.iter().any(|m| m.partition.is_some());
        let statement = if partitioned {
            &self.shared.sql.enqueue_partitioned
        } else {
            &self.shared.sql.enqueue
        };
        let mut query = sqlx::query(statement)
            .bind(columns.queues)
            .bind(columns.priorities)
            .bind(columns.ids)
            .bind(columns.payloads)
            .bind(columns.etas);
        if partitioned {
            let (keys, limits) = partition_columns(messages);
            query = query.bind(keys).bind(limits);
        }
        query.execute(executor).await.map_err(pg_error)?;
        Ok(())
    }

    /// Adds `message` through `executor` if it claims `key` for `window`; the holder when the
    /// key is held.
    async fn claim_through<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        message: &OutboundMessage,
        key: &str,
        window: Duration,
    ) -> Result<Option<TaskId>> {
        let row = sqlx::query(&self.shared.sql.enqueue_unique)
            .bind(&message.queue)
            .bind(i16::from(message.priority))
            .bind(message.id.as_uuid())
            .bind(&message.payload)
            .bind(message.eta)
            .bind(key)
            .bind(millis(window))
            .bind(message.partition.as_deref())
            .bind(partition_columns(&[message]).1[0])
            .fetch_one(executor)
            .await
            .map_err(pg_error)?;
        let claimed: Option<uuid::Uuid> = row.try_get(0).map_err(pg_error)?;
        if claimed.is_some() {
            return Ok(None);
        }
        let holder: Option<uuid::Uuid> = row.try_get(1).map_err(pg_error)?;
        Ok(Some(TaskId::from_uuid(holder.unwrap_or_default())))
    }
}

/// How many of `messages` go to each queue, in queue-name order.
fn per_queue<'m>(messages: &[&'m OutboundMessage]) -> Vec<(&'m str, usize)> {
    let mut counts: std::collections::BTreeMap<&'m str, usize> = std::collections::BTreeMap::new();
    for message in messages {
        *counts.entry(message.queue.as_str()).or_default() += 1;
    }
    counts.into_iter().collect()
}

#[async_trait]
impl Transport for PostgresBroker {
    fn clock(&self) -> Clock {
        self.server_clock()
    }

    async fn measure_clock(&self) -> Result<Option<chrono::Duration>> {
        let offset = crate::pool::clock_offset(&self.shared.pool).await?;
        self.shared
            .correction
            .store(offset, std::sync::atomic::Ordering::Relaxed);
        Ok(Some(chrono::Duration::milliseconds(-offset)))
    }

    async fn enqueue(&self, messages: Vec<OutboundMessage>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let messages: Vec<&OutboundMessage> = messages.iter().collect();
        if self.shared.config.capacity().is_none() {
            return self.insert_through(&self.shared.pool, &messages).await;
        }
        let mut tx = self.shared.pool.begin().await.map_err(pg_error)?;
        self.check_room(&mut tx, &per_queue(&messages)).await?;
        self.insert_through(&mut *tx, &messages).await?;
        tx.commit().await.map_err(pg_error)
    }

    fn check_partitions(&self) -> Result<()> {
        Ok(())
    }

    async fn enqueue_unique(
        &self,
        message: OutboundMessage,
        unique_key: &str,
        ttl: Duration,
    ) -> Result<Option<TaskId>> {
        let mut tx = self.shared.pool.begin().await.map_err(pg_error)?;
        self.check_room(&mut tx, &[(message.queue.as_str(), 1)])
            .await?;
        let holder = self
            .claim_through(&mut *tx, &message, unique_key, ttl)
            .await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(holder)
    }

    async fn enqueue_keyed(
        &self,
        message: OutboundMessage,
        flow: &KeyedFlow,
        expect: Option<TaskId>,
    ) -> Result<KeyedOutcome> {
        let (mode, max_wait) = (flow.mode(), flow.max_wait().map_or(0, millis));
        let capacity = self.shared.config.capacity();
        let (_, limits) = partition_columns(&[&message]);
        let row = sqlx::query(&self.shared.sql.enqueue_keyed)
            .bind(mode)
            .bind(&message.queue)
            .bind(flow.key())
            .bind(i16::from(message.priority))
            .bind(message.id.as_uuid())
            .bind(&message.payload)
            .bind(millis(flow.window()).max(1))
            .bind(max_wait)
            .bind(expect.map(|id| *id.as_uuid()))
            .bind(message.partition.as_deref())
            .bind(limits[0])
            .bind(capacity.map_or(0, |c| i64::try_from(c).unwrap_or(i64::MAX)))
            .fetch_one(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        let kind: String = row.try_get(0).map_err(pg_error)?;
        let id: Option<uuid::Uuid> = row.try_get(1).map_err(pg_error)?;
        let id = id.map(TaskId::from_uuid);
        Ok(match (kind.as_str(), id) {
            ("written", Some(id)) => KeyedOutcome::Written(id),
            ("dropped", Some(id)) => KeyedOutcome::Dropped(id),
            ("resend", id) => KeyedOutcome::Resend(id),
            ("full", _) => {
                return Err(Error::QueueFull {
                    queue: message.queue.clone(),
                    capacity: capacity.unwrap_or(0),
                })
            }
            (kind, id) => {
                return Err(Error::Broker {
                    transport: "postgres",
                    transient: false,
                    source: format!("enqueue_keyed() answered `{kind}` with id {id:?}").into(),
                })
            }
        })
    }

    async fn release_unique(&self, queue: &str, unique_key: &str, id: TaskId) -> Result<()> {
        sqlx::query(&self.shared.sql.release_unique)
            .bind(queue)
            .bind(unique_key)
            .bind(id.as_uuid())
            .execute(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn fetch(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let max = i32::try_from(max.max(1)).unwrap_or(i32::MAX);
        let deadline = Instant::now() + wait;
        loop {
            let woken = self.shared.ready.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let taken = self.take(worker, queues, max).await?;
            let now = Instant::now();
            if !taken.is_empty() || now >= deadline {
                return Ok(taken);
            }
            let poll = now + self.shared.config.poll_interval();
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep_until(deadline.min(poll)) => {}
            }
        }
    }

    async fn ack(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let query = sqlx::query(&self.shared.sql.ack)
            .bind(worker.as_str())
            .bind(tags(deliveries));
        let row = bind_outcomes(query, deliveries.iter())
            .fetch_one(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        let acked: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(usize::try_from(acked).unwrap_or_default())
    }

    async fn retry(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        next: OutboundMessage,
    ) -> Result<bool> {
        let query = sqlx::query(&self.shared.sql.retry)
            .bind(tag(delivery))
            .bind(worker.as_str())
            .bind(&next.payload)
            .bind(i16::from(next.priority))
            .bind(next.id.as_uuid())
            .bind(next.eta);
        let row = bind_outcomes(query, std::iter::once(delivery))
            .fetch_one(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        let moved: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(moved > 0)
    }

    async fn requeue(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let moved: i32 = sqlx::query_scalar(&self.shared.sql.requeue)
            .bind(worker.as_str())
            .bind(tags(deliveries))
            .fetch_one(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        Ok(usize::try_from(moved).unwrap_or_default())
    }

    async fn dead_letter(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        reason: DeadReason,
        error: Option<String>,
    ) -> Result<bool> {
        let (records, bytes) = self.shared.config.dead_caps();
        let query = sqlx::query(&self.shared.sql.dead_letter)
            .bind(worker.as_str())
            .bind(tag(delivery))
            .bind(reason.as_str())
            .bind(error)
            .bind(records)
            .bind(bytes);
        let row = bind_outcomes(query, std::iter::once(delivery))
            .fetch_one(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        row.try_get(0).map_err(pg_error)
    }

    async fn durability_warnings(&self) -> Result<Vec<String>> {
        let row = sqlx::query(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'),
                    current_setting('full_page_writes')",
        )
        .fetch_one(&self.shared.pool)
        .await
        .map_err(pg_error)?;
        let setting = |index: usize| -> Result<String> { row.try_get(index).map_err(pg_error) };
        let mut warnings = Vec::new();
        if setting(0)? == "off" {
            warnings.push(
                "PostgreSQL runs with fsync=off: a crash of its host can lose committed tasks and corrupt the database"
                    .to_owned(),
            );
        }
        if setting(1)? == "off" {
            warnings.push(
                "PostgreSQL runs with synchronous_commit=off: a crash of the server can lose the last committed enqueues and acknowledgements"
                    .to_owned(),
            );
        }
        if setting(2)? == "off" {
            warnings.push(
                "PostgreSQL runs with full_page_writes=off: a crash of its host can corrupt pages holding tasks"
                    .to_owned(),
            );
        }
        Ok(warnings)
    }

    async fn promote_scheduled(&self, queues: &[String], limit: usize) -> Result<usize> {
        let row = sqlx::query(&self.shared.sql.promote)
            .bind(queues)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_one(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        let moved: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(usize::try_from(moved).unwrap_or_default())
    }
}

impl PostgresBroker {
    /// Writes one message through `conn` (the caller's transaction): guarded by `unique`'s
    /// claim when given; returns the holder when the key was held. Bounded queues are locked
    /// until the caller's transaction ends.
    pub(crate) async fn write_within(
        &self,
        conn: &mut sqlx::PgConnection,
        message: &OutboundMessage,
        unique: Option<(&str, Duration)>,
    ) -> Result<Option<TaskId>> {
        self.check_room(&mut *conn, &[(message.queue.as_str(), 1)])
            .await?;
        match unique {
            None => {
                self.insert_through(&mut *conn, &[message]).await?;
                Ok(None)
            }
            Some((key, window)) => self.claim_through(&mut *conn, message, key, window).await,
        }
    }

    /// Writes `messages` through `conn` (the caller's transaction) in one statement.
    pub(crate) async fn write_many_within(
        &self,
        conn: &mut sqlx::PgConnection,
        messages: &[&OutboundMessage],
    ) -> Result<()> {
        self.check_room(&mut *conn, &per_queue(messages)).await?;
        self.insert_through(&mut *conn, messages).await
    }

    /// Writes workflow `records` through `conn`, kept for `ttl`.
    pub(crate) async fn write_workflow_within(
        &self,
        conn: &mut sqlx::PgConnection,
        records: &[taskq_core::workflow::WorkflowRecord],
        ttl: Duration,
    ) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let ids: Vec<uuid::Uuid> = records.iter().map(|r| *r.id.as_uuid()).collect();
        let bodies = records
            .iter()
            .map(serde_json::to_string)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|source| Error::Serialize {
                what: "workflow record",
                source,
            })?;
        sqlx::query(&self.names().fill(
            "INSERT INTO @s.workflows (id, record, expires_at)
             SELECT id, record, now() + $3 * interval '1 millisecond'
             FROM unnest($1::uuid[], $2::text[]) AS w(id, record)
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at",
        ))
        .bind(ids)
        .bind(bodies)
        .bind(millis(ttl))
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// One `fetch()` call: what it took, in the order it hands them out (preference, then
    /// priority and position, or turns in a partitioned queue).
    async fn take(&self, worker: &WorkerId, queues: &[String], max: i32) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&self.shared.sql.fetch)
            .bind(worker.as_str())
            .bind(queues)
            .bind(max)
            .fetch_all(&self.shared.pool)
            .await
            .map_err(|err| lease_error(err, worker.as_str()))?;
        let mut taken = Vec::with_capacity(rows.len());
        for row in rows {
            let tag: i64 = row.try_get(0).map_err(pg_error)?;
            let queue: String = row.try_get(1).map_err(pg_error)?;
            let priority: i16 = row.try_get(2).map_err(pg_error)?;
            let payload: String = row.try_get(3).map_err(pg_error)?;
            let id: uuid::Uuid = row.try_get(4).map_err(pg_error)?;
            let partition: Option<String> = row.try_get(7).map_err(pg_error)?;
            let priority = u8::try_from(priority).unwrap_or_default();
            let delivery = Delivery::new(
                Arc::from(queue),
                priority,
                Arc::from(payload),
                Receipt::new(u64::try_from(tag).unwrap_or_default()),
            )
            .with_id(TaskId::from_uuid(id))
            .with_partition(partition.map(Arc::from));
            taken.push(delivery);
        }
        Ok(taken)
    }
}

/// The tag (receipt) of a delivery.
fn tag(delivery: &Delivery) -> i64 {
    i64::try_from(delivery.receipt().raw()).unwrap_or_default()
}

fn tags(deliveries: &[Delivery]) -> Vec<i64> {
    deliveries.iter().map(tag).collect()
}

/// Binds the outcomes `deliveries` carry as `record_outcomes` takes them
/// (migrations/0007_outcomes.sql): per queue one bundle with its size, then each queue's
/// counter increments (one per task and field, not per message), then the cap.
fn bind_outcomes<'q, 'a>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    deliveries: impl Iterator<Item = &'a Delivery>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut by_queue: Vec<(&str, Vec<&Delivery>)> = Vec::new();
    for delivery in deliveries.filter(|d| d.outcome().is_some()) {
        match by_queue.iter_mut().find(|(q, _)| *q == delivery.queue()) {
            Some((_, settled)) => settled.push(delivery),
            None => by_queue.push((delivery.queue(), vec![delivery])),
        }
    }
    let (mut queues, mut sizes, mut bundles) = (Vec::new(), Vec::new(), Vec::new());
    let (mut counted, mut fields, mut counts) = (Vec::new(), Vec::new(), Vec::new());
    for (queue, settled) in &by_queue {
        let (size, entry) = bundle(settled.iter().filter_map(|d| d.encoded_outcome()));
        queues.push(queue.to_string());
        sizes.push(i32::try_from(size).unwrap_or(i32::MAX));
        bundles.push(entry);
        for (field, count) in tally(settled.iter().filter_map(|d| d.outcome())) {
            counted.push(queue.to_string());
            fields.push(field);
            counts.push(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
    query
        .bind(queues)
        .bind(sizes)
        .bind(bundles)
        .bind(counted)
        .bind(fields)
        .bind(counts)
        .bind(i32::try_from(RECENT_OUTCOMES_KEPT).unwrap_or(i32::MAX))
}
