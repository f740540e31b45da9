//! Where Redis is: one server, a Cluster, or a master found through Sentinel, parsed from a
//! URL; opens the connections each needs.
//!
//! | URL | Topology |
//! |---|---|
//! | `redis://[user:pass@]host:port[/db]`, `rediss://…` (TLS) | one server |
//! | `redis+cluster://[user:pass@]h1:p1,h2:p2,…`, `rediss+cluster://…` | Redis Cluster, seeded by any of the nodes |
//! | `redis+sentinel://[user:pass@]s1:p1,s2:p2,…/<master-name>[/db]`, `rediss+sentinel://…` | the master Sentinel names |
//!
//! Credentials and TLS apply to the data nodes (and, for Sentinel, to the sentinels' TLS; the
//! sentinels themselves are asked without credentials).

use std::{fmt, sync::Arc};

use redis::{
    cluster::{ClusterClient, ClusterClientBuilder},
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
    Client, IntoConnectionInfo,
};

use taskq_core::{Error, Result};

use crate::{
    config::RedisConfig,
    conn::manager,
    conn::{Conn, SentinelConn},
    error::redis_error,
};

/// The URL schemes this crate serves.
pub(crate) const SCHEMES: [&str; 7] = [
    "redis://",
    "rediss://",
    "redis+unix://",
    "redis+cluster://",
    "rediss+cluster://",
    "redis+sentinel://",
    "rediss+sentinel://",
];

/// A parsed Redis location; cheap to clone.
#[derive(Clone)]
pub(crate) struct Server {
    topology: Arc<Topology>,
}

// One per URL, behind an `Arc`: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Topology {
    Single(Client),
    Cluster {
        client: ClusterClient,
        /// One client per seed node, for pub/sub (a `PUBLISH` reaches every node of a
        /// cluster, so a subscriber on any one of them hears all).
        seeds: Vec<Client>,
    },
    Sentinel(Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match *self.topology {
            Topology::Single(_) => "Server::Single",
            Topology::Cluster { .. } => "Server::Cluster",
            Topology::Sentinel(_) => "Server::Sentinel",
        })
    }
}

/// `url` without its scheme, split into the `user:pass@` part (with the `@`), the host list
/// and the path after the first `/`.
fn split_multi_host(rest: &str) -> (&str, &str, &str) {
    let (hosts_and_auth, path) = rest.split_once('/').unwrap_or((rest, ""));
    match hosts_and_auth.rfind('@') {
        Some(at) => (
            &hosts_and_auth[..=at],
            &hosts_and_auth[at + 1..],
            path.trim_end_matches('/'),
        ),
        None => ("", hosts_and_auth, path.trim_end_matches('/')),
    }
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::Invalid {
        what: "redis url",
        reason: reason.into(),
    }
}

impl Server {
    /// The server `config` names.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a bad URL or bad taskq parameters in it.
    pub(crate) fn of(config: &RedisConfig) -> Result<Self> {
        if let Some(problem) = config.url_problem() {
            return Err(invalid(problem.to_owned()));
        }
        let certificates = config.certificates().map_err(invalid)?;
        Self::open(config.url(), certificates)
    }

