//! The PostgreSQL broker's control channel: broadcasts by NOTIFY (every subscriber's LISTEN
//! connection receives them), revocations and worker reports in tables with expiry.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::StreamExt;
use taskq_core::{
    ControlChannel, ControlMessage, ControlStream, Error, Result, TaskId, WorkerInfo,
};
use tokio::sync::mpsc;

use super::{millis, PostgresBroker};
use crate::{error::pg_error, listen};

#[async_trait]
impl ControlChannel for PostgresBroker {
    async fn broadcast(&self, message: &ControlMessage) -> Result<()> {
        let body = serde_json::to_string(message).map_err(|source| Error::Serialize {
            what: "control message",
            source,
        })?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.names().control)
            .bind(body)
            .execute(self.pool())
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn subscribe_control(&self) -> Result<ControlStream> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handler: listen::Handler = Arc::new(move |payload: &str| {
            if let Ok(message) = serde_json::from_str::<ControlMessage>(payload) {
                let _ = tx.send(message);
            }
        });
        let listening = listen::spawn(
            self.pool().clone(),
            vec![(self.names().control.clone(), handler)],
        );
        // Listening before the stream is handed out: a broadcast right after is received.
        listening.ready().await;
        Ok(
            futures_util::stream::unfold((rx, listening), |(mut rx, listening)| async move {
                rx.recv().await.map(|message| (message, (rx, listening)))
            })
            .boxed(),
        )
    }

    async fn revoke(&self, id: TaskId, terminate: bool, ttl: Duration) -> Result<()> {
        sqlx::query(&self.names().fill(
            "INSERT INTO @s.revocations (id, until) VALUES ($1, now() + $2 * interval '1 millisecond')
             ON CONFLICT (id) DO UPDATE SET until = EXCLUDED.until",
        ))
        .bind(id.as_uuid())
        .bind(millis(ttl))
        .execute(self.pool())
        .await
        .map_err(pg_error)?;
        self.broadcast(&ControlMessage::Revoke { id, terminate })
            .await
    }

    async fn revoked(&self) -> Result<Vec<TaskId>> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(&self.names().fill(
            "WITH expired AS (DELETE FROM @s.revocations WHERE until <= now())
             SELECT id FROM @s.revocations WHERE until > now()",
        ))
        .fetch_all(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(ids.into_iter().map(TaskId::from_uuid).collect())
    }

    async fn publish_worker_info(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let body = serde_json::to_string(info).map_err(|source| Error::Serialize {
            what: "worker info",
            source,
        })?;
        sqlx::query(&self.names().fill(
            "WITH expired AS (DELETE FROM @s.worker_infos WHERE until <= now() AND id <> $1)
             INSERT INTO @s.worker_infos (id, info, until)
             VALUES ($1, $2, now() + $3 * interval '1 millisecond')
             ON CONFLICT (id) DO UPDATE SET info = EXCLUDED.info, until = EXCLUDED.until",
        ))
        .bind(&info.id)
        .bind(body)
        .bind(millis(ttl))
        .execute(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(())
    }
}
