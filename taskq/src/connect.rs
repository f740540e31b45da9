//! From a broker URL to a client or a beat store, whichever transports are compiled in.

use std::{future::Future, sync::Arc};

use taskq_core::{BeatStore, Client, Error, MemoryBeatStore, Result};

/// `Client::connect(url)`: a client for the broker at `url` (see [`connect`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq::Result<()> {
/// use taskq::prelude::*;
/// let client = Client::connect("memory://").await?;
/// # let _ = client;
/// # Ok(()) }
/// ```
pub trait Connect: Sized {
    /// Connects to the broker and result backend at `url`.
    ///
    /// # Errors
    ///
    /// As [`connect`].
    fn connect(url: &str) -> impl Future<Output = Result<Self>> + Send;
}

impl Connect for Client {
    fn connect(url: &str) -> impl Future<Output = Result<Self>> + Send {
        connect(url)
    }
}

/// A client for the broker at `url`: `memory://` for a fresh in-memory broker and result
/// backend; with the `redis` feature, `redis://`, `rediss://` (TLS), `redis+unix://`,
/// `redis+cluster://h1:p1,h2:p2` (Redis Cluster) and `redis+sentinel://s1:p1,s2:p2/<master>`
/// for the Redis broker and result backend with default settings (`?durable=1` turns on
/// durable writes; see `taskq_redis::RedisConfig::new`); with the `amqp` feature,
/// `amqp://user:password@host:port/vhost?results=redis://host:6379` for the RabbitMQ broker
/// with results in Redis (or in PostgreSQL, `results=postgres://…`, with the `postgres`
/// feature; or `results=rpc`, delivered to the sending process through a reply
/// queue, see `taskq_amqp::AmqpReplyBackend`; or `results=memory`, this process only); with
/// the `postgres` feature, `postgres://user:password@host:port/database?schema=taskq` for the
/// PostgreSQL broker and result backend in one pool (see `taskq_postgres::PostgresConfig`;
/// `migrate=auto` creates or upgrades the schema at connect).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq::Result<()> {
/// let client = taskq::connect("memory://").await?;
/// assert!(taskq::connect("mqtt://localhost").await.is_err());
/// # let _ = client;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`Error::Invalid`] for an unsupported scheme or a bad URL, [`Error::Broker`] when the
/// server cannot be reached.
pub async fn connect(url: &str) -> Result<Client> {
    if is_memory(url) {
        return Ok(Client::in_memory());
    }
    #[cfg(feature = "redis")]
    if taskq_redis::handles_url(url) {
        return taskq_redis::client(taskq_redis::RedisConfig::new(url)).await;
    }
    #[cfg(feature = "amqp")]
    if taskq_amqp::handles_url(url) {
        return connect_amqp(url).await;
    }
    #[cfg(feature = "postgres")]
    if taskq_postgres::handles_url(url) {
        return taskq_postgres::client(taskq_postgres::PostgresConfig::new(url)?).await;
    }
    Err(unsupported(url))
}

/// RabbitMQ carries the tasks; the results go where `results=` says: a Redis or PostgreSQL
/// URL (shared by every process), `rpc` (to the process that sent the task, through its reply queue) or
/// `memory` (this process only, for a single-process app). RabbitMQ keeps
/// no results of its own, so there is no silent default.
#[cfg(feature = "amqp")]
async fn connect_amqp(url: &str) -> Result<Client> {
    let (broker_url, results) = take_param(url, "results");
    let broker =
        Arc::new(taskq_amqp::AmqpBroker::connect(taskq_amqp::AmqpConfig::new(&broker_url)).await?);
    let stored: Arc<dyn taskq_core::ResultBackend> = match results.as_deref() {
        Some("rpc") => Arc::new(taskq_amqp::AmqpReplyBackend::connect(&broker).await?),
        Some("memory") => Arc::new(taskq_core::MemoryResultBackend::new()),
        #[cfg(feature = "redis")]
        Some(results) if taskq_redis::handles_url(results) => Arc::new(
            taskq_redis::RedisResultBackend::connect(taskq_redis::RedisConfig::new(results))
                .await?,
        ),
        #[cfg(feature = "postgres")]
        Some(results) if taskq_postgres::handles_url(results) => Arc::new(
            taskq_postgres::PostgresResultBackend::connect(taskq_postgres::PostgresConfig::new(
                results,
            )?)
            .await?,
        ),
        other => {
            return Err(Error::Invalid {
                what: "broker url",
                reason: format!(
                    "`{}`: say where results go with `?results=redis://host:6379` or `?results=postgres://…` (shared), \
                     `?results=rpc` (to the sending process, through RabbitMQ) or \
                     `?results=memory` (this process only){}",
                    redacted_url(url),
                    other
                        .map(|o| format!("; `{o}` is neither"))
                        .unwrap_or_default()
                ),
            })
        }
    };
    // A producer on `results=rpc` may send to workers that store results: answer its reply
    // queue too, so that mixed settings still deliver.
    let backend: Arc<dyn taskq_core::ResultBackend> = if results.as_deref() == Some("rpc") {
        stored
    } else {
        Arc::new(taskq_amqp::RepliesAlongside::new(&broker, stored))
    };
    Ok(Client::new(broker, backend))
}

