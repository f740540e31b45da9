//! Where "now" comes from, so that time-based behaviour is testable on tokio's paused clock.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A source of wall-clock instants.
///
/// [`Clock::system`] reads the host clock (what the Redis broker uses, since several hosts must
/// agree). [`Clock::monotonic`] anchors the wall clock once and then advances with tokio's
/// monotonic clock, which makes the in-memory broker immune to clock steps and lets tests drive
/// countdowns, expiry and backoff with `tokio::time::pause` and `advance`.
///
/// ```
/// use taskq_core::Clock;
/// let clock = Clock::system();
/// assert!(clock.now() <= chrono::Utc::now());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    anchor: Option<(DateTime<Utc>, Instant)>,
}

impl Clock {
    /// The host's wall clock.
    pub fn system() -> Self {
        Self { anchor: None }
    }

    /// The wall clock at creation, advanced by tokio's (pausable) monotonic clock since.
    pub fn monotonic() -> Self {
        Self {
            anchor: Some((Utc::now(), Instant::now())),
        }
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        match self.anchor {
            None => Utc::now(),
            Some((wall, mono)) => {
                let elapsed = Instant::now().saturating_duration_since(mono);
                wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
            }
        }
    }

    /// The tokio instant at which this clock will read `at` (now, if `at` has passed).
    pub fn instant_at(&self, at: DateTime<Utc>) -> Instant {
        let wait = (at - self.now()).to_std().unwrap_or_default();
        Instant::now() + wait
    }
}
