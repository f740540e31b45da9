//! [`RedisConfig`]: where the Redis server is and how long to wait for it.

use std::time::Duration;

use taskq_core::Clock;

/// 64 MiB of dead letters per queue: about 10,000 records of 6 KiB.
const DEFAULT_MAX_DEAD_LETTER_BYTES: usize = 64 << 20;

/// Connection and retention settings of the Redis broker and result backend.
///
/// ```
/// use std::time::Duration;
/// use taskq_redis::RedisConfig;
/// let config = RedisConfig::new("redis://127.0.0.1:6379").with_block_timeout(Duration::from_secs(1));
/// assert_eq!(config.url(), "redis://127.0.0.1:6379");
/// ```
#[derive(Clone, Debug)]
pub struct RedisConfig {
    url: String,
    block_timeout: Duration,
    response_timeout: Duration,
    max_dead_letters: usize,
    max_dead_letter_bytes: usize,
    result_poll_interval: Duration,
    host_clock: Clock,
    durable: Option<Durable>,
    max_queue_length: Option<usize>,
    tls: TlsFiles,
    /// What was wrong with taskq's own URL parameters, reported on connect.
    url_problem: Option<String>,
}

/// PEM files for TLS: the authority to trust instead of the public roots, and a client
/// certificate for servers that ask for one (mutual TLS).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate that signed the servers' certificates.
    pub ca: Option<std::path::PathBuf>,
    /// This client's certificate and its private key.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Opt-in durable writes: how many replicas must have a write before it counts as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    /// Replicas that must acknowledge (`WAIT numreplicas`).
    pub replicas: usize,
    /// Longest wait for them (`WAIT timeout`).
    pub timeout: Duration,
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://`, `rediss://`, with `user:password@` for ACL,
    /// `redis+cluster://`, `redis+sentinel://`). Some query parameters are taskq's own, for
    /// programs that take only a URL (worker, beat, CLI): `durable=<replicas>` and
    /// `durable_timeout_ms=<ms>` (default 1000) turn on
    /// [durable writes](RedisConfig::with_durable_writes); `max_queue_length=<n>` bounds
    /// [every queue](RedisConfig::with_max_queue_length); `tls_ca=<pem file>`,
    /// `tls_cert=<pem file>` and `tls_key=<pem file>` set [TLS files](RedisConfig::with_tls).
    ///
    /// ```
    /// use taskq_redis::RedisConfig;
    /// let config = RedisConfig::new("redis+sentinel://s1:26379/main?durable=1&durable_timeout_ms=500");
    /// assert_eq!(config.url(), "redis+sentinel://s1:26379/main");
    /// assert_eq!(config.durable().unwrap().replicas, 1);
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        let UrlParams {
            url,
            durable,
            max_queue_length,
            tls,
            problem: url_problem,
        } = UrlParams::take(&url.into());
        Self {
            url,
            durable,
            max_queue_length,
            tls,
            url_problem,
            block_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(5),
            max_dead_letters: 10_000,
            max_dead_letter_bytes: DEFAULT_MAX_DEAD_LETTER_BYTES,
            result_poll_interval: Duration::from_secs(1),
            host_clock: Clock::system(),
        }
    }

    /// Longest single blocking wait for work on an idle queue (default 10 s: an idle worker
    /// pays a blocking pop and a fetch per wait, and a wake-up token ends the wait at once).
    pub fn with_block_timeout(mut self, timeout: Duration) -> Self {
        self.block_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// How long any ordinary command may take before it counts as failed (default 5 s).
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Dead letters kept per queue (default 10,000).
    pub fn with_max_dead_letters(mut self, max: usize) -> Self {
        self.max_dead_letters = max.max(1);
        self
    }

    /// Bytes of dead letters kept per queue (default 64 MiB): past it the oldest are dropped,
    /// logged and counted like those past [`with_max_dead_letters`](Self::with_max_dead_letters),
    /// so a run of large poison messages cannot fill Redis's memory. The newest dead letter is
    /// always kept, whatever its size.
    ///
    /// ```
    /// let config = taskq_redis::RedisConfig::new("redis://127.0.0.1:6379")
    ///     .with_max_dead_letter_bytes(16 << 20);
    /// assert_eq!(config.max_dead_letter_bytes(), 16 << 20);
    /// ```
    pub fn with_max_dead_letter_bytes(mut self, max: usize) -> Self {
        self.max_dead_letter_bytes = max;
        self
    }

    /// How often a result waiter re-reads the key in case a notification was lost (default 1 s).
    pub fn with_result_poll_interval(mut self, interval: Duration) -> Self {
        self.result_poll_interval = interval;
        self
    }

    /// The clock of this host as the broker reads it before correcting it against the
    /// server's `TIME` (default: the system clock). Tests inject a skewed one to show that
    /// decisions do not depend on it.
    pub fn with_host_clock(mut self, clock: Clock) -> Self {
        self.host_clock = clock;
        self
    }

    /// Durable writes: an enqueue, a settle or a result write returns only once `replicas`
    /// replicas acknowledged it (`WAIT`, at most `timeout`). Replication is asynchronous, so
    /// without this a write the master acknowledged can be lost when the master dies before
    /// passing it on; with it, an enqueue or result write that did not reach enough replicas
    /// in time fails with a transient [`Error::Broker`](taskq_core::Error::Broker) (retrying
    /// it may duplicate, never lose, a task), and a settle that did not is logged (a lost
    /// settle means a redelivery, not a loss). See `docs/cluster.md` for its cost.
    ///
    /// ```
    /// use std::time::Duration;
    /// use taskq_redis::RedisConfig;
    /// let config = RedisConfig::new("redis+sentinel://s1:26379,s2:26379/main")
    ///     .with_durable_writes(1, Duration::from_secs(1));
    /// assert_eq!(config.durable().unwrap().replicas, 1);
    /// ```
    pub fn with_durable_writes(mut self, replicas: usize, timeout: Duration) -> Self {
        self.durable = (replicas > 0).then_some(Durable { replicas, timeout });
        self
    }

    /// Flow control: enqueues that would make a queue hold more than `max` messages (pending
    /// plus scheduled) fail with [`Error::QueueFull`](taskq_core::Error::QueueFull) naming the
    /// queue, checked atomically with the write, so concurrent producers never push a queue
    /// past it. A call is refused whole (on a cluster: each queue's part). The bound is the
    /// producer's setting: give every producer the same (`?max_queue_length=N` in the URL).
    ///
    /// ```
    /// use taskq_redis::RedisConfig;
    /// let config = RedisConfig::new("redis://cache:6379?max_queue_length=100000");
    /// assert_eq!(config.max_queue_length(), Some(100_000));
    /// assert_eq!(config.with_max_queue_length(None).max_queue_length(), None);
    /// ```
    pub fn with_max_queue_length(mut self, max: Option<usize>) -> Self {
        self.max_queue_length = max.filter(|max| *max > 0);
        self
    }

    /// The queue bound, when set.
    pub fn max_queue_length(&self) -> Option<usize> {
        self.max_queue_length
    }

    /// TLS with a private authority and, optionally, a client certificate (mutual TLS), for
    /// `rediss://` URLs of every topology.
    ///
    /// ```
    /// use taskq_redis::{RedisConfig, TlsFiles};
    /// let config = RedisConfig::new("rediss://cache:6380?tls_ca=/etc/taskq/ca.pem");
    /// assert_eq!(config.tls().ca.as_deref(), Some(std::path::Path::new("/etc/taskq/ca.pem")));
    /// let config = config.with_tls(TlsFiles { ca: None, client: None });
    /// assert_eq!(config.tls(), &TlsFiles::default());
    /// ```
    pub fn with_tls(mut self, files: TlsFiles) -> Self {
        self.tls = files;
        self
    }

    /// The TLS files, when set.
    pub fn tls(&self) -> &TlsFiles {
        &self.tls
    }

    /// The certificates to hand redis-rs, read from the TLS files.
    pub(crate) fn certificates(&self) -> Result<Option<redis::TlsCertificates>, String> {
        if self.tls == TlsFiles::default() {
            return Ok(None);
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
        };
        let root_cert = self.tls.ca.as_deref().map(read).transpose()?;
        let client_tls = match &self.tls.client {
            Some((cert, key)) => Some(redis::ClientTlsConfig {
                client_cert: read(cert)?,
                client_key: read(key)?,
            }),
            None => None,
        };
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }

    /// Why the URL's taskq parameters are not valid, if they are not.
    pub(crate) fn url_problem(&self) -> Option<&str> {
        self.url_problem.as_deref()
    }

    /// The durable-write setting, when on.
    pub fn durable(&self) -> Option<Durable> {
        self.durable
    }

    /// The host clock the broker corrects.
    pub fn host_clock(&self) -> &Clock {
        &self.host_clock
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How long an ordinary command may take.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// How often a result waiter re-reads its key.
    pub fn result_poll_interval(&self) -> Duration {
        self.result_poll_interval
    }

    /// Longest single blocking wait for work on an idle queue.
    pub fn block_timeout(&self) -> Duration {
        self.block_timeout
    }

    /// Dead letters kept per queue.
    pub fn max_dead_letters(&self) -> usize {
        self.max_dead_letters
    }

    /// Bytes of dead letters kept per queue.
    pub fn max_dead_letter_bytes(&self) -> usize {
        self.max_dead_letter_bytes
    }
}

/// taskq's own query parameters, taken off a URL.
struct UrlParams {
    /// The URL without them.
    url: String,
    durable: Option<Durable>,
    max_queue_length: Option<usize>,
    tls: TlsFiles,
    /// What was wrong with them.
    problem: Option<String>,
}

impl UrlParams {
    fn take(url: &str) -> Self {
        let mut params = Self {
            url: url.to_owned(),
            durable: None,
            max_queue_length: None,
            tls: TlsFiles::default(),
            problem: None,
        };
        let Some((base, query)) = url.split_once('?') else {
            return params;
        };
        let (mut replicas, mut timeout_ms) = (None, 1000u64);
        let (mut cert, mut key) = (None, None);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("durable", value)) => match value.parse::<usize>() {
                    Ok(n) => replicas = Some(n),
                    Err(_) => {
                        params.problem =
                            Some(format!("`durable={value}`: expected a number of replicas"));
                    }
                },
                Some(("durable_timeout_ms", value)) => match value.parse::<u64>() {
                    Ok(ms) => timeout_ms = ms,
                    Err(_) => {
                        params.problem = Some(format!(
                            "`durable_timeout_ms={value}`: expected milliseconds"
                        ));
                    }
                },
                Some(("max_queue_length", value)) => match value.parse::<usize>() {
                    Ok(max) => params.max_queue_length = Some(max).filter(|max| *max > 0),
                    Err(_) => {
                        params.problem =
                            Some(format!("`max_queue_length={value}`: expected a number"));
                    }
                },
                Some(("tls_ca", path)) => params.tls.ca = Some(path.into()),
                Some(("tls_cert", path)) => cert = Some(std::path::PathBuf::from(path)),
                Some(("tls_key", path)) => key = Some(std::path::PathBuf::from(path)),
                _ => kept.push(pair),
            }
        }
        match (cert, key) {
            (Some(cert), Some(key)) => params.tls.client = Some((cert, key)),
            (None, None) => {}
            _ => params.problem = Some("`tls_cert` and `tls_key` go together".to_owned()),
        }
        params.url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        params.durable = replicas.filter(|n| *n > 0).map(|replicas| Durable {
            replicas,
            timeout: Duration::from_millis(timeout_ms),
        });
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_parameters_come_off_the_url() {
        let config =
            RedisConfig::new("redis://h:1/0?protocol=resp3&durable=2&durable_timeout_ms=250");
        assert_eq!(config.url(), "redis://h:1/0?protocol=resp3");
        assert_eq!(
            config.durable(),
            Some(Durable {
                replicas: 2,
                timeout: Duration::from_millis(250)
            })
        );
        assert_eq!(RedisConfig::new("redis://h:1").durable(), None);
        let err =
            crate::server::Server::of(&RedisConfig::new("redis://h:1?durable=yes")).unwrap_err();
        assert!(err.to_string().contains("durable=yes"), "{err}");
    }
}
