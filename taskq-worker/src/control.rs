//! The worker's side of the control channel: answers pings, honours revocations.

use std::{collections::HashSet, sync::Arc};

use chrono::Utc;
use taskq_core::{ControlMessage, TaskId};
use tokio_util::sync::CancellationToken;

use crate::runtime::Runtime;

/// Revoked ids and the cancellation handles of running executions.
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    revoked: std::sync::Mutex<HashSet<TaskId>>,
    running: std::sync::Mutex<std::collections::HashMap<TaskId, CancellationToken>>,
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

    fn revoke(&self, id: TaskId, terminate: bool) {
        self.revoked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id);
        if terminate {
            if let Some(token) = self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&id)
            {
                token.cancel();
            }
        }
    }

    /// Registers a running execution; the token fires if it is revoked with `terminate`.
    pub(crate) fn start(&self, id: TaskId) -> CancellationToken {
        let token = CancellationToken::new();
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, token.clone());
        token
    }

    pub(crate) fn finish(&self, id: &TaskId) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
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
            message = messages.recv() => match message {
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
                runtime.revocations.revoke(id, terminate);
            }
            _ => {}
        }
    }
}
