//! What RabbitMQ alone cannot hold: uniqueness claims, global rate limits and the task
//! catalog need a shared store with atomic compare-and-set (Redis). Without one, those calls
//! fail with an error that says so, and the catalog is empty (by-name enqueues take the
//! defaults), rather than pretending.

use std::time::Duration;

use async_trait::async_trait;
use taskq_core::{Error, RateLimit, RateLimiter, Result, TaskCatalog, TaskDeclaration};

use super::AmqpBroker;

/// The error of a feature that needs a shared store.
pub(crate) fn needs_a_store(what: &'static str) -> Error {
    Error::Invalid {
        what,
        reason: "the RabbitMQ broker keeps no shared state: this needs the Redis broker \
                 (see docs/amqp.md, \"What needs Redis\")"
            .to_owned(),
    }
}

#[async_trait]
impl RateLimiter for AmqpBroker {
    async fn rate_limit(
        &self,
        _queue: &str,
        _task: &str,
        _limit: RateLimit,
    ) -> Result<Option<Duration>> {
        Err(needs_a_store("global rate limit"))
    }

    fn keeps_rate_limits(&self) -> bool {
        false
    }
}

#[async_trait]
impl TaskCatalog for AmqpBroker {
    async fn publish_tasks(&self, _declarations: &[TaskDeclaration]) -> Result<()> {
        Ok(())
    }

    async fn task_declaration(&self, _name: &str) -> Result<Option<TaskDeclaration>> {
        Ok(None)
    }

    async fn task_names(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn keeps_catalog(&self) -> bool {
        false
    }
}
