//! [`Conn`]: one multiplexed, self-healing connection to whichever topology the URL named.
//!
//! Everything above this module sends commands through [`redis::aio::ConnectionLike`] and does
//! not care whether they go to one server, are routed by slot through a cluster (which
//! follows `MOVED`/`ASK` and refreshes its slot map itself), or go to the master Sentinel
//! names now. What is asked of the server about the connection itself lives here too: the
//! settings that can lose tasks, and durable writes' `WAIT` (with [`crate::replicas`]).

use std::{
    ops::RangeInclusive,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::RwLock;
use redis::{
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{
        MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
    },
    sentinel::SentinelClient,
    Client, Cmd, Pipeline, RedisFuture, RedisResult, Value,
};

use taskq_core::Result;

use crate::{
    error::redis_error,
    replicas::{self, connected_replicas, DurableWrites, Wait},
    Durable,
};

/// A connection of any topology; cheap to clone (clones share the connection).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(SentinelConn),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "Conn::Single",
            Self::Cluster(_) => "Conn::Cluster",
            Self::Sentinel(_) => "Conn::Sentinel",
        })
    }
}

impl Conn {
    /// Settings of the server that can lose acknowledged tasks, as human-readable warnings.
    ///
    /// `maxmemory-policy` other than `noeviction` lets Redis evict queue keys under memory
    /// pressure; without AOF (`appendonly no`) a restart loses everything since the last RDB
    /// save; under durable writes, a master with fewer replicas attached than asked for has its
    /// writes waiting only for those attached (see [`crate::replicas`]).
    pub(crate) async fn durability_warnings(
        &mut self,
        durable: Option<Durable>,
    ) -> Result<Vec<String>> {
        let mut warnings = match durable {
            Some(durable) => self.degraded_masters(durable.replicas).await?,
            None => Vec::new(),
        };
        let conn = self;
        let policy: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(conn)
            .await
            .map_err(redis_error)?;
        if let Some(policy) = policy.get(1) {
            if policy != "noeviction" {
                warnings.push(format!(
                    "redis maxmemory-policy is `{policy}`: under memory pressure Redis may evict queued tasks; set it to `noeviction`"
                ));
            }
        }
        let aof: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async(conn)
            .await
            .map_err(redis_error)?;
        if aof.get(1).map(String::as_str) != Some("yes") {
            warnings.push(
                "redis persistence without AOF (`appendonly no`): a Redis restart loses tasks enqueued since the last snapshot; set `appendonly yes`".to_owned(),
            );
        }
        Ok(warnings)
    }

    /// Under durable writes, waits until the replicas asked for have every write sent so far
    /// through this connection to the server holding `key`; on a master with fewer replicas
    /// attached, waits for those attached (see [`crate::replicas`]).
    ///
    /// # Errors
    ///
    /// A transient [`taskq_core::Error::Broker`] when an attached replica did not acknowledge
    /// in time.
    pub(crate) async fn replicate(
        &mut self,
        durable: Option<&DurableWrites>,
        key: &str,
    ) -> Result<()> {
        let Some(durable) = durable else {
            return Ok(());
        };
        let ticket = durable.written();
        let slot = self.slot_of(key);
        let epoch = self.epoch();
        if durable.wait_for(slot, epoch) == Wait::Degraded(0) {
            // Nothing to wait for: no turn to queue for either.
            return Ok(());
        }
        // One `WAIT` in flight per slot (group commit, see `replicas::Waits`); what is known
        // of the master is read once the turn comes, so a judgement made meanwhile counts.
        let mut turn = durable.wait_turn(slot).await;
        let wanted = match durable.wait_for(slot, epoch) {
            Wait::Whole => durable.setting.replicas,
            Wait::Degraded(attached) => attached,
            Wait::Recheck => self.judge_attached(durable, slot, epoch, key).await?,
        };
        if wanted == 0 {
            return Ok(());
        }
        let acknowledged = match turn.answered(ticket, epoch, wanted) {
            Some(acknowledged) => acknowledged,
            None => {
                // A `WAIT` that did not answer (a client timeout, a reset) is a failed write:
                // its connection may since lead to another server, whose count would say
                // nothing of it.
                let acknowledged = self
                    .wait_for_replicas(key, wanted, durable.setting.timeout)
                    .await
                    .map_err(redis_error)?;
                turn.record(epoch, wanted, acknowledged);
                acknowledged
            }
        };
        drop(turn);
        if acknowledged >= wanted {
            return Ok(());
        }
        // Fewer than asked: a master short of replicas waits only for those attached.
        let attached = self.judge_attached(durable, slot, epoch, key).await?;
        if acknowledged >= attached {
            return Ok(());
        }
        Err(taskq_core::Error::Broker {
            transport: "redis",
            transient: true,
            source: format!(
                "written on the master, but {acknowledged} of {wanted} replicas acknowledged within {:?}: a failover now could lose it",
                durable.setting.timeout
            )
            .into(),
        })
    }

