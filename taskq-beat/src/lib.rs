//! taskq-beat: periodic tasks for taskq.
//!
//! Terminology: a [`Schedule`] names *slots* (instants); an [`Entry`] pairs a schedule with a
//! task to enqueue; a [`Beat`] *fires* an entry's due slots by enqueueing the task through the
//! normal client path. Schedules and the catch-up [`plan`] are pure functions of (last fire,
//! now), so they are tested without a clock.
//!
//! Several beats may run against one Redis: one leads through a lock with an owner token
//! ([`BeatStore`], in Redis: `taskq_redis::RedisBeatStore`); every fire has a deterministic task id ([`fire_id`]) and is enqueued only if
//! the slot's uniqueness key was not claimed, atomically, so a slot is never enqueued twice, not
//! even by two beats that both believe they lead. The key outlives the task (it is not released
//! when the task ends; see `Enqueue::unique_until_expired`), so a slot planned again after its
//! task ran is still known as fired.

mod beat;
mod config;
mod entry;
mod error;
mod plan;
mod schedule;

pub use beat::{fire_id, preview, Beat, BeatConfig, BeatReport};
pub use config::{load as load_schedule, parse as parse_schedule};
pub use entry::Entry;
pub use error::{Error, Result, ScheduleError};
pub use plan::{plan, CatchUp, Plan};
pub use schedule::{Bounded, CronSchedule, Every, Schedule};
pub use taskq_core::{BeatStore, MemoryBeatStore};
