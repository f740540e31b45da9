//! [`PostgresResultBackend`]: results by task id in their own table, each with its expiry,
//! written monotonically by one function call (`store_result`), and waiters woken by NOTIFY
//! with the task id. Expired records are deleted in batches by a sweep, not left to grow.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use parking_lot::Mutex;
use sqlx::PgPool;
use taskq_core::{
    workflow::{GroupStatus, MemberOf, MemberOutcome, WorkflowRecord},
    Error, Result, ResultBackend, TaskId, TaskResult, TaskState,
};
use tokio::{sync::Notify, time::Instant};

use crate::{
    broker::millis,
    config::PostgresConfig,
    error::pg_error,
    listen::{self, ListenTask},
    pool,
    schema::Names,
};

/// Expired records deleted per sweep statement.
const SWEEP_BATCH: i64 = 5_000;

/// The PostgreSQL result backend; cheap to clone.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use taskq_postgres::{PostgresConfig, PostgresResultBackend};
/// let config = PostgresConfig::new("postgres://app@127.0.0.1:5432/app?migrate=auto")?;
/// let backend = PostgresResultBackend::connect(config).await?;
/// # let _ = backend;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresResultBackend {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    pool: PgPool,
    store: String,
    get: String,
    sweep: String,
    put_workflow: String,
    workflow: String,
    report: String,
    schema: String,
    waiters: Arc<Waiters>,
    _listening: ListenTask,
    _sweeping: Sweeper,
}

/// Who waits for which id.
#[derive(Debug, Default)]
struct Waiters(Mutex<HashMap<TaskId, Arc<Notify>>>);

impl Waiters {
    fn wake(&self, payload: &str) {
        let waiters = self.0.lock();
        if payload.is_empty() {
            // Notifications may have been missed: everyone looks again.
            for notify in waiters.values() {
                notify.notify_waiters();
            }
        } else if let Some(notify) = payload.parse().ok().and_then(|id| waiters.get(&id)) {
            notify.notify_waiters();
        }
    }
}

/// The background sweep of expired records; stops when dropped.
#[derive(Debug)]
struct Sweeper(tokio::task::JoinHandle<()>);

impl Drop for Sweeper {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PostgresResultBackend {
    /// Connects to the database in `config` (see [`crate::PostgresBroker::connect`]).
    ///
    /// # Errors
    ///
    /// An unreachable database, or a schema not at this build's version.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let pool = pool::open(&config).await?;
        Ok(Self::with_pool(pool, &config).await)
    }

    /// A backend on an open pool (a broker's, say) whose schema is up to date.
    pub async fn with_pool(pool: PgPool, config: &PostgresConfig) -> Self {
        let names = Names::new(config.schema());
        let waiters = Arc::new(Waiters::default());
        let woken = waiters.clone();
        let listening = listen::spawn(
            pool.clone(),
            vec![(
                names.results.clone(),
                Arc::new(move |payload: &str| woken.wake(payload)),
            )],
        );
        listening.ready().await;
        let sweep = names.fill(
            "WITH results AS (
                 DELETE FROM @s.results WHERE id IN (
                     SELECT id FROM @s.results WHERE expires_at < now() LIMIT $1)
                 RETURNING 1
             ), workflows AS (
                 DELETE FROM @s.workflows WHERE id IN (
                     SELECT id FROM @s.workflows WHERE expires_at < now() LIMIT $1)
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM results) + (SELECT count(*) FROM workflows)",
        );
        let sweeping = Sweeper(tokio::spawn(sweep_expired(pool.clone(), sweep.clone())));
        Self {
            shared: Arc::new(Shared {
                store: names.fill(
                    "SELECT count(*) FROM (
                         SELECT @s.store_result(r.id, r.state, r.record, $4)
                         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS r(id, state, record)
                     ) stored",
                ),
                get: names
                    .fill("SELECT record FROM @s.results WHERE id = $1 AND expires_at > now()"),
                put_workflow: names.fill(
                    "INSERT INTO @s.workflows (id, record, expires_at)
                     VALUES ($1, $2, now() + $3 * interval '1 millisecond')
                     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at",
                ),
                workflow: names.fill(
                    "SELECT record FROM @s.workflows WHERE id = $1 AND expires_at > now()",
                ),
                report: names.fill(
                    "SELECT r.status, r.group_record, r.outcomes
                     FROM unnest($1::uuid[], $2::integer[], $3::integer[], $4::text[], $5::boolean[])
                          WITH ORDINALITY AS u(grp, member, of, outcome, success, ord)
                     CROSS JOIN LATERAL @s.report_member(u.grp, u.member, u.of, u.outcome, u.success, $6) r
                     ORDER BY u.ord",
                ),
                schema: config.schema().to_owned(),
                sweep,
                pool,
                waiters,
                _listening: listening,
                _sweeping: sweeping,
            }),
        }
    }

    /// Deletes expired records now (the sweep does it every minute); returns how many.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub async fn sweep_expired(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let swept: i64 = sqlx::query_scalar(&self.shared.sweep)
                .bind(SWEEP_BATCH)
                .fetch_one(&self.shared.pool)
                .await
                .map_err(pg_error)?;
            total += u64::try_from(swept).unwrap_or_default();
            if swept < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }
}

async fn sweep_expired(pool: PgPool, sweep: String) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if let Err(err) = sqlx::query(&sweep).bind(SWEEP_BATCH).execute(&pool).await {
            tracing::debug!(error = %err, "sweeping expired results failed; trying again later");
        }
    }
}

