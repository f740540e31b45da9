//! Celery's task message protocol, version 2 with the JSON serializer, as Kombu's Redis
//! transport carries it: what a Python `app.send_task(...)`, `delay` or `apply_async` puts in
//! the queue's list, read into a taskq [`Envelope`]; and the `celery-task-meta-<id>` record
//! Celery's Redis result backend keeps, so that `AsyncResult(id).get()` in Python reads what a
//! taskq worker returned. See `docs/celery.md`.
//!
//! Arguments map onto the task's struct: keyword arguments by field name, positional ones by
//! the order the struct declares its fields (`#[derive(Task)]` records it).

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{ArgumentShape, Envelope, TaskId, TaskResult, TaskState};

mod parts;

pub use parts::CeleryParts;

pub use crate::headers::{CALLBACKS_HEADER, CELERY_HEADER, CHAIN_HEADER};

/// The key Celery's Redis result backend keeps task `id`'s result under (also the channel it
/// announces it on).
pub fn meta_key(id: &TaskId) -> String {
    format!("celery-task-meta-{id}")
}

/// The priority steps of Kombu's Redis transport, in the order its consumers take them: a
/// queue's messages sit in one list per step, and 0 (the default) goes first.
pub const KOMBU_PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];

/// The lists Kombu's Redis transport keeps `queue`'s messages in, one per
/// [`KOMBU_PRIORITY_STEPS`] step, in that order (`queue` itself for step 0).
///
/// ```
/// let lists = taskq_core::celery::kombu_priority_lists("celery");
/// assert_eq!(lists[0], "celery");
/// assert_eq!(lists[3], "celery\x06\x169");
/// ```
pub fn kombu_priority_lists(queue: &str) -> [String; 4] {
    KOMBU_PRIORITY_STEPS.map(|step| match step {
        0 => queue.to_owned(),
        step => format!("{queue}\x06\x16{step}"),
    })
}

/// The taskq priority level a message from Kombu's list of priority `step` goes to: Kombu's
/// Redis priority runs backwards (0 first), taskq's forwards (9 first).
///
/// ```
/// assert_eq!(taskq_core::celery::level_of_kombu_step(0), 9);
/// assert_eq!(taskq_core::celery::level_of_kombu_step(9), 0);
/// ```
pub fn level_of_kombu_step(step: u8) -> u8 {
    crate::Priority::HIGHEST.get() - step.min(crate::Priority::HIGHEST.get())
}

/// A message as Kombu's Redis transport stores it (a JSON object; the body base64).
#[derive(Debug, Deserialize)]
struct KombuMessage {
    body: String,
    #[serde(rename = "content-type")]
    content_type: String,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    properties: Properties,
}

/// A protocol 2 body: positional arguments, keyword arguments, and the workflow fields.
type Body = (Vec<Value>, Map<String, Value>, Option<Map<String, Value>>);

/// The protocol 2 headers taskq reads.
#[derive(Debug, Default, Deserialize)]
struct Headers {
    task: Option<String>,
    id: Option<String>,
    eta: Option<String>,
    expires: Option<String>,
    retries: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
struct Properties {
    body_encoding: Option<String>,
    correlation_id: Option<String>,
    /// The reply queue of a producer on Celery's `rpc://` result backend (RabbitMQ).
    reply_to: Option<String>,
}

/// Why a Celery message cannot run here; with the task id when it could be read, so that the
/// worker can record the FAILURE where Celery's client waits for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct CeleryRefusal {
    /// The task id, when the message had a readable one.
    pub id: Option<TaskId>,
    /// The task's name, when readable.
    pub task: Option<String>,
    /// What is wrong, in words.
    pub reason: String,
    /// The producer's reply queue (Celery's `rpc://`), where the FAILURE is delivered.
    pub reply_to: Option<String>,
}

