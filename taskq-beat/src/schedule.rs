//! Schedules: pure functions from a point in time to the slots around it.
//!
//! Terminology: a *slot* is an instant a schedule names (12:00:00 for "every hour"); a *fire* is
//! the enqueue a beat makes for a slot. Schedules never look at a clock, so tests don't either.

use std::{fmt, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::ScheduleError;

/// When a periodic task is due.
pub trait Schedule: Send + Sync + fmt::Debug {
    /// The first slot strictly after `t`, or `None` when the schedule has ended.
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>>;

    /// The last slot at or before `t`, or `None` when there is none.
    fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>>;

    /// The schedule as an operator wrote it, for the dashboard and `taskq beat`: a cron line
    /// with its zone, `every 5m`; a schedule of one's own shows its `Debug` form unless it
    /// says better.
    ///
    /// ```
    /// use taskq_beat::{CronSchedule, Schedule};
    /// let cron = CronSchedule::parse("0 30 9 * * MON-FRI", "Europe/Berlin")?;
    /// assert_eq!(cron.describe(), "0 30 9 * * MON-FRI (Europe/Berlin)");
    /// # Ok::<(), taskq_beat::ScheduleError>(())
    /// ```
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// A cron expression in a time zone: 5 fields, or 6 with seconds first, or `@hourly`-style
/// shortcuts (parsed by the `croner` crate).
///
/// Daylight saving time follows the Open Cron Pattern Specification, which croner implements:
/// in the hour that is skipped in spring, a job whose time falls in the gap runs once right
/// after the gap (no phantom wall-clock time); in the hour that repeats in autumn, a job runs
/// once, in the first occurrence.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use taskq_beat::{CronSchedule, Schedule};
/// let every_15s = CronSchedule::parse("*/15 * * * * *", "UTC")?;
/// let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 1).unwrap();
/// assert_eq!(every_15s.next_after(t), Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 15).unwrap()));
/// # Ok::<(), taskq_beat::ScheduleError>(())
/// ```
#[derive(Clone, Debug)]
pub struct CronSchedule {
    cron: croner::Cron,
    tz: Tz,
    /// The line as written (whitespace collapsed), for [`Schedule::describe`].
    expr: String,
}

impl CronSchedule {
    /// Parses `expr` for the IANA time zone `tz` (e.g. `"Europe/Berlin"`, `"UTC"`).
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Cron`] or [`ScheduleError::TimeZone`].
    pub fn parse(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        let tz: Tz = tz
            .parse()
            .map_err(|_| ScheduleError::TimeZone(tz.to_owned()))?;
        let cron = expr
            .parse::<croner::Cron>()
            .map_err(|err| ScheduleError::Cron {
                expr: expr.to_owned(),
                reason: wrong_field(expr).unwrap_or_else(|| err.to_string()),
            })?;
        let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
        Ok(Self { cron, tz, expr })
    }
}

/// The fields of a cron line with seconds (6 fields), without (5) or with a year (7): their
/// names and what each takes.
fn cron_fields(count: usize) -> Option<&'static [(&'static str, &'static str)]> {
    const FIELDS: [(&str, &str); 7] = [
        ("second", "0-59"),
        ("minute", "0-59"),
        ("hour", "0-23"),
        ("day-of-month", "1-31, L, W"),
        ("month", "1-12 or JAN-DEC"),
        ("day-of-week", "0-7 or SUN-SAT, #, L"),
        ("year", "a year"),
    ];
    match count {
        5 => Some(&FIELDS[1..6]),
        6 => Some(&FIELDS[..6]),
        7 => Some(&FIELDS[..]),
        _ => None,
    }
}

/// Which field of `expr` is wrong, in words: each field is tried alone (the others `*`), so
/// the message names the field and what it takes instead of the parser's general complaint.
fn wrong_field(expr: &str) -> Option<String> {
    let parts: Vec<&str> = expr.split_whitespace().collect();
    if parts.len() == 1 && expr.trim_start().starts_with('@') {
        return None; // @hourly and the like: the parser's message says it
    }
    let Some(fields) = cron_fields(parts.len()) else {
        return Some(format!(
            "it has {} fields; write 5 (minute hour day-of-month month day-of-week) or 6 (with seconds first)",
            parts.len()
        ));
    };
    parts.iter().enumerate().find_map(|(i, part)| {
        let alone: Vec<&str> = (0..parts.len())
            .map(|j| if j == i { *part } else { "*" })
            .collect();
        let err = alone.join(" ").parse::<croner::Cron>().err()?;
        let (name, takes) = fields[i];
        Some(format!(
            "the {name} field `{part}` is not valid ({err}); it takes {takes}"
        ))
    })
}

impl Schedule for CronSchedule {
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|prev| prev.with_timezone(&Utc))
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.expr, self.tz.name())
    }
}

/// A fixed interval, with slots at whole multiples of `every` since the Unix epoch, so that
/// every replica computes the same slots.
///
/// ```
/// use std::time::Duration;
/// use chrono::{TimeZone, Utc};
/// use taskq_beat::{Every, Schedule};
/// let every = Every::new(Duration::from_secs(30))?;
/// let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 31).unwrap();
/// assert_eq!(every.next_after(t), Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 0).unwrap()));
/// # Ok::<(), taskq_beat::ScheduleError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Every {
    every_ms: i64,
}

impl Every {
    /// Slots every `every` (at least one millisecond).
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Interval`] for a zero interval.
    pub fn new(every: Duration) -> Result<Self, ScheduleError> {
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        if every_ms <= 0 {
            return Err(ScheduleError::Interval(format!("{every:?}")));
        }
        Ok(Self { every_ms })
    }

    /// Parses a humantime interval such as `"30s"` or `"1h 30m"`.
    ///
    /// # Errors
    ///
    /// [`ScheduleError::Interval`].
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let every = humantime::parse_duration(text)
            .map_err(|_| ScheduleError::Interval(text.to_owned()))?;
        Self::new(every).map_err(|_| ScheduleError::Interval(text.to_owned()))
    }

    fn at(&self, index: i64) -> Option<DateTime<Utc>> {
        Utc.timestamp_millis_opt(index.checked_mul(self.every_ms)?)
            .single()
    }
}

impl Schedule for Every {
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.at(t.timestamp_millis().div_euclid(self.every_ms) + 1)
    }

    fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.at(t.timestamp_millis().div_euclid(self.every_ms))
    }

    fn describe(&self) -> String {
        let every = Duration::from_millis(u64::try_from(self.every_ms).unwrap_or(u64::MAX));
        format!("every {}", humantime::format_duration(every))
    }
}

/// Another schedule limited to slots within `[start, end]`.
#[derive(Debug)]
pub struct Bounded<S> {
    inner: S,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

impl<S: Schedule> Bounded<S> {
    /// Limits `inner` to `start..=end` (either side open when `None`).
    pub fn new(inner: S, start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Self {
        Self { inner, start, end }
    }

    fn within(&self, slot: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| slot >= s) && self.end.is_none_or(|e| slot <= e)
    }
}

impl<S: Schedule> Schedule for Bounded<S> {
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from = match self.start {
            Some(start) if t < start => start - chrono::Duration::milliseconds(1),
            _ => t,
        };
        self.inner
            .next_after(from)
            .filter(|slot| self.within(*slot))
    }

    fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let until = match self.end {
            Some(end) if t > end => end,
            _ => t,
        };
        self.inner
            .last_at_or_before(until)
            .filter(|slot| self.within(*slot))
    }

    fn describe(&self) -> String {
        let mut text = self.inner.describe();
        if let Some(start) = self.start {
            text.push_str(&format!(", from {}", start.to_rfc3339()));
        }
        if let Some(end) = self.end {
            text.push_str(&format!(", until {}", end.to_rfc3339()));
        }
        text
    }
}

impl<S: Schedule + ?Sized> Schedule for Box<S> {
    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (**self).next_after(t)
    }

    fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (**self).last_at_or_before(t)
    }

    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// Compile-time check that [`Schedule`] stays object safe.
#[allow(dead_code)]
fn assert_object_safe(_: &dyn Schedule) {}

#[cfg(test)]
mod tests;
