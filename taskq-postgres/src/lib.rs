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
mod broker;
mod config;
mod error;
mod listen;
mod pool;
mod schema;

pub use backend::PostgresResultBackend;
pub use broker::PostgresBroker;
pub use config::{PostgresConfig, DEFAULT_SCHEMA};
pub use schema::{migrate, SCHEMA_VERSION};
