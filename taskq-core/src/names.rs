//! What a queue or task name may be: names become parts of broker keys and routing keys.

use crate::{error::Error, error::Result};

/// Longest queue or task name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 200;

/// Checks a queue or task name before it becomes part of a key: not empty, at most
/// [`MAX_NAME_BYTES`], no whitespace or control characters, and no `{` or `}` (a queue's keys
/// share the hash tag `{<queue>}`; a brace would break it, an empty one scatters them).
///
/// ```
/// assert!(taskq_core::names::check_name("queue", "emails-eu").is_ok());
/// for bad in ["", "a b", "}x", "{x}", "tab\there"] {
///     assert!(taskq_core::names::check_name("queue", bad).is_err(), "{bad:?}");
/// }
/// ```
///
/// # Errors
///
/// [`Error::Invalid`] naming what is wrong.
pub fn check_name(what: &'static str, name: &str) -> Result<()> {
    // Every enqueue checks two names: printable ASCII without braces is the common case and
    // needs no character decoding.
    if !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'{' && b != b'}')
    {
        return Ok(());
    }
    let reason = if name.is_empty() {
        "the name is empty".to_owned()
    } else if name.len() > MAX_NAME_BYTES {
        format!(
            "the name is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        )
    } else if let Some(bad) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '{' | '}'))
    {
        format!(
            "`{}` contains {bad:?}; use letters, digits and punctuation other than braces",
            name.escape_debug()
        )
    } else {
        return Ok(());
    };
    Err(Error::Invalid { what, reason })
}

/// Checks a partition key (see [`crate::Envelope::partition`]): not empty, at most
/// [`MAX_NAME_BYTES`], no control characters. Spaces and braces are fine: a key is a member
/// and a key suffix after the queue's hash tag, never a tag of its own.
///
/// ```
/// assert!(taskq_core::names::check_partition_key("Acme Corp {EU}").is_ok());
/// assert!(taskq_core::names::check_partition_key("").is_err());
/// assert!(taskq_core::names::check_partition_key("a\nb").is_err());
/// ```
///
/// # Errors
///
/// [`Error::Invalid`] naming what is wrong.
pub fn check_partition_key(key: &str) -> Result<()> {
    let reason = if key.is_empty() {
        "the key is empty".to_owned()
    } else if key.len() > MAX_NAME_BYTES {
        format!(
            "the key is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            key.len()
        )
    } else if key.chars().any(char::is_control) {
        format!("{key:?} holds a control character")
    } else {
        return Ok(());
    };
    Err(Error::Invalid {
        what: "partition key",
        reason,
    })
}
