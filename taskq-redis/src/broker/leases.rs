//! What this process knows of each of its workers' leases, queue by queue: which are parked.
//!
//! A lease exists so that a worker's messages come back when it dies. A worker that holds
//! nothing in a queue has nothing there to lose, so its lease there is *parked*: given a
//! deadline far ahead ([`PARKED_FOR`]) once, instead of renewed every heartbeat. An idle
//! worker's heartbeat then sends nothing at all, whatever its queues (issue 31). The lease
//! still names the worker: peers count it, a fetch finds it, and a worker killed while idle is
//! reaped once the parked deadline passes, with nothing to return.
//!
//! The fetch that moves messages into a processing list turns a parked lease back into a short
//! one in the same script (`fetch.lua`), so a worker that dies holding messages is recovered
//! within its liveness deadline as before; its heartbeats then renew it while it holds any, and
//! park it again (`park_lease.lua`, only when the processing list is empty) once it holds none.

use std::{collections::HashMap, time::Duration};

/// How far ahead a parked lease's deadline is set; it is set again when half of it is left.
/// Longer costs less (a script per queue per half), shorter forgets sooner a worker killed
/// while idle: until its parked lease lapses, its peers still count it and space their turns
/// at reaping and promoting by it (`taskq-worker/src/turns.rs`).
pub(crate) const PARKED_FOR: Duration = Duration::from_secs(300);

/// One worker's leases as this process last set them.
#[derive(Debug)]
pub(crate) struct Leases {
    /// The liveness deadline of a short lease, from its setting (ms).
    ttl_ms: i64,
    /// Queue -> the deadline its parked lease was given (ms); absent: a short lease.
    parked_until: HashMap<String, i64>,
}

/// What a heartbeat does with one queue's lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The worker holds messages there: renew the short lease.
    Renew,
    /// It holds none: park the lease (again, when half of the parked time is gone).
    Park,
    /// Parked, and far enough from its deadline: nothing to send.
    Keep,
}

impl Leases {
    /// A worker whose short leases last `ttl`, none parked yet.
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl_ms: millis_of(ttl),
            parked_until: HashMap::new(),
        }
    }

    /// How long a short lease lasts, ms.
    pub(crate) fn ttl_ms(&self) -> i64 {
        self.ttl_ms
    }

    /// How far ahead a lease is parked, ms: long beside a short lease, so that a fetch tells
    /// them apart by their deadlines alone (`fetch.lua`: beyond a quarter of this ahead, which
    /// a parked lease always is and a short one never reaches).
    pub(crate) fn parked_for_ms(&self) -> i64 {
        parked_for_ms(self.ttl_ms)
    }

    /// The step for `queue` at `now` (ms), when the worker `holds` messages there (or may:
    /// a fetch whose reply was lost).
    pub(crate) fn step(&self, queue: &str, holds: bool, now: i64) -> Step {
        if holds {
            return Step::Renew;
        }
        match self.parked_until.get(queue) {
            Some(until) if until - now > self.parked_for_ms() / 2 => Step::Keep,
            _ => Step::Park,
        }
    }

    /// `queue`'s lease was parked until `until` (ms).
    pub(crate) fn parked(&mut self, queue: &str, until: i64) {
        self.parked_until.insert(queue.to_owned(), until);
    }

    /// `queue`'s lease is short again: renewed, or made short by a fetch that moved messages.
    pub(crate) fn unparked(&mut self, queue: &str) {
        self.parked_until.remove(queue);
    }
}

/// [`Leases::parked_for_ms`] for a short lease of `ttl_ms`.
pub(crate) fn parked_for_ms(ttl_ms: i64) -> i64 {
    millis_of(PARKED_FOR).max(ttl_ms * 8)
}

/// `duration` in whole milliseconds.
pub(crate) fn millis_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    #[test]
    fn a_worker_holding_messages_renews_whatever_was_parked() {
        let mut leases = Leases::new(TTL);
        leases.parked("q", 1_000_000);
        assert_eq!(leases.step("q", true, 0), Step::Renew);
    }

    #[test]
    fn an_idle_lease_is_parked_once_then_kept_until_half_its_time_is_gone() {
        let mut leases = Leases::new(TTL);
        assert_eq!(leases.step("q", false, 0), Step::Park, "short: park it");
        let until = leases.parked_for_ms();
        leases.parked("q", until);
        assert_eq!(leases.step("q", false, 1_000), Step::Keep);
        assert_eq!(leases.step("q", false, until / 2 - 1), Step::Keep);
        assert_eq!(leases.step("q", false, until / 2), Step::Park, "set again");
        leases.unparked("q");
        assert_eq!(
            leases.step("q", false, 1_000),
            Step::Park,
            "made short by a fetch"
        );
    }

    #[test]
    fn a_fetch_tells_a_parked_lease_from_a_short_one_even_with_a_long_ttl() {
        for ttl in [TTL, Duration::from_secs(3_600)] {
            let leases = Leases::new(ttl);
            let quarter = leases.parked_for_ms() / 4;
            assert!(quarter >= 2 * leases.ttl_ms(), "a short lease stays below");
            assert!(
                leases.parked_for_ms() / 2 > quarter,
                "a parked one stays above"
            );
        }
    }
}
