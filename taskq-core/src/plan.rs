//! Planning one invocation: typed, bulk, by-name, beat and callback enqueues all turn (task
//! name, arguments, the task's declared options, per-call options) into an envelope here, in
//! one function ([`plan`]), and nowhere else; sending is the client's (see `client_core.rs`).

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::{
    encryption::Encryption,
    envelope::{Envelope, DEFAULT_QUEUE},
    error::{Error, Result},
    headers::UNIQUE_KEY_HEADER,
    id::TaskId,
    names::{check_name, check_partition_key},
    priority::Priority,
    task::TaskOptions,
    workflow::{Flow, Signature},
};

/// A point in time given either as a delay from the enqueue or as an instant.
#[derive(Clone, Copy, Debug)]
pub(crate) enum When {
    After(Duration),
    At(DateTime<Utc>),
}

impl When {
    pub(crate) fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            When::After(delay) => now + to_chrono(delay),
            When::At(at) => at,
        }
    }
}

/// What one call says, each field unset unless the caller set it.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallOptions {
    pub(crate) queue: Option<String>,
    pub(crate) priority: Option<u8>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) eta: Option<When>,
    pub(crate) expires: Option<When>,
    pub(crate) id: Option<TaskId>,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) unique_for: Option<Duration>,
    pub(crate) unique_key: Option<String>,
    /// Keep the uniqueness key for its whole window, even once the task finished.
    pub(crate) unique_until_expired: bool,
    pub(crate) on_success: Vec<Signature>,
    pub(crate) on_failure: Vec<Signature>,
    pub(crate) partition: Option<String>,
    pub(crate) partition_concurrency: Option<u32>,
    pub(crate) flow: Option<crate::broker::KeyedFlow>,
}

/// An envelope ready to send, and the uniqueness claim that must guard its enqueue.
#[derive(Debug)]
pub(crate) struct Planned {
    pub(crate) envelope: Envelope,
    pub(crate) unique: Option<(String, Duration)>,
    /// Debounce or throttle, decided by the broker with the enqueue.
    pub(crate) flow: Option<crate::broker::KeyedFlow>,
}

/// What the client brings to every plan: the time, its keys, its per-queue defaults.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planning<'a> {
    pub(crate) now: DateTime<Utc>,
    pub(crate) encryption: Option<&'a Encryption>,
    /// Per queue, the partition limit of partitioned invocations that name none
    /// ([`Client::with_partition_concurrency`](crate::Client::with_partition_concurrency)).
    pub(crate) partition_limits: &'a HashMap<String, u32>,
}

