//! [`AmqpReplyBackend`]: results delivered to the process that sent the task, through a reply
//! queue of its own (Celery's `rpc://`), so that a deployment with RabbitMQ and nothing else
//! can wait for results.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio_util::task::AbortOnDropHandle;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::{types::AMQPValue, Consumer};
use taskq_core::{MemoryResultBackend, Result, ResultBackend, TaskId, TaskResult};

use crate::{
    link::{self, Link},
    names,
    publish::{CeleryProperties, Outgoing},
    AmqpBroker,
};

/// The header carrying a result's time to live, in milliseconds, to the receiving process.
const TTL_HEADER: &str = "taskq-result-ttl-ms";

/// Results as messages to the sender's reply queue, kept in the sender's memory.
///
/// - The sending side declares an exclusive, non-durable queue `taskq.reply.<uuid>` and names
///   it in every envelope it sends ([`taskq_core::REPLY_TO_HEADER`]); what arrives there is
///   kept in this process for the result's time to live, where `get` and `wait` read it.
/// - The worker side publishes each record to the queue its task named. A record whose task
///   named no reply queue is not kept anywhere.
///
/// What this gives up, as Celery's `rpc://` does: only the sending process sees a result (a
/// `taskq result ID` from another process finds nothing); results published while the sender
/// is disconnected or gone are dropped (its queue dies with its connection); groups and chords
/// need a shared store ([`ResultBackend::put_workflow`] refuses).
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use std::sync::Arc;
/// use taskq_amqp::{AmqpBroker, AmqpConfig, AmqpReplyBackend};
/// let broker = AmqpBroker::connect(AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")).await?;
/// let results = AmqpReplyBackend::connect(&broker).await?;
/// let client = taskq_core::Client::new(Arc::new(broker), Arc::new(results));
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct AmqpReplyBackend {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    link: Arc<Link>,
    queue: String,
    received: Received,
    /// Whether the "nowhere to go" warning was given.
    warned: std::sync::atomic::AtomicBool,
    /// The reply consumer, held only so that it ends with the backend.
    _listener: AbortOnDropHandle<()>,
}

impl AmqpReplyBackend {
    /// Declares this process's reply queue on `broker`'s connection and starts receiving.
    ///
    /// # Errors
    ///
    /// [`taskq_core::Error::Broker`] when RabbitMQ cannot be reached or refuses the queue.
    pub async fn connect(broker: &AmqpBroker) -> Result<Self> {
        let link = broker.link_arc();
        let queue = names::reply_queue(uuid::Uuid::new_v4());
        let received = Received::default();
        let consumer = consume(&link, &queue).await?;
        let listener = AbortOnDropHandle::new(tokio::spawn(listen(
            link.clone(),
            queue.clone(),
            received.clone(),
            consumer,
        )));
        Ok(Self {
            shared: Arc::new(Shared {
                link,
                queue,
                received,
                warned: std::sync::atomic::AtomicBool::new(false),
                _listener: listener,
            }),
        })
    }

    /// The name of this process's reply queue.
    pub fn queue(&self) -> &str {
        &self.shared.queue
    }

    /// A worker on `results=rpc` running tasks from a producer that named no reply queue (it
    /// stores results elsewhere) keeps their results nowhere: said once per process, not per
    /// result.
    fn warn_once_of_unanswerable(&self) {
        if !self
            .shared
            .warned
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                "a task's result has nowhere to go: its producer named no reply queue (it keeps \
                 results elsewhere, e.g. ?results=redis://…); give this worker the producer's \
                 results= setting"
            );
        }
    }
}

/// Declares the reply queue (again, after a reconnect) and consumes it without acks: a
/// result is a notification to one process, with nothing to redeliver.
async fn consume(link: &Link, queue: &str) -> Result<Consumer> {
    let channel = link.channel().await?;
    link::declare_private(&channel, queue).await?;
    link::consume_without_acks(&channel, queue, &format!("{queue}/results")).await
}

/// What arrived on the reply queue: taskq's records, and the records Python Celery workers
/// on `rpc://` sent for tasks this process sent them ([`taskq_core::celery::CeleryClient`]).
#[derive(Clone, Debug, Default)]
struct Received {
    taskq: MemoryResultBackend,
    /// Celery's records as they came, by task id, with when they came.
    celery: Arc<parking_lot::Mutex<HashMap<TaskId, (Instant, String)>>>,
}

