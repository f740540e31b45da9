//! [`RedisBeatStore`]: the beat's leader lock and last fires in Redis.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use taskq_core::{BeatStatus, BeatStore, Error, Result};

use crate::{error::redis_error, keys, scripts, server::Server, RedisConfig};

/// Redis store: `SET NX PX` lock with an owner token, extended and released by owner-checking
/// scripts; last fires in a hash.
#[derive(Clone)]
pub struct RedisBeatStore {
    conn: crate::conn::Conn,
}

impl std::fmt::Debug for RedisBeatStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBeatStore").finish_non_exhaustive()
    }
}

impl RedisBeatStore {
    /// Connects to the Redis described by `config` (the same URL forms as the broker, TLS
    /// included).
    ///
    /// # Errors
    ///
    /// [`taskq_core::Error::Invalid`] for a bad URL, [`taskq_core::Error::Broker`] when Redis is
    /// unreachable.
    pub async fn connect(config: &RedisConfig) -> Result<Self> {
        let conn = Server::of(config)?
            .connect(config.response_timeout())
            .await?;
        Ok(Self { conn })
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl BeatStore for RedisBeatStore {
    async fn try_acquire(&self, owner: &str, ttl: Duration) -> Result<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(keys::BEAT_LEADER)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(set.is_some())
    }

    async fn extend(&self, owner: &str, ttl: Duration) -> Result<bool> {
        let extended: i64 = scripts::EXTEND_LOCK
            .key(keys::BEAT_LEADER)
            .arg(owner)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(extended == 1)
    }

    async fn release(&self, owner: &str) -> Result<()> {
        let _: i64 = scripts::RELEASE_LOCK
            .key(keys::BEAT_LEADER)
            .arg(owner)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn last_fire(&self, entry: &str) -> Result<Option<DateTime<Utc>>> {
        let ms: Option<i64> = redis::cmd("HGET")
            .arg(keys::BEAT_LAST_FIRE)
            .arg(entry)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()))
    }

    async fn set_last_fire(&self, entry: &str, slot: DateTime<Utc>) -> Result<()> {
        let _: i64 = scripts::SET_LAST_FIRE
            .key(keys::BEAT_LAST_FIRE)
            .arg(entry)
            .arg(slot.timestamp_millis())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    async fn publish_status(&self, status: &BeatStatus, ttl: Duration) -> Result<()> {
        let json = serde_json::to_string(status).map_err(|source| Error::Serialize {
            what: "beat status",
            source,
        })?;
        redis::cmd("SET")
            .arg(keys::BEAT_STATUS)
            .arg(json)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    async fn status(&self) -> Result<Option<BeatStatus>> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(keys::BEAT_STATUS)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        raw.map(|raw| {
            serde_json::from_str(&raw).map_err(|source| Error::Deserialize {
                what: "beat status",
                source,
            })
        })
        .transpose()
    }
}
