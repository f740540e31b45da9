//! Opening the pool a broker, backend or beat store sends through: connected, the schema
//! checked (or migrated when the URL says so), and the clock measured against the server's.

use std::time::Duration;

use sqlx::{postgres::PgPoolOptions, PgPool};
use taskq_core::{Error, Result};

use crate::{config::PostgresConfig, error::pg_error, schema};

/// A pool on `config`'s database whose schema is at this build's version.
///
/// # Errors
///
/// [`Error::Broker`] naming the database when it cannot be reached (transient),
/// [`Error::Invalid`] when the schema is not at this build's version and `migrate=auto` is
/// not set.
pub(crate) async fn open(config: &PostgresConfig) -> Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(config.pool_size().max(2))
        .acquire_timeout(Duration::from_secs(10))
        .connect(config.url())
        .await
        .map_err(|err| unreachable_database(config, err))?;
    if config.migrates_at_connect() {
        schema::migrate(&pool, config.schema()).await?;
    } else {
        schema::check(&pool, config.schema()).await?;
    }
    Ok(pool)
}

/// A connection failure, naming the database (password masked) and the likely fix.
fn unreachable_database(config: &PostgresConfig, err: sqlx::Error) -> Error {
    let shown = taskq_core::redacted_url(config.url());
    let hint = match &err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("28P01") => {
            "the password was refused"
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => {
            "the database does not exist"
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => "is PostgreSQL running there?",
        _ => "check the URL",
    };
    let transient = matches!(err, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut);
    Error::Broker {
        transport: "postgres",
        transient,
        source: format!("cannot connect to {shown} ({hint}): {err}").into(),
    }
}

/// The server's clock minus the host's, in milliseconds (what the broker's clock adds).
pub(crate) async fn clock_offset(pool: &PgPool) -> Result<i64> {
    let before = chrono::Utc::now();
    let server: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await
        .map_err(pg_error)?;
    let after = chrono::Utc::now();
    let host = before + (after - before) / 2;
    Ok((server - host).num_milliseconds())
}
