//! The worker's one way of insisting on a broker call: retry with capped exponential backoff
//! and jitter (a [`RetryPolicy`]) while the error is transient, give up on an error a retry
//! cannot fix, or when told to stop.

use std::{future::Future, time::Duration};

use taskq_core::{error_chain, RetryPolicy};
use tokio_util::sync::CancellationToken;

/// Backoff between failed broker calls: 50 ms doubling up to 5 s, full jitter.
pub(crate) fn broker_backoff() -> RetryPolicy {
    RetryPolicy::exponential(Duration::from_millis(50), Duration::from_secs(5))
}

/// Consecutive failures of one loop and the delay each earns.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// The delay after one more failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.policy.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Forgets the failures after a success.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

/// Why [`insist_or_error`] gave up.
#[derive(Debug)]
pub(crate) enum Abandoned {
    /// Shutdown's grace period ended first.
    Stopped,
    /// The error cannot pass by retrying.
    Refused(taskq_core::Error),
    /// A single try ([`Patience::Once`]) failed with an error that may pass.
    Unavailable(taskq_core::Error),
}

/// How long a call goes on trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Patience {
    /// Until it succeeds, a retry cannot help, or shutdown's grace ends ([`insist_or_error`]).
    Insist,
    /// One try: whoever calls does something else on a transient error.
    Once,
}

/// Calls `op` with `patience`.
pub(crate) async fn call_with<T, F, Fut>(
    what: &str,
    stop: &CancellationToken,
    patience: Patience,
    mut op: F,
) -> Result<T, Abandoned>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = taskq_core::Result<T>>,
{
    match patience {
        Patience::Insist => insist_or_error(what, stop, op).await,
        Patience::Once => op().await.map_err(|err| {
            if err.is_transient() {
                Abandoned::Unavailable(err)
            } else {
                tracing::error!(error = %error_chain(&err), "{what} failed and cannot succeed by retrying");
                Abandoned::Refused(err)
            }
        }),
    }
}

/// Calls `op` until it succeeds, so that a broker outage delays a message's transition instead
/// of stranding it. Returns `None` when the error is not transient (a retry cannot fix it) or
/// when `stop` fires first; the message then stays where the broker has it, and the reaper (or
/// the server's redelivery) brings it back.
pub(crate) async fn insist<T, F, Fut>(what: &str, stop: &CancellationToken, op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = taskq_core::Result<T>>,
{
    insist_or_error(what, stop, op).await.ok()
}

/// [`insist`], saying why it gave up, for callers that do something else then.
pub(crate) async fn insist_or_error<T, F, Fut>(
    what: &str,
    stop: &CancellationToken,
    mut op: F,
) -> Result<T, Abandoned>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = taskq_core::Result<T>>,
{
    let mut backoff = Backoff::new(broker_backoff());
    loop {
        let err = match op().await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        if !err.is_transient() {
            tracing::error!(error = %error_chain(&err), "{what} failed and cannot succeed by retrying");
            return Err(Abandoned::Refused(err));
        }
        let delay = backoff.next_delay();
        tracing::warn!(error = %error_chain(&err), ?delay, failures = backoff.failures(), "{what} failed; retrying");
        tokio::select! {
            _ = stop.cancelled() => {
                tracing::error!("{what} abandoned at shutdown; the message will be recovered");
                return Err(Abandoned::Stopped);
            }
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use taskq_core::Error;

    use super::*;

    fn transient() -> Error {
        Error::QueueFull {
            queue: "q".into(),
            capacity: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let calls = AtomicU32::new(0);
        let got = insist("op", &CancellationToken::new(), || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0..=2 => Err(transient()),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(got, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_first_error_a_retry_cannot_fix() {
        let calls = AtomicU32::new(0);
        let got: Option<()> = insist("op", &CancellationToken::new(), || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(Error::Invalid {
                what: "thing",
                reason: "bad".into(),
            })
        })
        .await;
        assert_eq!((got, calls.load(Ordering::Relaxed)), (None, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_told_to_stop() {
        let stop = CancellationToken::new();
        stop.cancel();
        let got: Option<()> = insist("op", &stop, || async { Err(transient()) }).await;
        assert_eq!(got, None);
    }

    #[test]
    fn backoff_grows_and_resets() {
        let mut backoff = Backoff::new(broker_backoff());
        for _ in 0..10 {
            assert!(backoff.next_delay() <= Duration::from_secs(5));
        }
        assert_eq!(backoff.failures(), 10);
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
    }
}
