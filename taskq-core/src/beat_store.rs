//! [`BeatStore`]: where beat replicas coordinate (the leader lock and the last fire of every
//! entry), and its in-process implementation. The Redis one lives in `taskq-redis`; the beat
//! loop itself lives in `taskq-beat`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::{Mutex, MutexGuard};
use tokio::time::Instant;

use crate::error::Result;

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

    /// Whether the store guards each fire itself through [`BeatStore::claim_fire`]; false
    /// (the default) leaves it to the broker's uniqueness key, enqueued with the fire.
    fn claims_fires(&self) -> bool {
        false
    }

    /// Claims the fire of `entry`'s `slot` before it is enqueued: true when this beat may
    /// enqueue it, false when that slot (or a later one) was claimed already. Only called
    /// when [`BeatStore::claims_fires`]; the default claims nothing.
    async fn claim_fire(&self, entry: &str, slot: DateTime<Utc>) -> Result<bool> {
        let _ = (entry, slot);
        Ok(true)
    }

    /// Publishes the leading beat's view of its schedule for operators, kept for `ttl` (the
    /// leader republishes it while it leads). The default keeps nothing.
    async fn publish_status(&self, status: &BeatStatus, ttl: Duration) -> Result<()> {
        let _ = (status, ttl);
        Ok(())
    }

    /// The last status a leader published, if it has not expired (no leader for that long
    /// means no status).
    async fn status(&self) -> Result<Option<BeatStatus>> {
        Ok(None)
    }
}

/// What the leading beat says about its schedule: shown by the dashboard.
///
/// ```
/// let status = taskq_core::BeatStatus::new("beat-1", chrono::Utc::now(), Vec::new());
/// assert_eq!(status.leader, "beat-1");
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct BeatStatus {
    /// The leader's owner token (host, pid and a random part).
    pub leader: String,
    /// When it published this.
    pub published_at: DateTime<Utc>,
    /// Its entries.
    pub entries: Vec<BeatEntryStatus>,
}

impl BeatStatus {
    /// A status of `leader`'s `entries`, published at `at`.
    pub fn new(
        leader: impl Into<String>,
        at: DateTime<Utc>,
        entries: Vec<BeatEntryStatus>,
    ) -> Self {
        Self {
            leader: leader.into(),
            published_at: at,
            entries,
        }
    }
}

/// One periodic entry, as its leader sees it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct BeatEntryStatus {
    /// The entry's name.
    pub name: String,
    /// The task it enqueues.
    pub task: String,
    /// Its schedule as written (a cron line with its zone, `every 5m`).
    pub schedule: String,
    /// The last slot fired; `None` while the entry has not fired yet.
    pub last_fire: Option<DateTime<Utc>>,
    /// The next slot.
    pub next_fire: Option<DateTime<Utc>>,
    /// The next few slots, the next one first (empty from a beat that did not publish them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upcoming: Vec<DateTime<Utc>>,
}

impl BeatEntryStatus {
    /// An entry's status.
    pub fn new(
        name: impl Into<String>,
        task: impl Into<String>,
        schedule: impl Into<String>,
        last_fire: Option<DateTime<Utc>>,
        next_fire: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            name: name.into(),
            task: task.into(),
            schedule: schedule.into(),
            last_fire,
            next_fire,
            upcoming: next_fire.into_iter().collect(),
        }
    }

    /// The same with the next few slots (`upcoming[0]` is the next fire).
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// let at = |h| Utc.with_ymd_and_hms(2026, 12, 7, h, 30, 0).unwrap();
    /// let entry = taskq_core::BeatEntryStatus::new("report", "reports.daily", "0 30 9 * * MON-FRI (Europe/Berlin)", None, Some(at(8)))
    ///     .with_upcoming(vec![at(8), at(9)]);
    /// assert_eq!(entry.upcoming.len(), 2);
    /// ```
    pub fn with_upcoming(mut self, upcoming: Vec<DateTime<Utc>>) -> Self {
        self.next_fire = upcoming.first().copied();
        self.upcoming = upcoming;
        self
    }
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
    status: Option<(BeatStatus, Instant)>,
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

    async fn publish_status(&self, status: &BeatStatus, ttl: Duration) -> Result<()> {
        self.lock().status = Some((status.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn status(&self) -> Result<Option<BeatStatus>> {
        Ok(self
            .lock()
            .status
            .as_ref()
            .filter(|(_, until)| *until > Instant::now())
            .map(|(status, _)| status.clone()))
    }
}
