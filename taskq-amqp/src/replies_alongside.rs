//! [`RepliesAlongside`]: a shared result store that also answers the reply queue a task names,
//! so that a producer on `?results=rpc` still gets its results from workers whose results go
//! to Redis or PostgreSQL (mixed settings in one deployment would otherwise end in the
//! producer's timeout, with no word on either side).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use taskq_core::{
    workflow::{GroupStatus, MemberOf, MemberOutcome, WorkflowRecord},
    Result, ResultBackend, TaskId, TaskResult,
};

use crate::{link::Link, replies, AmqpBroker};

/// `inner` for everything, and every result whose task named a reply queue published there
/// too. `taskq::connect` builds it for `amqp://…?results=redis://…` (and `postgres://…`,
/// `memory`).
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use std::sync::Arc;
/// use taskq_amqp::{AmqpBroker, AmqpConfig, RepliesAlongside};
/// let broker = AmqpBroker::connect(AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")).await?;
/// let shared = Arc::new(taskq_core::MemoryResultBackend::new()); // Redis in practice
/// let results = RepliesAlongside::new(&broker, shared);
/// let client = taskq_core::Client::new(Arc::new(broker), Arc::new(results));
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RepliesAlongside {
    inner: Arc<dyn ResultBackend>,
    link: Arc<Link>,
}

impl RepliesAlongside {
    /// `inner`, answering reply queues through `broker`'s connection.
    pub fn new(broker: &AmqpBroker, inner: Arc<dyn ResultBackend>) -> Self {
        Self {
            inner,
            link: broker.link_arc(),
        }
    }

    /// Publishes the records that name a reply queue; a failure is logged, not returned: the
    /// result is stored, and a reply queue is a notification whose sender may be gone.
    async fn answer(&self, results: &[TaskResult], ttl: Duration) {
        let answers: Vec<_> = results
            .iter()
            .filter_map(|record| replies::reply(record, ttl))
            .collect();
        if answers.is_empty() {
            return;
        }
        if let Err(err) = self.link.publish(answers).await {
            tracing::warn!(error = %err, "could not answer a reply queue (the result is stored)");
        }
    }
}

#[async_trait]
impl ResultBackend for RepliesAlongside {
    async fn store(&self, result: &TaskResult, ttl: Duration) -> Result<()> {
        self.store_many(std::slice::from_ref(result), ttl).await
    }

    async fn store_many(&self, results: &[TaskResult], ttl: Duration) -> Result<()> {
        self.inner.store_many(results, ttl).await?;
        self.answer(results, ttl).await;
        Ok(())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        self.inner.as_any()
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskResult>> {
        self.inner.get(id).await
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskResult>> {
        self.inner.wait(id, timeout).await
    }

    async fn celery_result(&self, id: TaskId) -> Result<Option<String>> {
        self.inner.celery_result(id).await
    }

    async fn put_workflow(&self, record: &WorkflowRecord, ttl: Duration) -> Result<()> {
        self.inner.put_workflow(record, ttl).await
    }

    async fn workflow(&self, id: TaskId) -> Result<Option<WorkflowRecord>> {
        self.inner.workflow(id).await
    }

    async fn report_members(
        &self,
        reports: &[(MemberOf, MemberOutcome)],
        ttl: Duration,
    ) -> Result<Vec<GroupStatus>> {
        self.inner.report_members(reports, ttl).await
    }
}
