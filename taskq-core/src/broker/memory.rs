//! [`MemoryBroker`]: the in-process broker, with the same semantics as Redis inside one process.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::{
    sync::{mpsc, Notify},
    time::Instant,
};

use super::types::PayloadFields;
use super::{
    Broker, DeadLetter, DeadReason, Delivery, OutboundMessage, QueueStats, RecoveryReport,
    WorkerId, FETCH_LEASE,
};
use crate::{Clock, ControlMessage, Error, Result, TaskId, WorkerInfo};

/// Number of priority levels (0..=9).
const LEVELS: usize = 10;

/// Limits of a [`MemoryBroker`].
///
/// ```
/// use taskq_core::{MemoryBroker, MemoryBrokerConfig};
/// let broker = MemoryBroker::with_config(MemoryBrokerConfig::default().with_capacity(10));
/// # let _ = broker;
/// ```
#[derive(Clone, Debug)]
pub struct MemoryBrokerConfig {
    capacity: usize,
    max_dead_letters: usize,
}

impl MemoryBrokerConfig {
    /// Most messages (pending plus scheduled) one queue holds before enqueue fails with
    /// [`Error::QueueFull`].
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Dead letters kept per queue; the oldest are dropped past it.
    pub fn with_max_dead_letters(mut self, max: usize) -> Self {
        self.max_dead_letters = max;
        self
    }
}

impl Default for MemoryBrokerConfig {
    /// 100,000 messages per queue, 10,000 dead letters per queue.
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_dead_letters: 10_000,
        }
    }
}

/// The in-process broker: the embedded default for tests and single-process apps.
///
/// Queues are FIFO per priority level, scheduled messages wait in a time-ordered map, fetched
/// messages sit in the fetching worker's processing set until acked, and waiting fetches sleep
/// on a [`Notify`] instead of polling. Time follows [`Clock::monotonic`], so tests can drive it
/// with tokio's paused clock.
///
/// ```
/// use std::sync::Arc;
/// use taskq_core::{Broker, MemoryBroker};
/// let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
/// # let _ = broker;
/// ```
#[derive(Clone, Debug)]
pub struct MemoryBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Woken whenever messages become ready.
    ready: Notify,
    clock: Clock,
    config: MemoryBrokerConfig,
    /// Control channel subscribers.
    control: Mutex<Vec<mpsc::UnboundedSender<ControlMessage>>>,
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<String, QueueState>,
    workers: HashMap<WorkerId, WorkerState>,
    next_tag: u64,
    /// Worker reports and when they expire.
    infos: HashMap<String, (WorkerInfo, DateTime<Utc>)>,
    /// Revoked ids and when the revocation expires.
    revoked: HashMap<TaskId, DateTime<Utc>>,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Ready messages per priority level, FIFO within a level.
    levels: [VecDeque<Message>; LEVELS],
    pending: usize,
    /// Due time and insertion sequence -> message.
    scheduled: BTreeMap<(DateTime<Utc>, u64), Message>,
    /// Newest at the front.
    dead: VecDeque<DeadLetter>,
    /// Times each message was recovered from a lost worker.
    redeliveries: HashMap<TaskId, u32>,
    /// Claimed uniqueness keys: when each claim expires and which task holds it.
    unique: HashMap<String, (DateTime<Utc>, TaskId)>,
    /// Rate limiter state per task name: theoretical arrival time of the next start.
    rates: HashMap<String, DateTime<Utc>>,
}

#[derive(Clone, Debug)]
struct Message {
    id: TaskId,
    priority: u8,
    payload: Arc<str>,
}

#[derive(Debug, Default)]
struct WorkerState {
    /// Liveness deadline: set by heartbeats, or by the first fetch to [`FETCH_LEASE`] from then.
    deadline: Option<DateTime<Utc>>,
    processing: HashMap<u64, (Arc<str>, Message)>,
}

impl MemoryBroker {
    /// A broker with [`MemoryBrokerConfig::default`].
    pub fn new() -> Self {
        Self::with_config(MemoryBrokerConfig::default())
    }

