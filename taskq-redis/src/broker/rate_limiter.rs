//! The Redis broker's shared rate limiter: a GCRA in one script.

use std::time::Duration;

use async_trait::async_trait;
use taskq_core::{RateLimit, RateLimiter, Result};

use super::{millis, RedisBroker};
use crate::{error::redis_error, keys::QueueKeys, scripts};

#[async_trait]
impl RateLimiter for RedisBroker {
    async fn rate_limit(
        &self,
        queue: &str,
        task: &str,
        limit: RateLimit,
    ) -> Result<Option<Duration>> {
        let interval = u64::try_from(limit.interval().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let wait: u64 = scripts::RATE_LIMIT
            .key(QueueKeys::new(queue).rate(task))
            .arg(millis(self.now()))
            .arg(interval)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }
}
