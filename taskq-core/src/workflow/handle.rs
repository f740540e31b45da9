//! Handles on sent workflows: [`ChainResult`] (the last step's output) and [`GroupResult`]
//! (every member's output, in order).

use std::time::Duration;

use futures_util::future::join_all;
use serde::de::DeserializeOwned;

use crate::{
    error::Error, error::Result, id::TaskId, result::TaskState, result_handle::AsyncResult,
};

/// A sent chain (or chord): wait for its last step's output.
#[derive(Debug)]
pub struct ChainResult<O> {
    pub(crate) id: TaskId,
    pub(crate) last: AsyncResult<O>,
}

impl<O: DeserializeOwned> ChainResult<O> {
    /// The workflow's id (a chord's is its group's): `taskq result <id>` shows its steps, and
    /// [`Client::revoke_workflow`](crate::Client::revoke_workflow) takes it.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The handle of the last step.
    pub fn last(&self) -> &AsyncResult<O> {
        &self.last
    }

    /// Waits up to `timeout` for the last step's output. A step that failed ends every step
    /// after it as FAILURE naming it, so this returns [`Error::TaskFailed`] saying which.
    ///
    /// # Errors
    ///
    /// As [`AsyncResult::wait`].
    pub async fn wait(&self, timeout: Duration) -> Result<O> {
        self.last.wait(timeout).await
    }
}

/// A sent group: wait for every member's output, in member order.
#[derive(Debug)]
pub struct GroupResult<O> {
    pub(crate) id: TaskId,
    pub(crate) members: Vec<AsyncResult<O>>,
}

impl<O: DeserializeOwned> GroupResult<O> {
    /// The group's id: `taskq result <id>` shows its members' states.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The members' handles (for a member that is a chain, its last step's), in order.
    pub fn members(&self) -> &[AsyncResult<O>] {
        &self.members
    }

    /// Waits up to `timeout` for every member and returns each outcome, in order.
    ///
    /// # Errors
    ///
    /// Only the backend's own errors; each member's failure or timeout is in its slot.
    pub async fn wait_all(&self, timeout: Duration) -> Vec<Result<O>> {
        join_all(self.members.iter().map(|member| member.wait(timeout))).await
    }

    /// Waits up to `timeout` for every member's output, in order.
    ///
    /// # Errors
    ///
    /// [`Error::GroupFailed`] naming every member that did not succeed (and how many did),
    /// [`Error::Timeout`] when some member has not finished in time, or the backend's error.
    pub async fn wait(&self, timeout: Duration) -> Result<Vec<O>> {
        let outcomes = self.wait_all(timeout).await;
        let total = outcomes.len();
        let mut outputs = Vec::with_capacity(total);
        let mut failed = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok(output) => outputs.push(output),
                Err(Error::TaskFailed { id, state, message }) => failed.push((id, state, message)),
                Err(other) => return Err(other),
            }
        }
        if failed.is_empty() {
            return Ok(outputs);
        }
        Err(Error::GroupFailed {
            id: self.id,
            succeeded: total - failed.len(),
            failed,
        })
    }

    /// The members' current states, in order (read all at once).
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn states(&self) -> Result<Vec<TaskState>> {
        let reads = self.members.iter().map(|member| member.state());
        futures_util::future::try_join_all(reads).await
    }
}
