//! The rate-limit grammar (`"100/s"`, `"10/m"`, `"5/30s"`), in one place for both readers:
//! [`crate::RateLimit`]'s `FromStr` at run time and `#[task(rate_limit = "…")]` at compile time
//! (taskq-macros links this file into its sources, as serde_derive shares its internals, because a
//! proc-macro crate cannot depend on the crate it generates code for). Depends on std and
//! humantime only.

use std::time::Duration;

/// Parses `text` into (starts, per period), or the error a user sees, naming the text.
pub(crate) fn parse_rate(text: &str) -> Result<(u32, Duration), String> {
    let invalid =
        || format!("invalid rate limit `{text}`: write it like \"100/s\", \"10/m\" or \"5/30s\"");
    let (count, per) = text.split_once('/').ok_or_else(invalid)?;
    let count: u32 = count.trim().parse().map_err(|_| invalid())?;
    let period = match per.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => humantime::parse_duration(other).map_err(|_| invalid())?,
    };
    if count == 0 || period.is_zero() {
        return Err(invalid());
    }
    Ok((count, period))
}
