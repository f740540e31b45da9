//! Values exchanged with a [`Broker`](super::Broker).

use std::{fmt, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{envelope::Envelope, error::Result, id::TaskId};

/// Identity of one worker process start: `host:pid:random`, never reused after a restart.
///
/// ```
/// use taskq_core::WorkerId;
/// let a = WorkerId::generate();
/// let b = WorkerId::generate();
/// assert_ne!(a, b);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(Arc<str>);

impl WorkerId {
    /// A fresh id for this process start.
    pub fn generate() -> Self {
        let host = local_hostname();
        let suffix = fastrand::u32(..);
        Self(format!("{host}:{}:{suffix:08x}", std::process::id()).into())
    }

    /// Wraps an id read back from a broker.
    pub fn from_string(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// This host's name as workers report it (`$HOSTNAME`, else the kernel's, else `localhost`),
/// with `:` replaced so that it can be part of a [`WorkerId`].
///
/// ```
/// assert!(!taskq_core::local_hostname().is_empty());
/// ```
pub fn local_hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().replace(':', "_"))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// An encoded envelope on its way into a broker, with the routing fields the broker needs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OutboundMessage {
    /// The invocation's id.
    pub id: TaskId,
    /// Destination queue.
    pub queue: String,
    /// Priority 0..=9 within the queue.
    pub priority: u8,
    /// Deliver no earlier than this.
    pub eta: Option<DateTime<Utc>>,
    /// The encoded envelope.
    pub payload: String,
    /// The partition it belongs to, if any ([`Envelope::partition`]).
    pub partition: Option<Arc<str>>,
    /// Most of its partition running at once ([`Envelope::partition_limit`]).
    pub partition_limit: Option<u32>,
}

impl OutboundMessage {
    /// Encodes `envelope`, refusing payloads over `max_payload_bytes`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::PayloadTooLarge`] or [`crate::Error::Serialize`].
    pub fn from_envelope(envelope: &Envelope, max_payload_bytes: usize) -> Result<Self> {
        Ok(Self {
            id: envelope.id,
            queue: envelope.queue.clone(),
            priority: crate::priority::Priority::new(envelope.priority).get(),
            eta: envelope.eta,
            payload: envelope.encode(max_payload_bytes)?,
            partition: envelope.partition.as_deref().map(Arc::from),
            partition_limit: envelope.partition_limit,
        })
    }

    /// A message from parts stored earlier (an outbox row): `payload` is the encoded envelope
    /// exactly as it was sealed and signed, the other parts as read from it when it was made;
    /// its partition is read back from the payload.
    ///
    /// ```
    /// use taskq_core::{Envelope, OutboundMessage};
    /// let envelope = Envelope::new("t", &(), "q", chrono::Utc::now())?;
    /// let made = OutboundMessage::from_envelope(&envelope, 1 << 20)?;
    /// let again = OutboundMessage::from_parts(made.id, "q", made.priority, made.eta, made.payload.clone());
    /// assert_eq!(again.payload, made.payload);
    /// # Ok::<(), taskq_core::Error>(())
    /// ```
    pub fn from_parts(
        id: TaskId,
        queue: impl Into<String>,
        priority: u8,
        eta: Option<DateTime<Utc>>,
        payload: impl Into<String>,
    ) -> Self {
        let payload = payload.into();
        let fields = PayloadFields::read_partition(&payload);
        Self {
            id,
            queue: queue.into(),
            priority: crate::priority::Priority::new(priority).get(),
            eta,
            payload,
            partition: fields.partition.map(Arc::from),
            partition_limit: fields.partition_limit,
        }
    }
}

/// A broker's own handle on one delivery (the memory broker's hand-out number, an AMQP
/// delivery tag); everyone else only passes it back. Brokers that fence by other means leave it
/// at its default.
///
/// ```
/// use taskq_core::Receipt;
/// assert_eq!(Receipt::new(7).raw(), 7);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Receipt(u64);

impl Receipt {
    /// Wraps a broker's handle.
    pub fn new(raw: u64) -> Self {
        Self(raw)
    }

    /// The handle, for the broker that made it.
    pub fn raw(self) -> u64 {
        self.0
    }
}

/// A message handed to a worker; it stays in the worker's hands until the worker acks,
/// retries, requeues or dead-letters it.
#[derive(Clone, Debug)]
pub struct Delivery {
    queue: Arc<str>,
    priority: u8,
    payload: Arc<str>,
    receipt: Receipt,
    id: Option<TaskId>,
    partition: Option<Arc<str>>,
    /// How its run ended, and that encoded (at attach time, on the task's own thread).
    outcome: Option<Arc<(super::Outcome, String)>>,
}

impl Delivery {
    /// Built by brokers, with the broker's own `receipt` for this delivery.
    pub fn new(queue: Arc<str>, priority: u8, payload: Arc<str>, receipt: Receipt) -> Self {
        Self {
            queue,
            priority,
            payload,
            receipt,
            id: None,
            partition: None,
            outcome: None,
        }
    }

    /// Records how its run ended, so that the call settling it also writes the queue's
    /// record of recent outcomes and its counters (see [`Outcome`](super::Outcome)).
    pub fn with_outcome(mut self, outcome: super::Outcome) -> Self {
        let encoded = outcome.encode();
        self.outcome = Some(Arc::new((outcome, encoded)));
        self
    }

    /// How its run ended, when the worker said.
    pub fn outcome(&self) -> Option<&super::Outcome> {
        self.outcome.as_deref().map(|(outcome, _)| outcome)
    }

    /// [`outcome`](Self::outcome) as [`Outcome::encode`](super::Outcome::encode) wrote it.
    pub fn encoded_outcome(&self) -> Option<&str> {
        self.outcome.as_deref().map(|(_, encoded)| encoded.as_str())
    }

    /// Records the partition the broker took it from, which its settle must release.
    pub fn with_partition(mut self, partition: Option<Arc<str>>) -> Self {
        self.partition = partition;
        self
    }

    /// The partition it was taken from ([`Envelope::partition`]), as the broker recorded it.
    pub fn partition(&self) -> Option<&str> {
        self.partition.as_deref()
    }

    /// Records the task id once the worker has decoded the payload, so that brokers need not
    /// parse the payload again to acknowledge it.
    pub fn with_id(mut self, id: TaskId) -> Self {
        self.id = Some(id);
        self
    }

    /// The task id, read from the payload (by the worker, or here as a fallback).
    pub fn id(&self) -> Option<TaskId> {
        self.id.or_else(|| PayloadFields::read(&self.payload).id)
    }

    /// The queue name, shared (no copy), for brokers that keep per-queue bookkeeping.
    pub fn shared_queue(&self) -> &Arc<str> {
        &self.queue
    }

    /// The payload, shared (no copy), for brokers that keep per-payload bookkeeping.
    pub fn shared_payload(&self) -> &Arc<str> {
        &self.payload
    }

    /// The queue it came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Its priority level.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// The raw bytes as stored, exactly (the worker decodes them).
    pub fn payload(&self) -> &str {
        &self.payload
    }

    /// The broker's handle for this delivery.
    pub fn receipt(&self) -> Receipt {
        self.receipt
    }
}

/// Why a message ended in dead letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadReason {
    /// The bytes are not a valid envelope.
    Malformed,
    /// No worker registered the task name.
    UnknownTask,
    /// The envelope exceeds the payload limit.
    Oversized,
    /// The task failed with a permanent error.
    Failed,
    /// Every allowed retry failed.
    RetriesExhausted,
    /// Recovered from lost workers too many times (poison message).
    WorkerLost,
    /// The signature is missing where required, made with a key the worker does not accept,
    /// or does not match (see [`crate::signing`]); the task was not run.
    BadSignature,
    /// The arguments are sealed and this worker cannot open them (no keys, an unknown key, or
    /// changed bytes; see [`crate::encryption`]); the task was not run.
    Undecryptable,
}

