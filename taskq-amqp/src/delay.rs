//! Delays without plugins: a chain of 28 queues whose message TTLs are the powers of two
//! seconds (1 s, 2 s, 4 s, … 2^27 s). A delayed message carries its delay in binary in its
//! routing key; at level k it either waits 2^k seconds in queue k (bit set) or passes straight
//! to level k-1, and from level 0 the deliver exchange routes it by its last word to its queue.
//! Every delay is the sum of the levels it waits in, so it is exact to the second, and it lives
//! in durable quorum queues, so it survives a broker restart. (The design of NServiceBus's
//! RabbitMQ transport.)

use chrono::{DateTime, Utc};

use crate::names::{self, DELAY_LEVELS};

/// Where to publish a message due at `eta`: `None` when it is due now, else the exchange of its
/// highest delay level and its routing key.
pub(crate) fn route(
    level_queue: &str,
    eta: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<(String, String)> {
    let millis = (eta - now).num_milliseconds();
    if millis <= 0 {
        return None;
    }
    // Whole seconds, rounded up: never early, less than a second late.
    let max = (1u64 << DELAY_LEVELS) - 1;
    let seconds = (millis as u64).div_ceil(1000).min(max);
    let highest = 63 - seconds.leading_zeros();
    let bits: Vec<&str> = (0..DELAY_LEVELS)
        .rev()
        .map(|k| if seconds >> k & 1 == 1 { "1" } else { "0" })
        .collect();
    let key = format!("{}.{}", bits.join("."), names::delivery_word(level_queue));
    Some((names::delay_level(highest), key))
}

/// The binding at level `k` for messages whose bit `k` is `bit`.
pub(crate) fn level_binding(k: u32, bit: bool) -> String {
    let skipped = "*.".repeat((DELAY_LEVELS - 1 - k) as usize);
    format!("{skipped}{}.#", if bit { 1 } else { 0 })
}

/// Where level `k` sends what it is done with: level k-1, or the deliver exchange after 0.
pub(crate) fn next_exchange(k: u32) -> String {
    match k {
        0 => names::DELIVER_EXCHANGE.to_owned(),
        k => names::delay_level(k - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn due_messages_are_not_delayed() {
        assert_eq!(route("q", at(0), at(0)), None);
        assert_eq!(route("q", at(-5), at(0)), None);
    }

    #[test]
    fn delays_round_up_to_whole_seconds_and_start_at_their_highest_bit() {
        let (exchange, key) = route("q", at(1), at(0)).unwrap();
        assert_eq!(exchange, "taskq.delay.0", "1 ms waits a second, never less");
        assert!(key.starts_with(&format!("{}1.", "0.".repeat(27))), "{key}");
        let (exchange, key) = route("q", at(10_000), at(0)).unwrap();
        assert_eq!(exchange, "taskq.delay.3", "10 s = 8 + 2");
        assert!(
            key.starts_with(&format!("{}1.0.1.0.", "0.".repeat(24))),
            "{key}"
        );
        assert!(key.ends_with(&names::delivery_word("q")));
    }

    #[test]
    fn each_bit_matches_exactly_one_binding_per_level() {
        let (_, key) = route("q", at(10_000), at(0)).unwrap();
        let words: Vec<&str> = key.split('.').collect();
        for k in 0..DELAY_LEVELS {
            let position = (DELAY_LEVELS - 1 - k) as usize;
            let set = words[position] == "1";
            assert_eq!(set, matches!(k, 1 | 3), "bit {k}");
            assert_eq!(
                level_binding(k, set).split('.').nth(position),
                Some(words[position])
            );
        }
    }
}
