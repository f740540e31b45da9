//! [`AsyncResult`]: a typed handle on one invocation's result, read from the result backend.

use std::{marker::PhantomData, sync::Arc, time::Duration};

use serde::de::DeserializeOwned;

use crate::{
    backend::ResultBackend,
    encryption::Encryption,
    error::{Error, Result},
    id::TaskId,
    result::{TaskResult, TaskState},
};

/// A typed handle on one invocation's result.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use std::time::Duration;
/// use taskq_core::{Client, TaskId, TaskState};
/// let client = Client::in_memory();
/// let handle = client.result_handle::<u64>(TaskId::new());
/// assert_eq!(handle.state().await?, TaskState::Pending);
/// assert!(handle.wait(Duration::from_millis(10)).await.unwrap_err().is_transient());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncResult<T> {
    id: TaskId,
    backend: Arc<dyn ResultBackend>,
    /// Opens sealed results.
    encryption: Option<Encryption>,
    _output: PhantomData<fn() -> T>,
}

impl<T> AsyncResult<T> {
    /// A handle on `id`'s record in `backend`, opened with `encryption` when sealed.
    pub(crate) fn new(
        id: TaskId,
        backend: Arc<dyn ResultBackend>,
        encryption: Option<Encryption>,
    ) -> Self {
        Self {
            id,
            backend,
            encryption,
            _output: PhantomData,
        }
    }
}

impl<T> Clone for AsyncResult<T> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            backend: self.backend.clone(),
            encryption: self.encryption.clone(),
            _output: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> AsyncResult<T> {
    /// The invocation's id.
    pub fn id(&self) -> TaskId {
        self.id
    }

    /// The current state; PENDING when nothing is recorded yet.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn state(&self) -> Result<TaskState> {
        Ok(self.info().await?.map_or(TaskState::Pending, |r| r.state))
    }

    /// The full stored record, if any.
    ///
    /// # Errors
    ///
    /// The backend's error.
    pub async fn info(&self) -> Result<Option<TaskResult>> {
        self.backend.get(self.id).await
    }

    /// Waits up to `timeout` for the final state, woken by the result write, and returns the
    /// typed output.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if no final state arrived in time, [`Error::TaskFailed`] for FAILURE,
    /// REVOKED or EXPIRED, [`Error::Deserialize`] if the output does not match `T`.
    pub async fn wait(&self, timeout: Duration) -> Result<T> {
        match self.backend.wait(self.id, timeout).await? {
            Some(record) if record.state.is_ready() => self.output_of(record),
            _ => Err(Error::Timeout(timeout)),
        }
    }

    fn output_of(&self, record: TaskResult) -> Result<T> {
        if record.state != TaskState::Success {
            return Err(Error::TaskFailed {
                id: self.id,
                state: record.state,
                message: record.error.unwrap_or_default(),
            });
        }
        let raw = record.result.as_deref().map_or("null", |r| r.get());
        let opened;
        let raw = match Encryption::sealed_text(raw) {
            Some(sealed) => {
                let keys = self.encryption.as_ref().ok_or_else(|| Error::Invalid {
                    what: "task result",
                    reason: "the result is encrypted; give the client the keys (Client::with_encryption)".into(),
                })?;
                opened = keys
                    .open(&sealed, &Encryption::associated(self.id, &record.task))
                    .map_err(|err| Error::Invalid {
                        what: "task result",
                        reason: err.to_string(),
                    })?;
                opened.as_str()
            }
            None => raw,
        };
        serde_json::from_str(raw).map_err(|source| Error::Deserialize {
            what: "task result",
            source,
        })
    }
}