impl DeadReason {
    /// The wire spelling, e.g. `"unknown_task"`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Malformed => "malformed",
            DeadReason::UnknownTask => "unknown_task",
            DeadReason::Oversized => "oversized",
            DeadReason::Failed => "failed",
            DeadReason::RetriesExhausted => "retries_exhausted",
            DeadReason::WorkerLost => "worker_lost",
            DeadReason::BadSignature => "bad_signature",
            DeadReason::Undecryptable => "undecryptable",
        }
    }
}

impl std::str::FromStr for DeadReason {
    type Err = crate::error::Error;

    /// Reads the wire spelling back.
    ///
    /// ```
    /// use taskq_core::DeadReason;
    /// assert_eq!("worker_lost".parse::<DeadReason>()?, DeadReason::WorkerLost);
    /// assert!("tired".parse::<DeadReason>().is_err());
    /// # Ok::<(), taskq_core::Error>(())
    /// ```
    fn from_str(text: &str) -> crate::error::Result<Self> {
        // The serde spelling is the wire spelling: one list of names, in the enum.
        use serde::de::{value::StrDeserializer, IntoDeserializer};
        let spelled: StrDeserializer<'_, serde::de::value::Error> = text.into_deserializer();
        Self::deserialize(spelled).map_err(|_| crate::error::Error::Invalid {
            what: "dead-letter reason",
            reason: format!("`{text}` is not one"),
        })
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dead letter: the raw message and why it stopped.
///
/// ```
/// use taskq_core::{DeadLetter, DeadReason, Envelope};
/// let mut envelope = Envelope::new("demo.add", &(), "default", chrono::Utc::now())?;
/// envelope.attempt = 3;
/// let letter = DeadLetter::new("default", envelope.encode(1 << 20)?, DeadReason::RetriesExhausted,
///     Some("boom".into()), None, chrono::Utc::now());
/// assert_eq!(letter.id, Some(envelope.id));
/// let again = Envelope::decode(&letter.requeue_payload(), 1 << 20).unwrap();
/// assert_eq!(again.attempt, 0, "a requeued dead letter starts over");
/// # Ok::<(), taskq_core::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The task id, when the payload could be read far enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<TaskId>,
    /// Queue it came from.
    pub queue: String,
    /// Why it is here.
    pub reason: DeadReason,
    /// The last error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The worker that gave up on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// When it was dead-lettered.
    pub at: DateTime<Utc>,
    /// The message exactly as it was stored.
    pub payload: String,
}

impl DeadLetter {
    /// The payload to enqueue again: the same invocation with its attempt count reset, or the
    /// raw payload unchanged when it is not a readable envelope.
    pub fn requeue_payload(&self) -> String {
        match serde_json::from_str::<crate::envelope::Envelope>(&self.payload) {
            Ok(mut envelope) => {
                envelope.attempt = 0;
                envelope.last_error = None;
                serde_json::to_string(&envelope).unwrap_or_else(|_| self.payload.clone())
            }
            Err(_) => self.payload.clone(),
        }
    }

