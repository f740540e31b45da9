//! [`PostgresBeatStore`]: the beat's leader lock, last fires and status in PostgreSQL, on
//! the database's clock, so replicas on hosts with different clocks agree on who leads.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use taskq_core::{BeatStatus, BeatStore, Error, Result};

use crate::{broker::millis, config::PostgresConfig, error::pg_error, pool, schema::Names};

/// The PostgreSQL beat store: one lock row taken by `INSERT … ON CONFLICT` when free or
/// expired, extended and released only by its owner; last fires that never move backwards.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use taskq_postgres::{PostgresBeatStore, PostgresConfig};
/// let config = PostgresConfig::new("postgres://app@127.0.0.1:5432/app?migrate=auto")?;
/// let store = PostgresBeatStore::connect(config).await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresBeatStore {
    pool: PgPool,
    names: Names,
}

impl PostgresBeatStore {
    /// Connects to the database in `config` (see [`crate::PostgresBroker::connect`]).
    ///
    /// # Errors
    ///
    /// An unreachable database, or a schema not at this build's version.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let pool = pool::open(&config).await?;
        Ok(Self::with_pool(pool, &config))
    }

    /// A store on an open pool (a broker's, say) whose schema is up to date.
    pub fn with_pool(pool: PgPool, config: &PostgresConfig) -> Self {
        Self {
            pool,
            names: Names::new(config.schema()),
        }
    }

    async fn count(&self, sql: &str, owner: &str, ttl: Duration) -> Result<bool> {
        let done = sqlx::query(&self.names.fill(sql))
            .bind(owner)
            .bind(millis(ttl))
            .execute(&self.pool)
            .await
            .map_err(pg_error)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl BeatStore for PostgresBeatStore {
    async fn try_acquire(&self, owner: &str, ttl: Duration) -> Result<bool> {
        self.count(
            "INSERT INTO @s.beat_lock AS l (id, owner, until)
             VALUES (1, $1, now() + $2 * interval '1 millisecond')
             ON CONFLICT (id) DO UPDATE SET owner = EXCLUDED.owner, until = EXCLUDED.until
             WHERE l.until <= now() OR l.owner = EXCLUDED.owner",
            owner,
            ttl,
        )
        .await
    }

    async fn extend(&self, owner: &str, ttl: Duration) -> Result<bool> {
        self.count(
            "UPDATE @s.beat_lock SET until = now() + $2 * interval '1 millisecond'
             WHERE id = 1 AND owner = $1 AND until > now()",
            owner,
            ttl,
        )
        .await
    }

    async fn release(&self, owner: &str) -> Result<()> {
        sqlx::query(
            &self
                .names
                .fill("DELETE FROM @s.beat_lock WHERE id = 1 AND owner = $1"),
        )
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn last_fire(&self, entry: &str) -> Result<Option<DateTime<Utc>>> {
        sqlx::query_scalar(
            &self
                .names
                .fill("SELECT slot FROM @s.beat_fires WHERE entry = $1"),
        )
        .bind(entry)
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)
    }

    async fn set_last_fire(&self, entry: &str, slot: DateTime<Utc>) -> Result<()> {
        sqlx::query(&self.names.fill(
            "INSERT INTO @s.beat_fires AS f (entry, slot) VALUES ($1, $2)
             ON CONFLICT (entry) DO UPDATE SET slot = EXCLUDED.slot WHERE f.slot < EXCLUDED.slot",
        ))
        .bind(entry)
        .bind(slot)
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn publish_status(&self, status: &BeatStatus, ttl: Duration) -> Result<()> {
        let body = serde_json::to_string(status).map_err(|source| Error::Serialize {
            what: "beat status",
            source,
        })?;
        sqlx::query(&self.names.fill(
            "INSERT INTO @s.beat_status (id, status, until)
             VALUES (1, $1, now() + $2 * interval '1 millisecond')
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, until = EXCLUDED.until",
        ))
        .bind(body)
        .bind(millis(ttl))
        .execute(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn status(&self) -> Result<Option<BeatStatus>> {
        let body: Option<String> = sqlx::query_scalar(
            &self
                .names
                .fill("SELECT status FROM @s.beat_status WHERE id = 1 AND until > now()"),
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(pg_error)?;
        Ok(body.and_then(|body| serde_json::from_str(&body).ok()))
    }
}
