//! [`Revocations`]: the ids this worker must not run, and the signals that stop a running one.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use parking_lot::Mutex;
use taskq_core::{CancelReason, TaskId};
use tokio_util::sync::CancellationToken;

/// Revoked ids and the cancellation handles of running executions.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    revoked: Mutex<HashSet<TaskId, foldhash::fast::RandomState>>,
    /// Shared with the run (an `Arc` clone is one atomic increment; a token clone locks it).
    running: Mutex<HashMap<TaskId, Arc<RunTokens>, foldhash::fast::RandomState>>,
}

/// The signals of one running execution.
#[derive(Debug, Default)]
pub(crate) struct RunTokens {
    /// The task's own cancellation signal (soft limit, revocation): it may clean up.
    pub(crate) soft: CancellationToken,
    /// Stops the run: its future is dropped.
    pub(crate) kill: CancellationToken,
    /// Why `soft` fired, set before it fires (the task reads it from its context).
    pub(crate) reason: Arc<std::sync::OnceLock<CancelReason>>,
}

impl RunTokens {
    /// Signals the run, saying why (the first reason given stays).
    pub(crate) fn signal(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.soft.cancel();
    }
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
            tokens.signal(CancelReason::Revoked);
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokens.kill.cancelled() => {}
                    _ = tokio::time::sleep(grace) => tokens.kill.cancel(),
                }
            });
        }
    }

    /// Registers a running execution and returns its signals.
    pub(crate) fn start(&self, id: TaskId) -> Arc<RunTokens> {
        let tokens = Arc::new(RunTokens::default());
        self.running.lock().insert(id, tokens.clone());
        tokens
    }

    pub(crate) fn finish(&self, id: &TaskId) {
        let tokens = self.running.lock().remove(id);
        // A grace timer runs only after a termination signalled the run (`soft`); end it.
        // Otherwise there is nothing to wake, and cancelling would lock the token for nothing.
        if let Some(tokens) = tokens.filter(|tokens| tokens.soft.is_cancelled()) {
            tokens.kill.cancel();
        }
    }
}
