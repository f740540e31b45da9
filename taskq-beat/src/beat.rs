//! [`Beat`]: the loop that leads (or waits to lead) and fires due entries.

use std::{collections::HashSet, future::Future, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use taskq_core::{BeatStore, Client, Sent, TaskId};
use tokio::time::Instant;

use crate::{error::invalid_schedule_file, plan, Entry, Result};

/// How many next slots a beat publishes per entry.
const UPCOMING: usize = 3;

/// Namespace of the deterministic task ids of fires (UUID v5 of `"<entry>@<slot ms>"`).
const FIRE_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7a5b_8a41_3c1e_4f0a_9d6e_2b7c_1f0e_5a93);

/// Timing of a [`Beat`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BeatConfig {
    /// Longest sleep between two looks at the schedule and the lock (default 1 s).
    pub tick: Duration,
    /// Leader lock time to live; a dead leader is replaced within about this (default 10 s).
    pub lock_ttl: Duration,
    /// How late a slot may fire and still count as on time (default 2 s); later fires are
    /// logged as late, and [`crate::CatchUp::Skip`] drops them.
    pub grace: Duration,
    /// How long the "slot fired" marker is kept (default 7 days); it must outlive any overlap
    /// of two beats that both believe they lead, and any re-plan after a leader died between a
    /// fire and recording it. One small key per slot: an entry firing every minute keeps about
    /// 10,000, one firing every second about 600,000 (some 60 MB); lower it for such entries.
    pub marker_ttl: Duration,
}

impl Default for BeatConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            lock_ttl: Duration::from_secs(10),
            grace: Duration::from_secs(2),
            marker_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What a beat did while it ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BeatReport {
    /// Fires this beat enqueued.
    pub fired: u64,
    /// Fires skipped because the slot was already enqueued (by this or another beat).
    pub already_fired: u64,
    /// Times this beat became leader.
    pub terms: u64,
}

/// Fires periodic tasks. Any number of beats may run against one broker: one leads through the
/// store's lock, and every fire is enqueued at most once per slot through a uniqueness key (or,
/// on a store that [claims fires](BeatStore::claims_fires) itself, RabbitMQ's, through the
/// claim recorded before the enqueue), so even two beats that both believe they lead cannot
/// enqueue a slot twice.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> taskq_core::Result<()> {
/// use std::{sync::Arc, time::Duration};
/// use taskq_beat::{Beat, Entry, Every};
/// use taskq_core::MemoryBeatStore;
/// use taskq_core::Client;
///
/// let client = Client::in_memory();
/// let entries = vec![Entry::new("tick", "demo.add", Every::new(Duration::from_secs(1))?)];
/// let beat = Beat::new(client, Arc::new(MemoryBeatStore::new()), entries)?;
/// let report = beat.run(tokio::time::sleep(Duration::from_millis(10))).await?;
/// assert_eq!(report.terms, 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Beat {
    client: Client,
    store: Arc<dyn BeatStore>,
    entries: Vec<Entry>,
    config: BeatConfig,
    owner: String,
    /// The first-sight baselines this beat wrote (entry -> slot): a last fire equal to its
    /// entry's baseline was never fired, and the dashboard says "never".
    baselines: std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>>,
}

impl Beat {
    /// A beat firing `entries` through `client`, coordinating through `store`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](crate::Error::Invalid) when two entries share a name.
    pub fn new(client: Client, store: Arc<dyn BeatStore>, entries: Vec<Entry>) -> Result<Self> {
        let mut names = HashSet::new();
        for entry in &entries {
            if !names.insert(entry.name.as_str()) {
                return Err(invalid_schedule_file(
                    "<entries>",
                    format!("duplicate entry name `{}`", entry.name),
                ));
            }
        }
        let owner = format!(
            "{}:{}:{:08x}",
            taskq_core::WorkerId::generate()
                .as_str()
                .split(':')
                .next()
                .unwrap_or("beat"),
            std::process::id(),
            fastrand::u32(..)
        );
        Ok(Self {
            client,
            store,
            entries,
            config: BeatConfig::default(),
            owner,
            baselines: Default::default(),
        })
    }

