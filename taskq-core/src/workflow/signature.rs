//! [`Signature`]: one task call prepared but not sent, the unit workflows are built of; and
//! [`Step`], what a task that receives its predecessor's output declares.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{error::Error, error::Result, id::TaskId, priority::Priority, task::Run};

/// A task that can follow another in a workflow: its field [`Step::INPUT_FIELD`] receives the
/// predecessor's output, of type [`Step::Input`].
///
/// Derive it by marking the field with `#[task(input)]`; the value the producer puts there is
/// a placeholder, replaced when the step is sent. Chaining a step after a task whose output is
/// not its `Input` does not compile.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use taskq_core::{workflow::Step, Run, Task, TaskContext, TaskError};
///
/// #[derive(Task, Serialize, Deserialize)]
/// #[task(name = "math.sum")]
/// struct Sum { #[task(input)] values: Vec<i64>, offset: i64 }
///
/// impl Run for Sum {
///     type Output = i64;
///     async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
///         Ok(self.values.iter().sum::<i64>() + self.offset)
///     }
/// }
///
/// assert_eq!(<Sum as Step>::INPUT_FIELD, "values");
/// ```
pub trait Step: Run {
    /// What the predecessor produces.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// The argument field (as serialized) the predecessor's output goes into.
    const INPUT_FIELD: &'static str;
}

/// One task call of a workflow, prepared but not sent: the task's name and arguments, where
/// its input goes, where it is routed, and the callbacks it fires.
///
/// Typed signatures come from [`Signature::of`] (the task's declared options apply), untyped
/// ones from [`Signature::by_name`] (the options a worker declared for the name are looked up
/// when the workflow is sent). Ids are assigned when the signature is made, so a workflow's
/// every id is known before anything runs.
///
/// ```
/// use taskq_core::workflow::Signature;
/// let step = Signature::by_name("reports.render", serde_json::json!({"format": "pdf"}))
///     .input("rows")
///     .queue("reports")
///     .priority(5);
/// assert_eq!(step.task, "reports.render");
/// assert_eq!(step.input.as_deref(), Some("rows"));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Signature {
    /// The id this call runs under.
    pub id: TaskId,
    /// Registered task name.
    pub task: String,
    /// Arguments, without the input (which is added when the step is sent).
    pub args: serde_json::Value,
    /// The argument field that receives the predecessor's output; `None` when the step ignores
    /// it (Celery's immutable signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Queue; `None` until resolved from the task's declaration (then `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Priority 0..=9; `None` takes the declared one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Retries allowed; `None` takes the declared (or the worker's) setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Headers the task reads from its context.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Sent with this task's output as input when it succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<Signature>,
    /// Sent with a [`Failed`](super::Failed) as input when it ends without success.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Signature>,
    /// True once the task's declared options were applied (typed, or looked up).
    #[serde(skip)]
    pub(crate) resolved: bool,
}

impl Signature {
    /// A call of task `T` with `task` as arguments and `T`'s declared options; the input field,
    /// if `T` is a [`Step`], is set with [`Signature::step`] instead.
    ///
    /// # Errors
    ///
    /// [`Error::Serialize`] when the arguments do not encode as JSON.
    pub fn of<T: Run>(task: &T) -> Result<Self> {
        let args = serde_json::to_value(task).map_err(|source| Error::Serialize {
            what: "task arguments",
            source,
        })?;
        let options = T::options();
        let mut signature = Self::by_name(T::NAME, args);
        signature.queue = Some(options.queue().to_owned());
        signature.priority = Some(options.priority());
        signature.max_retries = Some(options.max_retries());
        signature.resolved = true;
        Ok(signature)
    }

    /// A call of step `T`, whose input field receives the predecessor's output.
    ///
    /// # Errors
    ///
    /// As [`Signature::of`].
    pub fn step<T: Step>(task: &T) -> Result<Self> {
        Ok(Self::of(task)?.input(T::INPUT_FIELD))
    }

    /// A call of the task named `task` with JSON `args`, for producers that do not link the
    /// task's type.
    pub fn by_name(task: impl Into<String>, args: serde_json::Value) -> Self {
        Self {
            id: TaskId::new(),
            task: task.into(),
            args,
            input: None,
            queue: None,
            priority: None,
            max_retries: None,
            headers: BTreeMap::new(),
            on_success: Vec::new(),
            on_failure: Vec::new(),
            resolved: false,
        }
    }