/// Whether `payload` is a message in Kombu's JSON layout (cheap: its first key), not a taskq
/// envelope.
///
/// ```
/// assert!(taskq_core::celery::is_celery_message(r#"{"body": "W10=", "content-type": "application/json"}"#));
/// assert!(!taskq_core::celery::is_celery_message(r#"{"v":1,"id":"x"}"#));
/// ```
pub fn is_celery_message(payload: &str) -> bool {
    payload.trim_start().starts_with(r#"{"body""#)
}

/// Reads a Celery protocol 2 message (JSON serializer) from queue `queue` into a taskq
/// envelope: the task's name and id, its arguments mapped onto the task's fields (`shape`,
/// the registered task's, gives the order for positional ones), `eta`, `expires`, and
/// `retries` as the attempt. The envelope carries [`CELERY_HEADER`].
///
/// # Errors
///
/// [`CeleryRefusal`] naming what cannot run: another serializer, an unreadable body, more
/// positional arguments than the task has fields, or a workflow field taskq does not run for
/// Celery messages (`errbacks`, `chord`, a group or chord among the chain or callbacks).
pub fn envelope_from_celery(
    payload: &str,
    queue: &str,
    now: DateTime<Utc>,
    shape: impl Fn(&str) -> Option<ArgumentShape>,
) -> Result<Envelope, CeleryRefusal> {
    let message: KombuMessage = serde_json::from_str(payload).map_err(|err| CeleryRefusal {
        id: None,
        task: None,
        reason: format!("not a Celery message in Kombu's layout: {err}"),
        reply_to: None,
    })?;
    let id = message
        .headers
        .id
        .as_deref()
        .or(message.properties.correlation_id.as_deref())
        .and_then(|id| id.parse::<TaskId>().ok());
    let task = message.headers.task.clone();
    let reply_to = message
        .properties
        .reply_to
        .clone()
        .filter(|queue| !queue.is_empty());
    let refuse = |reason: String| CeleryRefusal {
        id,
        task: task.clone(),
        reason,
        reply_to: reply_to.clone(),
    };
    let (Some(id), Some(name)) = (id, task.clone()) else {
        return Err(refuse(
            "a Celery message without a task name or a UUID task id (protocol 1 is not read)"
                .into(),
        ));
    };
    if message.content_type != "application/json" {
        return Err(refuse(format!(
            "Celery message serialized as {}: taskq reads the JSON serializer (task_serializer = \"json\")",
            message.content_type
        )));
    }
    let body = match message.properties.body_encoding.as_deref() {
        Some("base64") | None => base64::engine::general_purpose::STANDARD
            .decode(message.body.as_bytes())
            .map_err(|err| refuse(format!("the Celery message's body is not base64: {err}")))?,
        Some(other) => {
            return Err(refuse(format!(
                "the Celery message's body is encoded as {other}, not base64"
            )))
        }
    };
    let (args, kwargs, embed): Body = serde_json::from_slice(&body).map_err(|err| {
        refuse(format!(
            "the Celery message's body is not [args, kwargs, embed]: {err}"
        ))
    })?;
    let signatures = |field: &str| -> Result<Option<String>, CeleryRefusal> {
        let Some(list) = embed.as_ref().and_then(|e| e.get(field)) else {
            return Ok(None);
        };
        match list {
            Value::Null => Ok(None),
            Value::Array(items) if items.is_empty() => Ok(None),
            Value::Array(items) => {
                items
                    .iter()
                    .try_for_each(|item| plain_signature(item, field))
                    .map_err(&refuse)?;
                Ok(Some(list.to_string()))
            }
            other => Err(refuse(format!(
                "the Celery message's `{field}` is not a list of signatures: {other}"
            ))),
        }
    };
    let chain = signatures("chain")?;
    let callbacks = signatures("callbacks")?;
    for field in ["errbacks", "chord"] {
        if embed
            .as_ref()
            .and_then(|e| e.get(field))
            .is_some_and(|v| !v.is_null() && v != &Value::Array(Vec::new()))
        {
            return Err(refuse(format!(
                "the Celery message carries `{field}`, which taskq does not run for Celery messages (docs/celery.md)"
            )));
        }
    }
    let arguments = map_arguments(&name, args, kwargs, shape(&name).as_ref()).map_err(refuse)?;
    let mut envelope = Envelope::new(&name, &Value::Object(arguments), queue, now)
        .map_err(|err| refuse(err.to_string()))?;
    envelope.id = id;
    envelope.eta = time(message.headers.eta.as_deref(), "eta").map_err(&refuse)?;
    envelope.expires = time(message.headers.expires.as_deref(), "expires").map_err(&refuse)?;
    envelope.attempt = message.headers.retries.unwrap_or(0);
    envelope
        .headers
        .insert(CELERY_HEADER.to_owned(), "2".to_owned());
    if let Some(reply_to) = reply_to {
        // Where a delivering result backend answers (Celery's `rpc://`: its record, to the
        // producer's queue, with the task id as the correlation id).
        envelope
            .headers
            .insert(crate::headers::REPLY_TO_HEADER.to_owned(), reply_to);
    }
    if let Some(chain) = chain {
        envelope.headers.insert(CHAIN_HEADER.to_owned(), chain);
    }
    if let Some(callbacks) = callbacks {
        envelope
            .headers
            .insert(CALLBACKS_HEADER.to_owned(), callbacks);
    }
    Ok(envelope)
}

/// Whether `signature` (a step of `field`) is one taskq can send on: a single task by name,
/// not a group, chord or chain of its own.
fn plain_signature(signature: &Value, field: &str) -> Result<(), String> {
    if let Some(kind) = signature["subtask_type"].as_str() {
        return Err(format!(
            "the Celery message's `{field}` holds a {kind}, which taskq does not run for Celery messages (docs/celery.md)"
        ));
    }
    if !signature["task"].is_string() {
        return Err(format!(
            "the Celery message's `{field}` holds a signature without a task name: {signature}"
        ));
    }
    Ok(())
}

/// Keyword arguments by name, positional ones onto the fields in declaration order.
fn map_arguments(
    task: &str,
    args: Vec<Value>,
    mut kwargs: Map<String, Value>,
    shape: Option<&ArgumentShape>,
) -> Result<Map<String, Value>, String> {
    if args.is_empty() {
        return Ok(kwargs);
    }
    let Some(shape) = shape else {
        return Err(format!(
            "`{task}` got positional arguments, but no task of that name here records the order of its fields: it is not registered on this worker, or its struct does not record the order (named fields with plain serde attributes do); send keyword arguments"
        ));
    };
    if args.len() > shape.fields.len() {
        return Err(format!(
            "`{task}` takes {} arguments ({}), not {}",
            shape.fields.len(),
            shape.fields.join(", "),
            args.len()
        ));
    }
    for (field, value) in shape.fields.iter().zip(args) {
        if kwargs.insert(field.clone(), value).is_some() {
            return Err(format!(
                "`{task}` got `{field}` both by position and by keyword"
            ));
        }
    }
    Ok(kwargs)
}

/// An ISO 8601 time as Celery writes it (with or without an offset: without one it is UTC).
fn time(text: Option<&str>, what: &str) -> Result<Option<DateTime<Utc>>, String> {
    let Some(text) = text else {
        return Ok(None);
    };
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .map(|naive| Some(naive.and_utc()))
        .map_err(|err| {
            format!("the Celery message's {what} `{text}` is not an ISO 8601 time: {err}")
        })
}

/// The record Celery's Redis result backend keeps for a task that reached a final state or is
/// waiting to be retried (as `celery.backends.base` writes it): `status`, `result` (the
/// output, or for a failure or retry the exception, named `TaskqTaskFailed`), `traceback`,
/// `children`, `date_done`, `task_id`. `None` for the other states in progress (Celery writes
/// STARTED only with `task_track_started`; a write per start would cost every task).
///
/// ```
/// use taskq_core::{celery, TaskId, TaskResult, TaskState};
/// let record = TaskResult::new(TaskId::new(), "tasks.add", TaskState::Failure, chrono::Utc::now())
///     .with_error("boom");
/// let meta: serde_json::Value = serde_json::from_str(&celery::meta_record(&record).unwrap()).unwrap();
/// assert_eq!(meta["status"], "FAILURE");
/// assert_eq!(meta["result"]["exc_message"][0], "boom");
/// let retrying = TaskResult::new(TaskId::new(), "tasks.add", TaskState::Retry, chrono::Utc::now());
/// assert!(celery::meta_record(&retrying).unwrap().contains(r#""status":"RETRY""#));
/// ```
pub fn meta_record(record: &TaskResult) -> Option<String> {
    if !record.state.is_ready() && record.state != TaskState::Retry {
        return None;
    }
    let result = match record.state {
        TaskState::Success => record
            .result
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null),
        state => {
            let message = record.error.clone().unwrap_or_else(|| state.to_string());
            let mut exception = BTreeMap::new();
            exception.insert("exc_type", Value::from(exception_name(state)));
            exception.insert("exc_message", Value::from(vec![Value::from(message)]));
            exception.insert("exc_module", Value::Null);
            serde_json::to_value(exception).unwrap_or(Value::Null)
        }
    };
    let traceback = match record.state {
        TaskState::Success => Value::Null,
        _ => Value::from(
            record
                .earlier_errors
                .iter()
                .chain(record.error.as_ref())
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    };
    // Celery has no EXPIRED: it marks an expired task REVOKED, and its client waits for
    // one of SUCCESS, FAILURE and REVOKED.
    let status = match record.state {
        TaskState::Expired => "REVOKED",
        state => state.as_str(),
    };
    let meta = serde_json::json!({
        "status": status,
        "result": result,
        "traceback": traceback,
        "children": [],
        "date_done": record.updated_at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        "task_id": record.id.to_string(),
    });
    Some(meta.to_string())
}

/// The exception Celery's client raises for a task that ended in `state`.
fn exception_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Revoked => "TaskRevokedError",
        TaskState::Expired => "TaskqTaskExpired",
        _ => "TaskqTaskFailed",
    }
}

