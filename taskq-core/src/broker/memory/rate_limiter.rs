//! The memory broker's in-process rate limiter.

use std::time::Duration;

use async_trait::async_trait;

use super::MemoryBroker;
use crate::{broker::RateLimiter, error::Result};

#[async_trait]
impl RateLimiter for MemoryBroker {
    async fn rate_limit(
        &self,
        queue: &str,
        task: &str,
        limit: crate::task::RateLimit,
    ) -> Result<Option<Duration>> {
        let now = self.shared.clock.now();
        let interval =
            chrono::Duration::from_std(limit.interval()).unwrap_or(chrono::Duration::MAX);
        let mut state = self.lock();
        let tat = state
            .queues
            .entry(queue.to_owned())
            .or_default()
            .rates
            .entry(task.to_owned())
            .or_insert(now);
        if *tat > now {
            return Ok(Some((*tat - now).to_std().unwrap_or_default()));
        }
        *tat = now + interval;
        Ok(None)
    }
}