    /// Replaces the timing.
    pub fn with_config(mut self, config: BeatConfig) -> Self {
        self.config = config;
        self
    }

    /// This beat's lock owner token: `host:pid:random`.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs until `shutdown` completes, then releases the lock if it leads.
    ///
    /// Store and broker errors are logged and retried on the next tick; they do not end the
    /// beat.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for fatal conditions.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<BeatReport> {
        tokio::pin!(shutdown);
        let mut report = BeatReport::default();
        let mut leading = false;
        let mut next_lock_check = Instant::now();
        loop {
            if Instant::now() >= next_lock_check {
                let was_leading = leading;
                leading = self.hold_lock(leading).await;
                if leading && !was_leading {
                    report.terms += 1;
                    tracing::info!(owner = %self.owner, "leading");
                } else if was_leading && !leading {
                    tracing::warn!(owner = %self.owner, "lost the leader lock");
                }
                next_lock_check = Instant::now() + self.config.lock_ttl / 3;
                if leading {
                    self.publish_status().await;
                }
            }
            if leading {
                for entry in &self.entries {
                    if let Err(err) = self.step(entry, &mut report).await {
                        tracing::warn!(entry = %entry.name, error = %err, "beat step failed; retrying next tick");
                    }
                }
            }
            let wake = self.next_wake(next_lock_check);
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        if leading {
            if let Err(err) = self.store.release(&self.owner).await {
                tracing::warn!(error = %err, "could not release the leader lock; it expires by itself");
            }
        }
        Ok(report)
    }

