//! [`TaskId`]: the id of one task invocation, which results, workflows and dead letters are
//! keyed by.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The unique id of one task invocation; results are looked up by it.
///
/// ```
/// use taskq_core::TaskId;
/// let id = TaskId::new();
/// let parsed: TaskId = id.to_string().parse()?;
/// assert_eq!(id, parsed);
/// # Ok::<(), uuid::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(uuid::Uuid);

impl TaskId {
    /// A fresh random (v4) id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// Wraps an existing UUID, e.g. a deterministic one for idempotent enqueues.
    pub fn from_uuid(uuid: uuid::Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> &uuid::Uuid {
        &self.0
    }
}

impl Default for TaskId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s).map(Self)
    }
}
