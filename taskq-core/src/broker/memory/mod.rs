//! [`MemoryBroker`]: the in-process broker, with the same semantics as Redis inside one process.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{mpsc, Notify};

use super::{Broker, Delivery, Membership, OutboundMessage, Receipt, WorkerId, FETCH_LEASE};
use dead_letters::{DeadCaps, DeadLetters};

use crate::{broker::ControlMessage, broker::WorkerInfo, clock::Clock, id::TaskId};

mod catalog;
mod control;
mod dead_letters;
mod inspector;
mod keyed;
mod membership;
mod rate_limiter;
mod ready;
mod transport;

/// Maps on the hot path: foldhash (hashbrown's own default; seeded per process) instead of
/// SipHash, which cost ~2,000 instructions per task across the maps of one drain.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

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
    max_dead_letter_bytes: usize,
}

impl MemoryBrokerConfig {
    /// Most messages (pending plus scheduled) one queue holds before enqueue fails with
    /// [`Error::QueueFull`](crate::Error::QueueFull).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Dead letters kept per queue; the oldest are dropped past it.
    pub fn with_max_dead_letters(mut self, max: usize) -> Self {
        self.max_dead_letters = max;
        self
    }

    /// Bytes of dead letters (payloads and errors) kept per queue; the oldest are dropped past
    /// it, though the newest always stays.
    ///
    /// ```
    /// let config = taskq_core::MemoryBrokerConfig::default().with_max_dead_letter_bytes(1 << 20);
    /// # let _ = config;
    /// ```
    pub fn with_max_dead_letter_bytes(mut self, max: usize) -> Self {
        self.max_dead_letter_bytes = max;
        self
    }

    fn dead_caps(&self) -> DeadCaps {
        DeadCaps {
            records: self.max_dead_letters,
            bytes: self.max_dead_letter_bytes,
        }
    }
}

impl Default for MemoryBrokerConfig {
    /// 100,000 messages per queue, 10,000 dead letters and 64 MiB of them per queue.
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_dead_letters: 10_000,
            max_dead_letter_bytes: 64 << 20,
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
    queues: FastMap<String, QueueState>,
    workers: FastMap<WorkerId, WorkerState>,
    next_tag: u64,
    /// Worker reports and when they expire.
    infos: FastMap<String, (WorkerInfo, DateTime<Utc>)>,
    /// Revoked ids and when the revocation expires.
    revoked: FastMap<TaskId, DateTime<Utc>>,
    /// Task name -> its latest published declaration.
    declarations: FastMap<String, super::TaskDeclaration>,
    /// Workers that took a lease by heartbeat: from then on a missing lease means a lost one.
    joined: FastSet<WorkerId>,
    /// Recently lost workers, newest first.
    lost: VecDeque<super::LostWorker>,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Ready messages: per priority level, round-robin between partitions.
    ready: ready::Ready,
    /// Due time and insertion sequence -> message.
    scheduled: BTreeMap<(DateTime<Utc>, u64), Message>,
    dead: DeadLetters,
    /// Times each message was recovered from a lost worker.
    redeliveries: FastMap<TaskId, u32>,
    /// Claimed uniqueness keys: when each claim expires and which task holds it.
    unique: FastMap<String, (DateTime<Utc>, TaskId)>,
    /// Rate limiter state per task name: theoretical arrival time of the next start.
    rates: FastMap<String, DateTime<Utc>>,
    /// Debounce and throttle keys.
    flows: FastMap<String, keyed::FlowState>,
    /// Minute -> what ended in it, the last [`HISTORY_KEPT_MINUTES`] minutes.
    history: BTreeMap<i64, EndedInMinute>,
    /// How recent runs ended, newest first, at most [`RECENT_OUTCOMES_KEPT`].
    outcomes: std::collections::VecDeque<super::Outcome>,
    /// Paused: fetches skip the queue.
    paused: bool,
}

/// What ended in one minute of a queue.
#[derive(Debug, Default)]
struct EndedInMinute {
    /// Acknowledged.
    processed: u64,
    /// Dead-lettered.
    failed: u64,
    /// Per-task counters ([`tally`](super::tally)'s fields).
    tally: FastMap<String, u64>,
}

#[derive(Clone, Debug)]
struct Message {
    id: TaskId,
    priority: u8,
    payload: Arc<str>,
    partition: Option<Arc<str>>,
    partition_limit: Option<u32>,
    /// Taken while its partition had a limit: it holds one of its slots until settled.
    holds_slot: bool,
}

impl Message {
    /// A message as a producer sent it.
    fn from_outbound(out: OutboundMessage) -> Self {
        Self {
            id: out.id,
            priority: out.priority,
            payload: Arc::from(out.payload),
            partition: out.partition,
            partition_limit: out.partition_limit,
            holds_slot: false,
        }
    }

    /// A message of `payload`, its partition read from the payload (dead letters, which
    /// keep only the payload).
    fn from_payload(id: TaskId, priority: u8, payload: String) -> Self {
        let fields = super::PayloadFields::read_partition(&payload);
        Self {
            id,
            priority,
            payload: Arc::from(payload),
            partition: fields.partition.map(Arc::from),
            partition_limit: fields.partition_limit,
            holds_slot: false,
        }
    }
}

