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

use taskq_core::{
    Broker, Clock, Delivery, Error, Membership, PayloadFields, Receipt, Result, WorkerId,
    FETCH_LEASE,
};

use crate::{
    conn::Conn,
    connection::redis_error,
    keys::{self, QueueKeys},
    scripts,
    server::Server,
    RedisConfig,
};

mod catalog;
mod control;
mod inspector;
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
    /// Workers whose last fetch ended with a pipelined fetch that found the queue empty:
    /// their next fetch waits at once (anything enqueued since left a wake-up token), instead
    /// of running the fetch script twice per idle wait.
    found_empty: Mutex<HashSet<WorkerId>>,
    /// What this process handed to each worker and not yet released, per queue, so that a
    /// fetch whose reply was lost can be reconciled with the processing list.
    held: Mutex<Held>,
    /// Workers whose last fetch failed: their processing lists may hold unreported messages.
    unreconciled: Mutex<HashSet<WorkerId>>,
    /// Queues this process added to `taskq:queues`, and when (registered again after
    /// [`REGISTRY_REFRESH`], so that a queue in use is never forgotten as idle).
    known_queues: Mutex<HashMap<String, std::time::Instant>>,
    /// Workers of this process that sent a heartbeat (fetches need not register them).
    heartbeating: Mutex<HashSet<WorkerId>>,
    /// Processing lists seen without a lease, and when they were first seen.
    orphans: Mutex<HashMap<String, tokio::time::Instant>>,
    /// The host clock corrected by the offset last measured against the server's `TIME`:
    /// every time this broker computes (due times, deadlines, expiries) comes from it.
    clock: Clock,
    /// The host clock alone, to measure the offset against.
    host_clock: Clock,
    /// Server minus host, ms.
    correction: Arc<AtomicI64>,
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
}

impl<'a> QueueBatch<'a> {
    fn new(queue: &'a str) -> Self {
        Self {
            queue,
            ready: Default::default(),
            scheduled: Vec::new(),
        }
    }

    /// Data commands this batch needs (not counting the wake-up token).
    fn commands(&self) -> usize {
        self.ready.iter().filter(|p| !p.is_empty()).count()
            + usize::from(!self.scheduled.is_empty())
    }

    /// Adds this batch's writes to `pipe`: one variadic `LPUSH` per level, one `ZADD`, and a
    /// wake-up token when something became ready.
    fn write_into(&self, pipe: &mut redis::Pipeline) {
        let keys = QueueKeys::new(self.queue);
        for (level, payloads) in self.ready.iter().enumerate() {
            if !payloads.is_empty() {
                pipe.lpush(keys.pending(level as u8), payloads).ignore();
            }
        }
        if !self.scheduled.is_empty() {
            pipe.zadd_multiple(keys.scheduled(), &self.scheduled)
                .ignore();
        }
        if self.ready.iter().any(|p| !p.is_empty()) {
            // Wake one idle worker of this queue.
            let wake = keys.wake();
            pipe.lpush(&wake, 1).ignore().ltrim(&wake, 0, 0).ignore();
        }
    }
}

