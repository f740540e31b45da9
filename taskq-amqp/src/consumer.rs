//! One consumer channel per worker: RabbitMQ pushes deliveries (up to the prefetch) from every
//! priority level of the worker's queues; `fetch` hands them out in taskq's order (the caller's
//! queue order, highest level first, first in first out) and keeps each one's acker until the
//! worker settles it.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicQosOptions,
    },
    types::FieldTable,
    Acker, Channel,
};
use parking_lot::Mutex;
use taskq_core::{Delivery, PayloadFields, Receipt, Result, TaskId, WorkerId};
use tokio::sync::mpsc;

use crate::{error::amqp_error, guard, link::Link, names};

/// Receipts carry the consumer's serial in their high bits: a receipt from a channel that was
/// replaced never matches a delivery of the new one (delivery tags restart at 1).
const SERIAL_SHIFT: u32 = 40;

static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// A delivery RabbitMQ pushed and the worker has not taken yet.
struct Incoming {
    queue: Arc<str>,
    level: u8,
    delivery: lapin::message::Delivery,
    /// When it arrived (RabbitMQ's acknowledgement timeout counts from about then).
    received: Instant,
}

impl Incoming {
    fn new(queue: Arc<str>, level: u8, delivery: lapin::message::Delivery) -> Self {
        Self {
            queue,
            level,
            delivery,
            received: Instant::now(),
        }
    }

    /// Whether it is a guard copy (see [`guard`]).
    fn carries_guard_header(&self) -> bool {
        self.delivery
            .properties
            .headers()
            .as_ref()
            .is_some_and(|headers| headers.inner().contains_key(guard::HEADER))
    }

    /// The task id of a delivery whose run may be guarded elsewhere (see [`guard`]): a guard
    /// copy, or a redelivered message (its early ack may have failed with its channel, and its
    /// first run still go on behind a lease). `None` for an ordinary first delivery.
    fn guard_copy_of(&self) -> Option<TaskId> {
        if !self.delivery.redelivered && !self.carries_guard_header() {
            return None;
        }
        self.delivery
            .properties
            .message_id()
            .as_ref()?
            .as_str()
            .parse()
            .ok()
    }
}

/// A delivery handed to the worker and not settled yet.
pub(crate) struct Held {
    acker: Acker,
    since: Instant,
    level_queue: String,
    payload: Arc<str>,
    id: Option<TaskId>,
    /// Acked early behind a lease and a guard copy (see [`guard`]).
    guarded: bool,
}

/// How a held delivery ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Done with for good (acked, or replaced by a retry or a dead letter).
    Settled,
    /// Handed back to run again (a shutting-down worker's leftovers).
    Returned,
}

/// Received deliveries per (queue, level), oldest first.
type Buffer = HashMap<Arc<str>, Levels>;

/// One queue's received deliveries, by priority level.
type Levels = [VecDeque<Incoming>; taskq_core::Priority::LEVELS as usize];

/// A worker's channel, its consumers and what it holds.
pub(crate) struct WorkerConsumer {
    channel: Channel,
    serial: u64,
    worker: WorkerId,
    queues: Vec<String>,
    /// Where the consumers' deliveries go (each consumer's forwarding task holds a clone).
    sender: mpsc::UnboundedSender<Incoming>,
    /// Set once the consumers run.
    consuming: tokio::sync::OnceCell<()>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Incoming>>,
    /// Received, not handed out: per (queue, level), oldest first.
    buffer: Mutex<Buffer>,
    /// Received guard copies (see [`guard`]), sorted out as they arrive so that fetches
    /// without any pay nothing for them.
    copies: Mutex<Vec<(Incoming, TaskId)>>,
    /// Handed out, not settled.
    held: Mutex<HashMap<u64, Held>>,
    link: Arc<Link>,
    /// The node's delivery acknowledgement timeout: nothing is held for half of it.
    consumer_timeout: Duration,
}

impl std::fmt::Debug for WorkerConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConsumer")
            .field("serial", &self.serial)
            .field("queues", &self.queues)
            .field("held", &self.held.lock().len())
            .finish()
    }
}

impl WorkerConsumer {
    /// Opens a channel with `prefetch` per consumer for `queues` (consuming starts with the
    /// first fetch that may wait: see [`WorkerConsumer::take`]).
    pub(crate) async fn start(
        link: &Arc<Link>,
        worker: &WorkerId,
        queues: &[String],
        prefetch: u16,
    ) -> Result<Self> {
        for queue in queues {
            link.ensure_queue(queue).await?;
        }
        let channel = link.channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(amqp_error)?;
        let (sender, receiver) = mpsc::unbounded_channel();
        Ok(Self {
            channel,
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            worker: worker.clone(),
            queues: queues.to_vec(),
            sender,
            consuming: tokio::sync::OnceCell::new(),
            incoming: tokio::sync::Mutex::new(receiver),
            buffer: Mutex::new(HashMap::new()),
            copies: Mutex::new(Vec::new()),
            held: Mutex::new(HashMap::new()),
            link: link.clone(),
            consumer_timeout: link.config().consumer_timeout(),
        })
    }

