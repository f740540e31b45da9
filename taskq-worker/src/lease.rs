//! [`Lease`]: this worker's own view of its lease, so it starts nothing while it cannot be
//! sure it still holds one.

use std::time::Duration;

use parking_lot::Mutex;
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

/// When the last heartbeat that renewed the lease was sent, and how long a lease lasts.
///
/// The broker's deadline is at least `sent + ttl` (the heartbeat set it after it was sent), so
/// while `now < sent + ttl` the lease is certainly held. Past that, another worker's reaper may
/// be taking this worker's messages: a message started then would run twice.
#[derive(Debug)]
pub(crate) struct Lease {
    /// `None`: the broker needs no lease (it redelivers by itself), always fresh.
    renewed_at: Mutex<Option<Instant>>,
    ttl: Duration,
    needed: bool,
    renewed: Notify,
}

impl Lease {
    /// A lease lasting `ttl`, or none at all when `needed` is false.
    pub(crate) fn new(ttl: Duration, needed: bool) -> Self {
        Self {
            renewed_at: Mutex::new(None),
            ttl,
            needed,
            renewed: Notify::new(),
        }
    }

    /// Records a renewal by a heartbeat sent at `sent`.
    pub(crate) fn renewed(&self, sent: Instant) {
        let mut renewed_at = self.renewed_at.lock();
        if renewed_at.is_none_or(|at| at < sent) {
            *renewed_at = Some(sent);
        }
        drop(renewed_at);
        self.renewed.notify_waiters();
    }

    /// True while the lease is certainly held.
    pub(crate) fn is_fresh(&self) -> bool {
        !self.needed
            || self
                .renewed_at
                .lock()
                .is_some_and(|sent| Instant::now() < sent + self.ttl)
    }

    /// Waits until the lease is fresh; false when `stop` fires first.
    pub(crate) async fn wait_fresh(&self, stop: &CancellationToken) -> bool {
        loop {
            let renewed = self.renewed.notified();
            tokio::pin!(renewed);
            renewed.as_mut().enable();
            if self.is_fresh() {
                return true;
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = &mut renewed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fresh_until_the_ttl_after_the_last_renewal() {
        let lease = Lease::new(Duration::from_secs(5), true);
        assert!(!lease.is_fresh(), "no heartbeat yet");
        lease.renewed(Instant::now());
        assert!(lease.is_fresh());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!lease.is_fresh());
        assert!(
            Lease::new(Duration::ZERO, false).is_fresh(),
            "no lease needed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_ends_at_the_renewal_or_the_stop() {
        let lease = std::sync::Arc::new(Lease::new(Duration::from_secs(5), true));
        let stop = CancellationToken::new();
        let waiting = tokio::spawn({
            let (lease, stop) = (lease.clone(), stop.clone());
            async move { lease.wait_fresh(&stop).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        lease.renewed(Instant::now());
        assert!(waiting.await.unwrap());
        tokio::time::sleep(Duration::from_secs(6)).await;
        stop.cancel();
        assert!(!lease.wait_fresh(&stop).await);
    }
}
