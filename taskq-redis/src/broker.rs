//! [`RedisBroker`]: the production broker, on Redis lists with per-worker processing lists.
//!
//! The key layout and the guarantees are described in `docs/redis.md`; key names live in
//! `keys` and every multi-step transition is one Lua script in `lua/`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use taskq_core::{
    Broker, Clock, ControlMessage, DeadLetter, DeadReason, Delivery, Error, OutboundMessage,
    PayloadFields, QueueStats, RecoveryReport, Result, WorkerId, WorkerInfo, FETCH_LEASE,
};

use crate::{
    connection::{self, redis_error},
    keys::{self, QueueKeys},
    scripts,
};

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
    result_poll_interval: Duration,
}

impl RedisConfig {
    /// Settings for the server at `url` (`redis://`, `rediss://`, with `user:password@` for ACL).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            block_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            max_dead_letters: 10_000,
            result_poll_interval: Duration::from_secs(1),
        }
    }

    /// Longest single blocking wait for work on an idle queue (default 2 s).
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

    /// How often a result waiter re-reads the key in case a notification was lost (default 1 s).
    pub fn with_result_poll_interval(mut self, interval: Duration) -> Self {
        self.result_poll_interval = interval;
        self
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
}

/// The Redis broker: at-least-once delivery through per-worker processing lists.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use std::sync::Arc;
/// use taskq_core::Client;
/// use taskq_redis::{RedisBroker, RedisConfig, RedisResultBackend};
/// let config = RedisConfig::new("redis://127.0.0.1:6379");
/// let client = Client::new(
///     Arc::new(RedisBroker::connect(config.clone()).await?),
///     Arc::new(RedisResultBackend::connect(config).await?),
/// );
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: RedisConfig,
    client: redis::Client,
    /// Ordinary commands and scripts, multiplexed.
    conn: ConnectionManager,
    /// Blocking waits only, opened on first use; its response timeout exceeds the block.
    blocking: OnceCell<tokio::sync::Mutex<ConnectionManager>>,
    /// What this process handed to each worker and not yet released, per queue, so that a
    /// fetch whose reply was lost can be reconciled with the processing list.
    held: Mutex<Held>,
    /// Workers whose last fetch failed: their processing lists may hold unreported messages.
    unreconciled: Mutex<HashSet<WorkerId>>,
    /// Queues this process already added to `taskq:queues`.
    known_queues: Mutex<HashSet<String>>,
    /// Workers of this process that sent a heartbeat (fetches need not register them).
    heartbeating: Mutex<HashSet<WorkerId>>,
}

/// Payloads handed out and not yet released, with multiplicity, per (worker, queue).
/// worker -> queue -> payload -> count. Keys share the deliveries' `Arc`s, so holding a
/// message copies no bytes.
type Held = HashMap<WorkerId, HashMap<Arc<str>, HashMap<Arc<str>, usize>>>;

/// Forwards control messages into `tx` until its receiver is dropped, reconnecting (and
/// resubscribing) with backoff when the connection is lost.
async fn forward_control(
    client: redis::Client,
    mut pubsub: redis::aio::PubSub,
    tx: tokio::sync::mpsc::UnboundedSender<ControlMessage>,
) {
    use futures_util::StreamExt;
    loop {
        {
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    message = messages.next() => match message {
                        None => break,
                        Some(message) => {
                            let parsed = message
                                .get_payload::<String>()
                                .ok()
                                .and_then(|p| serde_json::from_str::<ControlMessage>(&p).ok());
                            match parsed {
                                Some(parsed) => {
                                    if tx.send(parsed).is_err() {
                                        return;
                                    }
                                }
                                None => tracing::warn!("ignoring an unreadable control message"),
                            }
                        }
                    },
                }
            }
        }
        tracing::warn!("control channel connection lost; reconnecting");
        let mut delay = Duration::from_millis(50);
        pubsub = loop {
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
            let Ok(mut fresh) = client.get_async_pubsub().await else {
                continue;
            };
            if fresh.subscribe(keys::CONTROL).await.is_ok() {
                break fresh;
            }
        };
    }
}

