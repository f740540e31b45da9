//! What a worker hands the workflow engine when a workflow's message ends: [`Finished`] and
//! its [`Ending`].

use serde_json::Value;

use super::Flow;
use crate::{id::TaskId, result::TaskState};

/// How a workflow member ended, as its worker saw it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Ending {
    /// It succeeded with this output (plain JSON, not sealed).
    Succeeded(Value),
    /// It ended in a final state other than SUCCESS.
    Ended {
        /// FAILURE, REVOKED or EXPIRED.
        state: TaskState,
        /// Why.
        error: String,
    },
}

/// One finished message whose workflow continues: what a worker hands to
/// [`Client::advance_workflows`](crate::Client::advance_workflows).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Finished {
    /// The finished task.
    pub id: TaskId,
    /// Its name.
    pub task: String,
    /// What its envelope carried.
    pub flow: Flow,
    /// How it ended.
    pub ending: Ending,
    /// The trace context its message carried (`traceparent`, `tracestate`), so that what
    /// follows it joins the same trace (feature `otel`); empty otherwise.
    pub trace: std::collections::BTreeMap<String, String>,
}

impl Finished {
    /// A finished message.
    pub fn new(id: TaskId, task: impl Into<String>, flow: Flow, ending: Ending) -> Self {
        Self {
            id,
            task: task.into(),
            flow,
            ending,
            trace: std::collections::BTreeMap::new(),
        }
    }

    /// The same, continuing the trace whose context `headers` (the finished message's) carry.
    #[must_use]
    pub fn with_trace(mut self, headers: &std::collections::BTreeMap<String, String>) -> Self {
        for key in ["traceparent", "tracestate"] {
            if let Some(value) = headers.get(key) {
                self.trace.insert(key.to_owned(), value.clone());
            }
        }
        self
    }
}
