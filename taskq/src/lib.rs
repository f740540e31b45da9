//! taskq: a distributed task queue for Rust in the spirit of Celery.
//!
//! This crate is the one import path: it re-exports the task model and client of
//! `taskq-core`, the worker of `taskq-worker`, and the transports behind their features, and it
//! turns a broker URL into a [`Client`].
//!
//! | feature | default | brings |
//! |---|---|---|
//! | `redis` | on | the Redis broker, result backend and beat store (`taskq-redis`): `redis://`, `rediss://`, `redis+cluster://`, `redis+sentinel://` |
//! | `amqp` | on | the RabbitMQ broker and reply backend (`taskq-amqp`): `amqp://`, `amqps://` |
//! | `postgres` | on | the PostgreSQL broker, result backend, beat store, transactional enqueue and outbox (`taskq-postgres`): `postgres://` |
//! | `otel` | off | OpenTelemetry traces across the queue: W3C `traceparent` in every envelope, the worker's run a child of the producer's `taskq send` span, through the `tracing-opentelemetry` bridge |
//! | `cli` | off | what a worker binary needs: clap flags (`cli::WorkerArgs`), logging setup, a Prometheus endpoint |
//!
//! With every feature off, `memory://` (the in-process broker) still works.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq::Result<()> {
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use taskq::prelude::*;
//!
//! #[derive(Task, Serialize, Deserialize)]
//! #[task(name = "math.add")]
//! struct Add { a: i64, b: i64 }
//!
//! impl Run for Add {
//!     type Output = i64;
//!     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> { Ok(self.a + self.b) }
//! }
//!
//! let client = Client::connect("memory://").await?;   // or "redis://127.0.0.1:6379"
//! let running = Worker::builder(client.clone()).register::<Add>().build()?.start();
//! assert_eq!(client.enqueue(Add { a: 2, b: 3 }).await?.wait(Duration::from_secs(5)).await?, 5);
//! running.stop().await?;
//! # Ok(()) }
//! ```
//!
//! One error type, [`Error`], comes back from the client, the worker and the beat alike, so a
//! program's `?` needs no conversion and [`Error::is_transient`] decides what to retry.
//!
//! Features: `postgres` (default) adds `postgres://` and `postgresql://` URLs and the
//! [`postgres`] module; `redis` (default) adds `redis://`, `rediss://`, `redis+unix://`, `redis+cluster://`
//! and `redis+sentinel://` URLs and the
//! [`redis`] module; `cli` adds [`cli::WorkerArgs`], the flags, logging and metrics endpoint
//! of a worker binary.

#[cfg(feature = "cli")]
pub mod cli;
mod connect;
#[cfg(feature = "cli")]
mod log_format;
#[cfg(all(feature = "cli", feature = "otel"))]
mod otlp;
pub mod signal;

pub use connect::{connect, connect_beat_store, redacted_url, url_with_tls, Connect};
pub use taskq_core::*;
pub use taskq_worker::{TaskEvent, Worker, WorkerBuilder, WorkerConfig, WorkerReport};

/// The worker runtime (`taskq-worker`).
pub mod worker {
    pub use taskq_worker::*;
}

/// The Redis broker, result backend and beat store (`taskq-redis`).
#[cfg(feature = "redis")]
pub mod redis {
    pub use taskq_redis::*;
}

/// The PostgreSQL broker, result backend and beat store (`taskq-postgres`).
///
/// ```
/// let config = taskq::postgres::PostgresConfig::new("postgres://app@127.0.0.1/app?schema=jobs")?;
/// assert_eq!(config.schema(), "jobs");
/// # Ok::<(), taskq::Error>(())
/// ```
#[cfg(feature = "postgres")]
pub mod postgres {
    pub use taskq_postgres::*;
}

/// The RabbitMQ broker, reply backend and beat store (`taskq-amqp`).
///
/// ```
/// let config = taskq::amqp::AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f");
/// # let _ = config;
/// ```
#[cfg(feature = "amqp")]
pub mod amqp {
    pub use taskq_amqp::*;
}

/// The README's Rust code runs as doc tests of this crate, so it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

/// What most programs need, in one `use taskq::prelude::*;`.
pub mod prelude {
    pub use crate::Connect;
    pub use taskq_core::{
        AsyncResult, Client, Run, Task, TaskContext, TaskError, TaskId, TaskState,
    };
    pub use taskq_worker::Worker;
}
