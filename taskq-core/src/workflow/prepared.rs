//! [`PreparedWorkflow`]: a workflow planned, sealed and signed but not written, for writers
//! the client does not own (the application's own database transaction).

use std::{sync::Arc, time::Duration};

use crate::{
    backend::ResultBackend,
    broker::{Broker, OutboundMessage},
    result::TaskResult,
};

use super::WorkflowRecord;

/// What sending a workflow writes, not yet written ([`Client::prepare_chain`],
/// [`Client::prepare_group`]): the records of the workflow and its groups (kept for
/// [`PreparedWorkflow::ttl`]), the messages of its first steps, and the final records of steps
/// that will never run; and the handle to give back once all is written.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use taskq_core::workflow::{Chain, Signature};
/// let client = taskq_core::Client::in_memory();
/// let steps = [Signature::by_name("a", serde_json::json!({})), Signature::by_name("b", serde_json::json!({}))];
/// let prepared = client.prepare_chain(Chain::<serde_json::Value>::of_signatures(steps)).await?;
/// assert_eq!((prepared.records().len(), prepared.messages().len()), (1, 1));
/// # Ok(()) }
/// ```
///
/// [`Client::prepare_chain`]: crate::Client::prepare_chain
/// [`Client::prepare_group`]: crate::Client::prepare_group
#[derive(Debug)]
#[must_use = "a prepared workflow does nothing until it is written"]
pub struct PreparedWorkflow<H> {
    pub(crate) records: Vec<WorkflowRecord>,
    pub(crate) messages: Vec<OutboundMessage>,
    pub(crate) ended: Vec<TaskResult>,
    pub(crate) ttl: Duration,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) backend: Arc<dyn ResultBackend>,
    pub(crate) handle: H,
}

impl<H> PreparedWorkflow<H> {
    /// The workflow's and its groups' records, written first.
    pub fn records(&self) -> &[WorkflowRecord] {
        &self.records
    }

    /// The messages of the steps that start at once.
    pub fn messages(&self) -> &[OutboundMessage] {
        &self.messages
    }

    /// Final records of steps that will never run, written last.
    pub fn ended(&self) -> &[TaskResult] {
        &self.ended
    }

    /// How long the records are kept (the client's workflow TTL).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The client's broker: the writer checks it is its own.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// The client's result backend: the writer checks it is its own.
    pub fn backend(&self) -> &Arc<dyn ResultBackend> {
        &self.backend
    }

    /// The workflow's handle, once everything above is written.
    pub fn into_handle(self) -> H {
        self.handle
    }
}
