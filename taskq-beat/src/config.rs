//! The schedule file (TOML): parsing and validation with errors that name the entry and line.
//!
//! ```toml
//! [[entry]]
//! name = "report"              # unique
//! task = "reports.build"       # registered task name
//! args = { day = "today" }     # JSON-compatible arguments (default {})
//! cron = "0 30 9 * * MON-FRI"  # 5 or 6 fields (seconds first), or @hourly-style
//! timezone = "Europe/Berlin"   # IANA name (default UTC)
//! queue = "reports"            # optional: queue, priority (0..=9), expires ("10m"), headers
//! catch_up = "once"            # skip | once (default) | all (with backfill = N, default 10)
//! start = 2026-01-01T00:00:00Z # optional bounds
//! end = 2026-12-31T23:59:59Z
//!
//! [[entry]]
//! name = "heartbeat"
//! task = "ops.ping"
//! every = "30s"                # instead of cron
//! ```

use std::{collections::BTreeMap, path::Path};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::{
    error::invalid_schedule_file, Bounded, CatchUp, CronSchedule, Entry, Every, Result, Schedule,
};

/// Default cap of [`CatchUp::All`] when `backfill` is not given.
const DEFAULT_BACKFILL: usize = 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    entry: Vec<toml::Spanned<RawEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    task: String,
    #[serde(default)]
    args: Option<toml::Value>,
    cron: Option<toml::Spanned<String>>,
    every: Option<toml::Spanned<String>>,
    timezone: Option<String>,
    queue: Option<String>,
    priority: Option<u8>,
    expires: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    catch_up: Option<String>,
    backfill: Option<usize>,
    start: Option<toml::value::Datetime>,
    end: Option<toml::value::Datetime>,
}

/// Reads and validates a schedule file.
///
/// # Errors
///
/// [`Error::Invalid`](crate::Error::Invalid) naming the file, line and entry: unreadable file, TOML syntax, unknown
/// keys, bad cron lines, unknown time zones, bad intervals, duplicate names.
pub fn load(path: &Path) -> Result<Vec<Entry>> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| invalid_schedule_file(&shown, format!("cannot read: {err}")))?;
    parse(&text).map_err(|message| invalid_schedule_file(&shown, message))
}

/// Parses schedule file text; the error is a one-line message naming line and entry.
///
/// ```
/// let entries = taskq_beat::parse_schedule("[[entry]]\nname = \"t\"\ntask = \"demo.add\"\nevery = \"5s\"\n")?;
/// assert_eq!(entries[0].name(), "t");
/// assert!(taskq_beat::parse_schedule("# nothing yet\n").unwrap_err().starts_with("no entries"));
/// let err = taskq_beat::parse_schedule("[[entry]]\nname = \"t\"\ntask = \"x\"\ncron = \"bad\"\n").unwrap_err();
/// assert!(err.starts_with("line 4, entry `t`: invalid cron expression `bad`"), "{err}");
/// # Ok::<(), String>(())
/// ```
pub fn parse(text: &str) -> std::result::Result<Vec<Entry>, String> {
    let file: File = toml::from_str(text).map_err(|err| {
        let line = err.span().map(|span| line_of(text, span.start));
        match line {
            Some(line) => format!("line {line}: {}", err.message()),
            None => err.message().to_owned(),
        }
    })?;
    if file.entry.is_empty() {
        // Almost always a mistake (a wrong file, or `[entry]` for `[[entry]]`): a beat with
        // nothing to fire would run silently forever.
        return Err("no entries: the file must list at least one [[entry]]".to_owned());
    }
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut entries = Vec::with_capacity(file.entry.len());
    for spanned in file.entry {
        let line = line_of(text, spanned.span().start);
        let raw = spanned.into_inner();
        let context = |message: String| format!("line {line}, entry `{}`: {message}", raw.name);
        if let Some(first) = names.insert(raw.name.clone(), line) {
            return Err(context(format!(
                "duplicate entry name (first defined on line {first})"
            )));
        }
        // A schedule error names the line of its `cron` or `every`, not the entry's header.
        let schedule_line = raw
            .cron
            .as_ref()
            .or(raw.every.as_ref())
            .map_or(line, |value| line_of(text, value.span().start));
        let schedule = schedule_of(&raw)
            .map_err(|message| format!("line {schedule_line}, entry `{}`: {message}", raw.name))?;
        entries.push(build(&raw, schedule).map_err(context)?);
    }
    Ok(entries)
}

