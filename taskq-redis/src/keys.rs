//! Every Redis key taskq uses, built in one place.
//!
//! All keys of one queue share the hash tag `{<queue>}`, so every script touches one slot and
//! the layout runs unchanged on Redis Cluster.

use taskq_core::Priority;

/// Number of priority levels; level `n` has its own pending list.
const LEVELS: u8 = Priority::LEVELS;

/// Keys of one queue.
#[derive(Clone, Debug)]
pub(crate) struct QueueKeys {
    prefix: String,
}

impl QueueKeys {
    pub(crate) fn new(queue: &str) -> Self {
        Self {
            prefix: format!("taskq:{{{queue}}}"),
        }
    }

    /// The prefix every key of this queue starts with, `taskq:{q}`: scripts name a queue's
    /// partition keys from it (`lua/lib/partitions.lua`), since partition keys are data.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Partition with a limit -> its ready messages (HASH; `lua/lib/partitions.lua` keeps it
    /// and the queue's other partition keys).
    pub(crate) fn partitions_ready(&self) -> String {
        format!("{}:part-ready", self.prefix)
    }

    /// Ready messages of one priority level (LIST; producers push left, consumers take right).
    pub(crate) fn pending(&self, level: u8) -> String {
        format!("{}:pending:{}", self.prefix, level.min(LEVELS - 1))
    }

    /// All pending levels, lowest first (`pending:0 .. pending:9`).
    pub(crate) fn pending_ascending(&self) -> Vec<String> {
        (0..LEVELS).map(|level| self.pending(level)).collect()
    }

    /// All pending levels, highest first (fetch order).
    pub(crate) fn pending_descending(&self) -> Vec<String> {
        (0..LEVELS).rev().map(|level| self.pending(level)).collect()
    }

    /// Wake-up token for idle workers: at most one element, pushed whenever messages become
    /// ready, popped by one blocked worker (LIST).
    pub(crate) fn wake(&self) -> String {
        format!("{}:wake", self.prefix)
    }

    /// Messages that ended in one minute (HASH `processed`, `failed`), kept two hours.
    pub(crate) fn history(&self, minute: i64) -> String {
        format!("{}:history:{minute}", self.prefix)
    }

    /// How recent runs ended, newest first, capped (LIST of encoded outcomes).
    pub(crate) fn outcomes(&self) -> String {
        format!("{}:outcomes", self.prefix)
    }

    /// Messages a worker holds (LIST).
    pub(crate) fn processing(&self, worker: &str) -> String {
        format!("{}:processing:{}", self.prefix, worker)
    }

    /// The prefix of every processing list of this queue (for the stats script, which names
    /// the lists of the workers it finds).
    pub(crate) fn processing_prefix(&self) -> String {
        format!("{}:processing:", self.prefix)
    }

    /// Workers that have (or had) a processing list on this queue (SET): recovery and the
    /// orphan sweep find every list through it, whether or not its worker holds a lease.
    pub(crate) fn holders(&self) -> String {
        format!("{}:holders", self.prefix)
    }

    /// Live workers of this queue -> liveness deadline in ms (ZSET).
    pub(crate) fn workers(&self) -> String {
        format!("{}:workers", self.prefix)
    }

    /// Messages due later, scored by due time in ms (ZSET).
    pub(crate) fn scheduled(&self) -> String {
        format!("{}:scheduled", self.prefix)
    }

    /// Dead letters, newest first (capped LIST of JSON records).
    pub(crate) fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// Dead letters dropped because the list was full, oldest first (STRING counter).
    pub(crate) fn dead_dropped(&self) -> String {
        format!("{}:dead-dropped", self.prefix)
    }

    /// Bytes the dead-letter list holds, kept by the scripts that change it (STRING counter).
    pub(crate) fn dead_bytes(&self) -> String {
        format!("{}:dead-bytes", self.prefix)
    }

    /// Marker of a unique enqueue; holds the task id that claimed `key` (STRING with TTL).
    pub(crate) fn unique(&self, key: &str) -> String {
        format!("{}:unique:{}", self.prefix, key)
    }

    /// Present while the queue is paused (`taskq queue pause`): every fetch skips the queue
    /// (STRING: when it was paused, ms).
    pub(crate) fn paused(&self) -> String {
        format!("{}:paused", self.prefix)
    }