/// `url` without its query parameter `name`, and that parameter's value (which may itself be
/// a URL: it runs to the next `&` that starts another parameter of ours, or to the end).
#[cfg(feature = "amqp")]
fn take_param(url: &str, name: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let prefix = format!("{name}=");
    match query.strip_prefix(&prefix) {
        Some(value) => (base.to_owned(), Some(value.to_owned())),
        None => match query.split_once(&format!("&{prefix}")) {
            Some((rest, value)) => (format!("{base}?{rest}"), Some(value.to_owned())),
            None => (url.to_owned(), None),
        },
    }
}

/// The beat store at `url`: an in-process one for `memory://`, Redis for Redis URLs,
/// RabbitMQ's single-active-consumer token for `amqp://` (`taskq_amqp::AmqpBeatStore`), and
/// a lock row for `postgres://` (`taskq_postgres::PostgresBeatStore`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq::Result<()> {
/// let store = taskq::connect_beat_store("memory://").await?;
/// assert!(store.try_acquire("me", std::time::Duration::from_secs(5)).await?);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_beat_store(url: &str) -> Result<Arc<dyn BeatStore>> {
    if is_memory(url) {
        return Ok(Arc::new(MemoryBeatStore::new()));
    }
    #[cfg(feature = "redis")]
    if taskq_redis::handles_url(url) {
        let config = taskq_redis::RedisConfig::new(url);
        return Ok(Arc::new(
            taskq_redis::RedisBeatStore::connect(&config).await?,
        ));
    }
    #[cfg(feature = "amqp")]
    if taskq_amqp::handles_url(url) {
        // The results parameter is the client's business, not the store's.
        let (broker_url, _) = take_param(url, "results");
        return Ok(Arc::new(
            taskq_amqp::AmqpBeatStore::connect(taskq_amqp::AmqpConfig::new(broker_url)).await?,
        ));
    }
    #[cfg(feature = "postgres")]
    if taskq_postgres::handles_url(url) {
        let config = taskq_postgres::PostgresConfig::new(url)?;
        return Ok(Arc::new(
            taskq_postgres::PostgresBeatStore::connect(config).await?,
        ));
    }
    Err(unsupported(url))
}

/// `url` with taskq's TLS parameters added (`tls_ca`, `tls_cert`, `tls_key`: PEM files of the
/// authority to trust and of a client certificate for mutual TLS), for programs whose flags
/// name the files separately.
///
/// ```
/// use std::path::Path;
/// assert_eq!(
///     taskq::url_with_tls("rediss://cache:6380", Some(Path::new("/ca.pem")), None, None),
///     "rediss://cache:6380?tls_ca=/ca.pem"
/// );
/// assert_eq!(taskq::url_with_tls("redis://h", None, None, None), "redis://h");
/// ```
pub fn url_with_tls(
    url: &str,
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> String {
    let mut url = url.to_owned();
    for (name, path) in [("tls_ca", ca), ("tls_cert", cert), ("tls_key", key)] {
        if let Some(path) = path {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("{name}={}", path.display()));
        }
    }
    url
}

pub use taskq_core::redacted_url;

fn is_memory(url: &str) -> bool {
    url == "memory://" || url == "memory"
}

fn unsupported(url: &str) -> Error {
    let mut schemes = vec!["memory://"];
    if cfg!(feature = "redis") {
        schemes.extend([
            "redis://",
            "rediss://",
            "redis+unix://",
            "redis+cluster://",
            "redis+sentinel://",
        ]);
    }
    if cfg!(feature = "amqp") {
        schemes.extend(["amqp://", "amqps://"]);
    }
    if cfg!(feature = "postgres") {
        schemes.extend(["postgres://", "postgresql://"]);
    }
    let missing: Vec<&str> = [
        ("redis", cfg!(feature = "redis")),
        ("amqp", cfg!(feature = "amqp")),
        ("postgres", cfg!(feature = "postgres")),
    ]
    .into_iter()
    .filter(|(_, on)| !on)
    .map(|(name, _)| name)
    .collect();
    let hint = if missing.is_empty() {
        String::new()
    } else {
        format!(" (build with the {} feature for more)", missing.join(", "))
    };
    Error::Invalid {
        what: "broker url",
        reason: format!("`{url}`: expected one of {}{hint}", schemes.join(", ")),
    }
}

#[cfg(all(test, feature = "amqp"))]
mod tests {
    use super::take_param;

    #[test]
    fn the_results_parameter_comes_off_the_broker_url() {
        assert_eq!(
            take_param("amqp://h/%2f?results=redis://r:6379/0?durable=1", "results"),
            (
                "amqp://h/%2f".to_owned(),
                Some("redis://r:6379/0?durable=1".to_owned())
            )
        );
        assert_eq!(
            take_param("amqp://h/v?heartbeat=10&results=memory", "results"),
            (
                "amqp://h/v?heartbeat=10".to_owned(),
                Some("memory".to_owned())
            )
        );
        assert_eq!(
            take_param("amqp://h/v", "results"),
            ("amqp://h/v".to_owned(), None)
        );
    }
}
