//! The PostgreSQL broker's shared rate limits: the generic cell rate algorithm in one
//! function call on the database's clock, so every worker sees the same spacing.

use std::time::Duration;

use async_trait::async_trait;
use taskq_core::{RateLimit, RateLimiter, Result};

use super::PostgresBroker;
use crate::error::pg_error;

#[async_trait]
impl RateLimiter for PostgresBroker {
    async fn rate_limit(
        &self,
        queue: &str,
        task: &str,
        limit: RateLimit,
    ) -> Result<Option<Duration>> {
        let interval_us = i64::try_from(limit.interval().as_micros()).unwrap_or(i64::MAX);
        let wait: Option<i64> = sqlx::query_scalar(&self.shared.sql.rate_limit)
            .bind(queue)
            .bind(task)
            .bind(interval_us)
            .fetch_one(self.pool())
            .await
            .map_err(pg_error)?;
        Ok(wait.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or_default())))
    }
}