/// A Celery protocol 2 message (JSON serializer) in Kombu's Redis layout, for a Python Celery
/// worker to run: task `name` with id `id`, positional `args` and keyword `kwargs`, routed to
/// `queue`.
///
/// ```
/// use taskq_core::{celery, TaskId};
/// let id = TaskId::new();
/// let message = celery::message("tasks.add", id, &[2.into()], &Default::default(), "celery");
/// let read = celery::envelope_from_celery(&message, "celery", chrono::Utc::now(), |_| {
///     Some(taskq_core::ArgumentShape::new(&["a"], &["a"]))
/// }).unwrap();
/// assert_eq!((read.id, read.task.as_str()), (id, "tasks.add"));
/// ```
pub fn message(
    name: &str,
    id: TaskId,
    args: &[Value],
    kwargs: &Map<String, Value>,
    queue: &str,
) -> String {
    message_with(name, id, args, kwargs, queue, Extras::default())
}

/// What a Celery message carries besides its task, id, arguments and queue.
#[derive(Debug, Default)]
struct Extras<'a> {
    /// The rest of a chain (signatures, the next one last), or null.
    chain: Value,
    /// The queue its result is delivered to (Celery's `rpc://`), or empty.
    reply_to: &'a str,
    /// Not to run before.
    eta: Option<DateTime<Utc>>,
    /// Not to run after.
    expires: Option<DateTime<Utc>>,
}