    /// The server a write goes through now: behind Sentinel a number that changes when a
    /// failover moved the connection (not when a call merely timed out), 0 elsewhere (the connection stays with its server or,
    /// on a cluster, a write to a moved slot fails before it is waited for).
    fn epoch(&self) -> u64 {
        match self {
            Self::Sentinel(conn) => conn.server(),
            _ => 0,
        }
    }

    /// How many replicas a write to `key` must wait for, judged on the server that took it:
    /// the attached count of a master, recorded in `durable`. Refused (transient) when the
    /// server is not a master, when the Sentinel connection moved since the write (`epoch`),
    /// or when the sentinels no longer name it as the master.
    async fn judge_attached(
        &mut self,
        durable: &DurableWrites,
        slot: u16,
        epoch: u64,
        key: &str,
    ) -> Result<usize> {
        let wanted = durable.setting.replicas;
        let refused = |why: &str| taskq_core::Error::Broker {
            transport: "redis",
            transient: true,
            source: format!("written, but not confirmed on {wanted} replicas: {why}").into(),
        };
        let attached = connected_replicas(&self.replication_info(key).await?)
            .ok_or_else(|| refused("the server is no longer a master"))?;
        if attached >= wanted {
            return Ok(durable.attached(vec![slot..=slot], epoch, attached));
        }
        if let Self::Sentinel(conn) = self {
            if !conn.still_named(epoch).await {
                return Err(refused(
                    "the master moved, or the sentinels no longer name it",
                ));
            }
        }
        let slots = self.served_slots(key).await?;
        Ok(durable.attached(slots, epoch, attached))
    }

    /// The hash slot of `key` on a cluster (durable writes keep their state per master, found
    /// by slot); one slot for all keys elsewhere (one master).
    fn slot_of(&self, key: &str) -> u16 {
        match self {
            Self::Cluster(_) => replicas::slot_of(key),
            _ => 0,
        }
    }

    /// Every hash slot the master holding `key` serves: on a cluster, its own line of
    /// `CLUSTER NODES`; elsewhere all of them.
    async fn served_slots(&mut self, key: &str) -> Result<Vec<RangeInclusive<u16>>> {
        if !matches!(self, Self::Cluster(_)) {
            return Ok(vec![replicas::ALL_SLOTS]);
        }
        let mut nodes = redis::cmd("CLUSTER");
        nodes.arg("NODES");
        let text: String = self
            .query_on_master_of(key, nodes)
            .await
            .map_err(redis_error)?;
        let slots = replicas::own_slots(&text);
        let slot = replicas::slot_of(key);
        Ok(if slots.is_empty() {
            vec![slot..=slot]
        } else {
            slots
        })
    }

