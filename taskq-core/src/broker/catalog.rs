//! [`TaskCatalog`]: what each task declares, published by workers for producers that do not
//! link the task's type (the CLI, beat, other services).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{arguments::ArgumentShape, error::Result, task::TaskOptions};

/// The options a task declares with `#[task(...)]` that matter to whoever enqueues it by name:
/// where it goes, how often it is retried, how long it may wait and run.
///
/// ```
/// use std::time::Duration;
/// use taskq_core::{TaskDeclaration, TaskOptions};
/// let options = TaskOptions::new().with_queue("emails").with_max_retries(5);
/// let declared = TaskDeclaration::new("emails.send", &options);
/// assert_eq!((declared.queue.as_str(), declared.max_retries), ("emails", 5));
/// assert_eq!(declared.to_options().queue(), "emails");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskDeclaration {
    /// The task's wire name.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// Its default priority.
    #[serde(default)]
    pub priority: u8,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Time to live of an invocation, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// Hard time limit per attempt, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Soft time limit per attempt, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_timeout_ms: Option<u64>,
    /// Uniqueness window, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_for_ms: Option<u64>,
    /// The arguments' shape, when `#[derive(Task)]` could read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<ArgumentShape>,
    /// The argument field holding the partition key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_field: Option<String>,
    /// Most invocations of one partition running at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_concurrency: Option<u32>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl TaskDeclaration {
    /// The declaration of task `name` with `options`.
    pub fn new(name: impl Into<String>, options: &TaskOptions) -> Self {
        Self {
            name: name.into(),
            queue: options.queue().to_owned(),
            priority: options.priority(),
            max_retries: options.max_retries(),
            expires_ms: options.expires().map(millis),
            timeout_ms: options.timeout().map(millis),
            soft_timeout_ms: options.soft_timeout().map(millis),
            unique_for_ms: options.unique_for().map(millis),
            arguments: options.arguments().cloned(),
            partition_field: options.partition_field().map(str::to_owned),
            partition_concurrency: options.partition_concurrency(),
        }
    }

    /// The options a producer applies: queue, priority, retries, expiry, uniqueness, the
    /// partition and the time limits (those are enforced by the worker, which knows them anyway).
    pub fn to_options(&self) -> TaskOptions {
        let mut options = TaskOptions::new()
            .with_queue(self.queue.clone())
            .with_priority(self.priority)
            .with_max_retries(self.max_retries);
        if let Some(ms) = self.expires_ms {
            options = options.with_expires(Duration::from_millis(ms));
        }
        if let Some(ms) = self.timeout_ms {
            options = options.with_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.soft_timeout_ms {
            options = options.with_soft_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = self.unique_for_ms {
            options = options.with_unique_for(Duration::from_millis(ms));
        }
        if let Some(shape) = &self.arguments {
            options = options.with_arguments(shape.clone());
        }
        if let Some(field) = &self.partition_field {
            options = options.with_partition_field(field.clone());
        }
        if let Some(limit) = self.partition_concurrency {
            options = options.with_partition_concurrency(limit);
        }
        options
    }
}

/// Task declarations shared through the broker: every worker publishes what it registered at
/// start, and a producer enqueueing by name looks the name up, so `taskq enqueue emails.send`
/// goes to the `emails` queue with the retries the task declares. The latest publication of a
/// name wins; declarations stay until replaced (a task's options outlive its workers' restarts).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use taskq_core::{MemoryBroker, TaskCatalog, TaskDeclaration, TaskOptions};
/// let broker = MemoryBroker::new();
/// let declared = TaskDeclaration::new("emails.send", &TaskOptions::new().with_queue("emails"));
/// broker.publish_tasks(&[declared.clone()]).await?;
/// assert_eq!(broker.task_declaration("emails.send").await?, Some(declared));
/// assert_eq!(broker.task_declaration("nobody.knows").await?, None);
/// assert_eq!(broker.task_names().await?, ["emails.send"]);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait TaskCatalog: Send + Sync + std::fmt::Debug {
    /// Publishes (replaces) the declarations of these tasks.
    async fn publish_tasks(&self, declarations: &[TaskDeclaration]) -> Result<()>;

    /// The latest declaration of task `name`, if any worker published one.
    async fn task_declaration(&self, name: &str) -> Result<Option<TaskDeclaration>>;

    /// The names of every declared task, sorted: what a producer refusing an unknown name
    /// offers instead.
    async fn task_names(&self) -> Result<Vec<String>>;

    /// Whether this broker keeps declarations at all (RabbitMQ does not: its catalog is always
    /// empty, so an unknown name there proves nothing).
    fn keeps_catalog(&self) -> bool {
        true
    }
}

/// Compile-time check that [`TaskCatalog`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn TaskCatalog) {}
