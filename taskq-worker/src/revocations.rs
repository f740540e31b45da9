//! [`Revocations`]: the ids this worker must not run, and the signals that stop a running one.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, MutexGuard},
};

use taskq_core::TaskId;
use tokio_util::sync::CancellationToken;

/// Locks `mutex`, recovering the data if a holder panicked: every critical section here
/// replaces or updates one entry whole, so the data is consistent either way.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Revoked ids and the cancellation handles of running executions.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    revoked: Mutex<HashSet<TaskId>>,
    running: Mutex<HashMap<TaskId, RunTokens>>,
}

/// The signals of one running execution.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunTokens {
    /// The task's own cancellation signal (soft limit, revocation): it may clean up.
    pub(crate) soft: CancellationToken,
    /// Stops the run: its future is dropped.
    pub(crate) kill: CancellationToken,
}

impl Revocations {
    pub(crate) fn is_revoked(&self, id: &TaskId) -> bool {
        lock(&self.revoked).contains(id)
    }

    /// Replaces the local copy with the broker's persisted set (which expires entries).
    pub(crate) fn refresh(&self, ids: Vec<TaskId>) {
        *lock(&self.revoked) = ids.into_iter().collect();
    }

    /// Revokes `id`; with `terminate`, signals a running execution at once and stops it after
    /// `grace`.
    pub(crate) fn revoke(&self, id: TaskId, terminate: bool, grace: std::time::Duration) {
        lock(&self.revoked).insert(id);
        if !terminate {
            return;
        }
        let tokens = lock(&self.running).get(&id).cloned();
        if let Some(tokens) = tokens {
            tokens.soft.cancel();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokens.kill.cancelled() => {}
                    _ = tokio::time::sleep(grace) => tokens.kill.cancel(),
                }
            });
        }
    }

    /// Registers a running execution and returns its signals.
    pub(crate) fn start(&self, id: TaskId) -> RunTokens {
        let tokens = RunTokens::default();
        lock(&self.running).insert(id, tokens.clone());
        tokens
    }

    pub(crate) fn finish(&self, id: &TaskId) {
        if let Some(tokens) = lock(&self.running).remove(id) {
            // Ends a pending grace timer.
            tokens.kill.cancel();
        }
    }
}
