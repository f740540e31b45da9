//! [`BeatStore`]: where beat replicas coordinate (the leader lock and the last fire of every
//! entry), and its in-process implementation. The Redis one lives in `taskq-redis`; the beat
//! loop itself lives in `taskq-beat`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, MutexGuard};
use tokio::time::Instant;

use crate::Result;

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

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock()
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
