//! [`RedisBroker`]: the production broker, on Redis lists with per-worker processing lists.
//!
//! The key layout and the guarantees are described in `docs/redis.md`; key names live in
//! `keys` and every multi-step transition is one Lua script in `lua/`.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, MutexGuard};

use taskq_core::{Broker, Clock, Delivery, Error, Membership, Result, WorkerId};

use crate::{
    conn::Conn,
    error::redis_error,
    keys::{self, QueueKeys},
    scripts,
    server::Server,
    RedisConfig,
};

mod catalog;
mod control;
mod fetch;
mod inspector;
mod leases;
mod membership;
mod rate_limiter;
mod transport;
mod wake;

/// The Redis broker: at-least-once delivery through per-worker processing lists.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use std::sync::Arc;
/// use taskq_core::Client;
/// use taskq_redis::{RedisBroker, RedisConfig, RedisResultBackend};
/// let config = RedisConfig::new("redis://127.0.0.1:6379");
/// let client = Client::new(
///     Arc::new(RedisBroker::connect(config.clone()).await?),
///     Arc::new(RedisResultBackend::connect(config).await?),
/// );
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisBroker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: RedisConfig,
    /// Durable writes, when on, and the masters known to be short of replicas.
    durable: Option<crate::replicas::DurableWrites>,
    server: Server,
    /// Ordinary commands and scripts, multiplexed.
    conn: Conn,
    /// Blocking waits for wake-up tokens, on connections of their own.
    wakers: wake::Wakers,
    /// Each single-queue worker's own blocking connection on one server, where its fetch
    /// follows its wake-up pop in one round trip ([`RedisBroker::wait_then_fetch`]).
    blocking: tokio::sync::Mutex<HashMap<WorkerId, Conn>>,
    /// Workers whose last fetch took everything ready (less than it asked for, or nothing
    /// after its wait): their next waiting fetch goes straight to its pop (anything made ready
    /// since left a wake-up token, and the pop's pipeline fetches), instead of running the
    /// fetch script once more to find nothing.
    drained: Mutex<HashSet<WorkerId>>,
    /// What this process handed to each worker and not yet released, per queue, so that a
    /// fetch whose reply was lost can be reconciled with the processing list.
    held: Mutex<Held>,
    /// Workers whose last fetch failed: their processing lists may hold unreported messages.
    unreconciled: Mutex<HashSet<WorkerId>>,
    /// Queues this process added to `taskq:queues`, and when (registered again after
    /// [`REGISTRY_REFRESH`], so that a queue in use is never forgotten as idle).
    known_queues: Mutex<HashMap<String, std::time::Instant>>,
    /// Workers of this process that sent a heartbeat (fetches need not register them), and
    /// which of their leases are parked.
    heartbeating: Mutex<HashMap<WorkerId, leases::Leases>>,
    /// Processing lists seen without a lease, and when they were first seen.
    orphans: Mutex<HashMap<String, tokio::time::Instant>>,
    /// The host clock corrected by the offset last measured against the server's `TIME`:
    /// every time this broker computes (due times, deadlines, expiries) comes from it.
    clock: Clock,
    /// The host clock alone, to measure the offset against.
    host_clock: Clock,
    /// Server minus host, ms.
    correction: Arc<AtomicI64>,
    /// Worker info records this process published (it prunes the registry now and then).
    publications: std::sync::atomic::AtomicU64,
}

/// How often a producer registers a queue it keeps using: the registry forgets a queue only
/// when nobody registered it for far longer (see `Inspector::forget_idle_queues`).
const REGISTRY_REFRESH: Duration = Duration::from_secs(60);

/// The `{id, payload, id, payload, ...}` list `recover.lua` returns for poison messages.
pub(crate) fn parse_poisoned(flat: &[String]) -> Vec<(taskq_core::TaskId, String)> {
    flat.chunks_exact(2)
        .filter_map(|pair| Some((pair[0].parse().ok()?, pair[1].clone())))
        .collect()
}

/// Whose processing list `recover.lua` returns, and on what condition.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RecoverMode {
    /// A worker whose lease deadline passed.
    Lost,
    /// A worker shutting down, returning its own leftovers (no redelivery counted).
    Deregister,
    /// A list whose worker holds no lease at all.
    Orphan,
}

/// Payloads handed out and not yet released, with multiplicity, per (worker, queue).
/// worker -> queue -> payload -> count. Keys share the deliveries' `Arc`s, so holding a
/// message copies no bytes.
/// Hashed with foldhash: the inner keys are whole payloads, which SipHash read at ~5
/// instructions a byte on every fetch and ack.
type Held = FastMap<WorkerId, FastMap<Arc<str>, FastMap<Arc<str>, usize>>>;
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The messages of one enqueue call that go to one queue.
struct QueueBatch<'a> {
    queue: &'a str,
    /// Ready payloads per priority level.
    ready: [Vec<&'a str>; 10],
    /// Scheduled members (level-prefixed payloads) with their due times.
    scheduled: Vec<(i64, String)>,
    /// Ready partitioned payloads, one run per partition and level, in arrival order.
    partitioned: Vec<PartitionRun<'a>>,
}

