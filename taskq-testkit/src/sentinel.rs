//! [`SentinelGroup`]: a master, its replica and three sentinels watching them.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{cluster::redis_cli, RedisServer};

/// The master name the sentinels monitor.
const MASTER_NAME: &str = "taskq-master";

/// One master, one replica and three sentinels (quorum 2, down after 1 s, failover timeout
/// 3 s), all on free ports. Killed when the test process exits, like [`crate::RedisCluster`].
///
/// ```no_run
/// let mut group = taskq_testkit::SentinelGroup::start();
/// let url = group.url(); // redis+sentinel://127.0.0.1:s1,.../taskq-master
/// let old = group.master_port();
/// group.kill_master();
/// let new = group.wait_for_new_master(old, std::time::Duration::from_secs(30));
/// # let _ = (url, new);
/// ```
#[derive(Debug)]
pub struct SentinelGroup {
    servers: Vec<RedisServer>,
    sentinels: Vec<(u16, Child)>,
}

impl SentinelGroup {
    /// Starts the master and replica, waits for replication, then starts the sentinels and
    /// waits until they name the master.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or the group does not come up within 30 s.
    pub fn start() -> Self {
        crate::watchdog::guard();
        let master = RedisServer::start_with(&quick_sync_and_log(), crate::free_port);
        let mut replica_args = quick_sync_and_log();
        replica_args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.port().to_string(),
        ]);
        let replica = RedisServer::start_with(&replica_args, crate::free_port);
        wait_for(Duration::from_secs(30), "the replica to sync", || {
            redis_cli(replica.port(), &["INFO".into(), "replication".into()])
                .contains("master_link_status:up")
        });
        let sentinels = (0..3).map(|_| start_sentinel(master.port())).collect();
        let group = Self {
            servers: vec![master, replica],
            sentinels,
        };
        wait_for(
            Duration::from_secs(30),
            "the sentinels to see the replica",
            || {
                group.sentinels.iter().all(|(port, _)| {
                    redis_cli(
                        *port,
                        &["SENTINEL".into(), "REPLICAS".into(), MASTER_NAME.into()],
                    )
                    .contains("slave")
                })
            },
        );
        group
    }

    /// `redis+sentinel://` naming every sentinel and the master name.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> u16 {
        let reply = redis_cli(
            self.sentinels[0].0,
            &[
                "SENTINEL".into(),
                "GET-MASTER-ADDR-BY-NAME".into(),
                MASTER_NAME.into(),
            ],
        );
        reply
            .lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("no master named: {reply}"))
    }

    /// Kills the current master with SIGKILL.
    pub fn kill_master(&mut self) {
        let port = self.master_port();
        if let Some(server) = self.servers.iter_mut().find(|s| s.port() == port) {
            server.kill();
        }
    }

    /// Waits until the sentinels name a master other than `old` and it accepts writes;
    /// returns its port.
    ///
    /// # Panics
    ///
    /// After `timeout`.
    pub fn wait_for_new_master(&self, old: u16, timeout: Duration) -> u16 {
        let mut new = old;
        wait_for(timeout, "a failover", || {
            new = self.master_port();
            new != old
                && redis_cli(new, &["INFO".into(), "replication".into()]).contains("role:master")
        });
        new
    }
}

impl SentinelGroup {
    /// Starts the server on `port` again after it was killed, as the replica of the master
    /// the sentinels name now (as an operator's restart script would; left alone, Sentinel
    /// converts a returning master after about 15 s), and waits until it synced.
    pub fn restart_old_master(&mut self, port: u16) {
        let master = self.master_port();
        if let Some(server) = self.servers.iter_mut().find(|s| s.port() == port) {
            let mut args = quick_sync_and_log();
            args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            server.restart_with(&args);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !redis_cli(port, &["INFO".into(), "replication".into()])
            .contains("master_link_status:up")
        {
            assert!(
                Instant::now() < deadline,
                "the old master did not rejoin as a replica within 60 s:\n{}",
                self.log_tails()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines each data server logged, for failure messages.
    fn log_tails(&self) -> String {
        self.servers
            .iter()
            .map(|server| server.log_tail(15))
            .collect()
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A sentinel of the group's master. A master is down after 2 s unanswered: with 1 s, a CI
/// machine loaded by the rest of the suite once made the sentinels fail over a second time,
/// back to the old master 12 s after the first, while it was still catching up, and the
/// writes the promoted master took without a replica (durable writes degraded) went with it.
fn start_sentinel(master_port: u16) -> (u16, Child) {
    let port = crate::free_port();
    let dir = std::env::temp_dir().join(format!(
        "taskq-redis-{}-sentinel-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("create a directory for a sentinel");
    let config = dir.join("sentinel.conf");
    std::fs::write(
        &config,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\nsentinel down-after-milliseconds {MASTER_NAME} 2000\nsentinel failover-timeout {MASTER_NAME} 3000\n",
            dir = dir.display()
        ),
    )
    .expect("write sentinel.conf");
    let binary = std::env::var("TASKQ_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let child = Command::new(&binary)
        .arg(&config)
        .arg("--sentinel")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("`{binary} --sentinel` failed to start ({err}); install redis-server")
        });
    wait_for(Duration::from_secs(10), "a sentinel to answer", || {
        crate::ping(port)
    });
    (port, child)
}

/// Replicas sync at once instead of after 5 s (either server may be master later), and each
/// server logs to `redis.log` in its directory, shown when a wait fails.
fn quick_sync_and_log() -> Vec<String> {
    ["--repl-diskless-sync-delay", "0", "--logfile", "redis.log"]
        .map(String::from)
        .to_vec()
}

fn wait_for(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
