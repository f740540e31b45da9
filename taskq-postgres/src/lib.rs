//! taskq on PostgreSQL: a broker (every role: transport, leases, control, inspector, task
//! catalog, rate limits) and a result backend in the application's own database, so that a
//! team with only PostgreSQL runs taskq with nothing else to operate.
//!
//! - Messages live in one table; a fetch takes ready rows with `FOR UPDATE SKIP LOCKED` in a
//!   server-side function, and an acknowledgement deletes the row (nothing is left behind as
//!   "done"). Leases, ETAs and expiries run on the database's clock (`now()`).
//! - Idle fetches wait for `NOTIFY` (one per statement that makes work ready), with a slow
//!   poll behind it; results wake their waiters the same way.
//! - The tables live in a schema of their own (`?schema=`, default `taskq`), created and
//!   upgraded by versioned migrations: [`migrate`], or `migrate=auto` in the URL.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> taskq_core::Result<()> {
//! use std::sync::Arc;
//! use taskq_postgres::{PostgresBroker, PostgresConfig, PostgresResultBackend};
//! let config = PostgresConfig::new("postgres://app@127.0.0.1:5432/app?migrate=auto")?;
//! let client = taskq_core::Client::new(
//!     Arc::new(PostgresBroker::connect(config.clone()).await?),
//!     Arc::new(PostgresResultBackend::connect(config).await?),
//! );
//! # let _ = client;
//! # Ok(()) }
//! ```

mod backend;
mod beat_store;
mod broker;
mod config;
mod error;
mod listen;
mod outbox;
mod pool;
mod schema;
mod within;

pub use backend::PostgresResultBackend;
pub use beat_store::PostgresBeatStore;
pub use broker::PostgresBroker;
pub use config::{PostgresConfig, DEFAULT_SCHEMA};
pub use outbox::{EnqueueOutbox, PostgresOutbox, RELAY_DEDUP_WINDOW, RELAY_LEASE};
pub use schema::{migrate, SCHEMA_VERSION};
/// The sqlx this crate is built with: begin transactions with it, so that the types match.
pub use sqlx;
pub use within::{EnqueueManyWithin, EnqueueWithin, WorkflowWithin};

use std::sync::Arc;

/// A client whose broker and result backend are PostgreSQL, sharing one pool.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// let config = taskq_postgres::PostgresConfig::new("postgres://app@127.0.0.1/app?migrate=auto")?;
/// let client = taskq_postgres::client(config).await?;
/// # let _ = client;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`PostgresBroker::connect`].
pub async fn client(config: PostgresConfig) -> taskq_core::Result<taskq_core::Client> {
    let broker = PostgresBroker::connect(config.clone()).await?;
    let backend = PostgresResultBackend::with_pool(broker.pool().clone(), &config).await;
    Ok(taskq_core::Client::new(Arc::new(broker), Arc::new(backend)))
}

/// The pool of `client`'s PostgreSQL broker (to begin the transactions enqueues are written
/// in), or `None` when its broker is not PostgreSQL.
pub fn pool_of(client: &taskq_core::Client) -> Option<&sqlx::PgPool> {
    PostgresBroker::of(client.broker().as_ref()).map(PostgresBroker::pool)
}

/// True for the URL schemes this crate serves: `postgres://` and `postgresql://`.
///
/// ```
/// assert!(taskq_postgres::handles_url("postgres://app@db/app"));
/// assert!(taskq_postgres::handles_url("postgresql://db/app?schema=jobs"));
/// assert!(!taskq_postgres::handles_url("redis://db"));
/// ```
pub fn handles_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The connect futures are `Send` (the facade's `Connect` needs it): a compile-time check, as
/// sqlx's `raw_sql` once made them not so.
#[cfg(test)]
mod send_check {
    fn send<T: Send>(_: T) {}

    #[allow(dead_code)]
    fn connecting_futures_are_send(config: crate::PostgresConfig, pool: sqlx::PgPool) {
        send(crate::schema::migrate(&pool, "x"));
        send(crate::schema::check(&pool, "x"));
        send(crate::PostgresBroker::connect(config.clone()));
        send(crate::PostgresResultBackend::with_pool(pool, &config));
        send(crate::PostgresBeatStore::connect(config.clone()));
        send(crate::client(config));
    }
}