/// Ready payloads of one partition at one level, in one enqueue call.
struct PartitionRun<'a> {
    level: u8,
    key: &'a str,
    limit: Option<u32>,
    payloads: Vec<&'a str>,
}

impl<'a> QueueBatch<'a> {
    fn new(queue: &'a str) -> Self {
        Self {
            queue,
            ready: Default::default(),
            scheduled: Vec::new(),
            partitioned: Vec::new(),
        }
    }

    /// Adds a ready payload of partition `key` to its run (the latest limit given wins).
    fn push_partitioned(&mut self, level: u8, key: &'a str, limit: Option<u32>, payload: &'a str) {
        let run = match self
            .partitioned
            .iter()
            .rposition(|run| run.level == level && run.key == key)
        {
            Some(at) => &mut self.partitioned[at],
            None => {
                self.partitioned.push(PartitionRun {
                    level,
                    key,
                    limit,
                    payloads: Vec::new(),
                });
                self.partitioned.last_mut().expect("just pushed")
            }
        };
        run.limit = limit.or(run.limit);
        run.payloads.push(payload);
    }

    /// Data commands this batch needs (not counting the wake-up token).
    fn commands(&self) -> usize {
        self.ready.iter().filter(|p| !p.is_empty()).count()
            + usize::from(!self.scheduled.is_empty())
    }

    /// Adds this batch's writes to `pipe`: one variadic `LPUSH` per level, one `ZADD` (and its
    /// entry in the due index `due_index` lowered, `lua/lib/due.lua`), and a wake-up token when
    /// something became ready.
    fn write_into(&self, pipe: &mut redis::Pipeline, due_index: &str) {
        let keys = QueueKeys::new(self.queue);
        for (level, payloads) in self.ready.iter().enumerate() {
            if !payloads.is_empty() {
                pipe.lpush(keys.pending(level as u8), payloads).ignore();
            }
        }
        if !self.scheduled.is_empty() {
            pipe.zadd_multiple(keys.scheduled(), &self.scheduled)
                .ignore();
            let earliest = self.scheduled.iter().map(|(due, _)| *due).min();
            if let Some(earliest) = earliest.filter(|_| !due_index.is_empty()) {
                pipe.cmd("ZADD")
                    .arg(due_index)
                    .arg("LT")
                    .arg(earliest)
                    .arg(keys.scheduled())
                    .ignore();
            }
        }
        if self.ready.iter().any(|p| !p.is_empty()) {
            // Wake one idle worker of this queue.
            let wake = keys.wake();
            pipe.lpush(&wake, 1).ignore().ltrim(&wake, 0, 0).ignore();
        }
    }
}

/// The keys and arguments of `lua/enqueue.lua` for `batches` (12 keys per queue) with the
/// bound `limit` (0: none) and the due index `due_index`.
fn enqueue_script_call<'a>(
    batches: &[&QueueBatch<'a>],
    limit: usize,
    due_index: &'a str,
) -> (Vec<String>, Vec<Cow<'a, str>>) {
    let mut keys = Vec::with_capacity(12 * batches.len());
    let mut args: Vec<Cow<'a, str>> = vec![
        Cow::Owned(limit.to_string()),
        Cow::Owned(batches.len().to_string()),
    ];
    for batch in batches {
        let queue = QueueKeys::new(batch.queue);
        keys.push(queue.wake());
        keys.extend(queue.pending_ascending());
        keys.push(queue.scheduled());
        args.extend(batch.ready.iter().map(|p| Cow::Owned(p.len().to_string())));
        args.push(Cow::Owned(batch.scheduled.len().to_string()));
        let partitioned: usize = batch.partitioned.iter().map(|r| r.payloads.len()).sum();
        args.push(Cow::Owned(partitioned.to_string()));
        args.push(Cow::Owned(batch.partitioned.len().to_string()));
        args.push(Cow::Owned(queue.prefix().to_owned()));
    }
    for batch in batches {
        for level in &batch.ready {
            args.extend(level.iter().map(|p| Cow::Borrowed(*p)));
        }
        for (due, member) in &batch.scheduled {
            args.push(Cow::Owned(due.to_string()));
            args.push(Cow::Owned(member.clone()));
        }
        for run in &batch.partitioned {
            args.push(Cow::Owned(run.level.to_string()));
            args.push(Cow::Borrowed(run.key));
            args.push(Cow::Owned(
                run.limit.map(|l| l.to_string()).unwrap_or_default(),
            ));
            args.push(Cow::Owned(run.payloads.len().to_string()));
            args.extend(run.payloads.iter().map(|p| Cow::Borrowed(*p)));
        }
    }
    args.push(Cow::Borrowed(due_index));
    (keys, args)
}

