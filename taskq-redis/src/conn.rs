//! [`Conn`]: one multiplexed, self-healing connection to whichever topology the URL named.
//!
//! Everything above this module sends commands through [`redis::aio::ConnectionLike`] and does
//! not care whether they go to one server, are routed by slot through a cluster (which
//! follows `MOVED`/`ASK` and refreshes its slot map itself), or go to the master Sentinel
//! names now.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::RwLock;
use redis::{
    aio::{ConnectionLike, ConnectionManager},
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
    sentinel::SentinelClient,
    Cmd, Pipeline, RedisFuture, RedisResult, Value,
};

use taskq_core::Result;

use crate::{
    connection::{manager, redis_error},
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
    /// pressure; without AOF (`appendonly no`) a restart loses everything since the last RDB save.
    pub(crate) async fn durability_warnings(&mut self) -> Result<Vec<String>> {
        let conn = self;
        let mut warnings = Vec::new();
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

    /// Under durable writes, waits until `durable.replicas` replicas have every write sent so
    /// far through this connection to the server holding `key`.
    ///
    /// # Errors
    ///
    /// A transient [`taskq_core::Error::Broker`] when fewer acknowledged in time.
    pub(crate) async fn replicate(&mut self, durable: Option<Durable>, key: &str) -> Result<()> {
        let Some(durable) = durable else {
            return Ok(());
        };
        let acknowledged = self
            .wait_for_replicas(key, durable.replicas, durable.timeout)
            .await
            .map_err(redis_error)?;
        if acknowledged >= durable.replicas {
            return Ok(());
        }
        Err(taskq_core::Error::Broker {
            transport: "redis",
            transient: true,
            source: format!(
                "written on the master, but {acknowledged} of {} replicas acknowledged within {:?}: a failover now could lose it",
                durable.replicas, durable.timeout
            )
            .into(),
        })
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
        match self {
            // The cluster keeps one connection per node, the one the write went through.
            Self::Cluster(conn) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let value = conn
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?;
                redis::from_redis_value(value).map_err(Into::into)
            }
            _ => wait.query_async(self).await,
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
    current: RwLock<(u64, String, ConnectionManager)>,
    generation: AtomicU64,
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
                current: RwLock::new((0, address, conn)),
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

    fn current(&self) -> (u64, ConnectionManager) {
        let current = self.inner.current.read();
        (current.0, current.2.clone())
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
                if current.1 != address {
                    tracing::warn!(from = %current.1, to = %address, "redis master moved (sentinel failover)");
                    *current = (seen + 1, address, conn);
                } else {
                    current.0 = seen + 1;
                }
            }
            Err(err) => {
                tracing::debug!(error = %err, "sentinels did not name a master yet");
                self.inner.current.write().0 = seen + 1;
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
