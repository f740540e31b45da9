use chrono::{DateTime, TimeZone, Utc};

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

#[test]
fn cron_with_seconds_field() {
    let cron = CronSchedule::parse("*/10 * * * * *", "UTC").unwrap();
    assert_eq!(
        cron.next_after(utc("2026-03-01T10:00:00Z")),
        Some(utc("2026-03-01T10:00:10Z"))
    );
    assert_eq!(
        cron.next_after(utc("2026-03-01T10:00:09.999Z")),
        Some(utc("2026-03-01T10:00:10Z"))
    );
    assert_eq!(
        cron.last_at_or_before(utc("2026-03-01T10:00:10Z")),
        Some(utc("2026-03-01T10:00:10Z"))
    );
    assert_eq!(
        cron.last_at_or_before(utc("2026-03-01T10:00:19Z")),
        Some(utc("2026-03-01T10:00:10Z"))
    );
}

#[test]
fn cron_five_fields_and_shortcuts() {
    let five = CronSchedule::parse("30 2 * * *", "UTC").unwrap();
    assert_eq!(
        five.next_after(utc("2026-03-01T10:00:00Z")),
        Some(utc("2026-03-02T02:30:00Z"))
    );
    let hourly = CronSchedule::parse("@hourly", "UTC").unwrap();
    assert_eq!(
        hourly.next_after(utc("2026-03-01T10:00:00Z")),
        Some(utc("2026-03-01T11:00:00Z"))
    );
}

#[test]
fn cron_in_a_time_zone() {
    // 09:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
    let nine = CronSchedule::parse("0 9 * * *", "Europe/Berlin").unwrap();
    assert_eq!(
        nine.next_after(utc("2026-01-15T12:00:00Z")),
        Some(utc("2026-01-16T08:00:00Z"))
    );
    assert_eq!(
        nine.next_after(utc("2026-07-15T12:00:00Z")),
        Some(utc("2026-07-16T07:00:00Z"))
    );
}

/// Every slot of `schedule` in `(from, to]`.
fn slots(schedule: &dyn Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = from;
    while let Some(next) = schedule.next_after(t) {
        if next > to {
            break;
        }
        out.push(next);
        t = next;
    }
    out
}

#[test]
fn spring_forward_has_no_phantom_run() {
    // Europe/Berlin, 2026-03-29: 02:00 local jumps to 03:00 (01:00 UTC).
    let daily_0230 = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
    let fired = slots(
        &daily_0230,
        utc("2026-03-28T12:00:00Z"),
        utc("2026-03-30T12:00:00Z"),
    );
    // One run per day; on the transition day it runs once, right after the gap (03:00 local),
    // never at the non-existent 02:30 and never twice.
    assert_eq!(
        fired,
        vec![utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:30:00Z")]
    );

    let hourly = CronSchedule::parse("0 * * * *", "Europe/Berlin").unwrap();
    let fired = slots(
        &hourly,
        utc("2026-03-28T23:30:00Z"),
        utc("2026-03-29T02:30:00Z"),
    );
    // Local 01:00, (02:00 does not exist), 03:00, 04:00: one run per real hour.
    assert_eq!(
        fired,
        vec![
            utc("2026-03-29T00:00:00Z"),
            utc("2026-03-29T01:00:00Z"),
            utc("2026-03-29T02:00:00Z")
        ]
    );
}

#[test]
fn fall_back_repeated_hour_fires_once() {
    // Europe/Berlin, 2026-10-25: 03:00 local goes back to 02:00; 02:30 happens twice.
    let daily_0230 = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
    let fired = slots(
        &daily_0230,
        utc("2026-10-24T12:00:00Z"),
        utc("2026-10-26T12:00:00Z"),
    );
    assert_eq!(
        fired,
        vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-26T01:30:00Z")]
    );
}

#[test]
fn intervals_are_aligned_to_the_epoch() {
    let every = Every::parse("30s").unwrap();
    assert_eq!(
        every.next_after(utc("2026-03-01T10:00:00Z")),
        Some(utc("2026-03-01T10:00:30Z"))
    );
    assert_eq!(
        every.last_at_or_before(utc("2026-03-01T10:00:00Z")),
        Some(utc("2026-03-01T10:00:00Z"))
    );
    assert_eq!(
        every.last_at_or_before(utc("2026-03-01T10:00:29Z")),
        Some(utc("2026-03-01T10:00:00Z"))
    );
    let odd = Every::parse("7s").unwrap();
    let t = utc("2026-03-01T10:00:00Z");
    let next = odd.next_after(t).unwrap();
    assert_eq!(next.timestamp() % 7, 0);
    assert!(next > t && next - t <= chrono::Duration::seconds(7));
    assert!(Every::parse("0s").is_err());
    assert!(Every::parse("soon").is_err());
}

#[test]
fn bounds_limit_slots() {
    let bounded = Bounded::new(
        Every::parse("1h").unwrap(),
        Some(utc("2026-03-01T10:30:00Z")),
        Some(utc("2026-03-01T13:00:00Z")),
    );
    assert_eq!(
        bounded.next_after(utc("2026-03-01T00:00:00Z")),
        Some(utc("2026-03-01T11:00:00Z"))
    );
    assert_eq!(
        bounded.next_after(utc("2026-03-01T12:00:00Z")),
        Some(utc("2026-03-01T13:00:00Z"))
    );
    assert_eq!(bounded.next_after(utc("2026-03-01T13:00:00Z")), None);
    assert_eq!(
        bounded.last_at_or_before(utc("2026-03-01T20:00:00Z")),
        Some(utc("2026-03-01T13:00:00Z"))
    );
    assert_eq!(bounded.last_at_or_before(utc("2026-03-01T10:45:00Z")), None);
}

#[test]
fn invalid_input_is_named() {
    let err = CronSchedule::parse("61 * * * *", "UTC").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid cron expression `61 * * * *`"),
        "{err}"
    );
    let err = CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
    assert_eq!(err.to_string(), "unknown time zone `Mars/Olympus`");
    let _ = Utc.timestamp_opt(0, 0);
}