fn encoded<T: serde::Serialize>(what: &'static str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|source| Error::Serialize { what, source })
}

fn decoded<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Deserialize { what, source })
}

impl PostgresResultBackend {
    /// Stores `results` through `executor` (the pool, or the caller's transaction), kept for
    /// `ttl`, in one statement.
    pub(crate) async fn store_through<'e>(
        &self,
        executor: impl sqlx::PgExecutor<'e>,
        results: &[TaskResult],
        ttl: Duration,
    ) -> Result<()> {
        let ids: Vec<uuid::Uuid> = results.iter().map(|r| *r.id.as_uuid()).collect();
        let states: Vec<&str> = results.iter().map(|r| r.state.as_str()).collect();
        let records = results
            .iter()
            .map(|result| encoded("task result", result))
            .collect::<Result<Vec<_>>>()?;
        sqlx::query(&self.shared.store)
            .bind(ids)
            .bind(states)
            .bind(records)
            .bind(millis(ttl))
            .execute(executor)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    /// The schema its tables live in.
    pub(crate) fn schema(&self) -> &str {
        &self.shared.schema
    }
}

#[async_trait]
impl ResultBackend for PostgresResultBackend {
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    async fn store(&self, result: &TaskResult, ttl: Duration) -> Result<()> {
        self.store_many(std::slice::from_ref(result), ttl).await
    }

    async fn store_many(&self, results: &[TaskResult], ttl: Duration) -> Result<()> {
        if results.is_empty() {
            return Ok(());
        }
        self.store_through(&self.shared.pool, results, ttl).await
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskResult>> {
        let record: Option<String> = sqlx::query_scalar(&self.shared.get)
            .bind(id.as_uuid())
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        record
            .map(|record| decoded("task result", &record))
            .transpose()
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskResult>> {
        let deadline = Instant::now() + timeout;
        let notify = self.shared.waiters.0.lock().entry(id).or_default().clone();
        let outcome = loop {
            let woken = notify.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let current = match self.get(id).await {
                Ok(current) => current,
                Err(err) => break Err(err),
            };
            let now = Instant::now();
            if current.as_ref().is_some_and(|r| r.state.is_ready()) || now >= deadline {
                break Ok(current);
            }
            // A missed notification costs at most a second.
            tokio::select! {
                _ = &mut woken => {}
                _ = tokio::time::sleep_until(deadline.min(now + Duration::from_secs(1))) => {}
            }
        };
        let mut waiters = self.shared.waiters.0.lock();
        if Arc::strong_count(&notify) <= 2 {
            waiters.remove(&id);
        }
        outcome
    }

    async fn put_workflow(&self, record: &WorkflowRecord, ttl: Duration) -> Result<()> {
        sqlx::query(&self.shared.put_workflow)
            .bind(record.id.as_uuid())
            .bind(encoded("workflow record", record)?)
            .bind(millis(ttl))
            .execute(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn workflow(&self, id: TaskId) -> Result<Option<WorkflowRecord>> {
        let record: Option<String> = sqlx::query_scalar(&self.shared.workflow)
            .bind(id.as_uuid())
            .fetch_optional(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        record
            .map(|record| decoded("workflow record", &record))
            .transpose()
    }

    async fn report_members(
        &self,
        reports: &[(MemberOf, MemberOutcome)],
        ttl: Duration,
    ) -> Result<Vec<GroupStatus>> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let groups: Vec<uuid::Uuid> = reports.iter().map(|(m, _)| *m.group.as_uuid()).collect();
        let members: Vec<i32> = reports.iter().map(|(m, _)| index(m.index)).collect();
        let sizes: Vec<i32> = reports.iter().map(|(m, _)| index(m.of)).collect();
        let outcomes = reports
            .iter()
            .map(|(_, outcome)| encoded("member outcome", outcome))
            .collect::<Result<Vec<_>>>()?;
        let succeeded: Vec<bool> = reports
            .iter()
            .map(|(_, outcome)| outcome.state == TaskState::Success)
            .collect();
        let rows = sqlx::query(&self.shared.report)
            .bind(groups)
            .bind(members)
            .bind(sizes)
            .bind(outcomes)
            .bind(succeeded)
            .bind(millis(ttl))
            .fetch_all(&self.shared.pool)
            .await
            .map_err(pg_error)?;
        rows.iter().map(group_status).collect()
    }
}

/// A member index or group size as the database stores it.
fn index(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// One row of `report_member` as a [`GroupStatus`].
fn group_status(row: &sqlx::postgres::PgRow) -> Result<GroupStatus> {
    use sqlx::Row;
    let status: String = row.try_get(0).map_err(pg_error)?;
    let record: Option<String> = row.try_get(1).map_err(pg_error)?;
    let outcomes: Option<Vec<String>> = row.try_get(2).map_err(pg_error)?;
    let record = || -> Result<Box<WorkflowRecord>> {
        decoded("workflow record", record.as_deref().unwrap_or("null"))
    };
    let outcomes = outcomes
        .unwrap_or_default()
        .iter()
        .map(|outcome| decoded("member outcome", outcome))
        .collect::<Result<Vec<MemberOutcome>>>()?;
    Ok(match status.as_str() {
        "complete" => GroupStatus::Complete(record()?, outcomes),
        "failed" => match outcomes.into_iter().next() {
            Some(failed) => GroupStatus::Failed(record()?, Box::new(failed)),
            None => GroupStatus::Waiting,
        },
        _ => GroupStatus::Waiting,
    })
}
