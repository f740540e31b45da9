//! The worker's side of the control channel: answers pings, honours revocations.

use std::{collections::HashSet, sync::Arc};

use chrono::Utc;
use futures_util::StreamExt;
use taskq_core::{ControlMessage, TaskId};
use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;

/// Revoked ids and the cancellation handles of running executions.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    revoked: std::sync::Mutex<HashSet<TaskId>>,
    running: std::sync::Mutex<std::collections::HashMap<TaskId, RunTokens>>,
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
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// Replaces the local copy with the broker's persisted set (which expires entries).
    pub(crate) fn refresh(&self, ids: Vec<TaskId>) {
        *self.revoked.lock().unwrap_or_else(|p| p.into_inner()) = ids.into_iter().collect();
    }

    /// Revokes `id`; with `terminate`, signals a running execution at once and stops it after
    /// `grace`.
    fn revoke(&self, id: TaskId, terminate: bool, grace: std::time::Duration) {
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        if !terminate {
            return;
        }
        let tokens = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned();
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
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tokens.clone());
        tokens
    }

    pub(crate) fn finish(&self, id: &TaskId) {
        if let Some(tokens) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        {
            // Ends a pending grace timer.
            tokens.kill.cancel();
        }
    }
}

/// Listens on the control channel until `stop` fires.
pub(crate) async fn listen(runtime: Arc<Runtime>, stop: CancellationToken) {
    let broker = runtime.client.broker();
    let mut messages = match broker.subscribe_control().await {
        Ok(messages) => messages,
        Err(err) => {
            tracing::warn!(error = %err, "no control channel: revocations arrive with the next heartbeat, pings go unanswered");
            return;
        }
    };
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            message = messages.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        match message {
            ControlMessage::Ping { nonce } => {
                let pong = ControlMessage::Pong {
                    nonce,
                    worker: runtime.worker.to_string(),
                    at: Utc::now(),
                };
                if let Err(err) = broker.broadcast(&pong).await {
                    tracing::warn!(error = %err, "could not answer a ping");
                }
            }
            ControlMessage::Revoke { id, terminate } => {
                tracing::info!(task.id = %id, terminate, "revoked");
                runtime
                    .revocations
                    .revoke(id, terminate, runtime.config.revoke_grace);
            }
            _ => {}
        }
    }
}
