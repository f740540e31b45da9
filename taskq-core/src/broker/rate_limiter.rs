//! [`RateLimiter`]: task starts admitted under a limit shared by every worker.

use std::time::Duration;

use async_trait::async_trait;

use crate::{error::Result, task::RateLimit};

/// Admits task starts under a limit shared by every worker of a deployment (a GCRA: one start
/// per `interval`, no bursts). It lives with the broker because the state must be shared by
/// every worker and the broker is the one thing they all reach.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use std::time::Duration;
/// use taskq_core::{MemoryBroker, RateLimit, RateLimiter};
/// let broker = MemoryBroker::new();
/// let limit = RateLimit::new(1, Duration::from_secs(1));
/// assert_eq!(broker.rate_limit("q", "t", limit).await?, None);
/// assert!(broker.rate_limit("q", "t", limit).await?.is_some(), "second start must wait");
/// # Ok(()) }
/// ```
#[async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Admits one start of `task` on `queue` under `limit`; returns `None` when admitted, or
    /// how long to wait before the next start may be admitted.
    async fn rate_limit(
        &self,
        queue: &str,
        task: &str,
        limit: RateLimit,
    ) -> Result<Option<Duration>>;

    /// Whether this broker can keep rate limits at all (false for RabbitMQ alone, which has no
    /// shared counter): a worker with a rate-limited task refuses to start on one that cannot,
    /// rather than postponing that task for ever.
    fn keeps_rate_limits(&self) -> bool {
        true
    }
}

/// Compile-time check that [`RateLimiter`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn RateLimiter) {}
