//! The Redis broker's control channel: pub/sub on `taskq:control`, revocations in a ZSET.

use std::{sync::atomic::Ordering, time::Duration};

use async_trait::async_trait;
use futures_util::StreamExt;
use taskq_core::{
    ControlChannel, ControlMessage, ControlStream, Error, Result, TaskId, WorkerInfo,
};

use super::{millis, RedisBroker};
use crate::{error::redis_error, keys};

/// Publications of a process between two prunes of the registry of workers.
const PRUNE_WORKERS_EVERY: u64 = 6;

impl RedisBroker {
    /// Writes a worker's record, then its registry entry: one round trip on one server, two on
    /// a cluster (different slots).
    async fn record_then_registry(
        &self,
        record: impl FnOnce(&mut redis::Pipeline),
        registry: impl FnOnce(&mut redis::Pipeline),
    ) -> Result<()> {
        let mut pipe = redis::pipe();
        record(&mut pipe);
        if self.shared.server.is_cluster() {
            pipe.query_async::<()>(&mut self.conn())
                .await
                .map_err(redis_error)?;
            pipe = redis::pipe();
        }
        registry(&mut pipe);
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }
}

#[async_trait]
impl ControlChannel for RedisBroker {
    async fn publish_worker_info(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let json = serde_json::to_string(info).map_err(|source| Error::Serialize {
            what: "worker info",
            source,
        })?;
        let ttl_ms = i64::try_from(ttl.as_millis())
            .unwrap_or(i64::MAX / 2)
            .max(1);
        let now = millis(self.now());
        // Entries of workers long gone would pile up, one per worker start; any publisher's
        // prune serves all, so each makes one now and then.
        let published = self.shared.publications.fetch_add(1, Ordering::Relaxed);
        let prune = published.is_multiple_of(PRUNE_WORKERS_EVERY);
        let registry = |pipe: &mut redis::Pipeline| {
            pipe.zadd(keys::WORKERS, &info.id, now + ttl_ms).ignore();
            if prune {
                pipe.cmd("ZREMRANGEBYSCORE")
                    .arg(keys::WORKERS)
                    .arg("-inf")
                    .arg(format!("({now}"))
                    .ignore();
            }
        };
        let record = |pipe: &mut redis::Pipeline| {
            pipe.cmd("SET")
                .arg(keys::worker_info(&info.id))
                .arg(json)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        };
        self.record_then_registry(record, registry).await
    }

    async fn withdraw_worker_info(&self, info: &WorkerInfo) -> Result<()> {
        self.record_then_registry(
            |pipe| {
                pipe.del(keys::worker_info(&info.id)).ignore();
            },
            |pipe| {
                pipe.zrem(keys::WORKERS, &info.id).ignore();
            },
        )
        .await
    }

    async fn revoke(&self, id: TaskId, terminate: bool, ttl: Duration) -> Result<()> {
        let until = millis(self.now()) + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let message =
            serde_json::to_string(&ControlMessage::Revoke { id, terminate }).map_err(|source| {
                Error::Serialize {
                    what: "control message",
                    source,
                }
            })?;
        // Persisted first (workers starting later read it), then announced; two commands,
        // as the set and the channel live in different slots on a cluster.
        redis::cmd("ZADD")
            .arg(keys::REVOKED)
            .arg(until)
            .arg(id.to_string())
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)?;
        redis::cmd("PUBLISH")
            .arg(keys::CONTROL)
            .arg(message)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn revoked(&self) -> Result<Vec<TaskId>> {
        let now = millis(self.now());
        let (ids,): (Vec<String>,) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(keys::REVOKED)
            .arg("-inf")
            .arg(now)
            .ignore()
            .cmd("ZRANGE")
            .arg(keys::REVOKED)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    async fn broadcast(&self, message: &ControlMessage) -> Result<()> {
        let json = serde_json::to_string(message).map_err(|source| Error::Serialize {
            what: "control message",
            source,
        })?;
        redis::cmd("PUBLISH")
            .arg(keys::CONTROL)
            .arg(json)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(redis_error)
    }

    async fn subscribe_control(&self) -> Result<ControlStream> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut pubsub = self.shared.server.pubsub().await.map_err(redis_error)?;
        pubsub.subscribe(keys::CONTROL).await.map_err(redis_error)?;
        tokio::spawn(forward_control(self.shared.server.clone(), pubsub, tx));
        Ok(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|message| (message, rx))
        })
        .boxed())
    }
}

/// Forwards control messages into `tx` until its receiver is dropped, reconnecting (and
/// resubscribing) with backoff when the connection is lost.
async fn forward_control(
    server: crate::server::Server,
    mut pubsub: redis::aio::PubSub,
    tx: tokio::sync::mpsc::UnboundedSender<ControlMessage>,
) {
    loop {
        {
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    message = messages.next() => match message {
                        None => break,
                        Some(message) => {
                            let parsed = message
                                .get_payload::<String>()
                                .ok()
                                .and_then(|p| serde_json::from_str::<ControlMessage>(&p).ok());
                            match parsed {
                                Some(parsed) => {
                                    if tx.send(parsed).is_err() {
                                        return;
                                    }
                                }
                                None => tracing::warn!("ignoring an unreadable control message"),
                            }
                        }
                    },
                }
            }
        }
        tracing::warn!("control channel connection lost; reconnecting");
        let mut failures = 0;
        pubsub = loop {
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(crate::conn::reconnect_backoff().delay(failures)).await;
            failures += 1;
            let Ok(mut fresh) = server.pubsub().await else {
                continue;
            };
            if fresh.subscribe(keys::CONTROL).await.is_ok() {
                break fresh;
            }
        };
    }
}
