//! Turns at the passes any worker of a queue may make for all of them: reaping lost workers,
//! promoting due messages, sweeping orphaned processing lists. Every worker making them every
//! heartbeat cost the broker one pass per worker per heartbeat, most of an idle fleet's load
//! (issue 31); each worker taking a pass with probability `SHARE / peers` keeps the fleet near
//! `SHARE` passes per heartbeat, whatever its size.

use std::sync::atomic::{AtomicU64, Ordering};

/// Passes the fleet makes per heartbeat interval on average: with two, a heartbeat passes
/// without any in about one case in seven (e^-2), two in a row in one in fifty.
const SHARE: u64 = 2;

/// The most rounds a worker's turns are spaced by on average, however large its fleet: the
/// count of peers comes from its own passes, so a fleet that shrank at once is counted again
/// within about this many rounds.
const MOST_SPACING: u64 = 30;

/// Turns between two counts of peers while they are taken every round (a lone worker or a
/// pair): counting costs a command per queue, which a pass spaced by a fleet affords each time.
const COUNT_EVERY: u64 = 30;

/// A worker's turns, spaced by the peers last counted.
#[derive(Debug)]
pub(crate) struct Turns {
    /// A pass is taken with probability 1 / `spacing` per round (1: every round).
    spacing: AtomicU64,
    /// Reaper turns taken, for [`Turns::count_due`].
    taken: AtomicU64,
}

impl Default for Turns {
    /// Every round until the peers are counted.
    fn default() -> Self {
        Self {
            spacing: AtomicU64::new(1),
            taken: AtomicU64::new(0),
        }
    }
}

impl Turns {
    /// Whether this round is one of the worker's turns.
    pub(crate) fn mine(&self) -> bool {
        let spacing = self.spacing.load(Ordering::Relaxed);
        spacing <= 1 || fastrand::u64(..spacing) == 0
    }

    /// Whether this reaper turn should count the peers again: every turn while spaced; while
    /// taken every round, the first three (a fleet starting together is still joining at the
    /// first) and then every [`COUNT_EVERY`].
    pub(crate) fn count_due(&self) -> bool {
        let taken = self.taken.fetch_add(1, Ordering::Relaxed) + 1;
        self.spacing.load(Ordering::Relaxed) > 1 || taken <= 3 || taken.is_multiple_of(COUNT_EVERY)
    }

    /// Spaces the turns for `peers` live workers sharing the queues (this one included).
    pub(crate) fn shared_by(&self, peers: usize) {
        let peers = u64::try_from(peers).unwrap_or(u64::MAX);
        let spacing = peers.div_ceil(SHARE).clamp(1, MOST_SPACING);
        self.spacing.store(spacing, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turns_in(turns: &Turns, rounds: usize) -> usize {
        (0..rounds).filter(|_| turns.mine()).count()
    }

    #[test]
    fn a_worker_alone_or_with_one_peer_takes_every_round() {
        let turns = Turns::default();
        assert_eq!(turns_in(&turns, 100), 100);
        turns.shared_by(2);
        assert_eq!(turns_in(&turns, 100), 100);
        turns.shared_by(0);
        assert_eq!(turns_in(&turns, 100), 100);
    }

    #[test]
    fn peers_are_counted_now_and_then_while_every_round_is_a_turn_and_each_turn_when_spaced() {
        let turns = Turns::default();
        let counts = (0..100)
            .filter(|_| turns.mine() && turns.count_due())
            .count();
        // Turns 1, 2, 3, then 30, 60 and 90.
        assert_eq!(counts, 6);
        turns.shared_by(10);
        assert!((0..100).filter(|_| turns.mine()).all(|_| turns.count_due()));
    }

    #[test]
    fn a_fleet_takes_about_two_turns_per_round_whatever_its_size() {
        for peers in [10, 40] {
            let turns = Turns::default();
            turns.shared_by(peers);
            let rounds = 20_000;
            // The whole fleet's turns per round, as seen from one of its workers.
            let per_round = turns_in(&turns, rounds) as f64 * peers as f64 / rounds as f64;
            assert!(
                (1.6..2.4).contains(&per_round),
                "{peers} peers: {per_round} turns per round"
            );
        }
    }

    #[test]
    fn a_large_fleet_still_counts_itself_again_within_the_most_spacing() {
        let turns = Turns::default();
        turns.shared_by(10_000);
        let taken = turns_in(&turns, 30_000);
        assert!(
            (700..1300).contains(&taken),
            "{taken} turns in 30,000 rounds"
        );
    }
}
