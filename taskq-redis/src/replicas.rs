//! Durable writes on a master that has lost replicas: the stated policy.
//!
//! `?durable=N` waits for N replicas after each write (`WAIT N timeout`). A master with fewer
//! than N replicas attached (its replica died or was promoted away, and none came back) can
//! never satisfy that: every write would fail and be retried for ever, and the workers would
//! stop completing anything at the first failure, which is not what anyone turns durable mode
//! on for. So, as Redis's own `min-replicas-to-write` users expect, a write waits for the
//! replicas that are **attached**, at most N: with none attached it is accepted after the
//! master's own write, and taskq warns once (per master) that durable writes are degraded,
//! and once more when they are whole again. A replica that is attached but does not acknowledge
//! in time still fails the write (transient: retried), as before.
//!
//! While degraded, the attached count is asked again (`INFO replication`) at most once a
//! second, so a returning replica is waited for again within a second of attaching. What is
//! known is kept per master, as the hash slots it serves (on a cluster, read from the master
//! itself with `CLUSTER NODES`; elsewhere all of them): a write to any key of a degraded master
//! skips the `WAIT` it cannot satisfy, so a worker writing results to thousands of keys pays one
//! `WAIT` and one `INFO` per master and second, not one per key.
//!
//! The judgement must describe the server that took the write, or a write to an old master
//! could be acknowledged on the word of the new one: a `WAIT` that did not answer (client
//! timeout, reset) is a failed write, never "none acknowledged"; a server whose
//! `INFO replication` does not say `role:master` is never degraded; and behind Sentinel the
//! judgement holds only while the connection leads to the server it was made on (its epoch,
//! changed by a failover that moved the connection) and only while the sentinels name that
//! server as the master (so an old master cut off from them, which still
//! answers but has lost its replica to the promotion, is never written to without one).

use std::{
    collections::HashMap,
    ops::RangeInclusive,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use crate::Durable;

/// How long a degraded master's attached-replica count is trusted before it is asked again.
const RECHECK: Duration = Duration::from_secs(1);

/// The hash slots of a Redis Cluster; a lone master or a Sentinel group serves all of them.
pub(crate) const ALL_SLOTS: RangeInclusive<u16> = 0..=16383;

/// Durable writes of one broker or backend: the setting, what is known of degraded masters,
/// and the `WAIT`s in flight.
#[derive(Clone, Debug)]
pub(crate) struct DurableWrites {
    pub(crate) setting: Durable,
    watch: Arc<Mutex<Vec<Degraded>>>,
    waits: Arc<Waits>,
}

/// Group commit of `WAIT`s: one in flight per slot, its answer shared by every write it covers.
///
/// A `WAIT` covers every write its connection carried before it, whoever sent them; the writes
/// of a broker share one multiplexed connection. Each writer sending its own, they queued one
/// behind another there, each for its whole timeout on a master short of replicas, and held
/// every other call of the process behind them: calls timed out, and 64 producers landed
/// nothing for a minute on a promoted master without a replica.
#[derive(Debug, Default)]
struct Waits {
    /// Counts writes that completed; a `WAIT` sent once the count reached `n` covers the
    /// writes numbered up to `n`.
    written: AtomicU64,
    by_slot: Mutex<HashMap<u16, Arc<tokio::sync::Mutex<Option<Answered>>>>>,
}

/// The last `WAIT` of a slot that answered.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Answered {
    /// The writes it covers: those numbered up to this.
    covers: u64,
    /// The connection it was sent on (see [`DurableWrites::wait_for`]'s epoch).
    epoch: u64,
    /// How many replicas it waited for, and how many acknowledged.
    asked: usize,
    acknowledged: usize,
}

/// The right to send a slot's `WAIT` (held while it is in flight) and the last answer there.
pub(crate) struct WaitTurn {
    last: tokio::sync::OwnedMutexGuard<Option<Answered>>,
    written: u64,
}

impl WaitTurn {
    /// What a `WAIT` that covers write `ticket` on connection `epoch` answered, if one for at
    /// least `asked` replicas already did.
    pub(crate) fn answered(&self, ticket: u64, epoch: u64, asked: usize) -> Option<usize> {
        self.last
            .filter(|last| last.covers >= ticket && last.epoch == epoch && last.asked >= asked)
            .map(|last| last.acknowledged)
    }