    /// Priority level of the payload (0 when unreadable).
    pub fn priority(&self) -> u8 {
        PayloadFields::read(&self.payload).priority
    }

    /// A dead letter for `payload`; the id is read from the payload when possible.
    pub fn new(
        queue: impl Into<String>,
        payload: impl Into<String>,
        reason: DeadReason,
        error: Option<String>,
        worker: Option<String>,
        at: DateTime<Utc>,
    ) -> Self {
        let payload = payload.into();
        Self {
            id: PayloadFields::read(&payload).id,
            queue: queue.into(),
            reason,
            error,
            worker,
            at,
            payload,
        }
    }
}

/// The few envelope fields brokers route by, read from a payload that may not be a valid
/// envelope (missing or unreadable fields come back empty).
///
/// ```
/// let fields = taskq_core::PayloadFields::read(r#"{"priority": 42, "junk": true}"#);
/// assert_eq!((fields.id, fields.priority), (None, 9));
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[non_exhaustive]
pub struct PayloadFields {
    /// The task id.
    #[serde(default)]
    pub id: Option<TaskId>,
    /// The task name.
    #[serde(default)]
    pub task: Option<String>,
    /// The priority, clamped to 0..=9.
    #[serde(default)]
    pub priority: u8,
    /// When the invocation was created.
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    /// Its partition ([`Envelope::partition`]).
    #[serde(default)]
    pub partition: Option<String>,
    /// Its partition's running limit ([`Envelope::partition_limit`]).
    #[serde(default)]
    pub partition_limit: Option<u32>,
}

impl PayloadFields {
    /// Reads what it can of `payload`; never fails.
    pub fn read(payload: &str) -> Self {
        let mut fields: Self = serde_json::from_str(payload).unwrap_or_default();
        fields.priority = crate::priority::Priority::new(fields.priority).get();
        if fields
            .partition
            .as_deref()
            .is_some_and(|key| crate::names::check_partition_key(key).is_err())
        {
            fields.partition = None;
        }
        fields
    }