    /// Parses `url`; nothing is contacted yet.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming what is wrong with the URL.
    pub(crate) fn open(url: &str, certificates: Option<redis::TlsCertificates>) -> Result<Self> {
        if url.starts_with("rediss") {
            // rustls needs a process-wide crypto provider; another part of the program may
            // already have installed one, which is fine. rustls 0.23.48 deprecates ring's
            // provider (it has no post-quantum key exchange); taskq stays on ring, which every
            // other TLS stack it builds (lapin, sqlx) uses too, rather than add aws-lc-rs and
            // its C build for Redis alone. A program that wants post-quantum key exchange
            // installs the aws-lc-rs provider first, and this line leaves it in place.
            #[allow(deprecated)]
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let topology = if let Some((tls, rest)) = strip_scheme(url, "cluster") {
            Self::cluster(tls, rest, certificates)?
        } else if let Some((tls, rest)) = strip_scheme(url, "sentinel") {
            Self::sentinel(tls, rest, certificates)?
        } else {
            let info = url
                .into_connection_info()
                .map_err(|err| invalid(err.to_string()))?;
            Topology::Single(open_client(info, certificates)?)
        };
        Ok(Self {
            topology: Arc::new(topology),
        })
    }

    fn cluster(
        tls: bool,
        rest: &str,
        certificates: Option<redis::TlsCertificates>,
    ) -> Result<Topology> {
        let (auth, hosts, path) = split_multi_host(rest);
        if !path.is_empty() && path != "0" {
            return Err(invalid("Redis Cluster has only database 0"));
        }
        let scheme = if tls { "rediss" } else { "redis" };
        let nodes = host_infos(scheme, auth, hosts, "cluster node")?;
        if nodes.is_empty() {
            return Err(invalid(
                "a cluster URL lists at least one node: redis+cluster://host:port,host:port",
            ));
        }
        let seeds = nodes
            .iter()
            .cloned()
            .map(|node| open_client(node, certificates.clone()))
            .collect::<Result<Vec<_>>>()?;
        let mut builder = ClusterClientBuilder::new(nodes);
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        let client = builder.build().map_err(|err| invalid(err.to_string()))?;
        Ok(Topology::Cluster { client, seeds })
    }

    fn sentinel(
        tls: bool,
        rest: &str,
        certificates: Option<redis::TlsCertificates>,
    ) -> Result<Topology> {
        let (auth, hosts, path) = split_multi_host(rest);
        let (master, db) = path.split_once('/').unwrap_or((path, "0"));
        if master.is_empty() {
            return Err(invalid(
                "a sentinel URL names the master: redis+sentinel://host:port,host:port/<master-name>",
            ));
        }
        let scheme = if tls { "rediss" } else { "redis" };
        let Some(first) = hosts.split(',').next().filter(|h| !h.is_empty()) else {
            return Err(invalid("a sentinel URL lists at least one sentinel"));
        };
        let sentinels: Vec<redis::ConnectionAddr> = host_infos(scheme, "", hosts, "sentinel")?
            .into_iter()
            .map(|info| info.addr().clone())
            .collect();
        // The data nodes' credentials and database, parsed the way a plain URL is.
        let node = format!("{scheme}://{auth}{first}/{db}")
            .into_connection_info()
            .map_err(|err| invalid(err.to_string()))?;
        let settings = node.redis_settings();
        let mut builder = SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
            .map_err(|err| invalid(err.to_string()))?
            .set_client_to_redis_db(settings.db());
        if let Some(username) = settings.username() {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = settings.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if tls {
            builder = builder
                .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
        }
        if let Some(certificates) = certificates {
            builder = builder
                .set_client_to_redis_certificates(certificates.clone())
                .set_client_to_sentinel_certificates(certificates);
        }
        let client = builder.build().map_err(|err| invalid(err.to_string()))?;
        Ok(Topology::Sentinel(Arc::new(tokio::sync::Mutex::new(
            client,
        ))))
    }

    /// True on Redis Cluster, where keys of different slots never meet in one command.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(*self.topology, Topology::Cluster { .. })
    }

    /// A self-healing multiplexed connection whose calls time out after `response_timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when no server answers.
    pub(crate) async fn connect(&self, response_timeout: std::time::Duration) -> Result<Conn> {
        // Boxed: the cluster client's connect future is deep enough to overflow the compiler's
        // layout recursion limit in a user's `main` that awaits it unboxed.
        Box::pin(self.connect_inner(response_timeout)).await
    }

    async fn connect_inner(&self, response_timeout: std::time::Duration) -> Result<Conn> {
        match &*self.topology {
            Topology::Single(client) => Ok(Conn::Single(manager(client, response_timeout).await?)),
            Topology::Cluster { client, .. } => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_response_timeout(response_timeout)
                    .set_connection_timeout(std::time::Duration::from_secs(5));
                let conn = client
                    .get_async_connection_with_config(config)
                    .await
                    .map_err(redis_error)?;
                Ok(Conn::Cluster(conn))
            }
            Topology::Sentinel(sentinel) => Ok(Conn::Sentinel(
                SentinelConn::connect(sentinel.clone(), response_timeout).await?,
            )),
        }
    }