    /// Records the answer of the `WAIT` sent under this turn.
    pub(crate) fn record(&mut self, epoch: u64, asked: usize, acknowledged: usize) {
        *self.last = Some(Answered {
            covers: self.written,
            epoch,
            asked,
            acknowledged,
        });
    }
}

/// A master, by the hash slots it serves, seen with fewer replicas than the setting asks for.
#[derive(Clone, Debug)]
struct Degraded {
    slots: Vec<RangeInclusive<u16>>,
    attached: usize,
    checked: Instant,
    /// The server the count was read on (behind Sentinel, changed by a failover).
    epoch: u64,
}

impl Degraded {
    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|range| range.contains(&slot))
    }
}

/// What a write should wait for on one master.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Every replica the setting asks for.
    Whole,
    /// The master was degraded to this many replicas at most a second ago.
    Degraded(usize),
    /// It was degraded longer ago than that: ask again how many are attached.
    Recheck,
}

impl DurableWrites {
    /// The setting of a connection whose calls give up after `response_timeout`: `WAIT`'s
    /// own timeout is kept to half of it, so that the server always answers with its count
    /// (a `WAIT` the client gave up on says nothing, and fails the write).
    pub(crate) fn new(setting: Option<Durable>, response_timeout: Duration) -> Option<Self> {
        setting.map(|setting| Self {
            setting: Durable {
                replicas: setting.replicas,
                timeout: setting.timeout.min(response_timeout / 2),
            },
            watch: Arc::default(),
            waits: Arc::default(),
        })
    }

    /// Numbers a write that has just completed, for [`WaitTurn::answered`].
    pub(crate) fn written(&self) -> u64 {
        self.waits.written.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Waits for the turn to send `slot`'s `WAIT`; a `WAIT` sent under it covers every write
    /// numbered before the turn was given.
    pub(crate) async fn wait_turn(&self, slot: u16) -> WaitTurn {
        let group = self.waits.by_slot.lock().entry(slot).or_default().clone();
        let last = group.lock_owned().await;
        WaitTurn {
            last,
            written: self.waits.written.load(Ordering::SeqCst),
        }
    }

    /// What a write to `slot`, sent on the connection of `epoch`, waits for.
    pub(crate) fn wait_for(&self, slot: u16, epoch: u64) -> Wait {
        match self.watch.lock().iter().find(|known| known.serves(slot)) {
            None => Wait::Whole,
            Some(known) if known.epoch == epoch && known.checked.elapsed() < RECHECK => {
                Wait::Degraded(known.attached)
            }
            Some(_) => Wait::Recheck,
        }
    }

    /// Records that the master serving `slots` has `attached` replicas; warns when it becomes
    /// degraded and when it is whole again. Returns how many replicas a write there waits for.
    pub(crate) fn attached(
        &self,
        slots: Vec<RangeInclusive<u16>>,
        epoch: u64,
        attached: usize,
    ) -> usize {
        let wanted = self.setting.replicas;
        let mut watch = self.watch.lock();
        let overlaps = |known: &Degraded| {
            slots.iter().any(|range| {
                known
                    .slots
                    .iter()
                    .any(|r| r.start() <= range.end() && range.start() <= r.end())
            })
        };
        let was_degraded = watch.iter().any(overlaps);
        watch.retain(|known| !overlaps(known));
        let first = slots.first().map(|range| *range.start());
        if attached >= wanted {
            if was_degraded {
                tracing::info!(
                    first_slot = first,
                    attached,
                    "durable writes whole again: the master has its replicas back"
                );
            }
            return wanted;
        }
        if !was_degraded {
            tracing::warn!(
                first_slot = first,
                attached,
                wanted,
                "durable writes degraded: the master has fewer replicas attached than durable={wanted}; writes wait for the {attached} attached (with none, a failover now could lose them) until replicas return"
            );
        }
        watch.push(Degraded {
            slots,
            attached,
            checked: Instant::now(),
            epoch,
        });
        attached
    }

    /// Masters known to be degraded now.
    #[cfg(test)]
    fn degraded(&self) -> usize {
        self.watch.lock().len()
    }
}

/// The hash slot of `key`, as Redis Cluster computes it: CRC16 of the key's hash tag (the
/// text between its first `{` and the next `}`, when not empty) or of the whole key.
pub(crate) fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let tag = &bytes[open + 1..];
        let close = tag.iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &tag[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % 16384
}

/// The slots the answering node serves, from its `CLUSTER NODES` answer (the `myself` line:
/// `0-5460`, `5461`; slots being migrated, `[…]`, are left out).
pub(crate) fn own_slots(nodes: &str) -> Vec<RangeInclusive<u16>> {
    let Some(line) = nodes.lines().find(|line| {
        line.split(' ')
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|flag| flag == "myself"))
    }) else {
        return Vec::new();
    };
    line.split(' ')
        .skip(8)
        .filter(|token| !token.starts_with('['))
        .filter_map(|token| match token.split_once('-') {
            Some((start, end)) => Some(start.parse().ok()?..=end.parse().ok()?),
            None => token.parse().ok().map(|slot| slot..=slot),
        })
        .collect()
}

