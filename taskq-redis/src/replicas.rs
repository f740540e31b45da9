//! Durable writes on a master that has lost replicas: the stated policy.
//!
//! `?durable=N` waits for N replicas after each write (`WAIT N timeout`). A master with fewer
//! than N replicas attached (its replica died or was promoted away, and none came back) can
//! never satisfy that: every write would fail and be retried for ever, and the workers would
//! stop completing anything at the first failure, which is not what anyone turns durable mode
//! on for. So, as Redis's own `min-replicas-to-write` users expect, a write waits for the
//! replicas that are **attached**, at most N: with none attached it is accepted after the
//! master's own write, and taskq warns once (per master slot) that durable writes are degraded,
//! and once more when they are whole again. A replica that is attached but does not acknowledge
//! in time still fails the write (transient: retried), as before.
//!
//! While degraded, the attached count is asked again (`INFO replication`) at most once a
//! second, so a returning replica is waited for again within a second of attaching.
//!
//! The judgement must describe the server that took the write, or a write to an old master
//! could be acknowledged on the word of the new one: a `WAIT` that did not answer (client
//! timeout, reset) is a failed write, never "none acknowledged"; a server whose
//! `INFO replication` does not say `role:master` is never degraded; and behind Sentinel the
//! judgement holds only for the connection it was made on (its epoch) and only while the
//! sentinels name that server as the master (so an old master cut off from them, which still
//! answers but has lost its replica to the promotion, is never written to without one).

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use redis::cluster_routing::Slot;

use crate::Durable;

/// How long a degraded master's attached-replica count is trusted before it is asked again.
const RECHECK: Duration = Duration::from_secs(1);

/// Durable writes of one broker or backend: the setting, and what is known of degraded masters.
#[derive(Clone, Debug)]
pub(crate) struct DurableWrites {
    pub(crate) setting: Durable,
    watch: Arc<Mutex<HashMap<Slot, Degraded>>>,
}

/// A master (by the slot written to) seen with fewer replicas than the setting asks for.
#[derive(Clone, Copy, Debug)]
struct Degraded {
    attached: usize,
    checked: Instant,
    /// The connection the count was read on (the Sentinel connection's generation).
    epoch: u64,
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
    /// own timeout is kept to three quarters of it, so that the server always answers with
    /// its count (a `WAIT` the client gave up on says nothing, and fails the write).
    pub(crate) fn new(setting: Option<Durable>, response_timeout: Duration) -> Option<Self> {
        setting.map(|setting| Self {
            setting: Durable {
                replicas: setting.replicas,
                timeout: setting.timeout.min(response_timeout * 3 / 4),
            },
            watch: Arc::default(),
        })
    }

    /// What a write to `slot`, sent on the connection of `epoch`, waits for.
    pub(crate) fn wait_for(&self, slot: Slot, epoch: u64) -> Wait {
        match self.watch.lock().get(&slot) {
            None => Wait::Whole,
            Some(known) if known.epoch == epoch && known.checked.elapsed() < RECHECK => {
                Wait::Degraded(known.attached)
            }
            Some(_) => Wait::Recheck,
        }
    }

    /// Records that `slot`'s master has `attached` replicas; warns when it becomes degraded
    /// and when it is whole again. Returns how many replicas a write there waits for.
    pub(crate) fn attached(&self, slot: Slot, epoch: u64, attached: usize) -> usize {
        let wanted = self.setting.replicas;
        let mut watch = self.watch.lock();
        if attached >= wanted {
            if watch.remove(&slot).is_some() {
                tracing::info!(
                    ?slot,
                    attached,
                    "durable writes whole again: the master has its replicas back"
                );
            }
            return wanted;
        }
        let was = watch.insert(
            slot,
            Degraded {
                attached,
                checked: Instant::now(),
                epoch,
            },
        );
        if was.is_none() {
            tracing::warn!(
                ?slot,
                attached,
                wanted,
                "durable writes degraded: the master has fewer replicas attached than durable={wanted}; writes wait for the {attached} attached (with none, a failover now could lose them) until replicas return"
            );
        }
        attached
    }

    /// Slots whose master is known to be degraded now.
    #[cfg(test)]
    fn degraded(&self) -> usize {
        self.watch.lock().len()
    }
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
        let (seven, eight) = (Slot::new(7).unwrap(), Slot::new(8).unwrap());
        assert_eq!(durable.wait_for(seven, 0), Wait::Whole);
        assert_eq!(durable.attached(seven, 0, 1), 1);
        assert_eq!(durable.wait_for(seven, 0), Wait::Degraded(1));
        assert_eq!(
            durable.wait_for(eight, 0),
            Wait::Whole,
            "other masters are not affected"
        );
        assert_eq!(durable.attached(seven, 0, 0), 0);
        assert_eq!(durable.wait_for(seven, 0), Wait::Degraded(0));
        assert_eq!(
            durable.wait_for(seven, 1),
            Wait::Recheck,
            "a count read on another connection (the master moved) is asked again"
        );
        assert_eq!(durable.attached(seven, 0, 2), 2);
        assert_eq!(durable.wait_for(seven, 0), Wait::Whole);
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
}