/// The messages of one enqueue call that go to one queue.
struct QueueBatch<'a> {
    queue: &'a str,
    /// Ready payloads per priority level.
    ready: [Vec<&'a str>; 10],
    /// Scheduled members (level-prefixed payloads) with their due times.
    scheduled: Vec<(i64, String)>,
}

impl<'a> QueueBatch<'a> {
    fn new(queue: &'a str) -> Self {
        Self {
            queue,
            ready: Default::default(),
            scheduled: Vec::new(),
        }
    }

    /// Data commands this batch needs (not counting the wake-up token).
    fn commands(&self) -> usize {
        self.ready.iter().filter(|p| !p.is_empty()).count()
            + usize::from(!self.scheduled.is_empty())
    }
}

/// Milliseconds since the epoch, the unit of every score and deadline in Redis.
fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

impl RedisBroker {
    /// Connects to the server in `config`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a bad URL, [`Error::Broker`] when the server cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let client = connection::client(&config.url)?;
        let conn = connection::manager(&client, config.response_timeout).await?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                client,
                conn,
                blocking: OnceCell::new(),
                held: Mutex::new(HashMap::new()),
                unreconciled: Mutex::new(HashSet::new()),
                known_queues: Mutex::new(HashSet::new()),
                heartbeating: Mutex::new(HashSet::new()),
            }),
        })
    }

    fn has_heartbeat(&self, worker: &WorkerId) -> bool {
        self.shared
            .heartbeating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(worker)
    }

    fn knows_queue(&self, queue: &str) -> bool {
        self.shared
            .known_queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(queue)
    }

    fn remember_queues(&self, queues: &[&str]) {
        let mut known = self
            .shared
            .known_queues
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        known.extend(queues.iter().map(|q| (*q).to_owned()));
    }

    fn conn(&self) -> ConnectionManager {
        self.shared.conn.clone()
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // Entries are only inserted and removed whole; a poisoned map is still consistent.
        self.shared.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn hold(&self, worker: &WorkerId, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        let mut held = self.held();
        let queues = held.entry(worker.clone()).or_default();
        for delivery in deliveries {
            *queues
                .entry(delivery.shared_queue().clone())
                .or_default()
                .entry(delivery.shared_payload().clone())
                .or_default() += 1;
        }
    }

    fn release(&self, worker: &WorkerId, deliveries: &[Delivery]) {
        let mut held = self.held();
        let Some(queues) = held.get_mut(worker) else {
            return;
        };
        for delivery in deliveries {
            let Some(payloads) = queues.get_mut(delivery.queue()) else {
                continue;
            };
            if let Some(count) = payloads.get_mut(delivery.payload()) {
                *count -= 1;
                if *count == 0 {
                    payloads.remove(delivery.payload());
                }
            }
            if payloads.is_empty() {
                queues.remove(delivery.queue());
            }
        }
        if queues.is_empty() {
            held.remove(worker);
        }
    }

    fn mark_unreconciled(&self, worker: &WorkerId) {
        self.shared
            .unreconciled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(worker.clone());
    }

    /// After a failed fetch: adopts messages that reached `worker`'s processing lists without
    /// their reply reaching us, so nothing is stranded while the worker lives.
    async fn reconcile(&self, worker: &WorkerId, queues: &[String]) -> Result<Vec<Delivery>> {
        let pending = self
            .shared
            .unreconciled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(worker);
        if !pending {
            return Ok(Vec::new());
        }
        let mut adopted = Vec::new();
        for queue in queues {
            let key = QueueKeys::new(queue).processing(worker.as_str());
            let listed: Vec<String> = redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            let mut known = self
                .held()
                .get(worker)
                .and_then(|queues| queues.get(queue.as_str()))
                .cloned()
                .unwrap_or_default();
            let queue_name: Arc<str> = Arc::from(queue.as_str());
            // The list is newest first; adopt oldest first.
            for payload in listed.into_iter().rev() {
                match known.get_mut(payload.as_str()) {
                    Some(count) if *count > 0 => *count -= 1,
                    _ => {
                        let level = PayloadFields::read(&payload).priority;
                        adopted.push(Delivery::new(
                            queue_name.clone(),
                            level,
                            Arc::from(payload),
                            0,
                        ));
                    }
                }
            }
        }
        if !adopted.is_empty() {
            tracing::warn!(worker = %worker, count = adopted.len(), "adopted messages whose fetch reply was lost");
        }
        self.hold(worker, &adopted);
        self.shared
            .unreconciled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(worker);
        Ok(adopted)
    }

    /// One non-blocking pass over `queues` in order, up to `max` messages (`max == 0` only
    /// registers the worker on the first queue).
    async fn fetch_ready(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
    ) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        for (index, queue) in queues.iter().enumerate() {
            if out.len() >= max && index > 0 {
                break;
            }
            let keys = QueueKeys::new(queue);
            let mut invocation = scripts::FETCH.prepare_invoke();
            for key in keys.pending_descending() {
                invocation.key(key);
            }
            invocation
                .key(keys.processing(worker.as_str()))
                .key(keys.workers())
                .arg(max - out.len())
                .arg(worker.as_str())
                .arg(if self.has_heartbeat(worker) {
                    0
                } else {
                    millis(Utc::now()) + FETCH_LEASE.as_millis() as i64
                });
            let (payloads, levels): (Vec<String>, Vec<u8>) = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            let queue_name: Arc<str> = Arc::from(queue.as_str());
            out.extend(payloads.into_iter().zip(levels).map(|(payload, level)| {
                Delivery::new(queue_name.clone(), level, Arc::from(payload), 0)
            }));
        }
        Ok(out)
    }

    /// Waits up to `wait` for a wake-up token of any of `queues` on the dedicated blocking
    /// connection; true when one arrived (messages became ready somewhere).
    ///
    /// One `BLPOP` watches every queue and priority level at once, and wakes exactly one idle
    /// worker per token, so an idle fleet neither polls nor stampedes.
    async fn wait_for_wake(&self, queues: &[String], wait: Duration) -> Result<bool> {
        let config = &self.shared.config;
        let blocking = self
            .shared
            .blocking
            .get_or_try_init(|| async {
                let timeout = config.block_timeout + config.response_timeout;
                connection::manager(&self.shared.client, timeout)
                    .await
                    .map(tokio::sync::Mutex::new)
            })
            .await?;
        let mut conn = blocking.lock().await;
        let wait = wait.min(config.block_timeout);
        let keys: Vec<String> = queues.iter().map(|q| QueueKeys::new(q).wake()).collect();
        let token: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(keys)
            .arg(wait.as_secs_f64())
            .query_async(&mut *conn)
            .await
            .map_err(redis_error)?;
        Ok(token.is_some())
    }

    /// Passes a wake-up on to another idle worker (this one took a full batch; more may wait).
    async fn pass_wake(&self, queue: &str) -> Result<()> {
        let wake = QueueKeys::new(queue).wake();
        redis::pipe()
            .lpush(&wake, 1)
            .ignore()
            .ltrim(&wake, 0, 0)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn fetch_inner(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let mut out = self.reconcile(worker, queues).await?;
        if out.len() < max {
            let ready = self.fetch_ready(worker, queues, max - out.len()).await?;
            self.hold(worker, &ready);
            out.extend(ready);
        }
        if out.is_empty() && !wait.is_zero() && self.wait_for_wake(queues, wait).await? {
            let ready = self.fetch_ready(worker, queues, max).await?;
            self.hold(worker, &ready);
            if ready.len() == max {
                if let Some(first) = ready.first() {
                    self.pass_wake(first.queue()).await?;
                }
            }
            out.extend(ready);
        }
        Ok(out)
    }

    /// Groups deliveries by queue, keeping their order within each queue.
    fn by_queue(deliveries: &[Delivery]) -> Vec<(&str, Vec<&Delivery>)> {
        let mut groups: Vec<(&str, Vec<&Delivery>)> = Vec::new();
        for delivery in deliveries {
            match groups.iter_mut().find(|(q, _)| *q == delivery.queue()) {
                Some((_, group)) => group.push(delivery),
                None => groups.push((delivery.queue(), vec![delivery])),
            }
        }
        groups
    }

    async fn recover(
        &self,
        queue: &str,
        worker: &str,
        max_redeliveries: u32,
        force: bool,
    ) -> Result<(i64, i64)> {
        let keys = QueueKeys::new(queue);
        let now = Utc::now();
        let mut invocation = scripts::RECOVER.prepare_invoke();
        invocation
            .key(keys.workers())
            .key(keys.processing(worker))
            .key(keys.redeliveries())
            .key(keys.dead());
        for key in keys.pending_ascending() {
            invocation.key(key);
        }
        invocation.key(keys.wake());
        invocation
            .arg(worker)
            .arg(millis(now))
            .arg(max_redeliveries)
            .arg(self.shared.config.max_dead_letters)
            .arg(now.to_rfc3339())
            .arg(queue)
            .arg(if force { "1" } else { "0" });
        invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)
    }
}

