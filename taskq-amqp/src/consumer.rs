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
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, BasicGetOptions, BasicQosOptions},
    types::FieldTable,
    Acker, Channel,
};
use parking_lot::Mutex;
use taskq_core::{Delivery, Receipt, Result, WorkerId};
use tokio::sync::mpsc;

use crate::{error::amqp_error, link::Link, names};

/// Receipts carry the consumer's serial in their high bits: a receipt from a channel that was
/// replaced never matches a delivery of the new one (delivery tags restart at 1).
const SERIAL_SHIFT: u32 = 40;

static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);

/// A delivery RabbitMQ pushed and the worker has not taken yet.
struct Incoming {
    queue: Arc<str>,
    level: u8,
    delivery: lapin::message::Delivery,
}

/// Received deliveries per (queue, level), oldest first.
type Buffer = HashMap<(Arc<str>, u8), VecDeque<Incoming>>;

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
    /// Handed out, not settled: receipt -> acker.
    held: Mutex<HashMap<u64, Acker>>,
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
        link: &Link,
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
            held: Mutex::new(HashMap::new()),
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
                    self.buffer_one(Incoming {
                        queue: shared.clone(),
                        level,
                        delivery: message.delivery,
                    });
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
        self.buffer
            .lock()
            .entry((incoming.queue.clone(), incoming.level))
            .or_default()
            .push_back(incoming);
    }

    fn has_any(&self, queues: &[String]) -> bool {
        let buffer = self.buffer.lock();
        buffer.iter().any(|((queue, _), waiting)| {
            !waiting.is_empty() && queues.iter().any(|q| **q == **queue)
        })
    }

    fn hand_out(&self, queues: &[String], max: usize) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut buffer = self.buffer.lock();
        let mut held = self.held.lock();
        'queues: for queue in queues {
            for level in (0..taskq_core::Priority::LEVELS).rev() {
                let Some(waiting) = buffer.get_mut(&(Arc::from(queue.as_str()), level)) else {
                    continue;
                };
                while out.len() < max {
                    let Some(next) = waiting.pop_front() else {
                        break;
                    };
                    let receipt = self.serial << SERIAL_SHIFT | next.delivery.delivery_tag;
                    let payload = match String::from_utf8(next.delivery.data) {
                        Ok(text) => text,
                        // Not UTF-8: the worker refuses it as malformed and dead-letters it.
                        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
                    };
                    held.insert(receipt, next.delivery.acker);
                    out.push(Delivery::new(
                        next.queue,
                        next.level,
                        Arc::from(payload),
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

    /// The acker of a delivery this consumer handed out and nobody settled; `None` for one it
    /// does not hold (settled already, or handed out by a channel since replaced).
    pub(crate) fn take_held(&self, receipt: Receipt) -> Option<Acker> {
        self.held.lock().remove(&receipt.raw())
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
            let incoming = Incoming {
                queue: queue.clone(),
                level,
                delivery,
            };
            if sender.send(incoming).is_err() {
                break;
            }
        }
    });
}
