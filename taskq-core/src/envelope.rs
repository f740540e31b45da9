//! The wire format: one versioned JSON [`Envelope`] per task invocation (see `docs/protocol.md`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{error::Error, error::Result, id::TaskId};

/// The envelope version this build writes and reads.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default upper bound for one encoded envelope (1 MiB), checked on enqueue and on fetch.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The queue a task goes to when neither the task nor the call names one.
pub const DEFAULT_QUEUE: &str = "default";

/// Errors of earlier attempts an envelope and its result record keep (besides the previous
/// attempt's `last_error`): enough to see how a failure changed, bounded so that a task
/// retried a hundred times does not carry a hundred errors.
pub const EARLIER_ERRORS_KEPT: usize = 9;

/// One task invocation as it travels through the broker.
///
/// Fields are public for reading; build one through [`Client`](crate::Client) or
/// [`Envelope::new`]. Unknown fields are ignored when reading, so producers may add fields;
/// a different `v` is rejected.
///
/// ```
/// use taskq_core::{DecodeError, Envelope};
/// let envelope = Envelope::new("demo.add", &serde_json::json!({"a": 1, "b": 2}), "default", chrono::Utc::now())?;
/// let wire = envelope.encode(1 << 20)?;
/// assert!(wire.starts_with(r#"{"v":1,"#));
/// assert_eq!(Envelope::decode(&wire, 1 << 20).unwrap().id, envelope.id);
/// assert!(matches!(Envelope::decode("{}", 1 << 20), Err(DecodeError::Malformed(_))));
/// # Ok::<(), taskq_core::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Envelope {
    /// Protocol version, always [`PROTOCOL_VERSION`].
    pub v: u32,
    /// Unique id of this invocation.
    pub id: TaskId,
    /// Stable registered name of the task.
    pub task: String,
    /// The task's arguments as JSON.
    pub args: Box<RawValue>,
    /// Queue the invocation was routed to.
    pub queue: String,
    /// Priority within the queue, 0 (default, lowest) to 9 (highest).
    #[serde(default)]
    pub priority: u8,
    /// Not to be run before this instant.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timestamp::option"
    )]
    pub eta: Option<DateTime<Utc>>,
    /// Not to be run after this instant; ends as EXPIRED instead.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::timestamp::option"
    )]
    pub expires: Option<DateTime<Utc>>,
    /// Number of earlier failed attempts (0 on the first run).
    #[serde(default)]
    pub attempt: u32,
    /// Retries allowed after the first attempt; `None` takes the worker's task default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// When the invocation was first enqueued.
    #[serde(with = "crate::timestamp")]
    pub created_at: DateTime<Utc>,
    /// Free-form string metadata carried to the task's context.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The error of the previous attempt, set on retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The errors of the attempts before the previous one, oldest first, at most
    /// [`EARLIER_ERRORS_KEPT`]; set on retries (not signed, like `last_error`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier_errors: Vec<String>,
    /// `<key id>:<hex HMAC-SHA256>` over the producer's part of the envelope, when signed
    /// (see [`crate::signing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// The workflow this invocation belongs to: the rest of its chain, the group it reports
    /// to, its callbacks ([`crate::workflow::Flow`]); kept as raw JSON and read only by the
    /// worker that finishes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Box<RawValue>>,
    /// The partition (fairness key, e.g. a tenant) this invocation belongs to: a queue hands
    /// out its partitions' work in turn, and caps how many of one partition run at once when
    /// `partition_limit` says so (see `docs/partitions.md`). Travels in clear, like `queue`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// Most invocations of `partition` running at once across every worker of the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_limit: Option<u32>,
}

impl Envelope {
    /// A first attempt of `task` with `args` on `queue`, created at `now`.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] when `args` cannot be encoded as JSON.
    pub fn new<A: Serialize + ?Sized>(
        task: impl Into<String>,
        args: &A,
        queue: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let args = serde_json::value::to_raw_value(args).map_err(|source| Error::Serialize {
            what: "task arguments",
            source,
        })?;
        Ok(Self::from_raw_args(task, args, queue, now))
    }

