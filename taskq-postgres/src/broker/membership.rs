//! The PostgreSQL broker's worker leases and reaper ([`Membership`]): leases per (worker,
//! queue) on the database's clock; recovery claims an expired lease by deleting it, in the
//! same transaction that puts the worker's messages back, so it happens once.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use taskq_core::{Membership, RecoveryReport, Result, TaskId, WorkerId, LOST_WORKERS_KEPT};

use super::{millis, PostgresBroker};
use crate::error::{lease_error, pg_error};

#[async_trait]
impl Membership for PostgresBroker {
    async fn heartbeat(&self, worker: &WorkerId, queues: &[String], ttl: Duration) -> Result<()> {
        sqlx::query(&self.shared.sql.heartbeat)
            .bind(worker.as_str())
            .bind(queues)
            .bind(millis(ttl))
            .execute(self.pool())
            .await
            .map_err(|err| lease_error(err, worker.as_str()))?;
        Ok(())
    }

    async fn recover_lost_workers(
        &self,
        queues: &[String],
        max_redeliveries: u32,
    ) -> Result<RecoveryReport> {
        let (records, bytes) = self.config().dead_caps();
        let rows = sqlx::query(&self.shared.sql.recover)
            .bind(queues)
            .bind(i32::try_from(max_redeliveries).unwrap_or(i32::MAX))
            .bind(records)
            .bind(bytes)
            .fetch_all(self.pool())
            .await
            .map_err(pg_error)?;
        let mut report = RecoveryReport::default();
        for row in rows {
            let worker: String = row.try_get(0).map_err(pg_error)?;
            let outcome: String = row.try_get(1).map_err(pg_error)?;
            match outcome.as_str() {
                "lost" => {
                    let worker = WorkerId::from_string(worker);
                    if !report.workers.contains(&worker) {
                        report.workers.push(worker);
                    }
                }
                "requeued" => report.requeued += 1,
                _ => {
                    report.dead_lettered += 1;
                    let id: Option<uuid::Uuid> = row.try_get(2).map_err(pg_error)?;
                    let payload: Option<String> = row.try_get(3).map_err(pg_error)?;
                    if let (Some(id), Some(payload)) = (id, payload) {
                        report.poisoned.push((TaskId::from_uuid(id), payload));
                    }
                }
            }
        }
        Ok(report)
    }

    async fn deregister(&self, worker: &WorkerId, queues: &[String]) -> Result<()> {
        sqlx::query(&self.names().fill("SELECT @s.deregister($1, $2)"))
            .bind(worker.as_str())
            .bind(queues)
            .execute(self.pool())
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn record_lost(&self, workers: &[WorkerId], at: DateTime<Utc>) -> Result<()> {
        let ids: Vec<&str> = workers.iter().map(WorkerId::as_str).collect();
        sqlx::query(&self.names().fill(
            "WITH added AS (
                 INSERT INTO @s.lost_workers (id, lost_at, info)
                 SELECT w.id, $2, (SELECT info FROM @s.worker_infos i WHERE i.id = w.id)
                 FROM unnest($1::text[]) WITH ORDINALITY AS w(id, ord)
                 ORDER BY w.ord
             )
             DELETE FROM @s.lost_workers
             WHERE seq <= (SELECT max(seq) FROM @s.lost_workers) - $3",
        ))
        .bind(ids)
        .bind(at)
        .bind(i64::try_from(LOST_WORKERS_KEPT).unwrap_or(i64::MAX) - 1)
        .execute(self.pool())
        .await
        .map_err(pg_error)?;
        Ok(())
    }
}
