//! [`PostgresOutbox`]: transactional enqueue for applications whose tasks go to another
//! broker (Redis, RabbitMQ). The enqueue writes the finished message to an outbox table in
//! the application's own transaction; a relay moves committed rows to the broker in batches
//! and deletes them once the broker has them.
//!
//! How a row relayed twice still runs once, and the bound: see [`PostgresOutbox`].

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool, Row};
use taskq_core::{AsyncResult, Broker, Enqueue, OutboundMessage, Result, Sent, TaskId};
use tokio::sync::Notify;

use crate::{
    broker::millis,
    config::PostgresConfig,
    error::pg_error,
    listen::{self, ListenTask},
    pool,
    schema::Names,
};

/// How long a relayed row's deduplication key is held on the broker: a row relayed again
/// within this window (a relay killed after the broker confirmed, before the row's delete
/// committed) is not enqueued a second time.
pub const RELAY_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a relay's claim on a batch lasts: rows of a relay killed mid-round are sent
/// again once it has run out (see [`PostgresOutbox`]).
pub const RELAY_LEASE: Duration = Duration::from_secs(30);

/// Rows moved per relay round.
const RELAY_BATCH: i64 = 500;

/// The outbox in one schema of the application's database.
///
/// A relay killed at any point loses nothing: it claims a batch with a committed lease,
/// sends it, and deletes it only once the broker confirmed. Killed between the two, its rows
/// are sent again when the lease runs out, and the second copy does not run:
/// - on a broker with uniqueness keys (Redis) each row goes as a unique enqueue keyed by its
///   task id (or by the task's own uniqueness key), so the second relay finds the key held
///   and sends nothing, provided it comes within [`RELAY_DEDUP_WINDOW`] of the first;
/// - on one without (RabbitMQ) the row carries [`taskq_core::RELAYED_HEADER`] and a worker
///   acknowledges a copy whose success its result backend already holds without running it.
///   The second copy follows the first by at least the lease, so the first has run unless it
///   waited in the queue, or ran, longer than that; with a result backend that stores nothing
///   (`results=rpc`) nothing is checked and at most one batch per relay crash runs twice.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use taskq_postgres::{EnqueueOutbox, PostgresConfig, PostgresOutbox};
/// let outbox = PostgresOutbox::connect(PostgresConfig::new("postgres://app@127.0.0.1/app?migrate=auto")?).await?;
/// let client = taskq_core::Client::in_memory(); // a Redis client in practice
/// let mut tx = outbox.pool().begin().await.expect("begin");
/// // … the application's own writes in `tx` …
/// let receipt = client
///     .enqueue_by_name("emails.receipt", &serde_json::json!({"order": 42}))
///     .via_outbox(&outbox, &mut tx)
///     .await?;
/// tx.commit().await.expect("commit");
/// // A relay (`taskq outbox relay`, or `outbox.relay(...)`) sends it to the client's broker.
/// # let _ = receipt;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresOutbox {
    pool: PgPool,
    names: Names,
    lease: Duration,
}

