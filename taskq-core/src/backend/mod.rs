//! The [`ResultBackend`] trait: where task outcomes are stored and waited for.

mod memory;

pub use memory::MemoryResultBackend;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{
    context::ProgressStore,
    error::Result,
    id::TaskId,
    result::TaskResult,
    workflow::{GroupStatus, MemberOf, MemberOutcome, WorkflowRecord},
};

/// Default time a result is kept (24 hours).
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Stores [`TaskResult`]s by task id with a time to live and wakes waiters on writes.
///
/// Implementations: [`MemoryResultBackend`] and `taskq_redis::RedisResultBackend`.
#[async_trait]
pub trait ResultBackend: Send + Sync + std::fmt::Debug {
    /// Writes the record of `result.id`, kept for `ttl` after this write, unless the stored
    /// record's state may not become the new one ([`TaskState::may_become`]): results are
    /// monotonic, so a late write from a worker presumed dead changes nothing.
    ///
    /// [`TaskState::may_become`]: crate::TaskState::may_become
    async fn store(&self, result: &TaskResult, ttl: Duration) -> Result<()>;

    /// Writes several records; implementations batch them into one round trip.
    async fn store_many(&self, results: &[TaskResult], ttl: Duration) -> Result<()> {
        for result in results {
            self.store(result, ttl).await?;
        }
        Ok(())
    }

    /// Where the results of tasks this process sends are to be delivered, for a backend that
    /// delivers results to their sender instead of storing them where anyone can read them
    /// (RabbitMQ's reply queues); `None` (the default) for a store. The client writes it into
    /// every envelope it sends ([`REPLY_TO_HEADER`](crate::REPLY_TO_HEADER)).
    fn reply_to(&self) -> Option<&str> {
        None
    }

    /// The concrete backend, for extensions that work with one kind only (a workflow sent
    /// inside a database transaction writes its records into that database); `None` unless it
    /// opts in.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// The current record of `id`, or `None` if nothing is known (PENDING) or it expired.
    async fn get(&self, id: TaskId) -> Result<Option<TaskResult>>;

    /// The record Celery's result backend keeps for `id` (`celery-task-meta-<id>`), or the
    /// reply a Python Celery worker on `rpc://` sent this process, as the worker wrote it;
    /// `None` while there is none. Only backends that share a server with Celery's (Redis) or
    /// receive its replies (RabbitMQ's reply queue) can read it; others refuse.
    async fn celery_result(&self, id: TaskId) -> Result<Option<String>> {
        let _ = id;
        Err(crate::Error::Unsupported {
            feature: "Celery results",
            reason: "this result backend does not share a server with Celery's (Redis does) or receive its replies (RabbitMQ's `results=rpc` does)",
        })
    }

    /// Waits up to `timeout` for `id` to reach a final state, woken by the write (not by
    /// polling); returns the latest record either way.
    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskResult>>;

    /// Writes a workflow's or group's record, kept for `ttl` (outcomes already reported are
    /// kept).
    ///
    /// The default refuses: a backend without workflow support says so when one is sent.
    async fn put_workflow(&self, record: &WorkflowRecord, ttl: Duration) -> Result<()> {
        let _ = (record, ttl);
        Err(no_workflows())
    }

    /// The record of workflow or group `id`, if known.
    async fn workflow(&self, id: TaskId) -> Result<Option<WorkflowRecord>> {
        let _ = id;
        Ok(None)
    }

    /// Records how group members ended, one record per member (the first report of a member
    /// wins, so redelivered and duplicated members count once), and says per report what the
    /// group's state became. Atomic per report: of several workers reporting a group's last
    /// members at once, each sees [`GroupStatus::Complete`], and the next step's enqueue-once
    /// claim makes it run once.
    async fn report_members(
        &self,
        reports: &[(MemberOf, MemberOutcome)],
        ttl: Duration,
    ) -> Result<Vec<GroupStatus>> {
        let _ = (reports, ttl);
        Err(no_workflows())
    }
}

/// A running task's progress is a record like any other, kept by the same backend.
#[async_trait]
impl<B: ResultBackend + ?Sized> ProgressStore for Arc<B> {
    async fn store_progress(&self, record: &TaskResult, ttl: Duration) -> Result<()> {
        self.store(record, ttl).await
    }
}

fn no_workflows() -> crate::error::Error {
    crate::error::Error::Invalid {
        what: "result backend",
        reason: "this result backend does not store workflows (groups and chords)".into(),
    }
}

/// Compile-time check that [`ResultBackend`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn ResultBackend) {}
