//! [`Entry`]: one periodic task: what to enqueue and when.

use std::{collections::BTreeMap, fmt, time::Duration};

use crate::{CatchUp, Schedule};

/// One periodic task: its schedule, the task to enqueue by name, and enqueue options.
///
/// ```
/// use std::time::Duration;
/// use taskq_beat::{CatchUp, Entry, Every};
/// let entry = Entry::new("tick", "demo.add", Every::new(Duration::from_secs(5))?)
///     .with_args(serde_json::json!({"a": 1, "b": 2}))
///     .with_queue("periodic")
///     .with_catch_up(CatchUp::Skip);
/// assert_eq!(entry.name(), "tick");
/// # Ok::<(), taskq_beat::ScheduleError>(())
/// ```
pub struct Entry {
    pub(crate) name: String,
    pub(crate) task: String,
    pub(crate) args: serde_json::Value,
    pub(crate) schedule: Box<dyn Schedule>,
    pub(crate) queue: Option<String>,
    pub(crate) priority: Option<u8>,
    pub(crate) expires: Option<Duration>,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) catch_up: CatchUp,
}

impl Entry {
    /// An entry named `name` (unique across the schedule) enqueueing task `task` with `{}`
    /// arguments on `schedule`.
    pub fn new(
        name: impl Into<String>,
        task: impl Into<String>,
        schedule: impl Schedule + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            task: task.into(),
            args: serde_json::json!({}),
            schedule: Box::new(schedule),
            queue: None,
            priority: None,
            expires: None,
            headers: BTreeMap::new(),
            catch_up: CatchUp::default(),
        }
    }

    /// Sets the task's JSON arguments.
    pub fn with_args(mut self, args: serde_json::Value) -> Self {
        self.args = args;
        self
    }

    /// Routes fires to `queue`.
    pub fn with_queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Sets the priority (0..=9) of fires.
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority.min(9));
        self
    }

    /// Fires not started within `expires` of their slot end as EXPIRED.
    pub fn with_expires(mut self, expires: Duration) -> Self {
        self.expires = Some(expires);
        self
    }

    /// Adds a header to every fire.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(key.into(), value.into());
        self
    }

    /// Sets the catch-up policy after downtime.
    pub fn with_catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// The entry's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The task it enqueues.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// Its schedule.
    pub fn schedule(&self) -> &dyn Schedule {
        self.schedule.as_ref()
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("name", &self.name)
            .field("task", &self.task)
            .field("schedule", &self.schedule)
            .field("catch_up", &self.catch_up)
            .finish_non_exhaustive()
    }
}
