//! The beat crate's error types.

/// Why a schedule or a schedule file is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron expression does not parse.
    #[error("invalid cron expression `{expr}`: {reason}")]
    Cron {
        /// The expression as written.
        expr: String,
        /// What the parser said.
        reason: String,
    },
    /// Not an IANA time zone name.
    #[error("unknown time zone `{0}`")]
    TimeZone(String),
    /// An interval of zero or one that does not parse.
    #[error("invalid interval `{0}`: write it like \"30s\" or \"5m\"")]
    Interval(String),
}

/// Why a beat could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The schedule file is invalid; nothing was started.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong, naming the entry and line.
        message: String,
    },
    /// A coordination (lock, state) command failed.
    #[error("beat store failed")]
    Store(#[source] taskq_core::Error),
    /// The broker refused an enqueue.
    #[error("broker failed")]
    Broker(#[from] taskq_core::Error),
}

/// `Result` with the beat's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