    /// Puts the predecessor's output into argument field `field` (the arguments must be a JSON
    /// object, or null).
    pub fn input(mut self, field: impl Into<String>) -> Self {
        self.input = Some(field.into());
        self
    }

    /// Routes the call to `queue`.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Priority 0 (lowest) to 9; larger values are clamped.
    pub fn priority(mut self, priority: impl Into<Priority>) -> Self {
        self.priority = Some(priority.into().get());
        self
    }

    /// Allows `max_retries` retries.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// Runs under `id` instead of a fresh one.
    pub fn id(mut self, id: TaskId) -> Self {
        self.id = id;
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Sends `callback` with this call's output as input when it succeeds.
    pub fn on_success(mut self, callback: Signature) -> Self {
        self.on_success.push(callback);
        self
    }

    /// Sends `callback` with a [`Failed`](super::Failed) as input when this call ends as
    /// FAILURE, REVOKED or EXPIRED (after its retries, and including dead letters).
    pub fn on_failure(mut self, callback: Signature) -> Self {
        self.on_failure.push(callback);
        self
    }

    /// The arguments this call runs with, given its predecessor's output.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when the call takes an input and its arguments are not an object.
    pub fn args_with(&self, input: Option<&serde_json::Value>) -> Result<serde_json::Value> {
        let (Some(field), Some(input)) = (&self.input, input) else {
            return Ok(self.args.clone());
        };
        let mut args = match &self.args {
            serde_json::Value::Null => serde_json::Map::new(),
            serde_json::Value::Object(map) => map.clone(),
            _ => {
                return Err(Error::Invalid {
                    what: "workflow step",
                    reason: format!(
                        "`{}` takes its input in field `{field}`, so its arguments must be a JSON object",
                        self.task
                    ),
                })
            }
        };
        args.insert(field.clone(), input.clone());
        Ok(serde_json::Value::Object(args))
    }

    /// Seals the arguments (and those of its callbacks) with `keys`, bound to its id and task
    /// as a task's sealed arguments are: a workflow's later steps and callbacks then travel
    /// sealed in its envelopes' `flow` and in group records. Opened again, with the input
    /// merged in, when the step's envelope is built ([`Signature::opened`]).
    pub(crate) fn seal_args(&mut self, keys: &crate::encryption::Encryption) {
        if crate::encryption::Encryption::sealed_text(&self.args.to_string()).is_none() {
            let associated = crate::encryption::Encryption::associated(self.id, &self.task);
            self.args = serde_json::Value::String(keys.seal(&self.args.to_string(), &associated));
        }
        for callback in self.on_success.iter_mut().chain(&mut self.on_failure) {
            callback.seal_args(keys);
        }
    }

    /// This call with its arguments opened, when they were sealed ([`Signature::seal_args`]);
    /// `None` when they are plain.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when they are sealed and `keys` are missing or do not open them.
    pub(crate) fn opened(
        &self,
        keys: Option<&crate::encryption::Encryption>,
    ) -> Result<Option<Self>> {
        let serde_json::Value::String(text) = &self.args else {
            return Ok(None);
        };
        if !text.starts_with("taskq-enc:") {
            return Ok(None);
        }
        let invalid = |reason: String| Error::Invalid {
            what: "workflow step",
            reason,
        };
        let keys = keys.ok_or_else(|| {
            invalid(format!(
                "the arguments of `{}` are encrypted and this client has no encryption keys",
                self.task
            ))
        })?;
        let opened = keys
            .open(
                text,
                &crate::encryption::Encryption::associated(self.id, &self.task),
            )
            .map_err(|err| invalid(format!("the arguments of `{}`: {err}", self.task)))?;
        let args = serde_json::from_str(&opened).map_err(|_| {
            invalid(format!(
                "the opened arguments of `{}` are not JSON",
                self.task
            ))
        })?;
        Ok(Some(Self {
            args,
            ..self.clone()
        }))
    }

    /// Checks what can be checked before sending: names, and arguments that can take an
    /// input.
    pub(crate) fn validate(&self) -> Result<()> {
        crate::names::check_name("task name", &self.task)?;
        if let Some(queue) = &self.queue {
            crate::names::check_name("queue", queue)?;
        }
        if self.input.is_some() {
            self.args_with(Some(&serde_json::Value::Null))?;
        }
        for callback in self.on_success.iter().chain(&self.on_failure) {
            callback.validate()?;
        }
        Ok(())
    }
}