    /// A pub/sub connection: to the server, to the first seed node of a cluster that answers,
    /// or to the master Sentinel names now.
    pub(crate) async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        match &*self.topology {
            Topology::Single(client) => client.get_async_pubsub().await,
            Topology::Cluster { seeds, .. } => {
                let mut last = None;
                for seed in seeds {
                    match seed.get_async_pubsub().await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Io, "no cluster node answered"))
                }))
            }
            Topology::Sentinel(sentinel) => {
                let client = sentinel.lock().await.async_get_client().await?;
                client.get_async_pubsub().await
            }
        }
    }
}

/// The connection info of each host in the comma-separated `hosts`, with `auth` (`user:pass@`
/// or empty); errors name the host as a `what`.
fn host_infos(
    scheme: &str,
    auth: &str,
    hosts: &str,
    what: &str,
) -> Result<Vec<redis::ConnectionInfo>> {
    hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| {
            format!("{scheme}://{auth}{host}")
                .into_connection_info()
                .map_err(|err| invalid(format!("{what} `{host}`: {err}")))
        })
        .collect()
}

/// A client for one server, trusting `certificates` when given.
fn open_client(
    info: redis::ConnectionInfo,
    certificates: Option<redis::TlsCertificates>,
) -> Result<Client> {
    match certificates {
        Some(certificates) => Client::build_with_tls(info, certificates),
        None => Client::open(info),
    }
    .map_err(redis_error)
}

/// `items` in groups whose keys (`key_of`) share a cluster slot, in order of first
/// appearance; one group when `cluster` is false (a single server takes any mix of keys).
pub(crate) fn by_slot<T>(cluster: bool, items: Vec<T>, key_of: impl Fn(&T) -> &str) -> Vec<Vec<T>> {
    if !cluster {
        return if items.is_empty() {
            Vec::new()
        } else {
            vec![items]
        };
    }
    let mut groups: Vec<(redis::cluster_routing::Slot, Vec<T>)> = Vec::new();
    for item in items {
        let slot = redis::cluster_routing::Slot::for_key(key_of(&item));
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, group)) => group.push(item),
            None => groups.push((slot, vec![item])),
        }
    }
    groups.into_iter().map(|(_, group)| group).collect()
}

/// `Some((tls, rest))` when `url` is `redis+<kind>://rest` or `rediss+<kind>://rest`.
fn strip_scheme<'a>(url: &'a str, kind: &str) -> Option<(bool, &'a str)> {
    let (scheme, rest) = url.split_once("://")?;
    match scheme.strip_suffix(kind)?.strip_suffix('+')? {
        "redis" => Some((false, rest)),
        "rediss" => Some((true, rest)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_host_urls_split_into_auth_hosts_and_path() {
        assert_eq!(
            split_multi_host("u:p@h1:1,h2:2/mymaster/3"),
            ("u:p@", "h1:1,h2:2", "mymaster/3")
        );
        assert_eq!(split_multi_host("h1:1,h2:2"), ("", "h1:1,h2:2", ""));
        assert_eq!(
            strip_scheme("rediss+cluster://x", "cluster"),
            Some((true, "x"))
        );
        assert_eq!(strip_scheme("redis+sentinel://x", "cluster"), None);
    }

    #[test]
    fn keys_group_by_slot_only_on_a_cluster() {
        let keys = ["taskq:{a}:wake", "taskq:{b}:wake", "taskq:{a}:other"];
        assert_eq!(by_slot(false, keys.to_vec(), |k| k).len(), 1);
        assert!(by_slot(false, Vec::<&str>::new(), |k| k).is_empty());
        let groups = by_slot(true, keys.to_vec(), |k| k);
        assert_eq!(
            groups,
            vec![
                vec!["taskq:{a}:wake", "taskq:{a}:other"],
                vec!["taskq:{b}:wake"]
            ]
        );
    }

    #[test]
    fn bad_multi_host_urls_say_what_is_missing() {
        for (url, needle) in [
            ("redis+sentinel://h:1", "names the master"),
            ("redis+cluster://", "at least one node"),
            ("redis+cluster://h:1/2", "only database 0"),
        ] {
            let err = Server::open(url, None).unwrap_err().to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        assert!(Server::open("redis+cluster://u:p@h1:1,h2:2", None)
            .unwrap()
            .is_cluster());
        assert!(!Server::open("redis+sentinel://h1:1/m", None)
            .unwrap()
            .is_cluster());
    }
}