impl PostgresOutbox {
    /// Connects to the database in `config` (its schema holds the outbox table).
    ///
    /// # Errors
    ///
    /// An unreachable database, or a schema not at this build's version.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let pool = pool::open(&config).await?;
        Ok(Self::with_pool(pool, &config))
    }

    /// An outbox on an open pool whose schema is up to date.
    pub fn with_pool(pool: PgPool, config: &PostgresConfig) -> Self {
        Self {
            pool,
            names: Names::new(config.schema()),
            lease: RELAY_LEASE,
        }
    }

    /// Relays with claims lasting `lease` instead of [`RELAY_LEASE`]: shorter sends a killed
    /// relay's rows sooner; on a broker without uniqueness keys it also narrows the margin
    /// by which a second copy follows the first (see [`PostgresOutbox`]).
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The pool, to begin the transactions tasks are written in.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Rows waiting to be relayed.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn waiting(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(&self.names.fill("SELECT count(*) FROM @s.outbox"))
            .fetch_one(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(u64::try_from(count).unwrap_or_default())
    }

    /// Writes `message` (guarded by `unique` when the task declares it) through `conn`.
    async fn write(
        &self,
        conn: &mut PgConnection,
        message: &OutboundMessage,
        unique: Option<(&str, Duration)>,
    ) -> Result<()> {
        sqlx::query(&self.names.fill(
            "WITH written AS (
                 INSERT INTO @s.outbox (queue, priority, id, payload, eta, unique_key, unique_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
             )
             SELECT pg_notify('@outbox', '')",
        ))
        .bind(&message.queue)
        .bind(i16::from(message.priority))
        .bind(message.id.as_uuid())
        .bind(&message.payload)
        .bind(message.eta)
        .bind(unique.map(|(key, _)| key))
        .bind(unique.map(|(_, window)| millis(window)))
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// Moves up to one batch of committed rows to `broker` and deletes them; returns how many
    /// were moved. The batch is first claimed with a committed lease ([`RELAY_LEASE`] unless
    /// [`PostgresOutbox::with_lease`] says otherwise), so relays running at once share the
    /// work, and rows of a relay killed mid-round wait out the lease before they are sent
    /// again (see [`PostgresOutbox`] for why that wait matters).
    ///
    /// # Errors
    ///
    /// The database's or the broker's error; nothing is deleted then, and the rows are sent
    /// again once their lease ran out (deduplicated as [`PostgresOutbox`] says).
    pub async fn relay_once(&self, broker: &dyn Broker) -> Result<usize> {
        let mut rows = sqlx::query(&self.names.fill(
            "UPDATE @s.outbox o SET relayed_at = now()
             FROM (SELECT seq FROM @s.outbox
                   WHERE relayed_at IS NULL OR relayed_at < now() - $2 * interval '1 millisecond'
                   ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED) picked
             WHERE o.seq = picked.seq
             RETURNING o.seq, o.queue, o.priority, o.id, o.payload, o.eta, o.unique_key, o.unique_ms",
        ))
        .bind(RELAY_BATCH)
        .bind(millis(self.lease))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_error)?;
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_by_key(|row| row.try_get::<i64, _>("seq").unwrap_or_default());
        let mut seqs = Vec::with_capacity(rows.len());
        let mut plain = Vec::new();
        let mut unique = Vec::new();
        for row in &rows {
            seqs.push(row.try_get::<i64, _>("seq").map_err(pg_error)?);
            let id: uuid::Uuid = row.try_get("id").map_err(pg_error)?;
            let priority: i16 = row.try_get("priority").map_err(pg_error)?;
            let message = OutboundMessage::from_parts(
                TaskId::from_uuid(id),
                row.try_get::<String, _>("queue").map_err(pg_error)?,
                u8::try_from(priority).unwrap_or_default(),
                row.try_get("eta").map_err(pg_error)?,
                row.try_get::<String, _>("payload").map_err(pg_error)?,
            );
            let own_key: Option<String> = row.try_get("unique_key").map_err(pg_error)?;
            let own_window: Option<i64> = row.try_get("unique_ms").map_err(pg_error)?;
            if !broker.supports_unique() {
                plain.push(message);
                continue;
            }
            let (key, window) = match own_key {
                Some(key) => (
                    key,
                    Duration::from_millis(u64::try_from(own_window.unwrap_or(0)).unwrap_or(0)),
                ),
                None => (format!("taskq.outbox:{id}"), RELAY_DEDUP_WINDOW),
            };
            unique.push((message, key, window));
        }
        // Sent together: on one multiplexed connection they go out in order, in one round
        // trip's time instead of one each.
        futures_util::future::try_join_all(
            unique.into_iter().map(|(message, key, window)| async move {
                broker.enqueue_unique(message, &key, window).await
            }),
        )
        .await?;
        if !plain.is_empty() {
            broker.enqueue(plain).await?;
        }
        sqlx::query(&self.names.fill("DELETE FROM @s.outbox WHERE seq = ANY($1)"))
            .bind(&seqs)
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(seqs.len())
    }

    /// Relays until `shutdown` completes: batches while rows wait, then sleeps until a write
    /// is notified (or `poll` passes, the most a missed notification costs). Errors are logged
    /// and retried after a pause; nothing is lost by them.
    pub async fn relay(
        &self,
        broker: Arc<dyn Broker>,
        poll: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let written = Arc::new(Notify::new());
        let woken = written.clone();
        let _listening: ListenTask = listen::spawn(
            self.pool.clone(),
            vec![(
                self.names.outbox.clone(),
                Arc::new(move |_: &str| woken.notify_waiters()),
            )],
        );
        tokio::pin!(shutdown);
        loop {
            let notified = written.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let pause = match self.relay_once(broker.as_ref()).await {
                Ok(0) => poll,
                Ok(_) => Duration::ZERO,
                Err(err) => {
                    tracing::warn!(error = %taskq_core::error_chain(&err), "outbox relay round failed; trying again");
                    Duration::from_millis(500)
                }
            };
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = &mut notified => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// `client.enqueue(task).via_outbox(&outbox, &mut tx)`: see [`PostgresOutbox`].
#[async_trait]
pub trait EnqueueOutbox<O> {
    /// Writes the enqueue to `outbox` through `conn` (the application's transaction) and
    /// returns its handle; it reaches the client's broker once a relay moves it.
    ///
    /// # Errors
    ///
    /// As [`Enqueue::send`], but never the broker's.
    async fn via_outbox(
        self,
        outbox: &PostgresOutbox,
        conn: &mut PgConnection,
    ) -> Result<AsyncResult<O>>;
}

#[async_trait]
impl<'a, O: Send + 'a> EnqueueOutbox<O> for Enqueue<'a, O> {
    async fn via_outbox(
        self,
        outbox: &PostgresOutbox,
        conn: &mut PgConnection,
    ) -> Result<AsyncResult<O>> {
        let prepared = self.relayed().prepare().await?;
        outbox
            .write(conn, prepared.message(), prepared.unique())
            .await?;
        Ok(Sent::into_handle(prepared.written(None)))
    }
}
