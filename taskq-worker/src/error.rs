//! The worker reports errors in taskq-core's one error type, so that a program's `?` works the
//! same on the client, the worker and the beat; this file names the worker's own cases.

pub use taskq_core::{Error, Result};

/// A configuration that cannot work (no tasks, zero concurrency, no queues).
pub(crate) fn invalid_config(reason: impl Into<String>) -> Error {
    Error::Invalid {
        what: "worker configuration",
        reason: reason.into(),
    }
}

/// Two task types registered under one name.
pub(crate) fn duplicate_task(name: &str) -> Error {
    Error::Invalid {
        what: "task registration",
        reason: format!("task name `{name}` is registered twice"),
    }
}
