//! [`AmqpConfig`]: where the RabbitMQ node is and how taskq's queues are declared there.

use std::time::Duration;

/// How taskq talks to RabbitMQ.
///
/// ```
/// use taskq_amqp::AmqpConfig;
/// let config = AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .with_delivery_limit(5)
///     .with_prefetch(64);
/// assert_eq!(config.delivery_limit(), 5);
/// ```
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    url: String,
    tls: TlsFiles,
    delivery_limit: u32,
    prefetch: Option<u16>,
    max_queue_length: Option<usize>,
    max_dead_letters: usize,
    max_dead_letter_bytes: usize,
    connect_timeout: Duration,
    consumer_timeout: Duration,
}

impl AmqpConfig {
    /// `amqp://user:password@host:port/vhost` or `amqps://…` (the vhost URL-encoded: `%2f` is
    /// `/`). For `amqps://`, `?tls_ca=<pem file>` names the authority to trust besides the
    /// system's, and `tls_cert=<pem>&tls_key=<pem>` a client certificate (mutual TLS); the
    /// files are read at each connect. Other parameters (`heartbeat=`, …) go to lapin.
    ///
    /// ```
    /// let config = taskq_amqp::AmqpConfig::new("amqps://rabbit:5671/%2f?tls_ca=/etc/ca.pem&heartbeat=10");
    /// assert_eq!(config.url(), "amqps://rabbit:5671/%2f?heartbeat=10");
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        let (url, tls) = TlsFiles::take_from(&url.into());
        Self {
            url,
            tls,
            delivery_limit: 3,
            prefetch: None,
            max_queue_length: None,
            max_dead_letters: 10_000,
            max_dead_letter_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(5),
            consumer_timeout: Duration::from_secs(30 * 60),
        }
    }

    /// Redeliveries after which RabbitMQ dead-letters a message as `worker_lost` (the quorum
    /// queues' `x-delivery-limit`; default 3, as the Redis broker's poison cap). Fixed when a
    /// queue is first declared: RabbitMQ refuses to redeclare a queue with other arguments.
    pub fn with_delivery_limit(mut self, limit: u32) -> Self {
        self.delivery_limit = limit;
        self
    }

    /// Deliveries RabbitMQ sends a worker ahead of its acks (`basic.qos`); by default the size
    /// of the worker's first fetch, which is its whole window (concurrency plus prefetch).
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }

    /// Bounds every priority level of every queue to `max` ready messages (`x-max-length`
    /// with `reject-publish`: an enqueue past it fails with `Error::QueueFull`). Fixed when a
    /// queue is first declared.
    pub fn with_max_queue_length(mut self, max: Option<usize>) -> Self {
        self.max_queue_length = max;
        self
    }

    /// Most dead letters each queue keeps (default 10,000, as on Redis): past it the oldest
    /// go (`x-max-length` with `drop-head` on the dead-letter queue). It also bounds what one
    /// dead-letter page or lookup reads: RabbitMQ shows a queue only by taking its messages,
    /// one `basic.get` each. Fixed when a queue is first declared.
    ///
    /// ```
    /// let config = taskq_amqp::AmqpConfig::new("amqp://127.0.0.1:5672/%2f").with_max_dead_letters(1_000);
    /// assert_eq!(config.max_dead_letters(), 1_000);
    /// ```
    pub fn with_max_dead_letters(mut self, max: usize) -> Self {
        self.max_dead_letters = max.max(1);
        self
    }

    /// Most bytes of dead letters each queue keeps (default 64 MiB, as on Redis): past it the
    /// oldest go (`x-max-length-bytes`). Fixed when a queue is first declared.
    pub fn with_max_dead_letter_bytes(mut self, max: usize) -> Self {
        self.max_dead_letter_bytes = max.max(1);
        self
    }

    /// How long connecting may take before it counts as failed (default 5 s).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The node's `consumer_timeout` (default 30 minutes, RabbitMQ's own default): a worker
    /// hands a delivery it has held for half of it back to the queue through a fresh copy, so
    /// RabbitMQ never closes its channel (see `docs/amqp.md`).
    pub fn with_consumer_timeout(mut self, timeout: Duration) -> Self {
        self.consumer_timeout = timeout;
        self
    }

    /// The URL (without taskq's TLS parameters).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TLS files named in the URL.
    pub(crate) fn tls(&self) -> &TlsFiles {
        &self.tls
    }

    /// Redeliveries before a message is dead-lettered.
    pub fn delivery_limit(&self) -> u32 {
        self.delivery_limit
    }

    /// The fixed prefetch, if one was set.
    pub fn prefetch(&self) -> Option<u16> {
        self.prefetch
    }

    /// The bound on each priority level, if any.
    pub fn max_queue_length(&self) -> Option<usize> {
        self.max_queue_length
    }

    /// Most dead letters kept per queue.
    pub fn max_dead_letters(&self) -> usize {
        self.max_dead_letters
    }

    /// Most bytes of dead letters kept per queue.
    pub fn max_dead_letter_bytes(&self) -> usize {
        self.max_dead_letter_bytes
    }

    /// How long connecting may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The node's delivery acknowledgement timeout.
    pub fn consumer_timeout(&self) -> Duration {
        self.consumer_timeout
    }

    /// The URL with its password replaced by `***`, for errors and logs.
    pub fn redacted_url(&self) -> String {
        taskq_core::redacted_url(&self.url)
    }
}

/// PEM files for `amqps://`: an authority to trust and a client identity.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsFiles {
    pub(crate) ca: Option<std::path::PathBuf>,
    pub(crate) cert: Option<std::path::PathBuf>,
    pub(crate) key: Option<std::path::PathBuf>,
}

impl TlsFiles {
    /// `url` without `tls_ca`, `tls_cert` and `tls_key`, and those files.
    fn take_from(url: &str) -> (String, Self) {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_owned(), Self::default());
        };
        let mut files = Self::default();
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("tls_ca", path)) => files.ca = Some(path.into()),
                Some(("tls_cert", path)) => files.cert = Some(path.into()),
                Some(("tls_key", path)) => files.key = Some(path.into()),
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        (url, files)
    }

    /// lapin's TLS settings, reading the files now.
    pub(crate) fn load(&self) -> Result<lapin::tcp::OwnedTLSConfig, String> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
        };
        let cert_chain = match &self.ca {
            Some(path) => Some(
                String::from_utf8(read(path)?)
                    .map_err(|_| format!("{} is not a PEM file", path.display()))?,
            ),
            None => None,
        };
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
                pem: read(cert)?,
                key: read(key)?,
            }),
            (None, None) => None,
            _ => return Err("`tls_cert` and `tls_key` go together".to_owned()),
        };
        Ok(lapin::tcp::OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let config = AmqpConfig::new("amqp://guest:secret@host:5672/%2f");
        assert_eq!(config.redacted_url(), "amqp://guest:***@host:5672/%2f");
    }
}