/// The entry's `cron` or `every`, in its `timezone`.
fn schedule_of(raw: &RawEntry) -> std::result::Result<Box<dyn Schedule>, String> {
    let timezone = raw.timezone.as_deref().unwrap_or("UTC");
    Ok(match (&raw.cron, &raw.every) {
        (Some(cron), None) => {
            Box::new(CronSchedule::parse(cron.get_ref(), timezone).map_err(|e| e.to_string())?)
        }
        (None, Some(every)) => {
            if raw.timezone.is_some() {
                return Err(
                    "`timezone` applies to `cron` only; intervals are time-zone free".into(),
                );
            }
            Box::new(Every::parse(every.get_ref()).map_err(|e| e.to_string())?)
        }
        (Some(_), Some(_)) => return Err("give either `cron` or `every`, not both".into()),
        (None, None) => return Err("missing schedule: give `cron` or `every`".into()),
    })
}

fn build(raw: &RawEntry, schedule: Box<dyn Schedule>) -> std::result::Result<Entry, String> {
    let start = raw.start.as_ref().map(datetime).transpose()?;
    let end = raw.end.as_ref().map(datetime).transpose()?;
    if let (Some(start), Some(end)) = (start, end) {
        if end < start {
            return Err(format!("`end` ({end}) is before `start` ({start})"));
        }
    }
    let schedule: Box<dyn Schedule> = if start.is_some() || end.is_some() {
        Box::new(Bounded::new(schedule, start, end))
    } else {
        schedule
    };
    let catch_up = match raw.catch_up.as_deref() {
        None | Some("once") => CatchUp::Once,
        Some("skip") => CatchUp::Skip,
        Some("all") => CatchUp::All {
            backfill: raw.backfill.unwrap_or(DEFAULT_BACKFILL),
        },
        Some(other) => {
            return Err(format!(
                "unknown catch_up `{other}`: expected skip, once or all"
            ))
        }
    };
    if raw.backfill.is_some() && !matches!(catch_up, CatchUp::All { .. }) {
        return Err("`backfill` applies to catch_up = \"all\" only".into());
    }
    if raw.priority.is_some_and(|p| p > 9) {
        return Err("priority must be between 0 and 9".into());
    }
    let args = match &raw.args {
        Some(value) => serde_json::to_value(value).map_err(|e| format!("invalid args: {e}"))?,
        None => serde_json::json!({}),
    };
    let mut entry = Entry::new(&raw.name, &raw.task, schedule)
        .with_args(args)
        .with_catch_up(catch_up);
    if let Some(queue) = &raw.queue {
        entry = entry.with_queue(queue);
    }
    if let Some(priority) = raw.priority {
        entry = entry.with_priority(priority);
    }
    if let Some(expires) = &raw.expires {
        let ttl = humantime::parse_duration(expires)
            .map_err(|e| format!("invalid expires `{expires}`: {e}"))?;
        entry = entry.with_expires(ttl);
    }
    for (key, value) in &raw.headers {
        entry = entry.with_header(key, value);
    }
    Ok(entry)
}

fn datetime(value: &toml::value::Datetime) -> std::result::Result<DateTime<Utc>, String> {
    value.to_string().parse::<DateTime<Utc>>().map_err(|_| {
        format!("`{value}` is not a date-time with an offset (write 2026-01-01T00:00:00Z)")
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}
