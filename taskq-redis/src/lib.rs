//! taskq-redis: the Redis implementations of taskq's broker, result backend and beat store.
//!
//! - [`RedisBroker`]: at-least-once delivery through per-worker processing lists, one Lua
//!   script per state transition (`lua/*.lua`), a reaper that recovers lost workers' lists.
//! - [`RedisResultBackend`]: results as JSON strings with a TTL, waiters woken by pub/sub.
//! - [`RedisBeatStore`]: the beat's leader lock and last fires.
//!
//! Every key is built in one module, and all keys of one queue share the hash tag
//! `{<queue>}`; `docs/redis.md` describes the layout and the guarantees. Connections accept
//! `redis://`, `rediss://` (TLS through rustls), `redis://user:password@host:port/db` (ACL),
//! `redis+cluster://h1:p1,h2:p2` (Redis Cluster) and `redis+sentinel://s1:p1,s2:p2/<master>`
//! (the master a Sentinel group names, followed across failovers); `docs/cluster.md` says more.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> taskq_core::Result<()> {
//! use taskq_redis::RedisConfig;
//! let client = taskq_redis::client(RedisConfig::new("redis://127.0.0.1:6379")).await?;
//! # let _ = client;
//! # Ok(()) }
//! ```

pub mod acl;
mod backend;
mod beat_store;
mod broker;
mod config;
mod conn;
mod error;
mod keys;
mod replicas;
mod scripts;
mod server;

use std::sync::Arc;

pub use backend::RedisResultBackend;
pub use beat_store::RedisBeatStore;
pub use broker::RedisBroker;
pub use config::{Durable, RedisConfig, TlsFiles};

/// A [`taskq_core::Client`] on the Redis broker and result backend described by `config`.
///
/// # Errors
///
/// [`taskq_core::Error::Invalid`] for a bad URL, [`taskq_core::Error::Broker`] when Redis
/// cannot be reached.
pub async fn client(config: RedisConfig) -> taskq_core::Result<taskq_core::Client> {
    let broker = RedisBroker::connect(config.clone()).await?;
    let backend = RedisResultBackend::connect(config).await?;
    Ok(taskq_core::Client::new(Arc::new(broker), Arc::new(backend)))
}

/// True for the URL schemes this crate serves: `redis://`, `rediss://`, `redis+unix://`,
/// `redis+cluster://` and `redis+sentinel://` (each of the last two also with `rediss+`).
///
/// ```
/// assert!(taskq_redis::handles_url("rediss://cache:6380"));
/// assert!(taskq_redis::handles_url("redis+cluster://n1:7000,n2:7001"));
/// assert!(taskq_redis::handles_url("redis+sentinel://s1:26379/mymaster"));
/// assert!(!taskq_redis::handles_url("memory://"));
/// ```
pub fn handles_url(url: &str) -> bool {
    server::SCHEMES.iter().any(|scheme| url.starts_with(scheme))
}