/// A time as Celery's producer writes it (ISO 8601 with microseconds and the offset).
fn iso(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |at| {
        Value::from(at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string())
    })
}

/// [`message`] with `extras`.
fn message_with(
    name: &str,
    id: TaskId,
    args: &[Value],
    kwargs: &Map<String, Value>,
    queue: &str,
    extras: Extras<'_>,
) -> String {
    let Extras {
        chain,
        reply_to,
        eta,
        expires,
    } = extras;
    let body = serde_json::json!([args, kwargs, {"callbacks": null, "errbacks": null, "chain": chain, "chord": null}]);
    let body = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    let id = id.to_string();
    serde_json::json!({
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": name, "id": id, "shadow": null, "eta": iso(eta), "expires": iso(expires),
            "group": null, "group_index": null, "retries": 0, "timelimit": [null, null],
            "root_id": id, "parent_id": null, "argsrepr": Value::from(args.to_vec()).to_string(),
            "kwargsrepr": Value::Object(kwargs.clone()).to_string(), "origin": "taskq",
            "ignore_result": false,
        },
        "properties": {
            "correlation_id": id, "reply_to": reply_to, "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0, "body_encoding": "base64", "delivery_tag": uuid::Uuid::new_v4().to_string(),
        },
    })
    .to_string()
}

/// What a Celery message whose task returned `output` sends on, as a Celery worker would: the
/// next step of its chain (from [`CHAIN_HEADER`]) and each of its callbacks (from
/// [`CALLBACKS_HEADER`]), as (queue, message) pairs.
///
/// # Errors
///
/// What about them cannot be read, in words.
pub fn follow_ups(
    headers: &BTreeMap<String, String>,
    output: &Value,
) -> Result<Vec<(String, String)>, String> {
    let mut messages = Vec::new();
    if let Some(chain) = headers.get(CHAIN_HEADER) {
        messages.push(next_in_chain(chain, output)?);
    }
    if let Some(callbacks) = headers.get(CALLBACKS_HEADER) {
        let callbacks: Vec<Value> = serde_json::from_str(callbacks)
            .map_err(|err| format!("unreadable Celery callbacks: {err}"))?;
        for callback in &callbacks {
            messages.push(signature_message(callback, output, Value::Null)?);
        }
    }
    Ok(messages)
}