#[derive(Debug, Default)]
struct WorkerState {
    /// Liveness deadline per queue: set by heartbeats, or by the first fetch from a queue to
    /// [`FETCH_LEASE`] from then.
    leases: FastMap<String, DateTime<Utc>>,
    /// Hand-out number -> (queue, message).
    processing: FastMap<u64, (Arc<str>, Message)>,
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
        self.shared.state.lock()
    }

    /// Takes up to `max` ready messages into `worker`'s hands (due scheduled messages wait
    /// for [`Transport::promote_scheduled`], as on every broker).
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) when `worker` joined by heartbeat and lost
    /// its lease on one of `queues`; nothing is taken.
    fn take_ready(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
    ) -> crate::error::Result<Vec<Delivery>> {
        let now = self.shared.clock.now();
        let lease = chrono::Duration::from_std(FETCH_LEASE).unwrap_or(chrono::Duration::MAX);
        let mut state = self.lock();
        let state = &mut *state;
        if state.joined.contains(worker) {
            let leases = state.workers.get(worker).map(|w| &w.leases);
            if queues
                .iter()
                .any(|q| !leases.is_some_and(|leases| leases.contains_key(q)))
            {
                return Err(crate::error::Error::LeaseLost {
                    worker: worker.to_string(),
                });
            }
        }
        let mut taken = Vec::new();
        for name in queues {
            let Some(queue) = state.queues.get_mut(name) else {
                continue;
            };
            if queue.paused {
                continue;
            }
            let queue_name: Arc<str> = Arc::from(name.as_str());
            while taken.len() < max {
                let Some(message) = queue.pop_ready() else {
                    break;
                };
                state.next_tag += 1;
                let tag = state.next_tag;
                taken.push(
                    Delivery::new(
                        queue_name.clone(),
                        message.priority,
                        message.payload.clone(),
                        Receipt::new(tag),
                    )
                    .with_partition(message.partition.clone()),
                );
                let held = state.workers.entry(worker.clone()).or_default();
                if !held.leases.contains_key(name) {
                    held.leases.insert(name.clone(), now + lease);
                }
                held.processing.insert(tag, (queue_name.clone(), message));
            }
            if taken.len() >= max {
                break;
            }
        }
        Ok(taken)
    }

    /// Removes a delivery from `worker`'s processing set (the fence of every transition),
    /// releasing its partition's slot; wakes waiting fetches when that made a partition's
    /// ready messages fetchable again.
    fn take_processing(
        &self,
        state: &mut State,
        worker: &WorkerId,
        delivery: &Delivery,
    ) -> Option<Message> {
        let held = state.workers.get_mut(worker)?;
        let (queue, message) = held.processing.remove(&delivery.receipt().raw())?;
        if let Some(queue) = state.queues.get_mut(&*queue) {
            if queue.ready.release(&message) {
                self.shared.ready.notify_waiters();
            }
        }
        Some(message)
    }
}

impl Broker for MemoryBroker {
    fn membership(&self) -> Option<&dyn Membership> {
        Some(self)
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
        let queue = self.queues.entry(out.queue.clone()).or_default();
        let eta = out.eta;
        let message = Message::from_outbound(out);
        match eta {
            Some(eta) if eta > now => {
                queue.scheduled.insert((eta, seq), message);
            }
            _ => queue.push_back(message),
        }
    }
}

impl QueueState {
    /// Counts messages that ended at `now`: `processed` acknowledged, `failed` dead-lettered.
    fn count_ended(&mut self, now: DateTime<Utc>, processed: u64, failed: u64) {
        let minute = self.minute(now);
        minute.processed += processed;
        minute.failed += failed;
    }

    /// Keeps how a run ended: in the record of recent outcomes and the minute's counters.
    fn record_outcome(&mut self, now: DateTime<Utc>, outcome: &super::Outcome) {
        let minute = self.minute(now);
        for (field, count) in super::tally(std::iter::once(outcome)) {
            *minute.tally.entry(field).or_default() += count;
        }
        if self.outcomes.len() >= super::RECENT_OUTCOMES_KEPT {
            self.outcomes.pop_back();
        }
        self.outcomes.push_front(outcome.clone());
    }

    /// The counts of the minute `now` falls in, dropping minutes no longer kept.
    fn minute(&mut self, now: DateTime<Utc>) -> &mut EndedInMinute {
        let minute = crate::broker::minute_of(now);
        while let Some((&oldest, _)) = self.history.first_key_value() {
            if oldest > minute - crate::broker::HISTORY_KEPT_MINUTES {
                break;
            }
            self.history.pop_first();
        }
        self.history.entry(minute).or_default()
    }

    /// Ready messages, highest level first, oldest first within a list.
    fn ready_in_order(&self) -> impl Iterator<Item = &Message> {
        self.ready.in_order()
    }

    fn pop_ready(&mut self) -> Option<Message> {
        self.ready.pop()
    }

    fn push_back(&mut self, message: Message) {
        self.ready.push_back(message);
    }

    fn push_front(&mut self, message: Message) {
        self.ready.push_front(message);
    }

    /// Ready messages (not scheduled ones).
    fn pending(&self) -> usize {
        self.ready.len()
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
}