    /// A debounce or throttle key's state (HASH: id, member, first, start, until; expires after
    /// its window).
    pub(crate) fn flow(&self, key: &str) -> String {
        format!("{}:flow:{}", self.prefix, key)
    }

    /// Rate limiter state of one task name: its theoretical arrival time, ms (STRING).
    pub(crate) fn rate(&self, task: &str) -> String {
        format!("{}:rate:{}", self.prefix, task)
    }

    /// Task id -> times recovered from lost workers (HASH).
    pub(crate) fn redeliveries(&self) -> String {
        format!("{}:redeliveries", self.prefix)
    }
}

/// Names of every queue that ever received a message (SET), for operators.
pub(crate) const QUEUES: &str = "taskq:queues";

/// Queue name -> when a producer last registered it, ms (HASH). Hash-tagged to the registry's
/// slot, so that forgetting a queue reads and writes both in one script on a cluster.
pub(crate) const QUEUES_SEEN: &str = "taskq:queues-seen{taskq:queues}";

/// The due index (ZSET, one server only): a queue's leases (`taskq:{q}:workers`) or scheduled
/// set -> the earliest score in it, ms. The fleet's reaper and promotion passes read this one
/// key instead of every queue's sets (an idle worker's cost, issue 31); every path that adds
/// an earlier score lowers its entry, the pass that served a set writes it again
/// (`lua/lib/due.lua`). A cluster keeps none: its scripts cannot reach a key of another slot.
pub(crate) const DUE: &str = "taskq:due";

/// Task name -> its declared options, JSON, as the latest worker published them (HASH).
pub(crate) const TASKS: &str = "taskq:tasks";

/// Live workers of every queue -> deadline of their info record, ms (ZSET).
pub(crate) const WORKERS: &str = "taskq:workers";

/// Revoked task ids -> expiry, ms (ZSET).
pub(crate) const REVOKED: &str = "taskq:revoked";

/// The control pub/sub channel (ping, revoke).
pub(crate) const CONTROL: &str = "taskq:control";

/// What a worker reports about itself (STRING with TTL, JSON).
pub(crate) fn worker_info(id: &str) -> String {
    format!("taskq:worker:{id}")
}

/// The beat leader lock: the owner token of the leading beat (STRING with TTL).
pub(crate) const BEAT_LEADER: &str = "taskq:beat:leader";

/// Beat entry name -> last fired slot, ms since the epoch (HASH).
pub(crate) const BEAT_LAST_FIRE: &str = "taskq:beat:last-fire";

/// Recently lost workers (LIST of JSON `LostWorker`, newest first, capped).
pub(crate) const LOST_WORKERS: &str = "taskq:workers:lost";

/// The leading beat's view of its schedule (JSON `BeatStatus`), with a TTL.
pub(crate) const BEAT_STATUS: &str = "taskq:beat:status";

/// The stored result of one task (STRING with TTL).
pub(crate) fn result(id: &str) -> String {
    format!("taskq:result:{id}")
}

/// A workflow's or group's record; its hash tag keeps the group's outcomes in one slot.
pub(crate) fn workflow(id: &str) -> String {
    format!("taskq:workflow:{{{id}}}")
}

/// The outcomes a group's members reported, by member index.
pub(crate) fn workflow_done(id: &str) -> String {
    format!("taskq:workflow:{{{id}}}:done")
}

/// Set by a group's first failure.
pub(crate) fn workflow_failed(id: &str) -> String {
    format!("taskq:workflow:{{{id}}}:failed")
}

/// The pub/sub channel on which a final result of one task is announced.
pub(crate) fn result_channel(id: &str) -> String {
    format!("taskq:result-ready:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_a_queue_share_one_hash_tag() {
        let keys = QueueKeys::new("emails");
        assert_eq!(keys.pending(3), "taskq:{emails}:pending:3");
        assert_eq!(keys.pending(42), "taskq:{emails}:pending:9");
        assert_eq!(keys.processing("w1"), "taskq:{emails}:processing:w1");
        for key in [
            keys.workers(),
            keys.scheduled(),
            keys.dead(),
            keys.redeliveries(),
        ] {
            assert!(key.starts_with("taskq:{emails}:"), "{key}");
        }
        assert_eq!(keys.pending_descending()[0], "taskq:{emails}:pending:9");
        assert_eq!(keys.pending_ascending()[0], "taskq:{emails}:pending:0");
    }
}
