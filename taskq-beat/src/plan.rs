//! Catch-up policy: which slots to fire, given the last fire and now. Pure, like schedules.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::Schedule;

/// What to do about slots missed while no beat was running (or leading).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire nothing for missed slots; resume at the next one. A slot found less than the
    /// on-time grace late still fires (that is not "missed", only a tick late).
    Skip,
    /// Fire once for everything missed (the latest missed slot). The default, as in Celery.
    #[default]
    Once,
    /// Fire every missed slot, oldest first, but at most `backfill` of them (the newest).
    All {
        /// Most missed slots fired.
        backfill: usize,
    },
}

/// What one planning step decided for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Slots to fire now, oldest first.
    pub fire: Vec<DateTime<Utc>>,
    /// Due slots dropped by the policy.
    pub dropped: usize,
    /// The new "last fire" to record (the latest due slot), if anything was due.
    pub last: Option<DateTime<Utc>>,
}

/// Plans the fires for slots in `(last, now]` under `policy`; `grace` is how late a slot may be
/// and still count as on time for [`CatchUp::Skip`].
///
/// ```
/// use std::time::Duration;
/// use chrono::{DateTime, Utc};
/// use taskq_beat::{plan, CatchUp, Every};
/// let every = Every::new(Duration::from_secs(10))?;
/// let at = |s: &str| s.parse::<DateTime<Utc>>();
/// let step = plan(&every, at("2026-01-01T00:00:00Z")?, at("2026-01-01T00:00:35Z")?, CatchUp::Once, Duration::from_secs(1));
/// assert_eq!(step.fire, vec![at("2026-01-01T00:00:30Z")?]);
/// assert_eq!(step.dropped, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn plan(
    schedule: &dyn Schedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    policy: CatchUp,
    grace: Duration,
) -> Plan {
    let Some(latest) = schedule.last_at_or_before(now).filter(|slot| *slot > last) else {
        return Plan {
            fire: Vec::new(),
            dropped: 0,
            last: None,
        };
    };
    let cap = match policy {
        CatchUp::All { backfill } => backfill.max(1),
        CatchUp::Skip | CatchUp::Once => 1,
    };
    // Walk back from the latest due slot, counting up to a bound so a long outage of a
    // fine-grained schedule cannot make planning slow.
    let mut due = vec![latest];
    let mut count = 1usize;
    let mut cursor = latest;
    while count < cap.saturating_add(10_000) {
        let Some(previous) = schedule.last_at_or_before(cursor - chrono::Duration::milliseconds(1))
        else {
            break;
        };
        if previous <= last {
            break;
        }
        if due.len() < cap {
            due.push(previous);
        }
        count += 1;
        cursor = previous;
    }
    due.reverse();
    let on_time =
        now - latest <= chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    let fire = match policy {
        CatchUp::Skip if on_time => vec![latest],
        CatchUp::Skip => Vec::new(),
        CatchUp::Once => vec![latest],
        CatchUp::All { .. } => due,
    };
    Plan {
        dropped: count - fire.len(),
        fire,
        last: Some(latest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Every;

    fn at(s: &str) -> DateTime<Utc> {
        format!("2026-01-01T00:{s}Z").parse().unwrap()
    }

    fn ten() -> Every {
        Every::new(Duration::from_secs(10)).unwrap()
    }

    const GRACE: Duration = Duration::from_secs(2);

    #[test]
    fn nothing_due_before_the_next_slot() {
        let step = plan(&ten(), at("00:10"), at("00:19"), CatchUp::Once, GRACE);
        assert!(step.fire.is_empty());
        assert_eq!(step.last, None);
    }

    #[test]
    fn on_time_slot_fires_under_every_policy() {
        for policy in [CatchUp::Skip, CatchUp::Once, CatchUp::All { backfill: 5 }] {
            let step = plan(&ten(), at("00:10"), at("00:20.5"), policy, GRACE);
            assert_eq!(step.fire, vec![at("00:20")], "{policy:?}");
            assert_eq!((step.dropped, step.last), (0, Some(at("00:20"))));
        }
    }

    #[test]
    fn skip_drops_everything_missed() {
        let step = plan(&ten(), at("00:00"), at("00:45"), CatchUp::Skip, GRACE);
        assert!(step.fire.is_empty());
        assert_eq!((step.dropped, step.last), (4, Some(at("00:40"))));
    }

    #[test]
    fn once_fires_the_latest_missed_slot() {
        let step = plan(&ten(), at("00:00"), at("00:45"), CatchUp::Once, GRACE);
        assert_eq!(step.fire, vec![at("00:40")]);
        assert_eq!(step.dropped, 3);
    }

    #[test]
    fn all_backfills_up_to_the_cap_oldest_first() {
        let step = plan(
            &ten(),
            at("00:00"),
            at("00:45"),
            CatchUp::All { backfill: 10 },
            GRACE,
        );
        assert_eq!(
            step.fire,
            vec![at("00:10"), at("00:20"), at("00:30"), at("00:40")]
        );
        let capped = plan(
            &ten(),
            at("00:00"),
            at("00:45"),
            CatchUp::All { backfill: 2 },
            GRACE,
        );
        assert_eq!(capped.fire, vec![at("00:30"), at("00:40")]);
        assert_eq!(capped.dropped, 2);
    }

    #[test]
    fn fires_are_never_early() {
        let step = plan(&ten(), at("00:00"), at("00:09.999"), CatchUp::Once, GRACE);
        assert!(step.fire.is_empty());
    }
}