/// The `connected_slaves` count of an `INFO replication` answer from a master; `None` from
/// a replica (or an answer without the count), which is never judged degraded.
pub(crate) fn connected_replicas(info: &str) -> Option<usize> {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
    };
    if field("role:") != Some("master") {
        return None;
    }
    field("connected_slaves:").and_then(|count| count.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_answers_for_the_writes_before_it_on_its_connection() {
        let durable = writes(1);
        let before = durable.written();
        let mut turn = durable.wait_turn(0).await;
        assert_eq!(turn.answered(before, 0, 1), None, "nothing answered yet");
        turn.record(0, 1, 1);
        drop(turn);
        let after = durable.written();
        let turn = durable.wait_turn(0).await;
        assert_eq!(turn.answered(before, 0, 1), Some(1));
        assert_eq!(
            turn.answered(after, 0, 1),
            None,
            "written after it was sent"
        );
        assert_eq!(turn.answered(before, 1, 1), None, "another connection");
        assert_eq!(turn.answered(before, 0, 2), None, "it asked for fewer");
        drop(turn);
        let other_slot = durable.wait_turn(7).await;
        assert_eq!(other_slot.answered(before, 0, 1), None, "another slot");
    }

    fn writes(replicas: usize) -> DurableWrites {
        DurableWrites::new(
            Some(Durable {
                replicas,
                timeout: Duration::from_secs(1),
            }),
            Duration::from_secs(5),
        )
        .unwrap()
    }

    #[test]
    fn a_master_short_of_replicas_is_waited_on_for_those_attached_until_they_return() {
        let durable = writes(2);
        let master = || vec![0..=5460, 7000..=7000];
        assert_eq!(durable.wait_for(7, 0), Wait::Whole);
        assert_eq!(durable.attached(master(), 0, 1), 1);
        assert_eq!(durable.wait_for(7, 0), Wait::Degraded(1));
        assert_eq!(
            durable.wait_for(7000, 0),
            Wait::Degraded(1),
            "every slot of the master is known at once"
        );
        assert_eq!(
            durable.wait_for(5461, 0),
            Wait::Whole,
            "other masters are not affected"
        );
        assert_eq!(durable.attached(master(), 0, 0), 0);
        assert_eq!(durable.wait_for(7, 0), Wait::Degraded(0));
        assert_eq!(durable.degraded(), 1, "one entry per master");
        assert_eq!(
            durable.wait_for(7, 1),
            Wait::Recheck,
            "a count read on another connection (the master moved) is asked again"
        );
        assert_eq!(durable.attached(master(), 0, 2), 2);
        assert_eq!(durable.wait_for(7, 0), Wait::Whole);
        assert_eq!(durable.degraded(), 0);
    }

    #[test]
    fn the_attached_count_comes_from_info_replication() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\n";
        assert_eq!(connected_replicas(info), Some(1));
        assert_eq!(connected_replicas("role:master\r\n"), None);
        assert_eq!(
            connected_replicas("role:slave\r\nconnected_slaves:0\r\n"),
            None,
            "a replica (a demoted master) is never judged degraded"
        );
    }

    #[test]
    fn slots_are_those_redis_computes() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_ne!(
            slot_of("{}foo"),
            slot_of("foo"),
            "an empty tag hashes the whole key"
        );
    }

    #[test]
    fn a_node_serves_the_slots_of_its_myself_line() {
        let nodes = "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected\n\
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 7000 [5461->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]\n\
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383\n";
        assert_eq!(own_slots(nodes), vec![0..=5460, 7000..=7000]);
        assert!(own_slots("").is_empty());
    }
}
