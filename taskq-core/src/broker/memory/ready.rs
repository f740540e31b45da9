//! A memory queue's ready messages: FIFO per priority level, and within a level round-robin
//! between partitions (see `docs/partitions.md`), with a running limit per partition.

use std::{collections::VecDeque, sync::Arc};

use super::{FastMap, FastSet, Message};
use crate::{broker::PartitionStats, priority::Priority};

const LEVELS: usize = Priority::LEVELS as usize;

/// Whose turn it is in a level's round-robin: the queue's unpartitioned messages (one turn,
/// like one partition) or a partition.
type Turn = Option<Arc<str>>;

/// Ready messages of one queue.
///
/// Each level keeps a ring of turns: the unpartitioned list while it has messages, and every
/// partition with messages at that level and room under its limit, each once. A take serves
/// the ring's front and moves it to the back, so a partition waits for the number of busy
/// partitions, not for the size of their backlogs. A partition at its limit leaves the rings
/// and comes back when one of its messages is settled ([`Ready::release`]).
#[derive(Debug, Default)]
pub(super) struct Ready {
    plain: [VecDeque<Message>; LEVELS],
    partitions: FastMap<Arc<str>, Partition>,
    rings: [VecDeque<Turn>; LEVELS],
    /// (level, partition) pairs that are in their level's ring.
    ringed: FastSet<(usize, Arc<str>)>,
    len: usize,
}

/// One partition's ready messages, how many of its slots workers hold, and its limit (slots
/// are counted only while it has one, as on Redis).
#[derive(Debug, Default)]
struct Partition {
    levels: [VecDeque<Message>; LEVELS],
    ready: usize,
    running: usize,
    limit: Option<u32>,
}

impl Partition {
    fn at_limit(&self) -> bool {
        self.limit
            .is_some_and(|limit| self.running >= limit as usize)
    }
}

impl Ready {
    /// Ready messages, partitioned or not.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds a message at the back of its level (its partition's, when it has one).
    pub(super) fn push_back(&mut self, message: Message) {
        self.push(message, false);
    }

    /// Adds a message at the front of its level: it is the next of its turn.
    pub(super) fn push_front(&mut self, message: Message) {
        self.push(message, true);
    }

    fn push(&mut self, message: Message, front: bool) {
        let level = Priority::new(message.priority).index();
        self.len += 1;
        let Some(key) = message.partition.clone() else {
            let list = &mut self.plain[level];
            if list.is_empty() {
                self.rings[level].push_back(None);
            }
            if front {
                list.push_front(message);
            } else {
                list.push_back(message);
            }
            return;
        };
        let partition = self.partitions.entry(key.clone()).or_default();
        if message.partition_limit.is_some() {
            partition.limit = message.partition_limit;
        }
        partition.ready += 1;
        let list = &mut partition.levels[level];
        if front {
            list.push_front(message);
        } else {
            list.push_back(message);
        }
        if !partition.at_limit() && self.ringed.insert((level, key.clone())) {
            self.rings[level].push_back(Some(key));
        }
    }

    /// Takes the next message: highest level first, and within it the turn at the ring's
    /// front. A partition's message counts as running until [`Ready::release`].
    pub(super) fn pop(&mut self) -> Option<Message> {
        for level in (0..LEVELS).rev() {
            while let Some(turn) = self.rings[level].front().cloned() {
                if let Some(message) = self.take_turn(level, turn) {
                    self.len -= 1;
                    return Some(message);
                }
            }
        }
        None
    }

    /// Serves the front turn of `level`'s ring once, rotating it to the back or dropping it
    /// when it has nothing more to give (then `None`, and the caller looks again).
    fn take_turn(&mut self, level: usize, turn: Turn) -> Option<Message> {
        let ring = &mut self.rings[level];
        let Some(key) = turn else {
            let list = &mut self.plain[level];
            let message = list.pop_front();
            ring.pop_front();
            if !list.is_empty() {
                ring.push_back(None);
            }
            return message;
        };
        ring.pop_front();
        let Some(partition) = self.partitions.get_mut(&key) else {
            self.ringed.remove(&(level, key));
            return None;
        };
        let mut message = if partition.at_limit() {
            None
        } else {
            partition.levels[level].pop_front()
        };
        if let Some(message) = &mut message {
            partition.ready -= 1;
            message.holds_slot = partition.limit.is_some();
            if message.holds_slot {
                partition.running += 1;
            }
        }
        if partition.at_limit() || partition.levels[level].is_empty() {
            self.ringed.remove(&(level, key.clone()));
        } else {
            ring.push_back(Some(key.clone()));
        }
        if partition.ready == 0 && partition.running == 0 {
            self.partitions.remove(&key);
        }
        message
    }

    /// A taken message of a partition was settled (acknowledged, retried, requeued,
    /// dead-lettered, recovered): its slot frees, and a partition that was at its limit takes
    /// its turns again. True when that made ready messages fetchable (waiting fetches should
    /// look again).
    pub(super) fn release(&mut self, message: &Message) -> bool {
        let Some(key) = message.partition.as_ref().filter(|_| message.holds_slot) else {
            return false;
        };
        let Some(partition) = self.partitions.get_mut(key) else {
            return false;
        };
        let was_at_limit = partition.at_limit();
        partition.running = partition.running.saturating_sub(1);
        let mut fetchable = false;
        if was_at_limit && !partition.at_limit() {
            for level in 0..LEVELS {
                if partition.levels[level].is_empty() {
                    continue;
                }
                fetchable = true;
                if self.ringed.insert((level, key.clone())) {
                    self.rings[level].push_back(Some(key.clone()));
                }
            }
        }
        if partition.ready == 0 && partition.running == 0 {
            self.partitions.remove(key);
        }
        fetchable
    }

    /// Ready messages in level order, highest first; within a level the unpartitioned ones,
    /// then each partition's (not the exact order of the turns).
    pub(super) fn in_order(&self) -> impl Iterator<Item = &Message> {
        (0..LEVELS).rev().flat_map(move |level| {
            self.plain[level].iter().chain(
                self.partitions
                    .values()
                    .flat_map(move |partition| partition.levels[level].iter()),
            )
        })
    }

    /// The first message of every list (the oldest of each, for the oldest-pending age).
    pub(super) fn fronts(&self) -> impl Iterator<Item = &Message> {
        let partitioned = self.partitions.values().flat_map(|p| p.levels.iter());
        self.plain
            .iter()
            .chain(partitioned)
            .filter_map(VecDeque::front)
    }

    /// Drops every ready message; returns how many there were. Running counts stay: those
    /// messages are still held and will be released.
    pub(super) fn clear(&mut self) -> usize {
        let cleared = self.len;
        self.plain.iter_mut().for_each(VecDeque::clear);
        self.rings.iter_mut().for_each(VecDeque::clear);
        self.ringed.clear();
        self.partitions.retain(|_, partition| {
            partition.levels.iter_mut().for_each(VecDeque::clear);
            partition.ready = 0;
            partition.running > 0
        });
        self.len = 0;
        cleared
    }

    /// Every partition with work, unranked.
    pub(super) fn partition_stats(&self) -> Vec<PartitionStats> {
        self.partitions
            .iter()
            .map(|(key, p)| PartitionStats::new(&**key, p.ready, p.running, p.limit))
            .collect()
    }
}