    /// Consumes every level of its queues (once): RabbitMQ pushes up to the prefetch.
    async fn consume(&self) -> Result<()> {
        self.consuming
            .get_or_try_init(|| async {
                for queue in &self.queues {
                    let shared: Arc<str> = Arc::from(queue.as_str());
                    for (level, level_queue) in names::level_queues_highest_first(queue) {
                        let consumer = self
                            .channel
                            .basic_consume(
                                level_queue.as_str().into(),
                                format!("{}/{level_queue}", self.worker).as_str().into(),
                                BasicConsumeOptions::default(),
                                FieldTable::default(),
                            )
                            .await
                            .map_err(amqp_error)?;
                        forward(consumer, shared.clone(), level, self.sender.clone());
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Whether this consumer still serves `queues` on an open channel.
    pub(crate) fn serves(&self, queues: &[String]) -> bool {
        self.channel.status().connected() && queues.iter().all(|q| self.queues.contains(q))
    }

    /// Up to `max` deliveries of `queues` in taskq's order, waiting up to `wait` for the first.
    pub(crate) async fn take(
        &self,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Vec<Delivery> {
        if wait.is_zero() && self.consuming.get().is_none() {
            // A pass that must not wait takes what is ready with `basic.get`: pushes to a
            // consumer started now would still be on their way. Only a fetch that may wait
            // starts consuming.
            if let Err(err) = self.get_once(queues, max).await {
                tracing::warn!(error = %taskq_core::error_chain(&err), "basic.get failed");
            }
            self.resolve_guard_copies().await;
            return self.hand_out(queues, max);
        }
        if let Err(err) = self.consume().await {
            tracing::warn!(error = %taskq_core::error_chain(&err), "basic.consume failed");
        }
        let mut incoming = self.incoming.lock().await;
        self.drain(&mut incoming);
        if !self.has_any(queues) && !wait.is_zero() {
            let deadline = tokio::time::Instant::now() + wait;
            while !self.has_any(queues) {
                match tokio::time::timeout_at(deadline, incoming.recv()).await {
                    Ok(Some(first)) => {
                        self.buffer_one(first);
                        self.drain(&mut incoming);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
        drop(incoming);
        self.resolve_guard_copies().await;
        self.hand_out(queues, max)
    }

    /// Takes up to `max` ready messages with `basic.get`, highest level first.
    async fn get_once(&self, queues: &[String], max: usize) -> Result<()> {
        let mut got = 0;
        for queue in queues {
            let shared: Arc<str> = Arc::from(queue.as_str());
            for (level, level_queue) in names::level_queues_highest_first(queue) {
                while got < max {
                    let message = self
                        .channel
                        .basic_get(
                            level_queue.as_str().into(),
                            BasicGetOptions { no_ack: false },
                        )
                        .await
                        .map_err(amqp_error)?;
                    let Some(message) = message else { break };
                    self.buffer_one(Incoming::new(shared.clone(), level, message.delivery));
                    got += 1;
                }
            }
        }
        Ok(())
    }

    fn drain(&self, incoming: &mut mpsc::UnboundedReceiver<Incoming>) {
        while let Ok(next) = incoming.try_recv() {
            self.buffer_one(next);
        }
    }

    fn buffer_one(&self, incoming: Incoming) {
        match incoming.guard_copy_of() {
            Some(id) => self.copies.lock().push((incoming, id)),
            None => self.buffer_plain(incoming),
        }
    }

    fn buffer_plain(&self, incoming: Incoming) {
        let level = usize::from(incoming.level);
        self.buffer
            .lock()
            .entry(incoming.queue.clone())
            .or_default()[level]
            .push_back(incoming);
    }

    fn has_any(&self, queues: &[String]) -> bool {
        let buffer = self.buffer.lock();
        queues.iter().any(|queue| {
            buffer
                .get(queue.as_str())
                .is_some_and(|levels| levels.iter().any(|waiting| !waiting.is_empty()))
        })
    }

    fn hand_out(&self, queues: &[String], max: usize) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut buffer = self.buffer.lock();
        let mut held = self.held.lock();
        'queues: for queue in queues {
            let Some(levels) = buffer.get_mut(queue.as_str()) else {
                continue;
            };
            for waiting in levels.iter_mut().rev() {
                while out.len() < max {
                    let Some(next) = waiting.pop_front() else {
                        break;
                    };
                    let receipt = self.serial << SERIAL_SHIFT | next.delivery.delivery_tag;
                    let payload: Arc<str> = match String::from_utf8(next.delivery.data) {
                        Ok(text) => Arc::from(text),
                        // Not UTF-8: the worker refuses it as malformed and dead-letters it.
                        Err(err) => Arc::from(String::from_utf8_lossy(err.as_bytes())),
                    };
                    held.insert(
                        receipt,
                        Held {
                            acker: next.delivery.acker,
                            since: next.received,
                            level_queue: names::level_queue(&next.queue, next.level),
                            id: PayloadFields::read(&payload).id,
                            payload: payload.clone(),
                            guarded: false,
                        },
                    );
                    out.push(Delivery::new(
                        next.queue,
                        next.level,
                        payload,
                        Receipt::new(receipt),
                    ));
                }
                if out.len() >= max {
                    break 'queues;
                }
            }
        }
        out
    }

    /// Ends a delivery this consumer handed out and nobody settled; false for one it does not
    /// hold (settled already, or handed out by a channel since replaced: RabbitMQ redelivers
    /// it).
    pub(crate) async fn end(&self, receipt: Receipt, ending: Ending) -> Result<bool> {
        let Some(held) = self.held.lock().remove(&receipt.raw()) else {
            return Ok(false);
        };
        if held.guarded {
            // Acked long ago; the lease and the done marker tell its guard copy what happened.
            if let Some(id) = held.id {
                guard::release(
                    &self.link,
                    id,
                    ending == Ending::Settled,
                    self.consumer_timeout,
                )
                .await?;
            }
            return Ok(true);
        }
        let outcome = match ending {
            Ending::Settled => held.acker.ack(BasicAckOptions::default()).await,
            Ending::Returned => {
                let body = held.payload.as_bytes().to_vec();
                return hand_back(&self.link, &held.level_queue, body, held.id, &held.acker).await;
            }
        };
        match outcome {
            Ok(done) => Ok(done),
            Err(err) => Err(amqp_error(err)),
        }
    }

    /// One pass of the guard (see [`guard`]): deliveries held for half the acknowledgement
    /// timeout are acked behind a lease and a guard copy; received ones that waited that long
    /// unclaimed go back to their queue.
    pub(crate) async fn guard_round(&self) {
        let half = self.consumer_timeout / 2;
        let due: Vec<(u64, String, Arc<str>, TaskId)> = self
            .held
            .lock()
            .iter()
            .filter(|(_, held)| !held.guarded && held.since.elapsed() >= half)
            .filter_map(|(receipt, held)| {
                Some((
                    *receipt,
                    held.level_queue.clone(),
                    held.payload.clone(),
                    held.id?,
                ))
            })
            .collect();
        for (receipt, level_queue, payload, id) in due {
            if let Err(err) = self.guard(receipt, &level_queue, &payload, id, half).await {
                tracing::warn!(%id, error = %taskq_core::error_chain(&err), "could not guard a long run; RabbitMQ may redeliver it");
            }
        }
        let stale: Vec<Incoming> = {
            let mut buffer = self.buffer.lock();
            let mut stale = Vec::new();
            for waiting in buffer.values_mut().flat_map(|levels| levels.iter_mut()) {
                while waiting
                    .front()
                    .is_some_and(|next| next.received.elapsed() >= half)
                {
                    stale.extend(waiting.pop_front());
                }
            }
            stale
        };
        for incoming in stale {
            let level_queue = names::level_queue(&incoming.queue, incoming.level);
            let id = incoming
                .delivery
                .properties
                .message_id()
                .as_ref()
                .and_then(|id| id.as_str().parse().ok());
            let body = incoming.delivery.data.clone();
            if let Err(err) =
                hand_back(&self.link, &level_queue, body, id, &incoming.delivery.acker).await
            {
                tracing::warn!(error = %taskq_core::error_chain(&err), "could not hand back a delivery not started in time; RabbitMQ returns it when the channel closes");
            }
        }
    }

    async fn guard(
        &self,
        receipt: u64,
        level_queue: &str,
        payload: &str,
        id: TaskId,
        after: Duration,
    ) -> Result<()> {
        guard::take_lease(&self.link, id).await?;
        guard::send_copy(
            &self.link,
            level_queue,
            id,
            payload,
            after,
            chrono::Utc::now(),
        )
        .await?;
        let acker = {
            let mut held = self.held.lock();
            let Some(entry) = held.get_mut(&receipt) else {
                return Ok(()); // settled meanwhile: its copy finds the done marker
            };
            // Marked before the ack, so that a run ending meanwhile does not ack it twice.
            entry.guarded = true;
            entry.acker.clone()
        };
        if let Err(err) = acker.ack(BasicAckOptions::default()).await {
            // Not acked: the run still owes RabbitMQ its ack. If the channel is gone, RabbitMQ
            // redelivers the original, and its receiver finds the lease (see `buffer_one`).
            if let Some(entry) = self.held.lock().get_mut(&receipt) {
                entry.guarded = false;
            }
            return Err(amqp_error(err));
        }
        tracing::info!(%id, "a long run is guarded: acked early behind a lease (RabbitMQ's consumer timeout)");
        Ok(())
    }

    /// Settles the guard copies among received deliveries: a copy of a run still going goes
    /// round again, one of a finished run is dropped, one whose worker is gone stays to run.
    async fn resolve_guard_copies(&self) {
        let copies = std::mem::take(&mut *self.copies.lock());
        for (incoming, id) in copies {
            let level_queue = names::level_queue(&incoming.queue, incoming.level);
            let settled = match guard::verdict(&self.link, id).await {
                Ok(guard::Verdict::Running) => {
                    let payload = String::from_utf8_lossy(&incoming.delivery.data).into_owned();
                    guard::send_copy(
                        &self.link,
                        &level_queue,
                        id,
                        &payload,
                        self.consumer_timeout / 2,
                        chrono::Utc::now(),
                    )
                    .await
                    .map(|()| true)
                }
                // A redelivered original of a finished run may be a later attempt of the same
                // task (a retry keeps the id): only a guard copy is dropped on the marker.
                Ok(guard::Verdict::Finished) => Ok(incoming.carries_guard_header()),
                Ok(guard::Verdict::Orphaned) => {
                    tracing::warn!(%id, "the worker running a guarded task is gone: running it again");
                    Ok(false)
                }
                Err(err) => Err(err),
            };
            match settled {
                Ok(true) => {
                    let _ = incoming
                        .delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await;
                }
                Ok(false) => self.buffer_plain(incoming),
                Err(err) => {
                    tracing::warn!(%id, error = %taskq_core::error_chain(&err), "could not check a guard copy; it comes back");
                    let _ = give_back(&incoming.delivery.acker).await;
                }
            }
        }
    }

    /// The node's acknowledgement timeout this consumer guards against.
    pub(crate) fn consumer_timeout(&self) -> Duration {
        self.consumer_timeout
    }

    /// Whether its channel is gone.
    pub(crate) fn closed(&self) -> bool {
        !self.channel.status().connected()
    }

    /// Whether it holds the delivery with `receipt`.
    pub(crate) fn holds(&self, receipt: Receipt) -> bool {
        self.held.lock().contains_key(&receipt.raw())
    }

    /// Closes the channel: RabbitMQ returns every unsettled delivery to its queue.
    pub(crate) async fn close(&self) {
        self.held.lock().clear();
        let _ = self.channel.close(200, "OK".into()).await;
    }
}

/// Moves one consumer's deliveries into the worker's channel until either ends.
fn forward(
    mut consumer: lapin::Consumer,
    queue: Arc<str>,
    level: u8,
    sender: mpsc::UnboundedSender<Incoming>,
) {
    tokio::spawn(async move {
        while let Some(delivery) = consumer.next().await {
            let Ok(delivery) = delivery else { break };
            if sender
                .send(Incoming::new(queue.clone(), level, delivery))
                .is_err()
            {
                break;
            }
        }
    });
}

/// Hands a delivery that never ran back to its queue as a fresh message: published again
/// (confirmed) to the tail of its level, then acked. A nack with requeue would count as a
/// failed delivery toward the queue's `x-delivery-limit` (RabbitMQ 3.10-3.13), so a message a
/// busy worker returned unstarted a few times was dead-lettered as `worker_lost` without ever
/// running. When the publish is refused (a bounded level that is full), it is nacked back
/// instead (counted, but not lost). A crash between the publish and the ack leaves two copies:
/// at least once.
async fn hand_back(
    link: &Link,
    level_queue: &str,
    body: Vec<u8>,
    id: Option<TaskId>,
    acker: &Acker,
) -> Result<bool> {
    let mut fresh = crate::publish::Outgoing::to_queue(level_queue, body);
    if let Some(id) = id {
        fresh = fresh.with_message_id(id.to_string());
    }
    match link.publish(vec![fresh]).await {
        Ok(()) => acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(amqp_error),
        Err(err) => {
            tracing::warn!(error = %taskq_core::error_chain(&err), "could not publish a returned delivery again; returning it with a nack (it counts toward the delivery limit)");
            give_back(acker).await.map_err(amqp_error)
        }
    }
}

/// Returns one delivery to the head of its queue (RabbitMQ counts it toward the delivery
/// limit).
async fn give_back(acker: &Acker) -> lapin::Result<bool> {
    acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
}
