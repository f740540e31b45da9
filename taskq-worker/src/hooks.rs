//! User callbacks on task outcomes (for alerts and bookkeeping). A failing or panicking hook is
//! logged and never affects the task or the worker.

use std::{fmt, panic::AssertUnwindSafe, sync::Arc};

use taskq_core::{DeadReason, TaskId};

/// What a hook is told about one outcome.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TaskEvent<'a> {
    /// The invocation (unknown for a message that could not be read).
    pub id: Option<TaskId>,
    /// Registered task name.
    pub task: &'a str,
    /// Queue it came from.
    pub queue: &'a str,
    /// Failed attempts before this one (0 on the first run).
    pub attempt: u32,
    /// The error, for failures, retries and dead letters.
    pub error: Option<&'a str>,
    /// Why it was dead-lettered, for dead letters.
    pub reason: Option<DeadReason>,
}

/// Errors a hook may return; they are logged.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

type Hook = Arc<dyn Fn(&TaskEvent<'_>) -> Result<(), HookError> + Send + Sync>;

/// Which outcome a hook listens to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum On {
    Success,
    Failure,
    Retry,
    DeadLetter,
}

/// Registered hooks per outcome.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    hooks: Vec<(On, Hook)>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("count", &self.hooks.len())
            .finish()
    }
}

impl Hooks {
    pub(crate) fn add(
        &mut self,
        on: On,
        hook: impl Fn(&TaskEvent<'_>) -> Result<(), HookError> + Send + Sync + 'static,
    ) {
        self.hooks.push((on, Arc::new(hook)));
    }

    /// Calls every hook for `on`; errors and panics are logged.
    pub(crate) fn fire(&self, on: On, event: &TaskEvent<'_>) {
        for (kind, hook) in &self.hooks {
            if *kind != on {
                continue;
            }
            match std::panic::catch_unwind(AssertUnwindSafe(|| hook(event))) {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::warn!(error = %err, hook = ?on, "hook failed"),
                Err(_) => tracing::warn!(hook = ?on, "hook panicked"),
            }
        }
    }
}