impl Received {
    /// Keeps `body` if it is a Celery worker's reply (a JSON object with `task_id` and
    /// `status`), for as long as taskq keeps results by default; true if it was one.
    fn keep_celery(&self, body: &[u8]) -> bool {
        let Ok(reply) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        let Some(id) = reply["task_id"].as_str().and_then(|id| id.parse().ok()) else {
            return false;
        };
        if !reply["status"].is_string() {
            return false;
        }
        let mut kept = self.celery.lock();
        kept.retain(|_, (at, _)| at.elapsed() < taskq_core::DEFAULT_RESULT_TTL);
        kept.insert(id, (Instant::now(), reply.to_string()));
        true
    }

    fn celery(&self, id: TaskId) -> Option<String> {
        self.celery.lock().get(&id).map(|(_, reply)| reply.clone())
    }
}

/// Keeps what arrives; when the connection goes, declares the queue again on the next one.
async fn listen(link: Arc<Link>, queue: String, received: Received, first: Consumer) {
    let mut consumer = Some(first);
    let mut pause = Duration::from_millis(100);
    loop {
        if let Some(mut open) = consumer.take() {
            pause = Duration::from_millis(100);
            while let Some(Ok(delivery)) = open.next().await {
                keep(&received, &delivery.data, &delivery.properties).await;
            }
            tracing::warn!(%queue, "the reply queue's consumer ended (connection lost?): \
                results published until it is declared again are dropped");
        }
        tokio::time::sleep(pause).await;
        match consume(&link, &queue).await {
            Ok(open) => consumer = Some(open),
            Err(err) => {
                tracing::warn!(%queue, error = %err, "cannot declare the reply queue again");
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn keep(received: &Received, body: &[u8], properties: &lapin::BasicProperties) {
    let record: TaskResult = match serde_json::from_slice(body) {
        Ok(record) => record,
        Err(_) if received.keep_celery(body) => return,
        Err(err) => {
            tracing::warn!(error = %err, "a reply that is not a result record was dropped");
            return;
        }
    };
    let ttl = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(TTL_HEADER))
        .and_then(|value| match value {
            AMQPValue::LongString(text) => text.to_string().parse().ok(),
            _ => None,
        })
        .map_or(taskq_core::DEFAULT_RESULT_TTL, Duration::from_millis);
    // The in-memory backend cannot fail; it keeps results monotonic as every backend does.
    let _ = received.taskq.store(&record, ttl).await;
}

/// The message that answers `record`'s reply queue, if its task named one: taskq's record,
/// or for a task sent in Celery's protocol the record Celery's `rpc://` client reads, once
/// final, with the task id as its correlation id.
pub(crate) fn reply(record: &TaskResult, ttl: Duration) -> Option<Outgoing> {
    let queue = record.reply_to.as_deref()?;
    if record.celery {
        let meta = taskq_core::celery::meta_record(record)?;
        return Some(
            Outgoing::to_queue(queue, meta.into_bytes())
                .with_celery_properties(
                    lapin::types::FieldTable::default(),
                    CeleryProperties {
                        correlation_id: record.id.to_string(),
                        ..CeleryProperties::default()
                    },
                )
                .unrouted_is_fine(),
        );
    }
    let body = serde_json::to_vec(record).ok()?;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    Some(
        Outgoing::to_queue(queue, body)
            .with_header(TTL_HEADER, &ttl_ms.to_string())
            .expiring_after(ttl_ms)
            // The sender may be gone: its result has nowhere to go, which is not an error.
            .unrouted_is_fine(),
    )
}

#[async_trait]
impl ResultBackend for AmqpReplyBackend {
    async fn store(&self, result: &TaskResult, ttl: Duration) -> Result<()> {
        self.store_many(std::slice::from_ref(result), ttl).await
    }

    async fn store_many(&self, results: &[TaskResult], ttl: Duration) -> Result<()> {
        if results.iter().any(|r| r.reply_to.is_none()) {
            self.warn_once_of_unanswerable();
        }
        let replies: Vec<Outgoing> = results.iter().filter_map(|r| reply(r, ttl)).collect();
        self.shared.link.publish(replies).await
    }

    fn reply_to(&self) -> Option<&str> {
        Some(&self.shared.queue)
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskResult>> {
        self.shared.received.taskq.get(id).await
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskResult>> {
        self.shared.received.taskq.wait(id, timeout).await
    }

    async fn celery_result(&self, id: TaskId) -> Result<Option<String>> {
        Ok(self.shared.received.celery(id))
    }
}