/// The next step of a Celery chain after a step that returned `output`: the queue to send it
/// to and the message (its `task_id` as Celery assigned it, the output first among its
/// arguments unless the signature is immutable, the rest of the chain with it).
///
/// # Errors
///
/// What about the chain cannot be read, in words.
pub fn next_in_chain(chain: &str, output: &Value) -> Result<(String, String), String> {
    let mut steps: Vec<Value> =
        serde_json::from_str(chain).map_err(|err| format!("unreadable Celery chain: {err}"))?;
    let next = steps
        .pop()
        .ok_or_else(|| "an empty Celery chain".to_owned())?;
    let rest = if steps.is_empty() {
        Value::Null
    } else {
        Value::Array(steps)
    };
    signature_message(&next, output, rest)
}

/// The message for Celery `signature` after a task that returned `output`, carrying `chain`
/// (the rest of a chain, or null): its queue and the message.
fn signature_message(
    signature: &Value,
    output: &Value,
    chain: Value,
) -> Result<(String, String), String> {
    let name = signature["task"]
        .as_str()
        .ok_or_else(|| format!("a Celery signature without a task name: {signature}"))?;
    let options = &signature["options"];
    // The id Celery assigned when it froze the signature, or a fresh one.
    let id: TaskId = options["task_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_default();
    let mut args = signature["args"].as_array().cloned().unwrap_or_default();
    if !signature["immutable"].as_bool().unwrap_or(false) {
        args.insert(0, output.clone());
    }
    let kwargs = signature["kwargs"].as_object().cloned().unwrap_or_default();
    let queue = options["queue"]
        .as_str()
        .or_else(|| options["routing_key"].as_str())
        .unwrap_or("celery")
        .to_owned();
    let extras = Extras {
        chain,
        ..Extras::default()
    };
    let message = message_with(name, id, &args, &kwargs, &queue, extras);
    Ok((queue, message))
}

/// A result as Celery's Redis result backend keeps it (`celery-task-meta-<id>`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct CeleryResult {
    /// `SUCCESS`, `FAILURE`, `REVOKED`, `RETRY`, `STARTED` ...
    pub status: String,
    /// The return value, or for a failure the exception Celery recorded.
    #[serde(default)]
    pub result: Value,
    /// The traceback of a failure.
    #[serde(default)]
    pub traceback: Option<String>,
}

impl CeleryResult {
    /// Reads a stored record.
    ///
    /// # Errors
    ///
    /// When it is not Celery's JSON record.
    pub fn read(stored: &str) -> crate::Result<Self> {
        serde_json::from_str(stored).map_err(|err| crate::Error::Invalid {
            what: "Celery result",
            reason: err.to_string(),
        })
    }

    /// Whether the task ended (SUCCESS, FAILURE or REVOKED, as Celery's READY_STATES).
    pub fn is_ready(&self) -> bool {
        matches!(self.status.as_str(), "SUCCESS" | "FAILURE" | "REVOKED")
    }
}

/// Sends tasks to Python Celery workers and reads their results, from [`Client::celery`]:
/// Rust code calling tasks still served by Celery while a migration is under way.
///
/// [`Client::celery`]: crate::Client::celery
#[derive(Debug)]
pub struct CeleryClient<'a> {
    client: &'a crate::Client,
    queue: String,
    countdown: Option<std::time::Duration>,
    eta: Option<DateTime<Utc>>,
    expires: Option<DateTime<Utc>>,
}

impl<'a> CeleryClient<'a> {
    pub(crate) fn new(client: &'a crate::Client) -> Self {
        Self {
            client,
            queue: "celery".to_owned(),
            countdown: None,
            eta: None,
            expires: None,
        }
    }

    /// Sends to `queue` instead of Celery's default `celery`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Not to run until `delay` after it is sent (Celery's `countdown`).
    pub fn countdown(mut self, delay: std::time::Duration) -> Self {
        self.countdown = Some(delay);
        self
    }

    /// Not to run before `at` (Celery's `eta`).
    pub fn eta(mut self, at: DateTime<Utc>) -> Self {
        self.eta = Some(at);
        self
    }

