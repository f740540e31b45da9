//! [`RedisCluster`]: three masters and three replicas from `redis-server` in cluster mode.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::RedisServer;

/// A Redis Cluster of 3 masters and 3 replicas on free ports, node timeout 2 s, created with
/// `redis-cli --cluster create`. Nodes are killed when the test process exits (a watchdog
/// reaps them), so one cluster can be shared by every test of a binary.
///
/// ```no_run
/// let cluster = taskq_testkit::RedisCluster::start();
/// let url = cluster.url(); // redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...
/// let queue = cluster.queue_on_master(0, "emails");
/// # let _ = (url, queue);
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
struct Node {
    id: String,
    port: u16,
    master: bool,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes, joins them into a cluster and waits until every node reports
    /// `cluster_state:ok`.
    ///
    /// # Panics
    ///
    /// When `redis-server` or `redis-cli` is missing, or the cluster does not form in 60 s.
    pub fn start() -> Self {
        crate::watchdog::guard();
        let args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
            "--logfile",
            "redis.log",
            // Replicas sync at once instead of after 5 s: a replica that never synced cannot
            // take over, and tests kill masters soon after the start.
            "--repl-diskless-sync-delay",
            "0",
        ]
        .map(String::from)
        .to_vec();
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| RedisServer::start_with(&args, cluster_port))
            .collect();
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        let output = redis_cli(nodes[0].port(), &create);
        assert!(
            output.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed:\n{output}"
        );
        let cluster = Self { nodes };
        cluster.wait_until_healthy(Duration::from_secs(60));
        cluster.wait_until_replicas_synced(Duration::from_secs(60));
        cluster
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// Ports of every node, live or not.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.pid().is_some() && crate::ping(n.port()))
            .map(RedisServer::port)
            .expect("some cluster node is alive")
    }

    fn nodes_view(&self) -> Vec<Node> {
        parse_nodes(&redis_cli(
            self.live_port(),
            &["CLUSTER".into(), "NODES".into()],
        ))
    }

    /// Ports of the masters serving slots now, ordered by their first slot.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<Node> = self
            .nodes_view()
            .into_iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .collect();
        masters.sort_by_key(|n| n.slots[0].0);
        masters.iter().map(|n| n.port).collect()
    }

    /// The hash slot of `key` (of a queue's keys when `key` is a queue name in braces).
    pub fn slot_of(&self, key: &str) -> u16 {
        redis_cli(
            self.live_port(),
            &["CLUSTER".into(), "KEYSLOT".into(), key.into()],
        )
        .trim()
        .parse()
        .expect("CLUSTER KEYSLOT answers a number")
    }

    /// The port of the master serving `slot` now.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        self.nodes_view()
            .into_iter()
            .find(|n| {
                n.master && !n.failed && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.port)
            .expect("every slot is served")
    }

    /// A fresh queue name (`<prefix>-<n>`) whose keys live on the `index`-th master of
    /// [`RedisCluster::masters`].
    pub fn queue_on_master(&self, index: usize, prefix: &str) -> String {
        let master = self.masters()[index];
        let unique = uuid::Uuid::new_v4().simple().to_string();
        for n in 0.. {
            let queue = format!("{prefix}-{}-{n}", &unique[..8]);
            if self.master_of_slot(self.slot_of(&format!("{{{queue}}}"))) == master {
                return queue;
            }
        }
        unreachable!("the loop runs until a name fits")
    }

    /// Creates an ACL user `name` with `password` and every permission on every node (ACLs
    /// are per node; a real deployment sets them in each node's configuration).
    pub fn add_user(&self, name: &str, password: &str) {
        for port in self.ports() {
            let reply = redis_cli(
                port,
                &[
                    "ACL".into(),
                    "SETUSER".into(),
                    name.into(),
                    "on".into(),
                    format!(">{password}"),
                    "~*".into(),
                    "&*".into(),
                    "+@all".into(),
                ],
            );
            assert_eq!(reply.trim(), "OK", "ACL SETUSER on {port}");
        }
    }

    /// The port of a replica of the master on `master`.
    ///
    /// # Panics
    ///
    /// When no node replicates it.
    pub fn replica_of(&self, master: u16) -> u16 {
        self.nodes
            .iter()
            .map(RedisServer::port)
            .find(|port| {
                redis_cli(*port, &["INFO".into(), "replication".into()])
                    .lines()
                    .any(|line| line.trim() == format!("master_port:{master}"))
            })
            .unwrap_or_else(|| panic!("no replica of {master}"))
    }

    /// Stops the node on `port` (SIGSTOP) without closing anything: its connections stay open
    /// and unanswered, as with a hung process or a stalled link, until [`RedisCluster::resume`].
    pub fn pause(&self, port: u16) {
        self.signal(port, "-STOP");
    }

    /// Lets a node [`RedisCluster::pause`] stopped run again (SIGCONT).
    pub fn resume(&self, port: u16) {
        self.signal(port, "-CONT");
    }

    fn signal(&self, port: u16, signal: &str) {
        let node = self
            .nodes
            .iter()
            .find(|n| n.port() == port)
            .unwrap_or_else(|| panic!("no node on {port}"));
        let pid = node.pid().expect("the node runs").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Kills the node on `port` with SIGKILL (its replica takes over after the node timeout).
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.kill();
        }
    }

    /// Waits until the other nodes flag the node on `port` as failed and its replica serves
    /// its slots (the node timeout is 2 s).
    ///
    /// # Panics
    ///
    /// After `timeout`.
    pub fn wait_for_failover(&self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.masters().contains(&port) {
            assert!(
                Instant::now() < deadline,
                "no failover of {port} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_until_healthy(deadline.saturating_duration_since(Instant::now()));
    }

    /// After [`RedisCluster::restart`] of a failed master: waits until it serves as a synced
    /// replica again (so durable writes to its shard can be acknowledged).
    ///
    /// # Panics
    ///
    /// After `timeout`.
    pub fn wait_until_rejoined(&self, port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !redis_cli(port, &["INFO".into(), "replication".into()])
            .contains("master_link_status:up")
        {
            assert!(
                Instant::now() < deadline,
                "{port} did not rejoin as a replica within {timeout:?}:\n{}",
                self.log_tails()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the node on `port` again after [`RedisCluster::kill`], with its old cluster
    /// configuration: a master that failed over comes back as its successor's replica.
    pub fn restart(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port() == port) {
            node.restart();
        }
    }

    /// Waits until every live node reports `cluster_state:ok` and sees every slot served by
    /// a master that has not failed.
    ///
    /// # Panics
    ///
    /// After `timeout`.
    pub fn wait_until_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let healthy = self.nodes.iter().filter(|n| n.pid().is_some()).all(|n| {
                let info = redis_cli(n.port(), &["CLUSTER".into(), "INFO".into()]);
                let view = parse_nodes(&redis_cli(n.port(), &["CLUSTER".into(), "NODES".into()]));
                let served: u32 = view
                    .iter()
                    .filter(|n| n.master && !n.failed)
                    .flat_map(|n| n.slots.iter())
                    .map(|(a, b)| u32::from(b - a) + 1)
                    .sum();
                info.contains("cluster_state:ok") && served == 16384
            });
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy within {timeout:?}:\n{}\n{}",
                redis_cli(self.live_port(), &["CLUSTER".into(), "NODES".into()]),
                self.log_tails()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every live replica's link to its master is up.
    fn wait_until_replicas_synced(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let replicas: Vec<u16> = self
                .nodes_view()
                .into_iter()
                .filter(|n| !n.master && !n.failed)
                .map(|n| n.port)
                .collect();
            let synced = replicas.len() == 3
                && replicas.iter().all(|port| {
                    redis_cli(*port, &["INFO".into(), "replication".into()])
                        .contains("master_link_status:up")
                });
            if synced {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replicas did not sync within {timeout:?}:\n{}",
                self.log_tails()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines each node logged, for failure messages.
    fn log_tails(&self) -> String {
        self.nodes.iter().map(|server| server.log_tail(8)).collect()
    }

    /// Moves `slot` with its keys to the master on `to`, the way `redis-cli --cluster
    /// reshard` does (IMPORTING/MIGRATING, `MIGRATE` in small batches, then `SETSLOT NODE`),
    /// pausing `pace` between batches so that clients meet `ASK` redirections meanwhile.
    pub fn move_slot(&self, slot: u16, to: u16, pace: Duration) {
        let view = self.nodes_view();
        let id_of = |port: u16| {
            view.iter()
                .find(|n| n.port == port)
                .map(|n| n.id.clone())
                .expect("a known node")
        };
        let from = self.master_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already on {to}");
        let (from_id, to_id) = (id_of(from), id_of(to));
        let setslot = |port: u16, args: &[&str]| {
            let mut all = vec!["CLUSTER".to_owned(), "SETSLOT".to_owned(), slot.to_string()];
            all.extend(args.iter().map(|a| (*a).to_owned()));
            let reply = redis_cli(port, &all);
            assert!(reply.trim() == "OK", "SETSLOT {args:?} on {port}: {reply}");
        };
        setslot(to, &["IMPORTING", &from_id]);
        setslot(from, &["MIGRATING", &to_id]);
        loop {
            let keys = redis_cli(
                from,
                &[
                    "CLUSTER".into(),
                    "GETKEYSINSLOT".into(),
                    slot.to_string(),
                    "5".into(),
                ],
            );
            let keys: Vec<String> = keys
                .lines()
                .filter(|k| !k.is_empty())
                .map(String::from)
                .collect();
            if keys.is_empty() {
                break;
            }
            let mut migrate = vec![
                "MIGRATE".to_owned(),
                "127.0.0.1".to_owned(),
                to.to_string(),
                String::new(),
                "0".to_owned(),
                "5000".to_owned(),
                "KEYS".to_owned(),
            ];
            migrate.extend(keys);
            let reply = redis_cli(from, &migrate);
            assert!(
                reply.trim() == "OK" || reply.trim() == "NOKEY",
                "MIGRATE: {reply}"
            );
            std::thread::sleep(pace);
        }
        for master in self.masters().into_iter().chain([to, from]) {
            setslot(master, &["NODE", &to_id]);
        }
    }
}

/// A free port whose cluster bus port (+10000) is free as well (kernel-chosen ports are too
/// high for that, so these come from 20000..30000).
fn cluster_port() -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    loop {
        let port = 20_000 + u16::try_from(uuid::Uuid::new_v4().as_u128() % 10_000).unwrap_or(0);
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

fn parse_nodes(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields[2];
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(Node {
                id: fields[0].to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") && !flags.contains("fail?"),
                slots,
            })
        })
        .collect()
}

/// Runs `redis-cli -p <port> args...` and returns what it printed.
///
/// # Panics
///
/// When `redis-cli` cannot be run.
pub(crate) fn redis_cli(port: u16, args: &[String]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs (Debian package redis-tools, installed with redis-server)");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}
