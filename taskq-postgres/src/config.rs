//! [`PostgresConfig`]: where the database is, which schema taskq's tables live in, and the
//! limits that Redis and memory take from their own configurations.

use std::time::Duration;

use taskq_core::{Error, Result};

/// The schema taskq's tables live in when the URL names none.
pub const DEFAULT_SCHEMA: &str = "taskq";

/// How to reach PostgreSQL and what to keep there.
///
/// The URL is sqlx's (`postgres://user:password@host:port/database`), with taskq's own
/// parameters taken out before it is used: `schema` (default `taskq`), `pool` (connections,
/// default 10), `max_queue_length`, `max_dead_letters`, `max_dead_letter_bytes`, and
/// `migrate=auto` to bring the schema up to date at connect (otherwise connecting to a schema
/// that is not at this build's version fails, naming `taskq postgres migrate`).
///
/// ```
/// use taskq_postgres::PostgresConfig;
/// let config = PostgresConfig::new("postgres://app@127.0.0.1:5432/app?schema=jobs&pool=20")?;
/// assert_eq!(config.schema(), "jobs");
/// assert_eq!(config.pool_size(), 20);
/// assert_eq!(config.url(), "postgres://app@127.0.0.1:5432/app");
/// # Ok::<(), taskq_core::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    url: String,
    schema: String,
    pool_size: u32,
    capacity: Option<usize>,
    max_dead_letters: usize,
    max_dead_letter_bytes: usize,
    poll_interval: Duration,
    migrate_at_connect: bool,
}

impl PostgresConfig {
    /// Reads `url` and its taskq parameters.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a schema name that is not a plain identifier or a parameter
    /// that is not a number.
    pub fn new(url: &str) -> Result<Self> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut config = Self {
            url: base.to_owned(),
            schema: DEFAULT_SCHEMA.to_owned(),
            pool_size: 10,
            capacity: None,
            max_dead_letters: 10_000,
            max_dead_letter_bytes: 64 << 20,
            poll_interval: Duration::from_secs(5),
            migrate_at_connect: false,
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "schema" => config.schema = checked_schema(value)?,
                "pool" => config.pool_size = number(key, value)?,
                "max_queue_length" => config.capacity = Some(number(key, value)?),
                "max_dead_letters" => config.max_dead_letters = number(key, value)?,
                "max_dead_letter_bytes" => config.max_dead_letter_bytes = number(key, value)?,
                "migrate" if value == "auto" => config.migrate_at_connect = true,
                "migrate" => {
                    return Err(Error::Invalid {
                        what: "postgres url",
                        reason: format!("`migrate={value}`: the one setting is `migrate=auto`"),
                    })
                }
                _ => kept.push(pair),
            }
        }
        if !kept.is_empty() {
            config.url = format!("{base}?{}", kept.join("&"));
        }
        Ok(config)
    }

    /// The same configuration in schema `schema`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a name that is not a plain identifier.
    pub fn with_schema(mut self, schema: &str) -> Result<Self> {
        self.schema = checked_schema(schema)?;
        Ok(self)
    }

    /// Most messages (ready plus scheduled) one queue holds before enqueue fails with
    /// [`Error::QueueFull`] (default: no bound).
    pub fn with_max_queue_length(mut self, capacity: usize) -> Self {
        self.capacity = Some(capacity.max(1));
        self
    }

    /// Dead letters kept per queue; the oldest are dropped past it (default 10,000).
    pub fn with_max_dead_letters(mut self, max: usize) -> Self {
        self.max_dead_letters = max.max(1);
        self
    }

    /// Bytes of dead letters (payloads and errors) kept per queue; the oldest are dropped
    /// past it, though the newest always stays (default 64 MiB).
    pub fn with_max_dead_letter_bytes(mut self, max: usize) -> Self {
        self.max_dead_letter_bytes = max;
        self
    }

    /// How often an idle fetch looks again without a notification (default 5 s): the most a
    /// missed notification can cost.
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(10));
        self
    }

    /// The same configuration, bringing the schema up to date at connect.
    pub fn with_migrations_at_connect(mut self) -> Self {
        self.migrate_at_connect = true;
        self
    }

    /// The URL sqlx connects to, without taskq's parameters.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema taskq's tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Connections in the pool.
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    pub(crate) fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    pub(crate) fn dead_caps(&self) -> (i64, i64) {
        let clamp = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        (
            clamp(self.max_dead_letters),
            clamp(self.max_dead_letter_bytes),
        )
    }

    pub(crate) fn migrates_at_connect(&self) -> bool {
        self.migrate_at_connect
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

/// A schema name taskq can splice into its statements: a plain lower-case identifier.
fn checked_schema(name: &str) -> Result<String> {
    let plain = !name.is_empty()
        && name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        return Ok(name.to_owned());
    }
    Err(Error::Invalid {
        what: "postgres schema",
        reason: format!(
            "`{name}` is not a plain identifier: use at most 40 lower-case letters, digits and underscores"
        ),
    })
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value.parse().map_err(|_| Error::Invalid {
        what: "postgres url",
        reason: format!("`{key}={value}` is not a number"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taskq_parameters_are_taken_out_and_others_kept() {
        let config =
            PostgresConfig::new("postgres://h/db?sslmode=disable&schema=s1&max_dead_letters=5")
                .unwrap();
        assert_eq!(config.url(), "postgres://h/db?sslmode=disable");
        assert_eq!(config.schema(), "s1");
        assert_eq!(config.dead_caps().0, 5);
    }

    #[test]
    fn a_schema_that_is_no_plain_identifier_is_refused() {
        for bad in ["", "Jobs", "a-b", "x;drop", "1abc"] {
            let err = PostgresConfig::new(&format!("postgres://h/db?schema={bad}")).unwrap_err();
            assert!(err.to_string().contains("postgres schema"), "{bad}: {err}");
        }
    }
}
