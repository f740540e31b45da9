//! [`AmqpBroker`]: taskq's broker roles on RabbitMQ.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use taskq_core::{Broker, Clock, Membership, Result, WorkerId};

use crate::{consumer::WorkerConsumer, link::Link, AmqpConfig};

mod control;
mod inspector;
mod revocations;
mod shared_state;
mod transport;

/// How far back `workers()` reads the workers stream: a live worker reports every few
/// seconds, so its latest report is well within it.
pub(crate) const WORKER_INFO_WINDOW: chrono::Duration = chrono::Duration::minutes(5);

/// The header saying until when a worker report holds (RFC 3339).
const UNTIL_HEADER: &str = "taskq-until";

/// The RabbitMQ broker: durable quorum queues, publisher confirms, manual acks; RabbitMQ itself
/// redelivers what a lost consumer held, so there is no reaper (no [`Membership`] role).
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use taskq_amqp::{AmqpBroker, AmqpConfig};
/// let broker = AmqpBroker::connect(AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")).await?;
/// # let _ = broker;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AmqpBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    link: Arc<Link>,
    clock: Clock,
    /// Each fetching worker's consumer channel.
    consumers: Mutex<HashMap<WorkerId, Arc<WorkerConsumer>>>,
    /// Serialises starting a worker's consumer.
    starting: tokio::sync::Mutex<()>,
    /// The revocations stream, followed from the first `revoked()` on.
    revocations: tokio::sync::Mutex<Option<revocations::Follower>>,
    /// Celery's queues: the intake's channel and what was declared.
    celery: crate::celery::Celery,
}

impl AmqpBroker {
    /// Connects to the node `config` names and declares the exchanges every queue uses.
    ///
    /// # Errors
    ///
    /// [`taskq_core::Error::Broker`] naming the (redacted) URL when RabbitMQ cannot be reached
    /// or refuses the login.
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        let link = Arc::new(Link::new(config));
        link.connection().await?;
        Ok(Self {
            shared: Arc::new(Shared {
                link,
                clock: Clock::system(),
                consumers: Mutex::new(HashMap::new()),
                starting: tokio::sync::Mutex::new(()),
                revocations: tokio::sync::Mutex::new(None),
                celery: crate::celery::Celery::default(),
            }),
        })
    }

    /// Closes the connection: RabbitMQ returns what this process's workers held to their
    /// queues. Later calls reconnect.
    pub async fn close(&self) {
        let consumers: Vec<_> = self
            .shared
            .consumers
            .lock()
            .drain()
            .map(|(_, c)| c)
            .collect();
        for consumer in consumers {
            consumer.close().await;
        }
        self.link().close().await;
    }

    fn link(&self) -> &Link {
        &self.shared.link
    }

    pub(crate) fn link_arc(&self) -> Arc<Link> {
        self.shared.link.clone()
    }

    /// `worker`'s consumer for `queues`, started (again) when it has none, or its channel
    /// closed, or it consumes other queues; `window` sizes its prefetch.
    async fn consumer(
        &self,
        worker: &WorkerId,
        queues: &[String],
        window: usize,
    ) -> Result<Arc<WorkerConsumer>> {
        if let Some(consumer) = self.existing(worker) {
            if consumer.serves(queues) {
                return Ok(consumer);
            }
        }
        let _starting = self.shared.starting.lock().await;
        let replaced = self.shared.consumers.lock().remove(worker);
        if let Some(old) = replaced {
            if old.serves(queues) {
                self.shared
                    .consumers
                    .lock()
                    .insert(worker.clone(), old.clone());
                return Ok(old);
            }
            tracing::warn!(%worker, "the worker's channel closed: what it held goes back to its queues");
            old.close().await;
        }
        let prefetch = self
            .link()
            .config()
            .prefetch()
            .unwrap_or_else(|| u16::try_from(window.max(1)).unwrap_or(u16::MAX));
        let consumer =
            Arc::new(WorkerConsumer::start(&self.shared.link, worker, queues, prefetch).await?);
        guard_long_runs(&consumer);
        self.shared
            .consumers
            .lock()
            .insert(worker.clone(), consumer.clone());
        Ok(consumer)
    }

    fn existing(&self, worker: &WorkerId) -> Option<Arc<WorkerConsumer>> {
        self.shared.consumers.lock().get(worker).cloned()
    }
}

/// Runs the consumer's guard (see `guard.rs`) a few times per half timeout, for as long as the
/// consumer lives.
fn guard_long_runs(consumer: &Arc<WorkerConsumer>) {
    let tick = (consumer.consumer_timeout() / 10)
        .clamp(Duration::from_millis(100), Duration::from_secs(1));
    let consumer = Arc::downgrade(consumer);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(tick).await;
            let Some(consumer) = consumer.upgrade() else {
                return;
            };
            if consumer.closed() {
                return;
            }
            consumer.guard_round().await;
        }
    });
}

impl Broker for AmqpBroker {
    fn membership(&self) -> Option<&dyn Membership> {
        None
    }
}