    /// [`PayloadFields::read`], skipping the parse for a payload that names no partition
    /// (most of them).
    ///
    /// ```
    /// let fields = taskq_core::PayloadFields::read_partition(r#"{"partition": "acme", "partition_limit": 2}"#);
    /// assert_eq!((fields.partition.as_deref(), fields.partition_limit), (Some("acme"), Some(2)));
    /// ```
    pub fn read_partition(payload: &str) -> Self {
        if payload.contains("\"partition\"") {
            Self::read(payload)
        } else {
            Self::default()
        }
    }
}

/// Message counts of one queue.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// let client = taskq_core::Client::in_memory();
/// client.enqueue_by_name("demo.add", &serde_json::json!({})).await?;
/// let stats = client.broker().stats("default").await?;
/// assert_eq!((stats.pending, stats.scheduled, stats.processing, stats.dead), (1, 0, 0, 0));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct QueueStats {
    /// Ready to run.
    pub pending: usize,
    /// Due later (ETA, countdown, retry backoff).
    pub scheduled: usize,
    /// Held by workers.
    pub processing: usize,
    /// Dead letters.
    pub dead: usize,
    /// Dead letters dropped, oldest first, because the list was at its cap.
    #[serde(default)]
    pub dead_dropped: u64,
    /// Creation time of the oldest ready message, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Paused ([`Inspector::set_paused`](super::Inspector::set_paused)): every fetch skips the
    /// queue until it is resumed; enqueues still land.
    #[serde(default)]
    pub paused: bool,
}

/// What one [`recover_lost_workers`](super::Membership::recover_lost_workers) call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Workers whose processing sets were recovered by this call.
    pub workers: Vec<WorkerId>,
    /// Messages returned to `pending`.
    pub requeued: usize,
    /// Messages dead-lettered as poison.
    pub dead_lettered: usize,
    /// The ids and payloads of the poison messages whose id could be read, so that the caller
    /// can give them a final result (their waiters then end) and end their workflows.
    pub poisoned: Vec<(TaskId, String)>,
}

/// Which of a worker's queues need the fleet's passes now
/// ([`Transport::passes_due`](super::Transport::passes_due)).
///
/// ```
/// use taskq_core::PassesDue;
///
/// let queues = vec!["mail".to_owned(), "video".to_owned()];
/// let all = PassesDue::all(&queues);
/// assert_eq!(all.reap, queues);
/// assert_eq!(all.promote, queues);
/// assert!(PassesDue::default().is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassesDue {
    /// Queues where a lease may have ended: a reaper pass
    /// ([`Membership::recover_lost_workers`](super::Membership::recover_lost_workers)).
    pub reap: Vec<String>,
    /// Queues where a scheduled message may be due: a promotion pass
    /// ([`Transport::promote_scheduled`](super::Transport::promote_scheduled)).
    pub promote: Vec<String>,
}

