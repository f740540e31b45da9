//! [`TaskError`]: why an attempt failed, and whether another attempt should follow.

use std::{fmt, time::Duration};

/// Why an attempt failed, and whether another attempt should follow.
///
/// Any `std::error::Error` converts into a *retryable* `TaskError` through `?`, because most
/// failures in background work (timeouts, lost connections) are transient. Use
/// [`TaskError::permanent`] for failures that no retry will fix.
///
/// ```
/// use std::time::Duration;
/// use taskq_core::TaskError;
/// let err = TaskError::permanent("no such user");
/// assert!(!err.is_retryable());
/// let err = TaskError::retry_after(Duration::from_secs(30), "rate limited");
/// assert_eq!(err.retry_delay(), Some(Duration::from_secs(30)));
/// ```
#[derive(Clone, Debug)]
pub struct TaskError {
    retryable: bool,
    retry_after: Option<Duration>,
    message: String,
}

impl TaskError {
    /// A failure that may succeed on a later attempt (backoff from the retry policy).
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self {
            retryable: true,
            retry_after: None,
            message: message.to_string(),
        }
    }

    /// A failure no retry will fix: the task ends as FAILURE at once.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self {
            retryable: false,
            retry_after: None,
            message: message.to_string(),
        }
    }

    /// A retryable failure whose next attempt should wait exactly `delay`.
    pub fn retry_after(delay: Duration, message: impl fmt::Display) -> Self {
        Self {
            retryable: true,
            retry_after: Some(delay),
            message: message.to_string(),
        }
    }

    /// True when another attempt may follow (if retries are left).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The delay the task asked for, overriding the retry policy.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for TaskError {
    fn from(err: E) -> Self {
        Self::retryable(crate::error::error_chain(&err))
    }
}
