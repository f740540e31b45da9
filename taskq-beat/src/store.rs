//! Where beats coordinate: the leader lock and the last fire of every entry.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use redis::{aio::ConnectionManager, Script};
use tokio::time::Instant;

use crate::{Error, Result};

/// The leader lock key.
const LEADER: &str = "taskq:beat:leader";
/// Entry name -> last fired slot, ms since the epoch.
const LAST_FIRE: &str = "taskq:beat:last-fire";

static EXTEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/extend_lock.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/release_lock.lua")));
static SET_LAST_FIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/set_last_fire.lua")));

/// Leader lock and per-entry state shared by every beat replica.
#[async_trait]
pub trait BeatStore: Send + Sync + std::fmt::Debug {
    /// Takes the lock for `owner` if nobody holds it; true when `owner` now leads.
    async fn try_acquire(&self, owner: &str, ttl: Duration) -> Result<bool>;

    /// Extends the lock if `owner` holds it; false when it does not (any more).
    async fn extend(&self, owner: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lock up if `owner` holds it.
    async fn release(&self, owner: &str) -> Result<()>;

    /// The last fired slot of `entry`.
    async fn last_fire(&self, entry: &str) -> Result<Option<DateTime<Utc>>>;

    /// Records the last fired slot of `entry`.
    async fn set_last_fire(&self, entry: &str, slot: DateTime<Utc>) -> Result<()>;
}

/// Compile-time check that [`BeatStore`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn BeatStore) {}

/// In-process store for the in-memory broker (one process, so one beat).
#[derive(Debug, Default, Clone)]
pub struct MemoryBeatStore {
    state: Arc<Mutex<MemoryState>>,
}

#[derive(Debug, Default)]
struct MemoryState {
    leader: Option<(String, Instant)>,
    last: HashMap<String, DateTime<Utc>>,
}

impl MemoryBeatStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl BeatStore for MemoryBeatStore {
    async fn try_acquire(&self, owner: &str, ttl: Duration) -> Result<bool> {
        let mut state = self.lock();
        let now = Instant::now();
        if state.leader.as_ref().is_some_and(|(_, until)| *until > now) {
            return Ok(false);
        }
        state.leader = Some((owner.to_owned(), now + ttl));
        Ok(true)
    }

    async fn extend(&self, owner: &str, ttl: Duration) -> Result<bool> {
        let mut state = self.lock();
        let now = Instant::now();
        match &mut state.leader {
            Some((holder, until)) if holder == owner && *until > now => {
                *until = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, owner: &str) -> Result<()> {
        let mut state = self.lock();
        if state
            .leader
            .as_ref()
            .is_some_and(|(holder, _)| holder == owner)
        {
            state.leader = None;
        }
        Ok(())
    }

    async fn last_fire(&self, entry: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self.lock().last.get(entry).copied())
    }

    async fn set_last_fire(&self, entry: &str, slot: DateTime<Utc>) -> Result<()> {
        let mut state = self.lock();
        let last = state.last.entry(entry.to_owned()).or_insert(slot);
        *last = (*last).max(slot);
        Ok(())
    }
}

/// Redis store: `SET NX PX` lock with an owner token, extended and released by owner-checking
/// scripts; last fires in a hash.
#[derive(Clone)]
pub struct RedisBeatStore {
    conn: ConnectionManager,
}

impl std::fmt::Debug for RedisBeatStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBeatStore").finish_non_exhaustive()
    }
}

fn store_error(err: redis::RedisError) -> Error {
    Error::Store(Box::new(err))
}

impl RedisBeatStore {
    /// Connects to Redis at `url`.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when the URL is bad or Redis is unreachable.
    pub async fn connect(url: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(store_error)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(store_error)?;
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
            .arg(LEADER)
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(set.is_some())
    }

    async fn extend(&self, owner: &str, ttl: Duration) -> Result<bool> {
        let extended: i64 = EXTEND
            .key(LEADER)
            .arg(owner)
            .arg(ttl_ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(extended == 1)
    }

    async fn release(&self, owner: &str) -> Result<()> {
        let _: i64 = RELEASE
            .key(LEADER)
            .arg(owner)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn last_fire(&self, entry: &str) -> Result<Option<DateTime<Utc>>> {
        let ms: Option<i64> = redis::cmd("HGET")
            .arg(LAST_FIRE)
            .arg(entry)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()))
    }

    async fn set_last_fire(&self, entry: &str, slot: DateTime<Utc>) -> Result<()> {
        let _: i64 = SET_LAST_FIRE
            .key(LAST_FIRE)
            .arg(entry)
            .arg(slot.timestamp_millis())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(store_error)?;
        Ok(())
    }
}