/// Milliseconds since the epoch, the unit of every score and deadline in Redis.
fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

impl Broker for RedisBroker {
    fn membership(&self) -> Option<&dyn Membership> {
        Some(self)
    }
}

impl RedisBroker {
    /// Connects to the server in `config`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`](taskq_core::Error::Invalid) for a bad URL, [`Error::Broker`](taskq_core::Error::Broker) when the server cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let url = config.url().to_owned();
        Self::reach(config)
            .await
            .map_err(|err| crate::error::unreachable(&url, err))
    }

    /// The connection and the first commands; [`RedisBroker::connect`] words their failure.
    async fn reach(config: RedisConfig) -> Result<Self> {
        let server = Server::of(&config)?;
        let conn = server.connect(config.response_timeout()).await?;
        let host_clock = config.host_clock().clone();
        let correction = Arc::new(AtomicI64::new(0));
        let broker = Self {
            shared: Arc::new(Shared {
                durable: crate::replicas::DurableWrites::new(
                    config.durable(),
                    config.response_timeout(),
                ),
                config,
                server,
                conn,
                wakers: wake::Wakers::default(),
                blocking: tokio::sync::Mutex::new(HashMap::new()),
                drained: Mutex::new(HashSet::new()),
                held: Mutex::new(Held::default()),
                unreconciled: Mutex::new(HashSet::new()),
                known_queues: Mutex::new(HashMap::new()),
                heartbeating: Mutex::new(HashMap::new()),
                orphans: Mutex::new(HashMap::new()),
                clock: host_clock.clone().corrected(correction.clone()),
                host_clock,
                correction,
                publications: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        broker.sync_clock().await?;
        broker.check_server().await?;
        Ok(broker)
    }

    /// Refuses a server older than Redis 7.0 with a clear error at connect, rather than a
    /// fetch script failing on every call: `fetch.lua` takes batches with `LMPOP` (7.0).
    async fn check_server(&self) -> Result<()> {
        let info: Vec<redis::Value> = redis::cmd("COMMAND")
            .arg("INFO")
            .arg("LMPOP")
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        match info.first() {
            Some(redis::Value::Array(_)) => Ok(()),
            _ => Err(Error::Invalid {
                what: "redis server",
                reason: "taskq needs Redis 7.0 or later (this server has no LMPOP)".to_owned(),
            }),
        }
    }

    /// Measures how far the host clock is from the server's (`TIME`, taken as read halfway
    /// through the round trip), stores the correction and returns the host's skew (positive:
    /// the host is ahead).
    pub(crate) async fn sync_clock(&self) -> Result<chrono::Duration> {
        let host = &self.shared.host_clock;
        let before = host.now();
        let (seconds, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let after = host.now();
        let server_ms = seconds * 1000 + micros / 1000;
        let host_ms = before.timestamp_millis() + (after - before).num_milliseconds() / 2;
        let correction = server_ms - host_ms;
        self.shared.correction.store(correction, Ordering::Relaxed);
        Ok(chrono::Duration::milliseconds(-correction))
    }

    /// Of `holders` (with their `leases`, `None` for none) on `queue`, those seen without a
    /// lease for at least `grace`; forgets lists that are leased again or gone.
    pub(crate) fn orphans_due(
        &self,
        queue: &str,
        holders: &[String],
        leases: &[Option<f64>],
        grace: Duration,
    ) -> Vec<String> {
        let now = tokio::time::Instant::now();
        let mut seen = self.shared.orphans.lock();
        let key = |worker: &str| format!("{queue}\n{worker}");
        seen.retain(|list, _| {
            !list.starts_with(&format!("{queue}\n"))
                || holders
                    .iter()
                    .zip(leases)
                    .any(|(worker, lease)| lease.is_none() && key(worker) == *list)
        });
        let mut due = Vec::new();
        for (worker, lease) in holders.iter().zip(leases) {
            if lease.is_some() {
                continue;
            }
            let first = *seen.entry(key(worker)).or_insert(now);
            if now.duration_since(first) >= grace {
                seen.remove(&key(worker));
                due.push(worker.clone());
            }
        }
        due
    }

    /// Now, by the server's clock (as corrected at the last measurement).
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.shared.clock.now()
    }

    /// How long `worker`'s short leases last and how far ahead its parked ones are set, ms;
    /// `None` before its first heartbeat.
    fn lease_terms(&self, worker: &WorkerId) -> Option<(i64, i64)> {
        let heartbeating = self.shared.heartbeating.lock();
        let leases = heartbeating.get(worker)?;
        Some((leases.ttl_ms(), leases.parked_for_ms()))
    }

    /// The queues `deliveries` came from hold short leases now (`fetch.lua` made any parked
    /// one short as it moved them).
    fn unpark(&self, worker: &WorkerId, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        let mut heartbeating = self.shared.heartbeating.lock();
        if let Some(leases) = heartbeating.get_mut(worker) {
            for delivery in deliveries {
                leases.unparked(delivery.queue());
            }
        }
    }

    /// Whether this process registered `queue` recently enough.
    fn knows_queue(&self, queue: &str) -> bool {
        self.shared
            .known_queues
            .lock()
            .get(queue)
            .is_some_and(|at| at.elapsed() < REGISTRY_REFRESH)
    }

    /// Adds `queues` to the registry with the time they were seen, in one script (both keys
    /// share a slot), before anything is written to them: a queue is listed before it
    /// holds anything, so operators never miss one.
    async fn register_queues(&self, queues: &[&str]) -> Result<()> {
        if queues.is_empty() {
            return Ok(());
        }
        let _: i64 = scripts::REGISTER_QUEUES
            .key(keys::QUEUES)
            .key(keys::QUEUES_SEEN)
            .arg(millis(self.now()))
            .arg(queues)
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)?;
        let at = std::time::Instant::now();
        let mut known = self.shared.known_queues.lock();
        known.extend(queues.iter().map(|q| ((*q).to_owned(), at)));
        Ok(())
    }

    /// Under durable writes, waits for replicas to have a settle on `key`'s server; a settle
    /// they missed is only logged, since losing it in a failover means a redelivery.
    async fn replicate_settle(&self, key: &str) {
        if let Err(err) = self
            .conn()
            .replicate(self.shared.durable.as_ref(), key)
            .await
        {
            tracing::warn!(error = %err, "settle not replicated in time; a failover now would redeliver the message");
        }
    }

    fn conn(&self) -> Conn {
        self.shared.conn.clone()
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        self.shared.held.lock()
    }

    fn hold(&self, worker: &WorkerId, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        let mut held = self.held();
        let queues = held.entry(worker.clone()).or_default();
        for delivery in deliveries {
            *queues
                .entry(delivery.shared_queue().clone())
                .or_default()
                .entry(delivery.shared_payload().clone())
                .or_default() += 1;
        }
    }

    fn release(&self, worker: &WorkerId, deliveries: &[Delivery]) {
        let mut held = self.held();
        let Some(queues) = held.get_mut(worker) else {
            return;
        };
        for delivery in deliveries {
            let Some(payloads) = queues.get_mut(delivery.queue()) else {
                continue;
            };
            if let Some(count) = payloads.get_mut(delivery.payload()) {
                *count -= 1;
                if *count == 0 {
                    payloads.remove(delivery.payload());
                }
            }
            if payloads.is_empty() {
                queues.remove(delivery.queue());
            }
        }
        if queues.is_empty() {
            held.remove(worker);
        }
    }

    /// The due index (`keys::DUE`) the scripts keep, or '' on a cluster, which keeps none.
    pub(super) fn due_index(&self) -> &'static str {
        if self.shared.server.is_cluster() {
            ""
        } else {
            keys::DUE
        }
    }

    /// Groups deliveries by queue, keeping their order within each queue.
    fn by_queue(deliveries: &[Delivery]) -> Vec<(&str, Vec<&Delivery>)> {
        let mut groups: Vec<(&str, Vec<&Delivery>)> = Vec::new();
        for delivery in deliveries {
            match groups.iter_mut().find(|(q, _)| *q == delivery.queue()) {
                Some((_, group)) => group.push(delivery),
                None => groups.push((delivery.queue(), vec![delivery])),
            }
        }
        groups
    }

    /// Runs `lua/enqueue.lua` for `batches`; [`Error::QueueFull`] names the queue that would
    /// exceed the bound (nothing of the call landed then).
    async fn enqueue_by_script(&self, batches: &[&QueueBatch<'_>]) -> Result<()> {
        let limit = self.shared.config.max_queue_length().unwrap_or(0);
        let (keys, args) = enqueue_script_call(batches, limit, self.due_index());
        let mut invocation = scripts::ENQUEUE.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation.arg(args);
        let mut conn = self.conn();
        let outcome: Vec<i64> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(redis_error)?;
        if let Some(full) = outcome
            .first()
            .filter(|q| **q > 0)
            .and_then(|q| batches.get(usize::try_from(*q - 1).ok()?))
        {
            return Err(Error::QueueFull {
                queue: full.queue.to_owned(),
                capacity: limit,
            });
        }
        conn.replicate(
            self.shared.durable.as_ref(),
            &QueueKeys::new(batches[0].queue).wake(),
        )
        .await
    }
}