/// Builds the envelope of one invocation: `declared` is what the task declares (`None` when a
/// by-name producer knows nothing of it), `call` what this call says, `client` what the
/// client adds.
pub(crate) fn plan(
    name: &str,
    args: Box<RawValue>,
    declared: Option<&TaskOptions>,
    call: &CallOptions,
    client: Planning<'_>,
) -> Result<Planned> {
    let Planning {
        now,
        encryption,
        partition_limits,
    } = client;
    let queue = call
        .queue
        .clone()
        .or_else(|| declared.map(|d| d.queue().to_owned()))
        .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
    check_name("queue", &queue)?;
    check_name("task name", name)?;
    let mut envelope = Envelope::from_raw_args(name, args, queue, now);
    if let Some(id) = call.id {
        envelope.id = id;
    }
    envelope.priority = call
        .priority
        .or_else(|| declared.map(TaskOptions::priority))
        .map_or(Priority::LOWEST, Priority::new)
        .get();
    envelope.max_retries = call
        .max_retries
        .or_else(|| declared.map(TaskOptions::max_retries));
    envelope.eta = call.eta.map(|when| when.resolve(now));
    envelope.expires = call
        .expires
        .or_else(|| declared.and_then(TaskOptions::expires).map(When::After))
        .map(|when| when.resolve(now));
    envelope.headers = call.headers.clone();
    envelope.partition = match &call.partition {
        Some(key) => Some(key.clone()),
        None => match declared.and_then(TaskOptions::partition_field) {
            Some(field) => partition_from_field(&envelope, field)?,
            None => None,
        },
    };
    if let Some(key) = &envelope.partition {
        check_partition_key(key)?;
        envelope.partition_limit = call
            .partition_concurrency
            .or_else(|| declared.and_then(TaskOptions::partition_concurrency))
            .or_else(|| partition_limits.get(&envelope.queue).copied())
            .map(|limit| limit.max(1));
    }
    if !call.on_success.is_empty() || !call.on_failure.is_empty() {
        for callback in call.on_success.iter().chain(&call.on_failure) {
            callback.validate()?;
        }
        let mut flow = Flow {
            on_success: call.on_success.clone(),
            on_failure: call.on_failure.clone(),
            ..Default::default()
        };
        if let Some(keys) = encryption {
            for callback in flow.on_success.iter_mut().chain(&mut flow.on_failure) {
                callback.seal_args(keys);
            }
        }
        envelope.flow = Some(encode_args(&flow)?);
    }
    let window = call
        .unique_for
        .or_else(|| declared.and_then(TaskOptions::unique_for));
    let unique = window.map(|window| {
        let key = call
            .unique_key
            .clone()
            .unwrap_or_else(|| default_unique_key(&envelope, encryption));
        // The header is what tells the worker to release the key when the task ends.
        if !call.unique_until_expired {
            envelope
                .headers
                .insert(UNIQUE_KEY_HEADER.to_owned(), key.clone());
        }
        (key, window)
    });
    if let Some(flow) = &call.flow {
        if unique.is_some() {
            return Err(Error::Invalid {
                what: "enqueue",
                reason: "a debounced or throttled enqueue cannot also be unique: its key already \
                         keeps one invocation"
                    .into(),
            });
        }
        if flow.key().is_empty() || flow.window().is_zero() {
            return Err(Error::Invalid {
                what: "enqueue",
                reason: "debounce and throttle need a key and a window longer than zero".into(),
            });
        }
    }
    Ok(Planned {
        envelope,
        unique,
        flow: call.flow.clone(),
    })
}

/// The partition key held by argument `field`: its text, or a number's digits; `None` when
/// the arguments lack it (or hold `null`).
fn partition_from_field(envelope: &Envelope, field: &str) -> Result<Option<String>> {
    #[derive(serde::Deserialize)]
    struct Fields<'a>(#[serde(borrow)] BTreeMap<&'a str, &'a RawValue>);
    let invalid = |reason: String| Error::Invalid {
        what: "partition key",
        reason,
    };
    let Ok(Fields(fields)) = serde_json::from_str::<Fields<'_>>(envelope.args.get()) else {
        return Err(invalid(format!(
            "task `{}` takes its partition from field `{field}`, but its arguments are not an object",
            envelope.task
        )));
    };
    let Some(raw) = fields.get(field) else {
        return Ok(None);
    };
    match serde_json::from_str::<serde_json::Value>(raw.get()) {
        Ok(serde_json::Value::Null) => Ok(None),
        Ok(serde_json::Value::String(text)) => Ok(Some(text)),
        Ok(serde_json::Value::Number(number)) => Ok(Some(number.to_string())),
        _ => Err(invalid(format!(
            "field `{field}` of task `{}` must be a string or a number to be a partition key",
            envelope.task
        ))),
    }
}

/// Task name plus a stable digest of the encoded arguments: a UUID v5, or with encryption a
/// keyed digest (a plain hash of sealed arguments would let anyone confirm a guessed value).
fn default_unique_key(envelope: &Envelope, encryption: Option<&Encryption>) -> String {
    let args = envelope.args.get().as_bytes();
    let digest = match encryption {
        Some(keys) => keys.digest(args),
        None => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, args),
    };
    format!("{}:{digest}", envelope.task)
}

/// Counts enqueues in `taskq_tasks_enqueued_total{task,queue}` (a no-op without a recorder).
pub(crate) fn count_enqueued(task: &str, queue: &str, count: u64) {
    metrics::counter!("taskq_tasks_enqueued_total", "task" => task.to_owned(), "queue" => queue.to_owned())
        .increment(count);
}

fn to_chrono(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// Encodes task arguments once, for [`plan`].
pub(crate) fn encode_args<A: serde::Serialize + ?Sized>(args: &A) -> Result<Box<RawValue>> {
    serde_json::value::to_raw_value(args).map_err(|source| Error::Serialize {
        what: "task arguments",
        source,
    })
}