/// The keys and arguments of `lua/enqueue.lua` for `batches` (12 keys per queue) with the
/// bound `limit` (0: none).
fn enqueue_script_call<'a>(
    batches: &[&QueueBatch<'a>],
    limit: usize,
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
    }
    for batch in batches {
        for level in &batch.ready {
            args.extend(level.iter().map(|p| Cow::Borrowed(*p)));
        }
        for (due, member) in &batch.scheduled {
            args.push(Cow::Owned(due.to_string()));
            args.push(Cow::Owned(member.clone()));
        }
    }
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
        let server = config.server()?;
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
                found_empty: Mutex::new(HashSet::new()),
                held: Mutex::new(Held::default()),
                unreconciled: Mutex::new(HashSet::new()),
                known_queues: Mutex::new(HashMap::new()),
                heartbeating: Mutex::new(HashSet::new()),
                orphans: Mutex::new(HashMap::new()),
                clock: host_clock.clone().corrected(correction.clone()),
                host_clock,
                correction,
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

    fn has_heartbeat(&self, worker: &WorkerId) -> bool {
        self.shared.heartbeating.lock().contains(worker)
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

    fn mark_unreconciled(&self, worker: &WorkerId) {
        self.shared.unreconciled.lock().insert(worker.clone());
    }

    /// After a failed fetch: adopts messages that reached `worker`'s processing lists without
    /// their reply reaching us, so nothing is stranded while the worker lives.
    async fn reconcile(&self, worker: &WorkerId, queues: &[String]) -> Result<Vec<Delivery>> {
        let pending = self.shared.unreconciled.lock().contains(worker);
        if !pending {
            return Ok(Vec::new());
        }
        let mut adopted = Vec::new();
        for queue in queues {
            let key = QueueKeys::new(queue).processing(worker.as_str());
            // What we handed out, read before the list: an ack landing in between removes a
            // message from both, and reading the list first would adopt (and run) it again.
            let mut known = self
                .held()
                .get(worker)
                .and_then(|queues| queues.get(queue.as_str()))
                .cloned()
                .unwrap_or_default();
            // Where a test lands an ack between the two reads.
            fail::fail_point!("reconcile-between-reads");
            let listed: Vec<String> = redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            let queue_name: Arc<str> = Arc::from(queue.as_str());
            // The list is newest first; adopt oldest first.
            for payload in listed.into_iter().rev() {
                match known.get_mut(payload.as_str()) {
                    Some(count) if *count > 0 => *count -= 1,
                    _ => {
                        let level = PayloadFields::read(&payload).priority;
                        adopted.push(Delivery::new(
                            queue_name.clone(),
                            level,
                            Arc::from(payload),
                            Receipt::default(),
                        ));
                    }
                }
            }
        }
        if !adopted.is_empty() {
            tracing::warn!(worker = %worker, count = adopted.len(), "adopted messages whose fetch reply was lost");
        }
        self.shared.unreconciled.lock().remove(worker);
        Ok(adopted)
    }

    /// One non-blocking pass over `queues` in order, up to `max` messages (`max == 0` only
    /// registers the worker on the first queue).
    async fn fetch_ready(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
    ) -> Result<Vec<Delivery>> {
        if !self.shared.server.is_cluster() {
            // One server: one script takes from every queue, in order.
            let fetched = self
                .fetch_invocation(queues, worker, max)
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            return fetched_deliveries(worker, queues, fetched);
        }
        // A cluster: each queue's keys share a slot, but different queues' need not.
        let mut out = Vec::new();
        for (index, queue) in queues.iter().enumerate() {
            if out.len() >= max && index > 0 {
                break;
            }
            let queue = std::slice::from_ref(queue);
            let fetched = self
                .fetch_invocation(queue, worker, max - out.len())
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            out.extend(fetched_deliveries(worker, queue, fetched)?);
        }
        Ok(out)
    }

    /// Drops `worker`'s own blocking connection and idle mark (the worker ended).
    pub(crate) async fn forget_blocking(&self, worker: &WorkerId) {
        self.shared.blocking.lock().await.remove(worker);
        self.shared.found_empty.lock().remove(worker);
    }

    /// `fetch.lua` for up to `max` messages of `queues`, taken in that order (on a cluster,
    /// one queue: their keys may live in different slots).
    fn fetch_invocation(
        &self,
        queues: &[String],
        worker: &WorkerId,
        max: usize,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = scripts::FETCH.prepare_invoke();
        for queue in queues {
            let keys = QueueKeys::new(queue);
            for key in keys.pending_descending() {
                invocation.key(key);
            }
            invocation
                .key(keys.processing(worker.as_str()))
                .key(keys.workers())
                .key(keys.holders());
        }
        invocation
            .arg(max)
            .arg(worker.as_str())
            .arg(if self.has_heartbeat(worker) {
                0
            } else {
                millis(self.now()) + FETCH_LEASE.as_millis() as i64
            })
            .arg(queues.len());
        invocation
    }

    /// An idle worker's wait and fetch in one round trip, on one server: the fetch script (of
    /// every queue of the worker) follows the wake-up pop (of every queue's token) in the
    /// pipeline of the worker's own blocking connection, so Redis runs it the moment the pop
    /// returns, and the reply carries both. `Ok(None)` on a cluster, where the queues' wake
    /// lists may live in different slots; else whether a token arrived and what was fetched.
    ///
    /// A worker that drops the call (shutting down) leaves the pipeline to run: its fetch
    /// finds the worker's lease gone once it has deregistered and moves nothing; before its
    /// first heartbeat it may move messages, which the orphan sweep returns.
    async fn wait_then_fetch(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Option<(bool, Vec<Delivery>)>> {
        if self.shared.server.is_cluster() {
            return Ok(None);
        }
        let config = &self.shared.config;
        let mut conn = {
            let mut blocking = self.shared.blocking.lock().await;
            match blocking.get(worker) {
                Some(conn) => conn.clone(),
                None => {
                    let conn = self
                        .shared
                        .server
                        .connect(config.block_timeout() + config.response_timeout())
                        .await?;
                    blocking.insert(worker.clone(), conn.clone());
                    conn
                }
            }
        };
        let mut pipe = redis::pipe();
        let pop = pipe.cmd("BLPOP");
        for queue in queues {
            pop.arg(QueueKeys::new(queue).wake());
        }
        pop.arg(wait.min(config.block_timeout()).as_secs_f64());
        pipe.invoke_script(&self.fetch_invocation(queues, worker, max));
        type Reply = (Option<(String, String)>, Fetched);
        match pipe.query_async::<Reply>(&mut conn).await {
            Ok((token, fetched)) => Ok(Some((
                token.is_some(),
                fetched_deliveries(worker, queues, fetched)?,
            ))),
            // The pop ran but the server did not know the script (first use, or a restart):
            // fetch the usual way, which loads it.
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                Ok(Some((true, self.fetch_ready(worker, queues, max).await?)))
            }
            Err(err) => Err(redis_error(err)),
        }
    }

    /// Waits up to `wait` for a wake-up token of any of `queues`; true when one arrived
    /// (messages became ready somewhere).
    ///
    /// One `BLPOP` (one per slot on a cluster) watches every queue and priority level at once,
    /// and wakes exactly one idle worker per token, so an idle fleet neither polls nor
    /// stampedes.
    async fn wait_for_wake(&self, queues: &[String], wait: Duration) -> Result<bool> {
        let config = &self.shared.config;
        let keys = queues.iter().map(|q| QueueKeys::new(q).wake()).collect();
        self.shared
            .wakers
            .wait(
                &self.shared.server,
                config.block_timeout() + config.response_timeout(),
                keys,
                wait.min(config.block_timeout()),
            )
            .await
    }

    /// Passes a wake-up on to another idle worker (this one took a full batch; more may wait).
    async fn pass_wake(&self, queue: &str) -> Result<()> {
        wake::push_back(&mut self.conn(), &QueueKeys::new(queue).wake()).await
    }

    async fn fetch_inner(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        // Nothing is recorded as handed out until the whole call succeeds: if a later step
        // fails, the caller gets an error and the next fetch adopts what the server moved.
        let mut out = self.reconcile(worker, queues).await?;
        let found_empty = self.shared.found_empty.lock().remove(worker);
        if out.len() < max && !found_empty {
            out.extend(self.fetch_ready(worker, queues, max - out.len()).await?);
        }
        // A token may be stale (passed on by a worker that took a full batch, then the rest
        // was taken by others): wait again until something is fetched or the time is up.
        let deadline = tokio::time::Instant::now() + wait;
        while out.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let ready = match self.wait_then_fetch(worker, queues, max, left).await? {
                Some((woke, ready)) => {
                    if !woke && ready.is_empty() {
                        self.shared.found_empty.lock().insert(worker.clone());
                        break;
                    }
                    ready
                }
                None => {
                    if !self.wait_for_wake(queues, left).await? {
                        break;
                    }
                    self.fetch_ready(worker, queues, max).await?
                }
            };
            if ready.len() == max {
                if let Some(first) = ready.first() {
                    self.pass_wake(first.queue()).await?;
                }
            }
            out.extend(ready);
        }
        self.hold(worker, &out);
        Ok(out)
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
        let (keys, args) = enqueue_script_call(batches, limit);
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

    async fn recover(
        &self,
        queue: &str,
        worker: &str,
        max_redeliveries: u32,
        mode: RecoverMode,
    ) -> Result<(i64, i64, Vec<String>)> {
        let keys = QueueKeys::new(queue);
        let now = self.now();
        let mut invocation = scripts::RECOVER.prepare_invoke();
        invocation
            .key(keys.workers())
            .key(keys.processing(worker))
            .key(keys.redeliveries())
            .key(keys.dead())
            .key(keys.dead_dropped())
            .key(keys.holders())
            .key(keys.dead_bytes());
        for key in keys.pending_ascending() {
            invocation.key(key);
        }
        invocation.key(keys.wake());
        invocation
            .arg(worker)
            .arg(millis(now))
            .arg(max_redeliveries)
            .arg(self.shared.config.max_dead_letters())
            .arg(now.to_rfc3339())
            .arg(queue)
            .arg(match mode {
                RecoverMode::Lost => "0",
                RecoverMode::Deregister => "1",
                RecoverMode::Orphan => "2",
            })
            .arg(self.shared.config.max_dead_letter_bytes());
        invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(redis_error)
    }
}

/// The deliveries of one `fetch.lua` reply (`payloads, levels, lost`) for `queue`.
/// `fetch.lua`'s reply: payloads, their levels and their queues (1-based), and the lost flag.
type Fetched = (Vec<String>, Vec<u8>, Vec<usize>, i64);

/// The deliveries in `fetch.lua`'s reply for `queues`.
fn fetched_deliveries(
    worker: &WorkerId,
    queues: &[String],
    (payloads, levels, from, lost): Fetched,
) -> Result<Vec<Delivery>> {
    if lost == 1 {
        return Err(Error::LeaseLost {
            worker: worker.to_string(),
        });
    }
    let names: Vec<Arc<str>> = queues.iter().map(|q| Arc::from(q.as_str())).collect();
    payloads
        .into_iter()
        .zip(levels)
        .zip(from)
        .map(|((payload, level), queue)| {
            let queue = names
                .get(queue.wrapping_sub(1))
                .ok_or_else(|| Error::Broker {
                    transport: "redis",
                    transient: false,
                    source: format!("fetch.lua named queue {queue} of {}", names.len()).into(),
                })?;
            Ok(Delivery::new(
                queue.clone(),
                level,
                Arc::from(payload),
                Receipt::default(),
            ))
        })
        .collect()
}
