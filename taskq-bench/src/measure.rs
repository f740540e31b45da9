//! Reading costs: this process's CPU and peak RSS from /proc, Redis's CPU and command count
//! from INFO.

use std::time::Duration;

/// CPU time (user + system) this process has used.
pub(crate) fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    let total = ticks(11) + ticks(12);
    Duration::from_secs_f64(total as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux configuration that matters.
    100.0
}

/// Peak resident set size of this process (VmHWM), in KiB.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// CPU seconds Redis has used and commands it has processed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RedisCounters {
    pub(crate) cpu: f64,
    pub(crate) commands: u64,
}

/// Admin connections to every node whose counters a run adds up: the server, or every node
/// of a cluster (masters and replicas: replication is part of the cost).
#[derive(Clone)]
pub(crate) struct RedisNodes(Vec<redis::aio::MultiplexedConnection>);

impl RedisNodes {
    /// Connects to the nodes `url` names: `redis://`/`rediss://` one, `redis+cluster://` each
    /// seed. `None` for other URLs (Sentinel: the master moves) and private TLS authorities.
    pub(crate) async fn connect(url: &str) -> redis::RedisResult<Option<Self>> {
        if url.contains("tls_ca=") || url.contains("tls_cert=") {
            // A private authority: the admin connection would not verify; no counters.
            return Ok(None);
        }
        let nodes: Vec<String> = match url.split_once("+cluster://") {
            Some((scheme, rest)) => {
                let (auth, hosts) = match rest.rfind('@') {
                    Some(at) => (&rest[..=at], &rest[at + 1..]),
                    None => ("", rest),
                };
                hosts
                    .split(['/', '?'])
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|host| format!("{scheme}://{auth}{host}"))
                    .collect()
            }
            None if url.starts_with("redis://") || url.starts_with("rediss://") => {
                vec![url.to_owned()]
            }
            None => return Ok(None),
        };
        let mut conns = Vec::new();
        for node in nodes {
            conns.push(
                redis::Client::open(node)?
                    .get_multiplexed_async_connection()
                    .await?,
            );
        }
        Ok(Some(Self(conns)))
    }

    /// The hash slot of `key` by `CLUSTER KEYSLOT`; `None` when the server is not a cluster.
    pub(crate) async fn keyslot(&self, key: &str) -> redis::RedisResult<Option<u16>> {
        let Some(conn) = self.0.first() else {
            return Ok(None);
        };
        let slot: redis::RedisResult<u16> = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn.clone())
            .await;
        Ok(slot.ok())
    }

    /// CPU seconds and commands, summed over the nodes.
    pub(crate) async fn counters(&self) -> redis::RedisResult<RedisCounters> {
        let mut total = RedisCounters {
            cpu: 0.0,
            commands: 0,
        };
        for conn in &self.0 {
            let node = redis_counters(&mut conn.clone()).await?;
            total.cpu += node.cpu;
            total.commands += node.commands;
        }
        Ok(total)
    }
}

async fn redis_counters(
    conn: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<RedisCounters> {
    let info: String = redis::cmd("INFO").arg("all").query_async(conn).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .map(str::trim)
            .unwrap_or("0")
            .to_owned()
    };
    Ok(RedisCounters {
        cpu: field("used_cpu_user").parse::<f64>().unwrap_or(0.0)
            + field("used_cpu_sys").parse::<f64>().unwrap_or(0.0),
        commands: field("total_commands_processed").parse().unwrap_or(0),
    })
}

/// On a PostgreSQL broker, the size of taskq's busiest tables with their indexes and TOAST
/// (`pg_total_relation_size`), in bytes: what a run left behind. `None` for other brokers.
pub(crate) async fn postgres_tables(url: &str) -> Option<serde_json::Value> {
    use taskq::postgres::{sqlx, PostgresConfig};
    if !taskq::postgres::handles_url(url) {
        return None;
    }
    let config = PostgresConfig::new(url).ok()?;
    let pool = sqlx::PgPool::connect(config.url()).await.ok()?;
    let mut sizes = serde_json::Map::new();
    for table in ["messages", "results", "dead_letters"] {
        let bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)")
            .bind(format!("\"{}\".{table}", config.schema()))
            .fetch_one(&pool)
            .await
            .ok()?;
        sizes.insert(table.to_owned(), bytes.into());
    }
    pool.close().await;
    Some(sizes.into())
}
