//! Reading the envelope's RFC 3339 timestamps quickly: every message a worker decodes carries
//! one to three of them, and chrono's general parser cost about 2,000 instructions each (a
//! tenth of a memory-broker drain's decode). humantime's parser takes the UTC form producers
//! write (`…Z` or `…+00:00`, any fraction); anything else (other offsets, years before 1970)
//! goes to chrono as before. Writing goes the same way: humantime's writer formats the whole
//! timestamp at once (always nine fractional digits), where chrono's wrote it piece by piece.

use chrono::{DateTime, Utc};
use serde::{de, Deserializer, Serialize, Serializer};

/// `#[serde(with = "crate::timestamp")]` for a `DateTime<Utc>`: humantime's writer (one
/// formatted string, with nanoseconds) for 1970 to 9999, chrono's for anything else.
pub(crate) fn serialize<S: Serializer>(
    at: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    if (0..253_402_300_800).contains(&at.timestamp()) {
        let system = std::time::SystemTime::from(*at);
        serializer.collect_str(&humantime::format_rfc3339_nanos(system))
    } else {
        at.serialize(serializer)
    }
}

/// Reads an RFC 3339 timestamp (see the module's doc).
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(Visitor)
}

/// `#[serde(with = "crate::timestamp::option")]` for an `Option<DateTime<Utc>>`.
pub(crate) mod option {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_some(&Timestamp(at)),
            None => serializer.serialize_none(),
        }
    }

    /// Serializes through [`super::serialize`].
    struct Timestamp<'a>(&'a DateTime<Utc>);

    impl Serialize for Timestamp<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            super::serialize(self.0, serializer)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        deserializer.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> de::Visitor<'de> for OptionVisitor {
        type Value = Option<DateTime<Utc>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an RFC 3339 timestamp or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            super::deserialize(deserializer).map(Some)
        }
    }
}

struct Visitor;

impl de::Visitor<'_> for Visitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an RFC 3339 timestamp")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        parse(text).ok_or_else(|| E::invalid_value(de::Unexpected::Str(text), &self))
    }
}

/// `text` as a UTC instant, if it is an RFC 3339 timestamp.
fn parse(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = humantime::parse_rfc3339(text) {
        return Some(DateTime::<Utc>::from(at));
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use chrono::{DateTime, Utc};

    #[test]
    fn reads_what_chrono_reads() {
        for text in [
            "2026-11-30T17:41:00Z",
            "2026-11-30T17:41:00.5Z",
            "2026-11-30T17:41:00.123456789Z",
            "2026-11-30T17:41:00.123+00:00",
            "2026-11-30T18:41:00.123+01:00",
            "1969-07-20T20:17:40Z",
            "2026-11-30T17:41:00.123456Z",
        ] {
            let chrono = DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(parse(text), Some(chrono), "{text}");
        }
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-30 17:41:00",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn what_is_written_reads_back_exactly() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct At {
            #[serde(with = "super")]
            at: DateTime<Utc>,
        }
        let early = DateTime::parse_from_rfc3339("1969-07-20T20:17:40.5Z")
            .unwrap()
            .with_timezone(&Utc);
        for at in [Utc::now(), early, DateTime::from_timestamp(0, 0).unwrap()] {
            let written = serde_json::to_string(&At { at }).unwrap();
            let read: At = serde_json::from_str(&written).unwrap();
            assert_eq!(read.at, at, "{written}");
        }
    }

    #[test]
    fn what_chrono_writes_reads_back() {
        let now = Utc::now();
        let written = serde_json::to_string(&now).unwrap();
        assert_eq!(parse(written.trim_matches('"')), Some(now));
    }
}
