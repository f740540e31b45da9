//! The memory broker as a [`Transport`].

use std::{collections::HashMap, time::Duration};
use tokio::time::Instant;

use async_trait::async_trait;

use super::MemoryBroker;
use crate::{
    broker::{
        DeadLetter, DeadReason, Delivery, KeyedFlow, KeyedOutcome, OutboundMessage, Transport,
        WorkerId,
    },
    clock::Clock,
    error::Error,
    error::Result,
    id::TaskId,
};

#[async_trait]
impl Transport for MemoryBroker {
    fn clock(&self) -> Clock {
        self.shared.clock.clone()
    }

    async fn enqueue(&self, messages: Vec<OutboundMessage>) -> Result<()> {
        let now = self.shared.clock.now();
        let capacity = self.shared.config.capacity;
        let mut state = self.lock();
        let mut added: HashMap<&str, usize> = HashMap::new();
        for message in &messages {
            *added.entry(message.queue.as_str()).or_default() += 1;
        }
        for (queue, count) in &added {
            let held = state
                .queues
                .get(*queue)
                .map_or(0, |q| q.pending() + q.scheduled.len());
            if held + count > capacity {
                return Err(Error::QueueFull {
                    queue: (*queue).to_owned(),
                    capacity,
                });
            }
        }
        for out in messages {
            state.place(out, now);
        }
        drop(state);
        // Scheduled messages also wake fetchers, so that they re-arm their timers.
        self.shared.ready.notify_waiters();
        Ok(())
    }

    async fn enqueue_unique(
        &self,
        message: OutboundMessage,
        unique_key: &str,
        ttl: Duration,
    ) -> Result<Option<TaskId>> {
        let now = self.shared.clock.now();
        let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        {
            let mut state = self.lock();
            let queue = state.queues.entry(message.queue.clone()).or_default();
            queue.unique.retain(|_, (until, _)| *until > now);
            if let Some((_, holder)) = queue.unique.get(unique_key) {
                return Ok(Some(*holder));
            }
            queue
                .unique
                .insert(unique_key.to_owned(), (expires, message.id));
        }
        if let Err(err) = self.enqueue(vec![message.clone()]).await {
            // Not enqueued (queue full): release the claim so a later attempt can succeed.
            if let Some(queue) = self.lock().queues.get_mut(&message.queue) {
                queue.unique.remove(unique_key);
            }
            return Err(err);
        }
        Ok(None)
    }

    fn check_partitions(&self) -> Result<()> {
        Ok(())
    }

    async fn enqueue_keyed(
        &self,
        message: OutboundMessage,
        flow: &KeyedFlow,
        expect: Option<TaskId>,
    ) -> Result<KeyedOutcome> {
        let now = self.shared.clock.now();
        let capacity = self.shared.config.capacity;
        let outcome = self
            .lock()
            .enqueue_keyed(message, flow, expect, now, capacity)?;
        // Written messages wake fetchers (scheduled ones re-arm their timers).
        self.shared.ready.notify_waiters();
        Ok(outcome)
    }

    async fn release_unique(&self, queue: &str, unique_key: &str, id: TaskId) -> Result<()> {
        if let Some(q) = self.lock().queues.get_mut(queue) {
            if q.unique
                .get(unique_key)
                .is_some_and(|(_, holder)| *holder == id)
            {
                q.unique.remove(unique_key);
            }
        }
        Ok(())
    }

    async fn fetch(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let max = max.max(1);
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = self.take_ready(worker, queues, max)?;
            if !taken.is_empty() || Instant::now() >= deadline {
                return Ok(taken);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn ack(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        let now = self.shared.clock.now();
        let mut state = self.lock();
        let mut acked = 0;
        for delivery in deliveries {
            if let Some(message) = self.take_processing(&mut state, worker, delivery) {
                acked += 1;
                if let Some(queue) = state.queues.get_mut(delivery.queue()) {
                    queue.redeliveries.remove(&message.id);
                    queue.count_ended(now, 1, 0);
                    if let Some(outcome) = delivery.outcome() {
                        queue.record_outcome(now, outcome);
                    }
                }
            }
        }
        Ok(acked)
    }

    async fn retry(
        &self,
        worker: &WorkerId,
        delivery: &Delivery,
        next: OutboundMessage,
    ) -> Result<bool> {
        let now = self.shared.clock.now();
        let mut state = self.lock();
        if self.take_processing(&mut state, worker, delivery).is_none() {
            return Ok(false);
        }
        if let Some(outcome) = delivery.outcome() {
            let queue = state.queues.entry(delivery.queue().to_owned()).or_default();
            queue.record_outcome(now, outcome);
        }
        let next = OutboundMessage {
            queue: delivery.queue().to_owned(),
            ..next
        };
        state.place(next, now);
        drop(state);
        self.shared.ready.notify_waiters();
        Ok(true)
    }

    async fn requeue(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        let mut state = self.lock();
        let mut requeued = 0;
        // Reverse order so the first delivery ends up first at the head.
        for delivery in deliveries.iter().rev() {
            if let Some(message) = self.take_processing(&mut state, worker, delivery) {
                state
                    .queues
                    .entry(delivery.queue().to_owned())
                    .or_default()
                    .push_front(message);
                requeued += 1;
            }
        }
        drop(state);
        if requeued > 0 {
            self.shared.ready.notify_waiters();
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
        let now = self.shared.clock.now();
        let caps = self.shared.config.dead_caps();
        let mut state = self.lock();
        let Some(message) = self.take_processing(&mut state, worker, delivery) else {
            return Ok(false);
        };
        let letter = DeadLetter::new(
            delivery.queue(),
            delivery.payload(),
            reason,
            error,
            Some(worker.to_string()),
            now,
        );
        let queue = state.queues.entry(delivery.queue().to_owned()).or_default();
        // Its redelivery count goes with it: a requeued dead letter starts afresh.
        queue.redeliveries.remove(&message.id);
        queue.dead.push(letter, caps);
        queue.count_ended(now, 0, 1);
        if let Some(outcome) = delivery.outcome() {
            queue.record_outcome(now, outcome);
        }
        Ok(true)
    }

    async fn promote_scheduled(&self, queues: &[String], limit: usize) -> Result<usize> {
        let now = self.shared.clock.now();
        let mut state = self.lock();
        let mut moved = 0;
        for name in queues {
            if let Some(queue) = state.queues.get_mut(name) {
                moved += queue.promote_due(now, limit - moved);
            }
        }
        drop(state);
        if moved > 0 {
            self.shared.ready.notify_waiters();
        }
        Ok(moved)
    }
}
