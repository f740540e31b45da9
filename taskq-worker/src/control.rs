//! The worker's side of the control channel: answers pings, honours revocations, shuts down
//! when asked by name.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use futures_util::StreamExt;
use taskq_core::{ControlChannel, ControlMessage, WorkerId};
use tokio_util::sync::CancellationToken;

use crate::revocations::Revocations;

/// What the listener needs: where to listen and answer, who answers, what to revoke.
#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) channel: Arc<dyn ControlChannel>,
    pub(crate) worker: WorkerId,
    pub(crate) revocations: Arc<Revocations>,
    /// Time a task told to stop by a revocation gets before it is dropped.
    pub(crate) revoke_grace: Duration,
    /// Cancelled when an operator asks this worker to shut down (a warm shutdown).
    pub(crate) shutdown: CancellationToken,
}

/// Listens on the control channel until `stop` fires.
pub(crate) async fn listen(listener: Listener, stop: CancellationToken) {
    let Listener {
        channel,
        worker,
        revocations,
        revoke_grace,
        shutdown,
    } = listener;
    let mut messages = match channel.subscribe_control().await {
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
                    worker: worker.to_string(),
                    at: Utc::now(),
                };
                if let Err(err) = channel.broadcast(&pong).await {
                    tracing::warn!(error = %err, "could not answer a ping");
                }
            }
            ControlMessage::Revoke { id, terminate } => {
                tracing::info!(task.id = %id, terminate, "revoked");
                revocations.revoke(id, terminate, revoke_grace);
            }
            ControlMessage::Shutdown { worker: asked } if asked == worker.as_str() => {
                tracing::warn!("asked to shut down over the control channel; stopping warm");
                shutdown.cancel();
            }
            _ => {}
        }
    }
}
