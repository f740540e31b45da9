//! Turns at the passes any worker of a queue may make for all of them: reaping lost workers,
//! promoting due messages, sweeping orphaned processing lists. Every worker making them every
//! heartbeat cost the broker one pass per worker per heartbeat, most of an idle fleet's load
//! (issue 31); each worker taking a pass with probability `SHARE / peers` keeps the fleet near
//! `SHARE` passes per heartbeat, whatever its size. The peers are counted on one of the
//! worker's queues at a time, each in turn, and the least shared spaces the turns.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

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

/// The peers last counted on each of a worker's queues: one queue per count, in turn, so a
/// count costs one command whatever the queues (issue 31).
#[derive(Debug, Default)]
struct Counted {
    /// Per queue, in the worker's order; `None` until counted.
    peers: Vec<Option<usize>>,
    /// The queue the next count is of.
    next: usize,
}

/// A worker's turns, spaced by the peers last counted.
#[derive(Debug)]
pub(crate) struct Turns {
    /// A pass is taken with probability 1 / `spacing` per round (1: every round).
    spacing: AtomicU64,
    /// Turns taken, for [`Turns::count_due`].
    taken: AtomicU64,
    /// The peers last counted on each of the worker's queues.
    counted: Mutex<Counted>,
}

impl Default for Turns {
    /// Every round until the peers are counted.
    fn default() -> Self {
        Self {
            spacing: AtomicU64::new(1),
            taken: AtomicU64::new(0),
            counted: Mutex::new(Counted::default()),
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

    /// Which of the worker's `queues` queues the next count is of: each in turn.
    pub(crate) fn next_to_count(&self, queues: usize) -> usize {
        self.counted.lock().next % queues.max(1)
    }

    /// Records `peers` counted on queue `queue` of the worker's `queues`, and spaces the turns
    /// by the least shared queue once every queue has a count (every round until then).
    pub(crate) fn counted_on(&self, queue: usize, queues: usize, peers: usize) {
        let least = {
            let mut counted = self.counted.lock();
            counted.peers.resize(queues, None);
            if let Some(slot) = counted.peers.get_mut(queue) {
                *slot = Some(peers);
            }
            counted.next = queue + 1;
            counted.peers.iter().copied().min().flatten()
        };
        // `min` of options is `None` while any queue has no count.
        if let Some(least) = least {
            self.shared_by(least);
        }
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
    fn each_queue_is_counted_in_turn_and_the_least_shared_spaces_the_turns() {
        let turns = Turns::default();
        let queues = 3;
        let mut order = Vec::new();
        for peers in [40, 10, 60] {
            let queue = turns.next_to_count(queues);
            order.push(queue);
            assert_eq!(
                turns.spacing.load(Ordering::Relaxed),
                1,
                "spaced before every queue was counted"
            );
            turns.counted_on(queue, queues, peers);
        }
        assert_eq!(order, [0, 1, 2]);
        // Ten peers on the least shared queue: five rounds per turn.
        assert_eq!(turns.spacing.load(Ordering::Relaxed), 5);
        assert_eq!(turns.next_to_count(queues), 0);
        turns.counted_on(0, queues, 4);
        assert_eq!(turns.spacing.load(Ordering::Relaxed), 2);
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