#[async_trait]
impl Broker for RedisBroker {
    fn clock(&self) -> Clock {
        Clock::system()
    }

    async fn enqueue(&self, messages: Vec<OutboundMessage>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        // Per queue: ready payloads by level (one variadic LPUSH each, in order) and scheduled
        // members. Keys are built once per queue, not per message.
        let mut batches: Vec<QueueBatch<'_>> = Vec::new();
        for message in &messages {
            let index = match batches.iter().position(|b| b.queue == message.queue) {
                Some(index) => index,
                None => {
                    batches.push(QueueBatch::new(&message.queue));
                    batches.len() - 1
                }
            };
            let batch = &mut batches[index];
            let level = message.priority.min(9);
            match message.eta {
                Some(eta) if eta > now => batch
                    .scheduled
                    .push((millis(eta), format!("{level}{}", message.payload))),
                _ => batch.ready[usize::from(level)].push(&message.payload),
            }
        }
        let new_queues: Vec<&str> = batches
            .iter()
            .map(|b| b.queue)
            .filter(|q| !self.knows_queue(q))
            .collect();
        let mut pipe = redis::pipe();
        let data_commands: usize = batches.iter().map(QueueBatch::commands).sum();
        if data_commands + usize::from(!new_queues.is_empty()) > 1 {
            // All or nothing: a batch never lands half-way.
            pipe.atomic();
        }
        for batch in &batches {
            let keys = QueueKeys::new(batch.queue);
            for (level, payloads) in batch.ready.iter().enumerate() {
                if !payloads.is_empty() {
                    pipe.lpush(keys.pending(level as u8), payloads).ignore();
                }
            }
            if !batch.scheduled.is_empty() {
                pipe.zadd_multiple(keys.scheduled(), &batch.scheduled)
                    .ignore();
            }
            if batch.ready.iter().any(|p| !p.is_empty()) {
                // Wake one idle worker of this queue.
                let wake = keys.wake();
                pipe.lpush(&wake, 1).ignore().ltrim(&wake, 0, 0).ignore();
            }
        }
        if !new_queues.is_empty() {
            pipe.sadd(keys::QUEUES, &new_queues).ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)?;
        self.remember_queues(&new_queues);
        Ok(())
    }