impl PassesDue {
    /// Both passes over every one of `queues`: always safe, and what a broker that keeps no
    /// index of due passes answers.
    #[must_use]
    pub fn all(queues: &[String]) -> Self {
        Self {
            reap: queues.to_vec(),
            promote: queues.to_vec(),
        }
    }

    /// No pass is due.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.reap.is_empty() && self.promote.is_empty()
    }
}

/// Per-key flow control of one enqueue ([`Transport::enqueue_keyed`](super::Transport)):
/// debounce and throttle, each atomic with the enqueue it decides.
///
/// ```
/// use std::time::Duration;
/// let flow = taskq_core::KeyedFlow::Debounce {
///     key: "doc-7".into(), window: Duration::from_secs(5), max_wait: None,
/// };
/// assert_eq!(flow.key(), "doc-7");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyedFlow {
    /// One pending invocation per key: each call replaces its arguments and moves its start to
    /// `window` after the call, but no later than `max_wait` after the first call.
    Debounce {
        /// The key (per queue).
        key: String,
        /// Quiet time before the invocation runs.
        window: std::time::Duration,
        /// Longest delay from the first call of a burst.
        max_wait: Option<std::time::Duration>,
    },
    /// At most one run per `window` per key: a call inside a window is dropped, or with
    /// `keep_last` the latest such call runs when the window ends (and holds the next one).
    Throttle {
        /// The key (per queue).
        key: String,
        /// The window.
        window: std::time::Duration,
        /// Keep the latest extra call for the window's end instead of dropping it.
        keep_last: bool,
    },
}

impl KeyedFlow {
    /// The key.
    pub fn key(&self) -> &str {
        match self {
            KeyedFlow::Debounce { key, .. } | KeyedFlow::Throttle { key, .. } => key,
        }
    }

    /// The window.
    pub fn window(&self) -> std::time::Duration {
        match self {
            KeyedFlow::Debounce { window, .. } | KeyedFlow::Throttle { window, .. } => *window,
        }
    }

    /// The flow's name in brokers' scripts and functions: `debounce`, `throttle` (extra calls
    /// dropped) or `throttle-last` (the latest extra call kept).
    ///
    /// ```
    /// let flow = taskq_core::KeyedFlow::Throttle {
    ///     key: "user-9".into(),
    ///     window: std::time::Duration::from_secs(60),
    ///     keep_last: true,
    /// };
    /// assert_eq!((flow.mode(), flow.max_wait()), ("throttle-last", None));
    /// ```
    pub fn mode(&self) -> &'static str {
        match self {
            KeyedFlow::Debounce { .. } => "debounce",
            KeyedFlow::Throttle {
                keep_last: false, ..
            } => "throttle",
            KeyedFlow::Throttle {
                keep_last: true, ..
            } => "throttle-last",
        }
    }

    /// A debounce's longest delay from the first call of a burst, if it has one.
    pub fn max_wait(&self) -> Option<std::time::Duration> {
        match self {
            KeyedFlow::Debounce { max_wait, .. } => *max_wait,
            KeyedFlow::Throttle { .. } => None,
        }
    }
}

/// What a keyed enqueue did ([`KeyedFlow`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyedOutcome {
    /// The message was written (new, or replacing the arguments of the pending invocation with
    /// the same id): this id will run.
    Written(TaskId),
    /// The message was dropped: the key's window belongs to this id, which runs or ran.
    Dropped(TaskId),
    /// Send the message again with this id (the pending invocation whose arguments it is to
    /// replace), or with a fresh id when `None` (the one expected has left the pending set).
    Resend(Option<TaskId>),
}
