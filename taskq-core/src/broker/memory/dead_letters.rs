//! One queue's dead letters, newest first, capped by records and by bytes.

use std::collections::VecDeque;

use crate::broker::DeadLetter;

/// How many dead letters a queue keeps, and how many bytes of them.
#[derive(Clone, Copy, Debug)]
pub(super) struct DeadCaps {
    pub(super) records: usize,
    pub(super) bytes: usize,
}

/// The list, what it holds in bytes (payload and error, what dominates a record) and how many
/// records the caps pushed out.
#[derive(Debug, Default)]
pub(super) struct DeadLetters {
    records: VecDeque<DeadLetter>,
    bytes: usize,
    dropped: u64,
}

fn size(letter: &DeadLetter) -> usize {
    letter.payload.len() + letter.error.as_ref().map_or(0, String::len)
}

impl DeadLetters {
    /// Adds the newest record, then drops the oldest until both caps hold (the newest always
    /// stays, whatever its size).
    pub(super) fn push(&mut self, letter: DeadLetter, caps: DeadCaps) {
        self.bytes += size(&letter);
        self.records.push_front(letter);
        let mut dropped = 0;
        while self.records.len() > 1
            && (self.records.len() > caps.records.max(1) || self.bytes > caps.bytes)
        {
            if let Some(oldest) = self.records.pop_back() {
                self.bytes -= size(&oldest);
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.dropped += dropped;
            tracing::warn!(dropped, "dead-letter list full: dropped the oldest (raise max_dead_letters or max_dead_letter_bytes, or requeue or purge them)");
        }
    }

    /// Removes and returns the records `chosen` picks, keeping the others in order.
    pub(super) fn take(&mut self, chosen: impl Fn(&DeadLetter) -> bool) -> Vec<DeadLetter> {
        let (taken, kept): (VecDeque<DeadLetter>, VecDeque<DeadLetter>) =
            std::mem::take(&mut self.records)
                .into_iter()
                .partition(|letter| chosen(letter));
        self.records = kept;
        self.bytes -= taken.iter().map(size).sum::<usize>();
        taken.into()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &DeadLetter> {
        self.records.iter()
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    /// Records the caps pushed out, ever.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }
}
