//! The memory broker's control channel: in-process subscribers.

use std::time::Duration;
use tokio::sync::mpsc;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::MemoryBroker;
use crate::{
    broker::{ControlChannel, ControlMessage, ControlStream, WorkerInfo},
    error::Result,
    id::TaskId,
};

#[async_trait]
impl ControlChannel for MemoryBroker {
    async fn publish_worker_info(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let until = self.shared.clock.now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.lock()
            .infos
            .insert(info.id.clone(), (info.clone(), until));
        Ok(())
    }

    async fn revoke(&self, id: TaskId, terminate: bool, ttl: Duration) -> Result<()> {
        let until = self.shared.clock.now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        self.lock().revoked.insert(id, until);
        self.broadcast(&ControlMessage::Revoke { id, terminate })
            .await
    }

    async fn revoked(&self) -> Result<Vec<TaskId>> {
        let now = self.shared.clock.now();
        let mut state = self.lock();
        state.revoked.retain(|_, until| *until > now);
        Ok(state.revoked.keys().copied().collect())
    }

    async fn broadcast(&self, message: &ControlMessage) -> Result<()> {
        let mut subscribers = self.shared.control.lock();
        subscribers.retain(|tx| tx.send(message.clone()).is_ok());
        Ok(())
    }

    async fn subscribe_control(&self) -> Result<ControlStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.control.lock().push(tx);
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|message| (message, rx))
        })
        .boxed())
    }
}
