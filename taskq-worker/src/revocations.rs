//! [`Revocations`]: the ids this worker must not run, and the signals that stop a running one.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use taskq_core::TaskId;
use tokio_util::sync::CancellationToken;

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
        self.revoked.lock().contains(id)
    }

    /// Replaces the local copy with the broker's persisted set (which expires entries).
    pub(crate) fn refresh(&self, ids: Vec<TaskId>) {
        *self.revoked.lock() = ids.into_iter().collect();
    }

    /// Revokes `id`; with `terminate`, signals a running execution at once and stops it after
    /// `grace`.
    pub(crate) fn revoke(&self, id: TaskId, terminate: bool, grace: std::time::Duration) {
        self.revoked.lock().insert(id);
        if !terminate {
            return;
        }
        let tokens = self.running.lock().get(&id).cloned();
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
        self.running.lock().insert(id, tokens.clone());
        tokens
    }

    pub(crate) fn finish(&self, id: &TaskId) {
        if let Some(tokens) = self.running.lock().remove(id) {
            // Ends a pending grace timer.
            tokens.kill.cancel();
        }
    }
}
