//! The beat reports errors in taskq-core's one error type, so that a program's `?` works the
//! same on the client, the worker and the beat; [`ScheduleError`] says why one schedule value
//! does not parse, and converts.

pub use taskq_core::{Error, Result};

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

/// A schedule value that does not parse is invalid input like any other to a program's `?`.
impl From<ScheduleError> for Error {
    fn from(err: ScheduleError) -> Self {
        Error::Invalid {
            what: "schedule",
            reason: err.to_string(),
        }
    }
}

/// A schedule file (or a list of entries) that cannot work: `path` and what is wrong with it.
pub(crate) fn invalid_schedule_file(path: &str, message: impl std::fmt::Display) -> Error {
    Error::Invalid {
        what: "beat schedule",
        reason: format!("{path}: {message}"),
    }
}