    /// A warning for each master with fewer than `replicas` replicas attached.
    async fn degraded_masters(&mut self, replicas: usize) -> Result<Vec<String>> {
        let mut info = redis::cmd("INFO");
        info.arg("replication");
        let answers: Vec<(String, String)> = match self {
            Self::Cluster(conn) => {
                let value = conn
                    .route_command(
                        info,
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                    )
                    .await
                    .map_err(redis_error)?;
                redis::from_redis_value(value).map_err(|err| redis_error(err.into()))?
            }
            _ => vec![(
                "the master".to_owned(),
                info.query_async(self).await.map_err(redis_error)?,
            )],
        };
        Ok(answers
            .into_iter()
            .filter_map(|(master, text)| {
                let attached = connected_replicas(&text)?;
                (attached < replicas).then(|| {
                    format!(
                        "durable writes degraded: {master} has {attached} of durable={replicas} replicas attached; writes wait only for those attached, and a failover now could lose them (add a replica)"
                    )
                })
            })
            .collect())
    }

    /// The `INFO replication` answer of the master holding `key`.
    async fn replication_info(&mut self, key: &str) -> Result<String> {
        let mut info = redis::cmd("INFO");
        info.arg("replication");
        self.query_on_master_of(key, info)
            .await
            .map_err(redis_error)
    }

    /// Waits until `replicas` replicas acknowledged every write sent so far through this
    /// connection to the server holding `key` (at most `timeout`); returns how many did.
    pub(crate) async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: usize,
        timeout: Duration,
    ) -> RedisResult<usize> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        // The cluster keeps one connection per node, the one the write went through.
        self.query_on_master_of(key, wait).await
    }

    /// Runs `command` on the master holding `key`: routed by its slot on a cluster, on the one
    /// master elsewhere.
    async fn query_on_master_of<T: redis::FromRedisValue>(
        &mut self,
        key: &str,
        command: Cmd,
    ) -> RedisResult<T> {
        match self {
            Self::Cluster(conn) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let value = conn
                    .route_command(
                        command,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
            _ => command.query_async(self).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Sentinel(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Sentinel(conn) => conn.get_db(),
        }
    }
}

/// A connection to the master a Sentinel group names, moved to the new master after a
/// failover: a call that fails on the connection (refused, reset, timed out) or is refused by
/// a demoted master (`READONLY`) makes the next caller ask the sentinels again.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    inner: Arc<SentinelInner>,
}

struct SentinelInner {
    sentinel: Arc<tokio::sync::Mutex<SentinelClient>>,
    response_timeout: Duration,
    /// The master's connection and the address it goes to, with a generation number so
    /// that many failing calls trigger one rediscovery.
    current: RwLock<Current>,
    generation: AtomicU64,
}

/// The connection calls go through now.
struct Current {
    /// Bumped by every rediscovery (one per burst of failing calls).
    generation: u64,
    address: String,
    conn: ConnectionManager,
    /// Bumped only when a rediscovery moved the connection to another server: what durable
    /// writes' judgements are tied to. Tying them to the generation voided them at every
    /// timeout, and the `WAIT`s of a degraded master, queued one behind another on the
    /// shared connection, made timeouts: each void judgement brought more `WAIT`s, and the
    /// workers settled nothing for minutes (a Sentinel test held 80 tasks so).
    server: u64,
}

impl SentinelConn {
    pub(crate) async fn connect(
        sentinel: Arc<tokio::sync::Mutex<SentinelClient>>,
        response_timeout: Duration,
    ) -> Result<Self> {
        let (address, conn) = Self::open_master(&sentinel, response_timeout).await?;
        Ok(Self {
            inner: Arc::new(SentinelInner {
                sentinel,
                response_timeout,
                current: RwLock::new(Current {
                    generation: 0,
                    address,
                    conn,
                    server: 0,
                }),
                generation: AtomicU64::new(0),
            }),
        })
    }

