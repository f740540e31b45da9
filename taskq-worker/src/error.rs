//! The worker crate's error type.

/// Why a worker could not be built or stopped running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot work (no tasks, zero concurrency, no queues).
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// Two task types were registered under one name.
    #[error("task name `{0}` is registered twice")]
    DuplicateTask(String),
    /// The broker or backend failed in a way the worker cannot ride out.
    #[error("broker failure")]
    Broker(#[from] taskq_core::Error),
}

/// `Result` with the worker's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