    /// Not to run after `at` (Celery's `expires`: a worker marks it REVOKED instead).
    pub fn expires(mut self, at: DateTime<Utc>) -> Self {
        self.expires = Some(at);
        self
    }

    /// Sends task `name` with positional `args` and keyword `kwargs`, as Python's
    /// `app.send_task(name, args, kwargs)` would; returns its id.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Unsupported`] on brokers that cannot carry Celery's messages (Redis
    /// except Cluster, and RabbitMQ can); broker errors.
    pub async fn send_task(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> crate::Result<TaskId> {
        crate::names::check_name("task", name)?;
        let id = TaskId::new();
        // A backend that delivers results (RabbitMQ's reply queue) names its queue, where a
        // Celery worker on `rpc://` answers.
        let reply_to = self.client.backend().reply_to().unwrap_or_default();
        let countdown = self
            .countdown
            .and_then(|delay| chrono::Duration::from_std(delay).ok())
            .map(|delay| self.client.broker().clock().now() + delay);
        let extras = Extras {
            reply_to,
            eta: countdown.or(self.eta),
            expires: self.expires,
            ..Extras::default()
        };
        let message = message_with(name, id, &args, &kwargs, &self.queue, extras);
        self.client
            .broker()
            .send_celery(&self.queue, message)
            .await?;
        Ok(id)
    }

    /// Waits up to `timeout` for task `id`'s result as Celery's result backend keeps it
    /// (polled every 50 ms), and returns it once it is final.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Timeout`] when it is not final by then; the backend's errors.
    pub async fn wait(
        &self,
        id: TaskId,
        timeout: std::time::Duration,
    ) -> crate::Result<CeleryResult> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(stored) = self.client.backend().celery_result(id).await? {
                let result = CeleryResult::read(&stored)?;
                if result.is_ready() {
                    return Ok(result);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(crate::Error::Timeout(timeout));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as Kombu 5 writes it for `send_task("tasks.add", args=[2], kwargs={"b": 3})`.
    fn message(body: &Value, headers: Value) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(body.to_string());
        serde_json::json!({
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {"correlation_id": "0b7f1c36-32a6-4f3c-9a53-2fb0b28c3e4e", "body_encoding": "base64",
                           "delivery_info": {"exchange": "", "routing_key": "celery"}, "priority": 0,
                           "delivery_tag": "d2a0c4d6-8d6e-4a4e-9f6e-3a1c1f2b5b6a", "delivery_mode": 2},
        })
        .to_string()
    }

    fn headers() -> Value {
        serde_json::json!({"lang": "py", "task": "tasks.add", "id": "0b7f1c36-32a6-4f3c-9a53-2fb0b28c3e4e",
                           "eta": "2026-12-06T10:00:00.123456+00:00", "expires": null, "retries": 2})
    }

    fn shape() -> Option<ArgumentShape> {
        Some(ArgumentShape::new(&["a", "b"], &["a", "b"]))
    }

    #[test]
    fn positional_and_keyword_arguments_map_onto_fields() {
        let body = serde_json::json!([[2], {"b": 3}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
        let payload = message(&body, headers());
        assert!(is_celery_message(&payload));
        let envelope = envelope_from_celery(&payload, "celery", Utc::now(), |_| shape()).unwrap();
        assert_eq!(envelope.task, "tasks.add");
        assert_eq!(
            envelope.id.to_string(),
            "0b7f1c36-32a6-4f3c-9a53-2fb0b28c3e4e"
        );
        let args: Value = serde_json::from_str(envelope.args.get()).unwrap();
        assert_eq!(args, serde_json::json!({"a": 2, "b": 3}));
        assert_eq!(envelope.attempt, 2);
        assert_eq!(
            envelope.eta.unwrap().to_rfc3339(),
            "2026-12-06T10:00:00.123456+00:00"
        );
        assert_eq!(envelope.headers[CELERY_HEADER], "2");
    }

    #[test]
    fn a_chain_continues_with_its_last_signature_and_the_output_first() {
        let steps = serde_json::json!([
            {"task": "third", "args": [], "kwargs": {}, "options": {}, "immutable": true},
            {"task": "second", "args": [4], "kwargs": {"c": 1}, "options": {"queue": "py", "task_id": "0b7f1c36-32a6-4f3c-9a53-2fb0b28c3e4e"}},
        ]);
        let body = serde_json::json!([[1, 2], {}, {"chain": steps}]);
        let envelope =
            envelope_from_celery(&message(&body, headers()), "celery", Utc::now(), |_| {
                shape()
            })
            .unwrap();
        let chain = &envelope.headers[CHAIN_HEADER];
        let (queue, next) = next_in_chain(chain, &serde_json::json!(3)).unwrap();
        assert_eq!(queue, "py");
        let next = envelope_from_celery(&next, &queue, Utc::now(), |_| {
            Some(ArgumentShape::new(&["a", "b", "c"], &[]))
        })
        .unwrap();
        assert_eq!(next.task, "second");
        assert_eq!(next.id.to_string(), "0b7f1c36-32a6-4f3c-9a53-2fb0b28c3e4e");
        let args: Value = serde_json::from_str(next.args.get()).unwrap();
        assert_eq!(args, serde_json::json!({"a": 3, "b": 4, "c": 1}));
        let (_, last) = next_in_chain(&next.headers[CHAIN_HEADER], &serde_json::json!(9)).unwrap();
        let last = envelope_from_celery(&last, "celery", Utc::now(), |_| None).unwrap();
        assert_eq!(last.task, "third");
        assert!(!last.headers.contains_key(CHAIN_HEADER), "the chain ends");
        assert_eq!(last.args.get(), "{}", "immutable: no output passed");
    }

    #[test]
    fn callbacks_are_sent_on_with_the_output_first() {
        let callbacks = serde_json::json!([
            {"task": "notify", "args": ["done"], "kwargs": {}, "options": {"queue": "py"}},
            {"task": "log", "args": [], "kwargs": {}, "options": {}, "immutable": true},
        ]);
        let body = serde_json::json!([[1, 2], {}, {"callbacks": callbacks}]);
        let envelope =
            envelope_from_celery(&message(&body, headers()), "celery", Utc::now(), |_| {
                shape()
            })
            .unwrap();
        let sent = follow_ups(&envelope.headers, &serde_json::json!(3)).unwrap();
        let read = |(queue, message): &(String, String)| {
            let next = envelope_from_celery(message, queue, Utc::now(), |_| {
                Some(ArgumentShape::new(&["output", "what"], &[]))
            })
            .unwrap();
            (queue.clone(), next.task, next.args.get().to_owned())
        };
        assert_eq!(
            sent.iter().map(read).collect::<Vec<_>>(),
            vec![
                (
                    "py".into(),
                    "notify".into(),
                    r#"{"output":3,"what":"done"}"#.into()
                ),
                ("celery".into(), "log".into(), "{}".into()),
            ]
        );
    }

    #[test]
    fn what_cannot_run_is_refused_naming_why() {
        let refused = |body: Value| {
            envelope_from_celery(&message(&body, headers()), "celery", Utc::now(), |_| {
                shape()
            })
            .unwrap_err()
        };
        let group = refused(
            serde_json::json!([[1, 2], {}, {"chain": [{"task": "celery.group", "subtask_type": "group"}]}]),
        );
        assert!(group.reason.contains("`chain` holds a group"), "{group}");
        let errbacks = refused(serde_json::json!([[1, 2], {}, {"errbacks": [{"task": "x"}]}]));
        assert!(errbacks.reason.contains("`errbacks`"), "{errbacks}");
        let chord = refused(serde_json::json!([[1, 2], {}, {"chord": {"task": "x"}}]));
        assert!(chord.reason.contains("`chord`"), "{chord}");
        assert_eq!(chord.task.as_deref(), Some("tasks.add"));
        assert!(chord.id.is_some());
        let many = refused(serde_json::json!([[1, 2, 3], {}, null]));
        assert!(
            many.reason.contains("takes 2 arguments (a, b), not 3"),
            "{many}"
        );
        let twice = refused(serde_json::json!([[1], {"a": 1}, null]));
        assert!(
            twice.reason.contains("both by position and by keyword"),
            "{twice}"
        );
        let pickled = message(&serde_json::json!([]), headers())
            .replace("application/json", "application/x-python-serialize");
        let pickled =
            envelope_from_celery(&pickled, "celery", Utc::now(), |_| shape()).unwrap_err();
        assert!(pickled.reason.contains("JSON serializer"), "{pickled}");
    }
}
