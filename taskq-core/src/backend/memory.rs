//! [`MemoryResultBackend`]: results in a map with a TTL, waiters woken by writes.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use tokio::{sync::Notify, time::Instant};

use super::ResultBackend;
use crate::{
    error::Result,
    id::TaskId,
    result::TaskResult,
    result::TaskState,
    workflow::{GroupStatus, MemberOf, MemberOutcome, WorkflowRecord},
};

/// The in-process result backend.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use taskq_core::{MemoryResultBackend, ResultBackend, TaskId, TaskResult, TaskState};
/// let backend = MemoryResultBackend::new();
/// let id = TaskId::new();
/// let record = TaskResult::new(id, "t", TaskState::Success, chrono::Utc::now());
/// backend.store(&record, std::time::Duration::from_secs(60)).await?;
/// assert_eq!(backend.get(id).await?.unwrap().state, TaskState::Success);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryResultBackend {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    results: HashMap<TaskId, (TaskResult, Instant), foldhash::fast::RandomState>,
    /// Expiry times in order; swept as they pass.
    expiry: BTreeSet<(Instant, TaskId)>,
    waiters: HashMap<TaskId, Arc<Notify>, foldhash::fast::RandomState>,
    /// Workflow and group records, with their members' outcomes.
    workflows: HashMap<TaskId, Workflow>,
    /// Expiry times of workflow records in order; swept as they pass.
    workflow_expiry: BTreeSet<(Instant, TaskId)>,
}

/// One workflow or group record and what its members reported.
#[derive(Debug)]
struct Workflow {
    record: WorkflowRecord,
    outcomes: std::collections::BTreeMap<u32, MemberOutcome>,
    failed: bool,
    expires: Instant,
}

impl MemoryResultBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock()
    }

    fn current(state: &State, id: TaskId) -> Option<TaskResult> {
        state
            .results
            .get(&id)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(result, _)| result.clone())
    }

    /// Drops a waiter entry nobody else holds any more.
    fn release_waiter(&self, id: TaskId, notify: &Arc<Notify>) {
        let mut state = self.lock();
        if Arc::strong_count(notify) <= 2 {
            state.waiters.remove(&id);
        }
    }
}

impl Default for MemoryResultBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl State {
    fn sweep(&mut self, now: Instant) {
        while let Some(&(expires, id)) = self.expiry.first() {
            if expires > now {
                break;
            }
            self.expiry.pop_first();
            if self.results.get(&id).is_some_and(|(_, e)| *e <= now) {
                self.results.remove(&id);
            }
        }
        while let Some(&(expires, id)) = self.workflow_expiry.first() {
            if expires > now {
                break;
            }
            self.workflow_expiry.pop_first();
            if self.workflows.get(&id).is_some_and(|w| w.expires <= now) {
                self.workflows.remove(&id);
            }
        }
    }
}

#[async_trait]
impl ResultBackend for MemoryResultBackend {
    async fn store(&self, result: &TaskResult, ttl: Duration) -> Result<()> {
        self.store_many(std::slice::from_ref(result), ttl).await
    }

    async fn store_many(&self, results: &[TaskResult], ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let expires = now + ttl;
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            state.sweep(now);
            for result in results {
                let kept = state
                    .results
                    .get(&result.id)
                    .is_some_and(|(old, _)| !old.state.may_become(result.state));
                if kept {
                    continue;
                }
                if let Some((_, old)) = state.results.insert(result.id, (result.clone(), expires)) {
                    state.expiry.remove(&(old, result.id));
                }
                state.expiry.insert((expires, result.id));
                if let Some(notify) = state.waiters.get(&result.id) {
                    wake.push(notify.clone());
                }
            }
        }
        for notify in wake {
            notify.notify_waiters();
        }
        Ok(())
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskResult>> {
        Ok(Self::current(&self.lock(), id))
    }

    async fn put_workflow(&self, record: &WorkflowRecord, ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let expires = now + ttl;
        let mut state = self.lock();
        state.sweep(now);
        let workflow = state
            .workflows
            .entry(record.id)
            .or_insert_with(|| Workflow {
                record: record.clone(),
                outcomes: Default::default(),
                failed: false,
                expires,
            });
        workflow.record = record.clone();
        let old = std::mem::replace(&mut workflow.expires, expires);
        state.workflow_expiry.remove(&(old, record.id));
        state.workflow_expiry.insert((expires, record.id));
        Ok(())
    }

    async fn workflow(&self, id: TaskId) -> Result<Option<WorkflowRecord>> {
        let now = Instant::now();
        Ok(self
            .lock()
            .workflows
            .get(&id)
            .filter(|w| w.expires > now)
            .map(|w| w.record.clone()))
    }

    async fn report_members(
        &self,
        reports: &[(MemberOf, MemberOutcome)],
        ttl: Duration,
    ) -> Result<Vec<GroupStatus>> {
        let now = Instant::now();
        let extended = now + ttl;
        let mut state = self.lock();
        let mut moved = Vec::new();
        let statuses = reports
            .iter()
            .map(|(member, outcome)| {
                let Some(workflow) = state
                    .workflows
                    .get_mut(&member.group)
                    .filter(|w| w.expires > now)
                else {
                    return GroupStatus::Waiting;
                };
                // A group lives at least as long as its reporting members' results.
                if workflow.expires < extended {
                    moved.push((workflow.expires, member.group));
                    workflow.expires = extended;
                }
                let first = !workflow.outcomes.contains_key(&member.index);
                if first {
                    workflow.outcomes.insert(member.index, outcome.clone());
                }
                if workflow.outcomes.len() >= member.of as usize {
                    let outcomes = workflow.outcomes.values().cloned().collect();
                    return GroupStatus::Complete(Box::new(workflow.record.clone()), outcomes);
                }
                if first && outcome.state != TaskState::Success && !workflow.failed {
                    workflow.failed = true;
                    return GroupStatus::Failed(
                        Box::new(workflow.record.clone()),
                        Box::new(outcome.clone()),
                    );
                }
                GroupStatus::Waiting
            })
            .collect();
        for (old, id) in moved {
            state.workflow_expiry.remove(&(old, id));
            state.workflow_expiry.insert((extended, id));
        }
        Ok(statuses)
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskResult>> {
        let deadline = Instant::now() + timeout;
        let notify = self.lock().waiters.entry(id).or_default().clone();
        let outcome = loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let current = Self::current(&self.lock(), id);
            if current.as_ref().is_some_and(|r| r.state.is_ready()) || Instant::now() >= deadline {
                break current;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        };
        self.release_waiter(id, &notify);
        Ok(outcome)
    }
}
