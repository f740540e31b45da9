//! Backoff between attempts: exponential with a cap and full jitter.

use std::time::Duration;

/// Retries allowed after the first attempt when a task does not say (Celery's default).
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// How long to wait before attempt `n + 1` after attempt `n` failed.
///
/// The delay is drawn uniformly from `0..=min(cap, base * 2^n)` ("full jitter"), which spreads
/// a burst of failures out instead of retrying them in lockstep.
///
/// ```
/// use std::time::Duration;
/// use taskq_core::RetryPolicy;
/// let policy = RetryPolicy::exponential(Duration::from_secs(1), Duration::from_secs(60));
/// assert!(policy.delay(10) <= Duration::from_secs(60));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    base: Duration,
    cap: Duration,
}

impl RetryPolicy {
    /// Exponential backoff starting at `base`, never longer than `cap`.
    pub fn exponential(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
        }
    }

    /// The upper bound of the delay after `attempt` failed attempts' worth of doubling.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A jittered delay in `0..=ceiling(attempt)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(fastrand::u64(0..=ceiling))
    }
}

impl Default for RetryPolicy {
    /// 1 s doubling up to 10 minutes.
    fn default() -> Self {
        Self::exponential(Duration::from_secs(1), Duration::from_secs(600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_then_caps() {
        let policy = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(policy.ceiling(0), Duration::from_millis(100));
        assert_eq!(policy.ceiling(2), Duration::from_millis(400));
        assert_eq!(policy.ceiling(4), Duration::from_secs(1));
        assert_eq!(policy.ceiling(200), Duration::from_secs(1));
    }

    #[test]
    fn delay_stays_within_ceiling() {
        let policy = RetryPolicy::exponential(Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 0..10 {
            assert!(policy.delay(attempt) <= policy.ceiling(attempt));
        }
    }
}