    async fn open_master(
        sentinel: &tokio::sync::Mutex<SentinelClient>,
        response_timeout: Duration,
    ) -> Result<(String, ConnectionManager)> {
        let client = sentinel
            .lock()
            .await
            .async_get_client()
            .await
            .map_err(redis_error)?;
        let address = client.get_connection_info().addr().to_string();
        let conn = manager(&client, response_timeout).await?;
        Ok((address, conn))
    }

    /// Which server the connection leads to now: changes only when a failover moved it.
    fn server(&self) -> u64 {
        self.inner.current.read().server
    }

    /// True while the connection still leads to the server of `server` and the sentinels
    /// still name it as the master.
    async fn still_named(&self, server: u64) -> bool {
        let named = match self.inner.sentinel.lock().await.async_get_client().await {
            Ok(client) => client.get_connection_info().addr().to_string(),
            Err(_) => return false,
        };
        let current = self.inner.current.read();
        current.server == server && current.address == named
    }

    fn current(&self) -> (u64, ConnectionManager) {
        let current = self.inner.current.read();
        (current.generation, current.conn.clone())
    }

    /// Asks the sentinels where the master is and reconnects when it moved; one caller per
    /// generation does it, the others return at once.
    async fn rediscover(&self, seen: u64) {
        if self
            .inner
            .generation
            .compare_exchange(seen, seen + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        match Self::open_master(&self.inner.sentinel, self.inner.response_timeout).await {
            Ok((address, conn)) => {
                let mut current = self.inner.current.write();
                current.generation = seen + 1;
                if current.address != address {
                    tracing::warn!(from = %current.address, to = %address, "redis master moved (sentinel failover)");
                    current.address = address;
                    current.conn = conn;
                    current.server += 1;
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "sentinels did not name a master yet");
                self.inner.current.write().generation = seen + 1;
            }
        }
    }

    /// True for failures after which the master may have moved.
    fn master_may_have_moved(err: &redis::RedisError) -> bool {
        err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || matches!(
                err.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            )
            || err.code() == Some("MASTERDOWN")
            // A pipeline reports its commands' errors together.
            || err.clone().into_server_errors().is_some_and(|errors| {
                errors
                    .iter()
                    .any(|(_, error)| matches!(error.code(), "READONLY" | "MASTERDOWN"))
            })
    }

    /// True for a reply from a server that is no longer (or not yet) the master; replies
    /// carry server errors as values, a pipeline's in an array.
    fn answered_by_a_replica(value: &Value) -> bool {
        match value {
            Value::ServerError(error) => matches!(error.code(), "READONLY" | "MASTERDOWN"),
            Value::Array(values) => values.iter().any(Self::answered_by_a_replica),
            _ => false,
        }
    }

    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut conn) = self.current();
            let result = conn.req_packed_command(cmd).await;
            let moved = match &result {
                Ok(value) => Self::answered_by_a_replica(value),
                Err(err) => Self::master_may_have_moved(err),
            };
            if moved {
                self.rediscover(generation).await;
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut conn) = self.current();
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            let moved = match &result {
                Ok(values) => values.iter().any(Self::answered_by_a_replica),
                Err(err) => Self::master_may_have_moved(err),
            };
            if moved {
                self.rediscover(generation).await;
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.current().1.get_db()
    }
}

/// A self-reconnecting multiplexed connection whose calls time out after `response_timeout`.
///
/// Reconnection backs off exponentially from 50 ms up to 2 s; calls made while the server is
/// unreachable fail fast with a connection error, so callers' own backoff decides pacing.
pub(crate) async fn manager(
    client: &Client,
    response_timeout: Duration,
) -> Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(3);
    client
        .get_connection_manager_with_config(config)
        .await
        .map_err(redis_error)
}

/// Backoff between attempts to reconnect a subscriber (control channel, result waits): 50 ms
/// doubling up to 2 s, full jitter.
pub(crate) fn reconnect_backoff() -> taskq_core::RetryPolicy {
    taskq_core::RetryPolicy::exponential(Duration::from_millis(50), Duration::from_secs(2))
}