    /// A broker with the given limits.
    pub fn with_config(config: MemoryBrokerConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                ready: Notify::new(),
                clock: Clock::monotonic(),
                config,
                control: Mutex::new(Vec::new()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps half-updated in a way that
        // loses messages (every method mutates with single calls), so poisoning is ignored.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes up to `max` ready messages after promoting due ones; returns them and the next
    /// time a scheduled message becomes due.
    fn take_ready(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
    ) -> (Vec<Delivery>, Option<DateTime<Utc>>) {
        let now = self.shared.clock.now();
        let lease = chrono::Duration::from_std(FETCH_LEASE).unwrap_or(chrono::Duration::MAX);
        let mut state = self.lock();
        let state = &mut *state;
        let mut taken = Vec::new();
        let mut next_due: Option<DateTime<Utc>> = None;
        for name in queues {
            let Some(queue) = state.queues.get_mut(name) else {
                continue;
            };
            queue.promote_due(now, usize::MAX);
            if let Some(((due, _), _)) = queue.scheduled.first_key_value() {
                next_due = Some(next_due.map_or(*due, |n| n.min(*due)));
            }
            let queue_name: Arc<str> = Arc::from(name.as_str());
            while taken.len() < max {
                let Some(message) = queue.pop_ready() else {
                    break;
                };
                state.next_tag += 1;
                let tag = state.next_tag;
                taken.push(Delivery::new(
                    queue_name.clone(),
                    message.priority,
                    message.payload.clone(),
                    tag,
                ));
                let held = state.workers.entry(worker.clone()).or_default();
                held.deadline.get_or_insert(now + lease);
                held.processing.insert(tag, (queue_name.clone(), message));
            }
            if taken.len() >= max {
                break;
            }
        }
        (taken, next_due)
    }

    /// Removes a delivery from `worker`'s processing set (the fence of every transition).
    fn take_processing(
        state: &mut State,
        worker: &WorkerId,
        delivery: &Delivery,
    ) -> Option<Message> {
        let held = state.workers.get_mut(worker)?;
        held.processing.remove(&delivery.tag()).map(|(_, m)| m)
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    /// Adds a message to its queue: scheduled when due later, at the tail of its level if not.
    fn place(&mut self, out: OutboundMessage, now: DateTime<Utc>) {
        let seq = self.next_tag;
        self.next_tag += 1;
        let queue = self.queues.entry(out.queue).or_default();
        let message = Message {
            id: out.id,
            priority: out.priority,
            payload: Arc::from(out.payload),
        };
        match out.eta {
            Some(eta) if eta > now => {
                queue.scheduled.insert((eta, seq), message);
            }
            _ => queue.push_back(message),
        }
    }
}

impl QueueState {
    fn pop_ready(&mut self) -> Option<Message> {
        let message = self.levels.iter_mut().rev().find_map(VecDeque::pop_front)?;
        self.pending -= 1;
        Some(message)
    }

    fn push_back(&mut self, message: Message) {
        self.levels[usize::from(message.priority.min(9))].push_back(message);
        self.pending += 1;
    }

    fn push_front(&mut self, message: Message) {
        self.levels[usize::from(message.priority.min(9))].push_front(message);
        self.pending += 1;
    }

    fn promote_due(&mut self, now: DateTime<Utc>, limit: usize) -> usize {
        let mut moved = 0;
        while moved < limit {
            match self.scheduled.first_entry() {
                Some(entry) if entry.key().0 <= now => {
                    let message = entry.remove();
                    self.push_back(message);
                    moved += 1;
                }
                _ => break,
            }
        }
        moved
    }

    fn add_dead(&mut self, letter: DeadLetter, max: usize) {
        self.dead.push_front(letter);
        self.dead.truncate(max);
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn clock(&self) -> Clock {
        self.shared.clock
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
                .map_or(0, |q| q.pending + q.scheduled.len());
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

    async fn rate_limit(
        &self,
        queue: &str,
        task: &str,
        limit: crate::RateLimit,
    ) -> Result<Option<Duration>> {
        let now = self.shared.clock.now();
        let interval =
            chrono::Duration::from_std(limit.interval()).unwrap_or(chrono::Duration::MAX);
        let mut state = self.lock();
        let tat = state
            .queues
            .entry(queue.to_owned())
            .or_default()
            .rates
            .entry(task.to_owned())
            .or_insert(now);
        if *tat > now {
            return Ok(Some((*tat - now).to_std().unwrap_or_default()));
        }
        *tat = now + interval;
        Ok(None)
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
            let (taken, next_due) = self.take_ready(worker, queues, max);
            if !taken.is_empty() || Instant::now() >= deadline {
                return Ok(taken);
            }
            let wake_at = next_due
                .map(|due| self.shared.clock.instant_at(due).min(deadline))
                .unwrap_or(deadline);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&self, worker: &WorkerId, deliveries: &[Delivery]) -> Result<usize> {
        let mut state = self.lock();
        let mut acked = 0;
        for delivery in deliveries {
            if let Some(message) = Self::take_processing(&mut state, worker, delivery) {
                acked += 1;
                if let Some(queue) = state.queues.get_mut(delivery.queue()) {
                    queue.redeliveries.remove(&message.id);
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
        if Self::take_processing(&mut state, worker, delivery).is_none() {
            return Ok(false);
        }
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
            if let Some(message) = Self::take_processing(&mut state, worker, delivery) {
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
        let max = self.shared.config.max_dead_letters;
        let mut state = self.lock();
        if Self::take_processing(&mut state, worker, delivery).is_none() {
            return Ok(false);
        }
        let letter = DeadLetter::new(
            delivery.queue(),
            delivery.payload(),
            reason,
            error,
            Some(worker.to_string()),
            now,
        );
        state
            .queues
            .entry(delivery.queue().to_owned())
            .or_default()
            .add_dead(letter, max);
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

    async fn heartbeat(&self, worker: &WorkerId, _queues: &[String], ttl: Duration) -> Result<()> {
        let deadline = self.shared.clock.now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.lock()
            .workers
            .entry(worker.clone())
            .or_default()
            .deadline = Some(deadline);
        Ok(())
    }

    async fn recover_lost_workers(
        &self,
        _queues: &[String],
        max_redeliveries: u32,
    ) -> Result<RecoveryReport> {
        let now = self.shared.clock.now();
        let max_dead = self.shared.config.max_dead_letters;
        let mut state = self.lock();
        let lost: Vec<WorkerId> = state
            .workers
            .iter()
            .filter(|(_, w)| w.deadline.is_some_and(|d| d < now))
            .map(|(id, _)| id.clone())
            .collect();
        let mut report = RecoveryReport::default();
        for worker in lost {
            let Some(held) = state.workers.remove(&worker) else {
                continue;
            };
            let mut held: Vec<_> = held.processing.into_iter().collect();
            held.sort_by_key(|(tag, _)| std::cmp::Reverse(*tag));
            for (_, (queue_name, message)) in held {
                let queue = state.queues.entry(queue_name.to_string()).or_default();
                let count = queue.redeliveries.entry(message.id).or_default();
                *count += 1;
                let count = *count;
                if count > max_redeliveries {
                    queue.redeliveries.remove(&message.id);
                    let letter = DeadLetter::new(
                        &*queue_name,
                        &*message.payload,
                        DeadReason::WorkerLost,
                        Some(format!("recovered from lost workers {count} times")),
                        Some(worker.to_string()),
                        now,
                    );
                    queue.add_dead(letter, max_dead);
                    report.dead_lettered += 1;
                } else {
                    queue.push_front(message);
                    report.requeued += 1;
                }
            }
            report.workers.push(worker);
        }
        drop(state);
        if report.requeued > 0 {
            self.shared.ready.notify_waiters();
        }
        Ok(report)
    }

    async fn deregister(&self, worker: &WorkerId, _queues: &[String]) -> Result<()> {
        let mut state = self.lock();
        let Some(held) = state.workers.remove(worker) else {
            return Ok(());
        };
        let mut held: Vec<_> = held.processing.into_iter().collect();
        held.sort_by_key(|(tag, _)| std::cmp::Reverse(*tag));
        let requeued = !held.is_empty();
        for (_, (queue, message)) in held {
            state
                .queues
                .entry(queue.to_string())
                .or_default()
                .push_front(message);
        }
        drop(state);
        if requeued {
            self.shared.ready.notify_waiters();
        }
        Ok(())
    }

    async fn publish_worker_info(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let until = self.shared.clock.now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.lock()
            .infos
            .insert(info.id.clone(), (info.clone(), until));
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let now = self.shared.clock.now();
        let mut state = self.lock();
        state.infos.retain(|_, (_, until)| *until > now);
        let mut infos: Vec<_> = state.infos.values().map(|(info, _)| info.clone()).collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(infos)
    }

    async fn revoke(&self, id: TaskId, terminate: bool, ttl: Duration) -> Result<()> {
        let until = self.shared.clock.now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.lock().revoked.insert(id, until);
        self.broadcast(&ControlMessage::Revoke { id, terminate })
            .await
    }

    async fn revoked(&self) -> Result<Vec<TaskId>> {
        let now = self.shared.clock.now();
        let mut state = self.lock();
        state.revoked.retain(|_, until| *until > now);
        Ok(state.revoked.keys().copied().collect())
    }

    async fn broadcast(&self, message: &ControlMessage) -> Result<()> {
        let mut subscribers = self
            .shared
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        subscribers.retain(|tx| tx.send(message.clone()).is_ok());
        Ok(())
    }

    async fn subscribe_control(&self) -> Result<mpsc::UnboundedReceiver<ControlMessage>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tx);
        Ok(rx)
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let mut queues: Vec<String> = self.lock().queues.keys().cloned().collect();
        queues.sort();
        Ok(queues)
    }

    async fn requeue_dead(&self, queue: &str, ids: Option<&[TaskId]>) -> Result<usize> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(0);
        };
        let (chosen, kept): (VecDeque<DeadLetter>, VecDeque<DeadLetter>) =
            std::mem::take(&mut q.dead).into_iter().partition(|letter| {
                ids.is_none_or(|ids| letter.id.is_some_and(|id| ids.contains(&id)))
            });
        q.dead = kept;
        let moved = chosen.len();
        for letter in chosen {
            let payload = letter.requeue_payload();
            let id = letter.id.unwrap_or_default();
            q.push_back(Message {
                id,
                priority: letter.priority(),
                payload: Arc::from(payload),
            });
        }
        drop(state);
        if moved > 0 {
            self.shared.ready.notify_waiters();
        }
        Ok(moved)
    }

    async fn purge_dead(&self, queue: &str, older_than: Option<DateTime<Utc>>) -> Result<usize> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(0);
        };
        let before = q.dead.len();
        q.dead
            .retain(|letter| older_than.is_some_and(|cutoff| letter.at >= cutoff));
        Ok(before - q.dead.len())
    }

    async fn purge_queue(&self, queue: &str) -> Result<usize> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(0);
        };
        let purged = q.pending + q.scheduled.len();
        for level in &mut q.levels {
            level.clear();
        }
        q.pending = 0;
        q.scheduled.clear();
        Ok(purged)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let state = self.lock();
        let processing = state
            .workers
            .values()
            .flat_map(|w| w.processing.values())
            .filter(|(q, _)| &**q == queue)
            .count();
        Ok(state.queues.get(queue).map_or(
            QueueStats {
                processing,
                ..QueueStats::default()
            },
            |q| QueueStats {
                pending: q.pending,
                scheduled: q.scheduled.len(),
                processing,
                dead: q.dead.len(),
                oldest_pending: q
                    .levels
                    .iter()
                    .filter_map(|level| level.front())
                    .filter_map(|m| PayloadFields::read(&m.payload).created_at)
                    .min(),
            },
        ))
    }

    async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .map(|q| q.dead.iter().take(limit).cloned().collect())
            .unwrap_or_default())
    }
}