    /// Tells operators (the dashboard) what this leader schedules: every entry with its last
    /// and next fire, kept for as long as the lock would be.
    async fn publish_status(&self) {
        let now = self.client.clock().now();
        let mut entries = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let stored = self.store.last_fire(&entry.name).await.ok().flatten();
            let baseline = self.baseline_of(&entry.name);
            let last = stored.filter(|slot| Some(*slot) != baseline);
            let mut upcoming = Vec::with_capacity(UPCOMING);
            let mut after = now;
            while upcoming.len() < UPCOMING {
                let Some(next) = entry.schedule.next_after(after) else {
                    break;
                };
                upcoming.push(next);
                after = next;
            }
            entries.push(
                taskq_core::BeatEntryStatus::new(
                    &entry.name,
                    &entry.task,
                    entry.schedule.describe(),
                    last,
                    None,
                )
                .with_upcoming(upcoming),
            );
        }
        let status = taskq_core::BeatStatus::new(&self.owner, now, entries);
        if let Err(err) = self
            .store
            .publish_status(&status, self.config.lock_ttl)
            .await
        {
            tracing::debug!(error = %err, "could not publish the beat's status");
        }
    }

    async fn hold_lock(&self, leading: bool) -> bool {
        let ttl = self.config.lock_ttl;
        let held = if leading {
            self.store.extend(&self.owner, ttl).await
        } else {
            self.store.try_acquire(&self.owner, ttl).await
        };
        held.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "leader lock check failed");
            false
        })
    }

    /// The earliest of: the next slot of any entry, the next lock check, one tick from now.
    fn next_wake(&self, next_lock_check: Instant) -> Instant {
        let clock = self.client.clock();
        let now = clock.now();
        let mut wake = (Instant::now() + self.config.tick).min(next_lock_check);
        for entry in &self.entries {
            if let Some(slot) = entry.schedule.next_after(now) {
                wake = wake.min(clock.instant_at(slot));
            }
        }
        wake
    }

    /// The first-sight baseline this beat wrote for `entry`, if it wrote one.
    fn baseline_of(&self, entry: &str) -> Option<DateTime<Utc>> {
        self.baselines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(entry)
            .copied()
    }

    /// Plans and fires one entry.
    async fn step(&self, entry: &Entry, report: &mut BeatReport) -> Result<()> {
        let now = self.client.clock().now();
        let Some(last) = self.store.last_fire(&entry.name).await? else {
            // First sight of this entry: start from now, do not fire the past.
            let baseline = entry.schedule.last_at_or_before(now).unwrap_or(now);
            self.store.set_last_fire(&entry.name, baseline).await?;
            self.baselines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(entry.name.clone(), baseline);
            return Ok(());
        };
        let step = plan(
            entry.schedule.as_ref(),
            last,
            now,
            entry.catch_up,
            self.config.grace,
        );
        if step.dropped > 0 {
            tracing::info!(entry = %entry.name, dropped = step.dropped, policy = ?entry.catch_up, "missed slots not fired");
        }
        for slot in &step.fire {
            let late = now - *slot;
            if late > chrono::Duration::from_std(self.config.grace).unwrap_or(chrono::Duration::MAX)
            {
                tracing::warn!(entry = %entry.name, %slot, late_ms = late.num_milliseconds(), "firing late");
            }
            if self.fire(entry, *slot).await? {
                report.fired += 1;
            } else {
                report.already_fired += 1;
            }
        }
        if let Some(latest) = step.last {
            self.store.set_last_fire(&entry.name, latest).await?;
        }
        Ok(())
    }

    /// Enqueues the fire of `slot` unless it was enqueued already; true when this call did.
    async fn fire(&self, entry: &Entry, slot: DateTime<Utc>) -> Result<bool> {
        let id = fire_id(&entry.name, slot);
        let mut call = self
            .client
            .enqueue_by_name(&entry.task, &entry.args)
            .id(id)
            .header("taskq-beat-entry", entry.name.clone())
            .header("taskq-beat-slot", slot.to_rfc3339());
        if self.store.claims_fires() {
            // The store's claim guards the slot (RabbitMQ alone has no uniqueness keys).
            if !self.store.claim_fire(&entry.name, slot).await? {
                return Ok(false);
            }
        } else {
            call = call
                .unique_key(format!("beat:{}:{}", entry.name, slot.timestamp_millis()))
                .unique_for(self.config.marker_ttl)
                // The key is the slot's "fired" marker: it must outlive the task, or a re-plan
                // after the task ended (a leader that died before recording the fire, two
                // leaders at once) fires the slot again.
                .unique_until_expired();
        }
        for (key, value) in &entry.headers {
            call = call.header(key.clone(), value.clone());
        }
        if let Some(queue) = &entry.queue {
            call = call.queue(queue.clone());
        }
        if let Some(priority) = entry.priority {
            call = call.priority(priority);
        }
        if let Some(ttl) = entry.expires {
            call = call.expires_at(
                slot + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
            );
        }
        let enqueued = matches!(call.send().await?, Sent::Enqueued(_));
        if enqueued {
            tracing::info!(entry = %entry.name, %slot, task.id = %id, "fired");
        } else {
            tracing::debug!(entry = %entry.name, %slot, "slot already fired");
        }
        Ok(enqueued)
    }
}

/// The task id of the fire of `entry` for `slot`: the same in every beat replica.
///
/// ```
/// let slot = "2026-01-01T00:00:00Z".parse().unwrap();
/// assert_eq!(taskq_beat::fire_id("tick", slot), taskq_beat::fire_id("tick", slot));
/// assert_ne!(taskq_beat::fire_id("tick", slot), taskq_beat::fire_id("tock", slot));
/// ```
pub fn fire_id(entry: &str, slot: DateTime<Utc>) -> TaskId {
    let name = format!("{entry}@{}", slot.timestamp_millis());
    TaskId::from_uuid(uuid::Uuid::new_v5(&FIRE_NAMESPACE, name.as_bytes()))
}

/// The next `count` slots of every entry after `from`, for `--dry-run`.
pub fn preview(
    entries: &[Entry],
    from: DateTime<Utc>,
    count: usize,
) -> Vec<(String, Vec<DateTime<Utc>>)> {
    entries
        .iter()
        .map(|entry| {
            let mut slots = Vec::with_capacity(count);
            let mut t = from;
            while slots.len() < count {
                match entry.schedule.next_after(t) {
                    Some(slot) => {
                        slots.push(slot);
                        t = slot;
                    }
                    None => break,
                }
            }
            (entry.name.clone(), slots)
        })
        .collect()
}