    async fn enqueue_unique(
        &self,
        message: OutboundMessage,
        unique_key: &str,
        ttl: Duration,
    ) -> Result<Option<taskq_core::TaskId>> {
        let now = Utc::now();
        let keys = QueueKeys::new(&message.queue);
        let level = message.priority.min(9);
        let due = message.eta.filter(|eta| *eta > now).map_or(0, millis);
        let holder: String = scripts::ENQUEUE_UNIQUE
            .key(keys.unique(unique_key))
            .key(keys.pending(level))
            .key(keys.scheduled())
            .key(keys.wake())
            .arg(&message.payload)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .arg(due)
            .arg(millis(now))
            .arg(level)
            .arg(message.id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        if !holder.is_empty() {
            return Ok(Some(holder.parse().unwrap_or_default()));
        }
        if !self.knows_queue(&message.queue) {
            let mut conn = self.conn();
            redis::cmd("SADD")
                .arg(keys::QUEUES)
                .arg(&message.queue)
                .query_async::<()>(&mut conn)
                .await
                .map_err(redis_error)?;
            self.remember_queues(&[&message.queue]);
        }
        Ok(None)
    }

    async fn release_unique(
        &self,
        queue: &str,
        unique_key: &str,
        id: taskq_core::TaskId,
    ) -> Result<()> {
        let _: i64 = scripts::RELEASE_UNIQUE
            .key(QueueKeys::new(queue).unique(unique_key))
            .arg(id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn rate_limit(
        &self,
        queue: &str,
        task: &str,
        limit: taskq_core::RateLimit,
    ) -> Result<Option<Duration>> {
        let interval = u64::try_from(limit.interval().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let wait: u64 = scripts::RATE_LIMIT
            .key(QueueKeys::new(queue).rate(task))
            .arg(millis(Utc::now()))
            .arg(interval)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    async fn fetch(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let result = self.fetch_inner(worker, queues, max.max(1), wait).await;
        if result.is_err() {
            // The reply may have been lost after the server moved messages: look next time.
            self.mark_unreconciled(worker);
        }
        result
    }

    async fn ack(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        let mut acked = 0;
        for (queue, group) in Self::by_queue(deliveries) {
            let keys = QueueKeys::new(queue);
            let mut invocation = scripts::ACK.prepare_invoke();
            invocation
                .key(keys.processing(worker.as_str()))
                .key(keys.redeliveries());
            for delivery in &group {
                invocation
                    .arg(delivery.payload())
                    .arg(delivery.id().map(|id| id.to_string()).unwrap_or_default());
            }
            let count: usize = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            acked += count;
        }
        self.release(worker, deliveries);
        Ok(acked)
    }

    async fn retry(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        next: OutboundMessage,
    ) -> Result<bool> {
        let now = Utc::now();
        let held = QueueKeys::new(delivery.queue());
        let target = QueueKeys::new(&next.queue);
        let level = next.priority.min(9);
        let due = next.eta.map_or(millis(now), millis);
        let moved: i64 = scripts::RETRY
            .key(held.processing(worker.as_str()))
            .key(target.scheduled())
            .key(target.pending(level))
            .key(target.wake())
            .arg(delivery.payload())
            .arg(&next.payload)
            .arg(due)
            .arg(millis(now))
            .arg(level)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        self.release(worker, std::slice::from_ref(delivery));
        Ok(moved == 1)
    }

    async fn requeue(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        let mut requeued = 0;
        for (queue, group) in Self::by_queue(deliveries) {
            let keys = QueueKeys::new(queue);
            let mut invocation = scripts::REQUEUE.prepare_invoke();
            invocation.key(keys.processing(worker.as_str()));
            for key in keys.pending_ascending() {
                invocation.key(key);
            }
            invocation.key(keys.wake());
            for delivery in &group {
                invocation
                    .arg(delivery.priority().min(9))
                    .arg(delivery.payload());
            }
            let count: usize = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            requeued += count;
        }
        self.release(worker, deliveries);
        Ok(requeued)
    }

    async fn dead_letter(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        reason: DeadReason,
        error: Option<String>,
    ) -> Result<bool> {
        let letter = DeadLetter::new(
            delivery.queue(),
            delivery.payload(),
            reason,
            error,
            Some(worker.to_string()),
            Utc::now(),
        );
        let record = serde_json::to_string(&letter).map_err(|source| Error::Serialize {
            what: "dead letter",
            source,
        })?;
        let keys = QueueKeys::new(delivery.queue());
        let moved: i64 = scripts::DEAD_LETTER
            .key(keys.processing(worker.as_str()))
            .key(keys.dead())
            .arg(delivery.payload())
            .arg(record)
            .arg(self.shared.config.max_dead_letters)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        self.release(worker, std::slice::from_ref(delivery));
        Ok(moved == 1)
    }

    async fn promote_scheduled(&self, queues: &[String], limit: usize) -> Result<usize> {
        let now = millis(Utc::now());
        let mut moved = 0;
        for queue in queues {
            if moved >= limit {
                break;
            }
            let keys = QueueKeys::new(queue);
            let mut invocation = scripts::PROMOTE_SCHEDULED.prepare_invoke();
            invocation.key(keys.scheduled());
            for key in keys.pending_ascending() {
                invocation.key(key);
            }
            invocation.key(keys.wake());
            invocation.arg(now).arg(limit - moved);
            let count: usize = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            moved += count;
        }
        Ok(moved)
    }

    async fn heartbeat(&self, worker: &WorkerId, queues: &[String], ttl: Duration) -> Result<()> {
        let deadline = millis(Utc::now()) + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let mut pipe = redis::pipe();
        for queue in queues {
            pipe.zadd(QueueKeys::new(queue).workers(), worker.as_str(), deadline)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)?;
        self.shared
            .heartbeating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(worker.clone());
        Ok(())
    }

    async fn recover_lost_workers(
        &self,
        queues: &[String],
        max_redeliveries: u32,
    ) -> Result<RecoveryReport> {
        let now = millis(Utc::now());
        let mut report = RecoveryReport::default();
        for queue in queues {
            let lost: Vec<String> = redis::cmd("ZRANGEBYSCORE")
                .arg(QueueKeys::new(queue).workers())
                .arg("-inf")
                .arg(format!("({now}"))
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            for worker in lost {
                let (requeued, dead) = self
                    .recover(queue, &worker, max_redeliveries, false)
                    .await?;
                if requeued < 0 {
                    continue; // alive after all, or another reaper won
                }
                report.requeued += requeued as usize;
                report.dead_lettered += dead as usize;
                let worker = WorkerId::from_string(worker);
                if !report.workers.contains(&worker) {
                    report.workers.push(worker);
                }
            }
        }
        Ok(report)
    }

    async fn deregister(&self, worker: &WorkerId, queues: &[String]) -> Result<()> {
        for queue in queues {
            self.recover(queue, worker.as_str(), 0, true).await?;
        }
        self.held().remove(worker);
        self.shared
            .heartbeating
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(worker);
        Ok(())
    }

    async fn publish_worker_info(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let json = serde_json::to_string(info).map_err(|source| Error::Serialize {
            what: "worker info",
            source,
        })?;
        let ttl_ms = i64::try_from(ttl.as_millis())
            .unwrap_or(i64::MAX / 2)
            .max(1);
        redis::pipe()
            .cmd("SET")
            .arg(keys::worker_info(&info.id))
            .arg(json)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .zadd(keys::WORKERS, &info.id, millis(Utc::now()) + ttl_ms)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let now = millis(Utc::now());
        let (ids,): (Vec<String>,) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(keys::WORKERS)
            .arg("-inf")
            .arg(format!("({now}"))
            .ignore()
            .cmd("ZRANGE")
            .arg(keys::WORKERS)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| keys::worker_info(id)).collect();
        let records: Vec<Option<String>> = redis::cmd("MGET")
            .arg(keys)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(records
            .into_iter()
            .flatten()
            .filter_map(|record| serde_json::from_str(&record).ok())
            .collect())
    }

    async fn revoke(&self, id: taskq_core::TaskId, terminate: bool, ttl: Duration) -> Result<()> {
        let until = millis(Utc::now()) + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let message =
            serde_json::to_string(&ControlMessage::Revoke { id, terminate }).map_err(|source| {
                Error::Serialize {
                    what: "control message",
                    source,
                }
            })?;
        redis::pipe()
            .zadd(keys::REVOKED, id.to_string(), until)
            .ignore()
            .publish(keys::CONTROL, message)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn revoked(&self) -> Result<Vec<taskq_core::TaskId>> {
        let now = millis(Utc::now());
        let (ids,): (Vec<String>,) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(keys::REVOKED)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZRANGE")
            .arg(keys::REVOKED)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    async fn broadcast(&self, message: &ControlMessage) -> Result<()> {
        let json = serde_json::to_string(message).map_err(|source| Error::Serialize {
            what: "control message",
            source,
        })?;
        redis::cmd("PUBLISH")
            .arg(keys::CONTROL)
            .arg(json)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn subscribe_control(
        &self,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<ControlMessage>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut pubsub = self
            .shared
            .client
            .get_async_pubsub()
            .await
            .map_err(redis_error)?;
        pubsub.subscribe(keys::CONTROL).await.map_err(redis_error)?;
        tokio::spawn(forward_control(self.shared.client.clone(), pubsub, tx));
        Ok(rx)
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let mut queues: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::QUEUES)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        queues.sort();
        Ok(queues)
    }

    async fn requeue_dead(&self, queue: &str, ids: Option<&[taskq_core::TaskId]>) -> Result<usize> {
        let keys = QueueKeys::new(queue);
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.dead())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut moved = 0;
        // Oldest first, so requeued messages keep their original order.
        for record in records.iter().rev() {
            let Ok(letter) = serde_json::from_str::<DeadLetter>(record) else {
                continue;
            };
            if let Some(ids) = ids {
                if !letter.id.is_some_and(|id| ids.contains(&id)) {
                    continue;
                }
            }
            let requeued: i64 = scripts::REQUEUE_DEAD
                .key(keys.dead())
                .key(keys.pending(letter.priority()))
                .key(keys.wake())
                .arg(record)
                .arg(letter.requeue_payload())
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            moved += requeued as usize;
        }
        Ok(moved)
    }

    async fn purge_dead(&self, queue: &str, older_than: Option<DateTime<Utc>>) -> Result<usize> {
        let keys = QueueKeys::new(queue);
        let Some(cutoff) = older_than else {
            let (count, _): (usize, ()) = redis::pipe()
                .atomic()
                .llen(keys.dead())
                .del(keys.dead())
                .ignore()
                .query_async::<(usize,)>(&mut self.conn())
                .await
                .map(|(count,)| (count, ()))
                .map_err(redis_error)?;
            return Ok(count);
        };
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(keys.dead())
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut purged = 0;
        for record in records {
            let old =
                serde_json::from_str::<DeadLetter>(&record).is_ok_and(|letter| letter.at < cutoff);
            if old {
                let removed: usize = redis::cmd("LREM")
                    .arg(keys.dead())
                    .arg(1)
                    .arg(&record)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(redis_error)?;
                purged += removed;
            }
        }
        Ok(purged)
    }

    async fn purge_queue(&self, queue: &str) -> Result<usize> {
        let keys = QueueKeys::new(queue);
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in keys.pending_ascending() {
            pipe.llen(&key);
        }
        pipe.zcard(keys.scheduled());
        let mut doomed = keys.pending_ascending();
        doomed.push(keys.scheduled());
        pipe.del(doomed).ignore();
        let counts: Vec<usize> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(counts.iter().sum())
    }

    async fn durability_warnings(&self) -> Result<Vec<String>> {
        connection::durability_warnings(&mut self.conn()).await
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let keys = QueueKeys::new(queue);
        let mut pipe = redis::pipe();
        for key in keys.pending_ascending() {
            pipe.llen(key);
        }
        let levels: Vec<usize> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut pipe = redis::pipe();
        for key in keys.pending_ascending() {
            pipe.cmd("LINDEX").arg(key).arg(-1);
        }
        let oldest: Vec<Option<String>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let oldest_pending = oldest
            .iter()
            .flatten()
            .filter_map(|payload| PayloadFields::read(payload).created_at)
            .min();
        let (scheduled, dead, workers): (usize, usize, Vec<String>) = redis::pipe()
            .zcard(keys.scheduled())
            .llen(keys.dead())
            .zrange(keys.workers(), 0, -1)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let mut processing = 0;
        if !workers.is_empty() {
            let mut pipe = redis::pipe();
            for worker in &workers {
                pipe.llen(keys.processing(worker));
            }
            let lengths: Vec<usize> = pipe
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            processing = lengths.iter().sum();
        }
        let mut stats = QueueStats::default();
        stats.pending = levels.iter().sum();
        stats.scheduled = scheduled;
        stats.processing = processing;
        stats.dead = dead;
        stats.oldest_pending = oldest_pending;
        Ok(stats)
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let records: Vec<String> = redis::cmd("LRANGE")
            .arg(QueueKeys::new(queue).dead())
            .arg(0)
            .arg(limit - 1)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        records
            .iter()
            .map(|record| {
                serde_json::from_str(record).map_err(|source| Error::Deserialize {
                    what: "dead letter",
                    source,
                })
            })
            .collect()
    }
}
