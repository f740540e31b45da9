//! taskq-amqp: taskq's broker on RabbitMQ (AMQP 0-9-1), through lapin.
//!
//! - Every priority level of a taskq queue is a durable **quorum queue** (`taskq.<q>.p<0-9>`)
//!   with a delivery limit; messages are persistent and every enqueue waits for **publisher
//!   confirms**; workers consume with manual acks and a prefetch.
//! - A consumer that goes away leaves its unacknowledged deliveries to RabbitMQ, which
//!   redelivers them: no reaper. Past the delivery limit RabbitMQ dead-letters the message
//!   (reason `worker_lost`) into the queue's dead-letter queue, where workers' own dead letters
//!   go too, with reason, error and worker in headers.
//! - Countdowns, ETAs and retry backoff go through a chain of 28 delay queues whose TTLs are
//!   powers of two seconds: any delay from a second to years, never early, under a second
//!   late, durable (no plugin).
//! - Pings and revocations go through a fanout exchange.
//!
//! `docs/amqp.md` describes the topology, the guarantees and what needs Redis.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> taskq_core::Result<()> {
//! use std::sync::Arc;
//! use taskq_amqp::{AmqpBroker, AmqpConfig};
//! let broker = AmqpBroker::connect(AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")).await?;
//! let client = taskq_core::Client::new(Arc::new(broker), Arc::new(taskq_core::MemoryResultBackend::new()));
//! # let _ = client;
//! # Ok(()) }
//! ```

mod beat_store;
mod broker;
mod celery;
mod config;
mod consumer;
mod delay;
mod error;
mod guard;
mod link;
mod names;
mod publish;
mod replies;
mod replies_alongside;
mod scan;
mod stream;

pub use beat_store::AmqpBeatStore;
pub use broker::AmqpBroker;
pub use config::AmqpConfig;
pub use replies::AmqpReplyBackend;
pub use replies_alongside::RepliesAlongside;

/// True for the URL schemes this crate serves: `amqp://` and `amqps://`.
///
/// ```
/// assert!(taskq_amqp::handles_url("amqp://guest:guest@localhost:5672/%2f"));
/// assert!(taskq_amqp::handles_url("amqps://rabbit.example.com/prod"));
/// assert!(!taskq_amqp::handles_url("redis://localhost"));
/// ```
pub fn handles_url(url: &str) -> bool {
    url.starts_with("amqp://") || url.starts_with("amqps://")
}