    /// A first attempt of `task` with arguments already encoded.
    pub(crate) fn from_raw_args(
        task: impl Into<String>,
        args: Box<RawValue>,
        queue: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id: TaskId::new(),
            task: task.into(),
            args,
            queue: queue.into(),
            priority: 0,
            eta: None,
            expires: None,
            attempt: 0,
            max_retries: None,
            created_at: now,
            headers: BTreeMap::new(),
            last_error: None,
            earlier_errors: Vec::new(),
            sig: None,
            flow: None,
            partition: None,
            partition_limit: None,
        }
    }

    /// Encodes the envelope, refusing results larger than `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`Error::PayloadTooLarge`] past the limit, [`Error::Serialize`] if encoding fails.
    pub fn encode(&self, limit: usize) -> Result<String> {
        let json = serde_json::to_string(self).map_err(|source| Error::Serialize {
            what: "envelope",
            source,
        })?;
        if json.len() > limit {
            return Err(Error::PayloadTooLarge {
                size: json.len(),
                limit,
            });
        }
        Ok(json)
    }

    /// Decodes an envelope read from a broker, checking size and version.
    ///
    /// Nesting depth is bounded by serde_json's recursion limit (128).
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] saying why the bytes are not a valid v1 envelope.
    pub fn decode(raw: &str, limit: usize) -> Result<Self, DecodeError> {
        if raw.len() > limit {
            return Err(DecodeError::TooLarge {
                size: raw.len(),
                limit,
            });
        }
        let envelope: Envelope = serde_json::from_str(raw).map_err(DecodeError::Malformed)?;
        if envelope.v != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(envelope.v));
        }
        Ok(envelope)
    }

    /// How long it had waited to start at `now`: since it was due (its ETA, or when it was
    /// created).
    pub fn queue_wait(&self, now: DateTime<Utc>) -> std::time::Duration {
        let since = self.eta.unwrap_or(self.created_at).max(self.created_at);
        (now - since).to_std().unwrap_or_default()
    }

    /// True when `expires` lies before `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|expires| expires <= now)
    }
}

/// Why bytes read from a broker are not a runnable envelope; the message is dead-lettered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON, or JSON missing required fields.
    #[error("malformed envelope")]
    Malformed(#[source] serde_json::Error),
    /// A protocol version this worker does not speak.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u32),
    /// Larger than the configured payload limit.
    #[error("envelope of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the raw message.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl Envelope {
    /// The errors of this invocation's attempts so far, oldest first: the earlier ones and the
    /// previous attempt's (empty for a first attempt).
    ///
    /// ```
    /// let now = chrono::Utc::now();
    /// let mut envelope = taskq_core::Envelope::new("reports.build", &serde_json::json!({}), "default", now)?;
    /// assert!(envelope.errors_so_far().is_empty());
    /// envelope.earlier_errors = vec!["timeout".into()];
    /// envelope.last_error = Some("refused".into());
    /// assert_eq!(envelope.errors_so_far(), ["timeout", "refused"]);
    /// # Ok::<(), taskq_core::Error>(())
    /// ```
    pub fn errors_so_far(&self) -> Vec<String> {
        self.earlier_errors
            .iter()
            .chain(self.last_error.as_ref())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope::new(
            "demo.add",
            &serde_json::json!({"a": 1}),
            "default",
            Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn round_trips_through_json() {
        let envelope = sample();
        let decoded = Envelope::decode(&envelope.encode(1024).unwrap(), 1024).unwrap();
        assert_eq!(decoded.id, envelope.id);
        assert_eq!(decoded.args.get(), r#"{"a":1}"#);
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        let mut envelope = sample();
        envelope.v = 2;
        let raw = serde_json::to_string(&envelope).unwrap();
        assert!(matches!(
            Envelope::decode(&raw, 4096),
            Err(DecodeError::UnsupportedVersion(2))
        ));
        assert!(matches!(
            Envelope::decode("not json", 4096),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn enforces_size_limit_both_ways() {
        let envelope = sample();
        assert!(matches!(
            envelope.encode(10),
            Err(Error::PayloadTooLarge { .. })
        ));
        let raw = envelope.encode(4096).unwrap();
        assert!(matches!(
            Envelope::decode(&raw, 10),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn ignores_unknown_fields_for_forward_compatibility() {
        let raw = r#"{"v":1,"id":"6f1c1f5e-3c1a-4c47-9d3e-1d2b6f1f4a10","task":"t","args":[],
            "queue":"default","created_at":"2026-01-01T00:00:00Z","future_field":true}"#;
        let envelope = Envelope::decode(raw, 4096).unwrap();
        assert_eq!(envelope.task, "t");
        assert_eq!(envelope.attempt, 0);
    }
}
