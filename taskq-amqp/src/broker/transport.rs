//! The transport role on RabbitMQ: publish with confirms, consume with manual acks, settle by
//! ack, nack or publish-then-ack.

use std::time::Duration;

use async_trait::async_trait;
use taskq_core::{
    Clock, DeadReason, Delivery, OutboundMessage, Result, TaskId, Transport, WorkerId,
};

use super::AmqpBroker;
use crate::{
    consumer::{Ending, WorkerConsumer},
    delay, names,
    publish::Outgoing,
};

/// Headers a dead letter published by a worker carries.
pub(crate) mod dead_headers {
    pub(crate) const REASON: &str = "x-taskq-reason";
    pub(crate) const ERROR: &str = "x-taskq-error";
    pub(crate) const WORKER: &str = "x-taskq-worker";
    pub(crate) const AT: &str = "x-taskq-at";
}

impl AmqpBroker {
    /// The publication of `message` into `queue` (the delivery queue for retries), through the
    /// delay chain when it is due later.
    fn outgoing(&self, queue: &str, message: &OutboundMessage) -> Outgoing {
        let target = names::level_queue(queue, message.priority);
        let body = message.payload.as_bytes().to_vec();
        let routed = message
            .eta
            .and_then(|eta| delay::route(&target, eta, self.shared.clock.now()));
        let outgoing = match routed {
            Some((exchange, key)) => Outgoing::to_exchange(&exchange, &key, body),
            None => Outgoing::to_queue(&target, body),
        };
        outgoing
            .with_message_id(message.id.to_string())
            .for_queue(queue)
    }

    /// Settles one held delivery: `publish` first (confirmed), then the ack; false when the
    /// worker no longer holds it (its channel closed, so RabbitMQ redelivers it elsewhere).
    async fn replace(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        publish: Vec<Outgoing>,
    ) -> Result<bool> {
        let Some(consumer) = self.existing(worker) else {
            return Ok(false);
        };
        if !consumer.holds(delivery.receipt()) {
            return Ok(false);
        }
        self.link().publish(publish).await?;
        settled(&consumer, delivery, Ending::Settled).await
    }
}

/// Ends one held delivery: false (and a log line) when the channel was gone.
async fn settled(consumer: &WorkerConsumer, delivery: &Delivery, ending: Ending) -> Result<bool> {
    let ended = consumer.end(delivery.receipt(), ending).await?;
    if !ended {
        tracing::warn!(queue = delivery.queue(), id = ?delivery.id(), "settle on a closed channel changed nothing: RabbitMQ redelivers the message");
    }
    Ok(ended)
}

#[async_trait]
impl Transport for AmqpBroker {
    fn clock(&self) -> Clock {
        self.shared.clock.clone()
    }

    async fn enqueue(&self, messages: Vec<OutboundMessage>) -> Result<()> {
        let mut outgoing = Vec::with_capacity(messages.len());
        for message in &messages {
            self.link().ensure_queue(&message.queue).await?;
            outgoing.push(self.outgoing(&message.queue, message));
        }
        if outgoing.iter().any(Outgoing::is_delayed) {
            self.link().ensure_delays().await?;
        }
        self.link().publish(outgoing).await
    }

    async fn enqueue_unique(
        &self,
        _message: OutboundMessage,
        _unique_key: &str,
        _ttl: Duration,
    ) -> Result<Option<TaskId>> {
        Err(super::shared_state::needs_a_store("unique enqueue"))
    }

    fn supports_unique(&self) -> bool {
        false
    }

    fn check_partitions(&self) -> Result<()> {
        Err(taskq_core::Error::Unsupported {
            feature: "partition keys",
            reason: "RabbitMQ hands a queue's messages out in order to whichever consumer is \
                     free; it cannot take turns between partitions or cap one partition's \
                     running tasks across consumers. Use Redis, PostgreSQL or the in-memory broker \
                     for partitioned queues",
        })
    }

    async fn release_unique(&self, _queue: &str, _unique_key: &str, _id: TaskId) -> Result<()> {
        Ok(())
    }

    async fn fetch(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if max == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let consumer = self.consumer(worker, queues, max).await?;
        Ok(consumer.take(queues, max, wait).await)
    }

    async fn ack(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        let Some(consumer) = self.existing(worker) else {
            return Ok(0);
        };
        // Sent together: lapin writes the frames in one go instead of one wake-up each.
        let acks = deliveries
            .iter()
            .filter(|delivery| consumer.holds(delivery.receipt()))
            .map(|delivery| settled(&consumer, delivery, Ending::Settled));
        let ended = futures_util::future::try_join_all(acks).await?;
        Ok(ended.into_iter().filter(|ended| *ended).count())
    }

    async fn retry(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        next: OutboundMessage,
    ) -> Result<bool> {
        let next = self.outgoing(delivery.queue(), &next);
        if next.is_delayed() {
            self.link().ensure_delays().await?;
        }
        self.replace(worker, delivery, vec![next]).await
    }

    async fn requeue(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        let Some(consumer) = self.existing(worker) else {
            return Ok(0);
        };
        let mut requeued = 0;
        for delivery in deliveries {
            if consumer.holds(delivery.receipt())
                && settled(&consumer, delivery, Ending::Returned).await?
            {
                requeued += 1;
            }
        }
        Ok(requeued)
    }

    async fn dead_letter(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        reason: DeadReason,
        error: Option<String>,
    ) -> Result<bool> {
        let mut letter = Outgoing::to_exchange(
            names::DEAD_EXCHANGE,
            delivery.queue(),
            delivery.payload().as_bytes().to_vec(),
        )
        .with_header(dead_headers::REASON, reason.as_str())
        .with_header(dead_headers::WORKER, worker.as_str())
        .with_header(dead_headers::AT, &self.shared.clock.now().to_rfc3339());
        if let Some(error) = &error {
            letter = letter.with_header(dead_headers::ERROR, error);
        }
        if let Some(id) = delivery.id() {
            letter = letter.with_message_id(id.to_string());
        }
        self.replace(worker, delivery, vec![letter]).await
    }

    async fn send_celery(&self, queue: &str, message: String) -> Result<()> {
        self.shared.celery.send(self.link(), queue, &message).await
    }

    async fn take_celery(&self, queue: &str, max: usize) -> Result<usize> {
        self.shared.celery.take(self.link(), queue, max).await
    }

    async fn promote_scheduled(&self, _queues: &[String], _limit: usize) -> Result<usize> {
        // RabbitMQ moves delayed messages itself (the delay chain).
        Ok(0)
    }

    async fn release_worker(&self, worker: &WorkerId) -> Result<()> {
        let consumer = self.shared.consumers.lock().remove(worker);
        if let Some(consumer) = consumer {
            consumer.close().await;
        }
        Ok(())
    }
}
