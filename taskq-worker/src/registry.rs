//! The registry: task name -> how to decode its arguments and run it.

use std::{collections::HashMap, fmt, sync::Arc};

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use taskq_core::{Run, TaskContext, TaskDeclaration, TaskError, TaskOptions};

use crate::Result;

/// A started run: resolves to the JSON-encoded output or the task's error.
pub(crate) type RunFuture = BoxFuture<'static, Result<Box<RawValue>, TaskError>>;

type StartFn = dyn Fn(&RawValue, TaskContext) -> Result<RunFuture, serde_json::Error> + Send + Sync;

/// One registered task type.
pub(crate) struct Registered {
    pub(crate) options: TaskOptions,
    start: Box<StartFn>,
}

impl Registered {
    /// Decodes `args` and starts the run; a decode error means the message can never run.
    pub(crate) fn start(
        &self,
        args: &RawValue,
        ctx: TaskContext,
    ) -> Result<RunFuture, serde_json::Error> {
        (self.start)(args, ctx)
    }
}

impl fmt::Debug for Registered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registered")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Task name -> handler, built once before the worker starts and shared read-only.
#[derive(Debug, Default, Clone)]
pub(crate) struct Registry {
    tasks: HashMap<&'static str, Arc<Registered>>,
}

impl Registry {
    pub(crate) fn register<T: Run>(&mut self) -> Result<()> {
        let start = |args: &RawValue, ctx: TaskContext| -> Result<RunFuture, serde_json::Error> {
            let task: T = serde_json::from_str(args.get())?;
            Ok(Box::pin(async move {
                let output = task.run(ctx).await?;
                serde_json::value::to_raw_value(&output).map_err(|err| {
                    TaskError::permanent(format!("failed to serialize the output: {err}"))
                })
            }))
        };
        let registered = Registered {
            options: T::options(),
            start: Box::new(start),
        };
        if self.tasks.insert(T::NAME, Arc::new(registered)).is_some() {
            return Err(crate::error::duplicate_task(T::NAME));
        }
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Registered>> {
        self.tasks.get(name)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The names of the registered tasks that declare a rate limit, sorted.
    pub(crate) fn rate_limited(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self
            .tasks
            .iter()
            .filter(|(_, task)| {
                task.options.rate_limit().is_some() || task.options.partition_rate_limit().is_some()
            })
            .map(|(name, _)| *name)
            .collect();
        names.sort_unstable();
        names
    }

    /// What each registered task declares, sorted by name, for the broker's task catalog.
    pub(crate) fn declarations(&self) -> Vec<TaskDeclaration> {
        let mut declared: Vec<_> = self
            .tasks
            .iter()
            .map(|(name, task)| TaskDeclaration::new(*name, &task.options))
            .collect();
        declared.sort_by(|a, b| a.name.cmp(&b.name));
        declared
    }

    /// The default queues of all registered tasks, sorted and deduplicated.
    pub(crate) fn default_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self
            .tasks
            .values()
            .map(|t| t.options.queue().to_owned())
            .collect();
        queues.sort();
        queues.dedup();
        queues
    }
}
