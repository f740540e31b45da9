//! [`Priority`]: the levels a queue's messages are ordered by.

use serde::{Deserialize, Serialize};

/// A message's priority within its queue: 0 (lowest, the default) to 9 (highest). Higher
/// levels are fetched first; within a level, oldest first. Values above 9 are clamped, on
/// enqueue and again when a message is read, so every broker sees a valid level.
///
/// ```
/// use taskq_core::Priority;
/// assert_eq!(Priority::new(7).get(), 7);
/// assert_eq!(Priority::new(200), Priority::HIGHEST);
/// assert_eq!(Priority::LEVELS, 10);
/// assert_eq!(serde_json::to_string(&Priority::new(3)).unwrap(), "3");
/// assert_eq!(serde_json::from_str::<Priority>("12").unwrap(), Priority::HIGHEST);
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(from = "u8", into = "u8")]
pub struct Priority(u8);

impl Priority {
    /// Number of levels. The only place it is defined: the memory broker sizes its level
    /// lists by it, the Redis broker builds one pending list per level and its scripts derive
    /// the count from the keys they are given. At most 10, because the Redis scheduled set
    /// encodes the level in one digit.
    pub const LEVELS: u8 = 10;

    /// The lowest level, 0: the default.
    pub const LOWEST: Priority = Priority(0);

    /// The highest level, 9.
    pub const HIGHEST: Priority = Priority(Self::LEVELS - 1);

    /// Level `level`, clamped to [`Priority::HIGHEST`].
    pub const fn new(level: u8) -> Self {
        if level > Self::HIGHEST.0 {
            Self::HIGHEST
        } else {
            Self(level)
        }
    }

    /// The level as a number.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The level as an index into a per-level array.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl From<u8> for Priority {
    fn from(level: u8) -> Self {
        Self::new(level)
    }
}

impl From<Priority> for u8 {
    fn from(priority: Priority) -> Self {
        priority.0
    }
}
