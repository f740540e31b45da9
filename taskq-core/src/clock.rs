//! Where "now" comes from, so that time-based behaviour agrees across hosts and is testable on
//! tokio's paused clock.

use std::sync::{
    atomic::{AtomicI64, Ordering},
    Arc,
};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A source of wall-clock instants: a base (the host clock, or one that follows tokio's
/// monotonic clock) plus a shift.
///
/// [`Clock::system`] reads the host clock. [`Clock::monotonic`] anchors the wall clock once and
/// then advances with tokio's monotonic clock, which makes the in-memory broker immune to clock
/// steps and lets tests drive countdowns, expiry and backoff with `tokio::time::pause` and
/// `advance`. A networked broker whose workers run on many hosts corrects its host clock by the
/// offset it measured against the server ([`Clock::corrected`]), so that every deadline, due
/// time and slot is decided by one clock. [`Clock::skewed`] shifts a clock by a fixed amount, to
/// test a host whose clock is off.
///
/// ```
/// use taskq_core::Clock;
/// let clock = Clock::system();
/// assert!(clock.now() <= chrono::Utc::now());
/// let ahead = Clock::system().skewed(chrono::Duration::seconds(30));
/// assert!(ahead.now() > chrono::Utc::now() + chrono::Duration::seconds(29));
/// ```
#[derive(Clone, Debug)]
pub struct Clock {
    anchor: Option<(DateTime<Utc>, Instant)>,
    /// Fixed shift, ms (a simulated skew).
    skew_ms: i64,
    /// Shared correction, ms, updated by whoever measures it (a broker against its server).
    correction: Option<Arc<AtomicI64>>,
}

impl Clock {
    /// The host's wall clock.
    pub fn system() -> Self {
        Self {
            anchor: None,
            skew_ms: 0,
            correction: None,
        }
    }

    /// The wall clock at creation, advanced by tokio's (pausable) monotonic clock since.
    pub fn monotonic() -> Self {
        Self {
            anchor: Some((Utc::now(), Instant::now())),
            skew_ms: 0,
            correction: None,
        }
    }

    /// This clock shifted by `skew` (positive: ahead), as a host whose clock is off would read.
    pub fn skewed(mut self, skew: chrono::Duration) -> Self {
        self.skew_ms = self.skew_ms.saturating_add(skew.num_milliseconds());
        self
    }

    /// This clock plus `correction` milliseconds, read at every call: the correction may be
    /// re-measured while clocks made from it are in use.
    ///
    /// ```
    /// use std::sync::{atomic::{AtomicI64, Ordering}, Arc};
    /// use taskq_core::Clock;
    /// let correction = Arc::new(AtomicI64::new(0));
    /// let host = Clock::system().skewed(chrono::Duration::seconds(-30));
    /// let server = host.clone().corrected(correction.clone());
    /// correction.store(30_000, Ordering::Relaxed);     // measured: the host is 30 s behind
    /// let error = server.now() - chrono::Utc::now();
    /// assert!(error.num_milliseconds().abs() < 1_000);
    /// ```
    pub fn corrected(mut self, correction: Arc<AtomicI64>) -> Self {
        self.correction = Some(correction);
        self
    }

    /// The current instant.
    pub fn now(&self) -> DateTime<Utc> {
        let base = match self.anchor {
            None => Utc::now(),
            Some((wall, mono)) => {
                let elapsed = Instant::now().saturating_duration_since(mono);
                wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
            }
        };
        let shift = self.skew_ms.saturating_add(
            self.correction
                .as_ref()
                .map_or(0, |correction| correction.load(Ordering::Relaxed)),
        );
        if shift == 0 {
            return base;
        }
        base + chrono::Duration::milliseconds(shift)
    }

    /// The tokio instant at which this clock will read `at` (now, if `at` has passed).
    pub fn instant_at(&self, at: DateTime<Utc>) -> Instant {
        let wait = (at - self.now()).to_std().unwrap_or_default();
        Instant::now() + wait
    }
}
