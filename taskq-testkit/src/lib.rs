//! Test fixtures shared by taskq's integration tests.
//!
//! [`RedisServer`] starts a real `redis-server` on a free port in a temporary directory, with
//! persistence off, and kills it on drop. Set `TASKQ_REDIS_SERVER` to use another binary. A
//! missing binary fails the test loudly: Redis tests never skip.
//!
//! [`RedisCluster`] starts 3 masters and 3 replicas in cluster mode; [`SentinelGroup`] a master,
//! a replica and 3 sentinels. Both are meant to be shared by the tests of one binary (start
//! them once, give each test fresh queue names) and are killed when that process exits.
//!
//! [`RabbitNode`] starts a private RabbitMQ node (its own name, ports and directories) for the
//! tests of one binary, handing each test a fresh vhost.
//!
//! [`Proxy`] stands between a client and a server and can cut the traffic without closing
//! anything (a partition), then heal it.
//!
//! The conformance suites (one test per behaviour every implementation must show), one per
//! broker role plus the result backend's, are expanded for one implementation by
//! [`transport_conformance!`], [`membership_conformance!`], [`control_conformance!`],
//! [`inspector_conformance!`], [`catalog_conformance!`] and [`backend_conformance!`]; taskq-core runs them on the memory
//! implementations, taskq-redis on Redis, taskq-amqp on RabbitMQ.

#[allow(missing_docs)]
pub mod backend_suite;
pub mod beat_store_suite;
pub mod celery;
mod cluster;
mod dump;
mod postgres;
mod proxy;
pub mod python;
mod rabbitmq;
mod sentinel;
#[allow(missing_docs)]
pub mod suite;

// The conformance macros, one per suite, written by build.rs from the suite files.
include!(concat!(env!("OUT_DIR"), "/conformance.rs"));

/// The fixture a backend gave, or [`suite::missing_fixture`] naming the one it did not.
#[doc(hidden)]
#[macro_export]
macro_rules! __fixture_or_missing {
    ($make:expr; $what:literal) => {
        $make
    };
    (; $what:literal) => {
        $crate::suite::missing_fixture($what)
    };
}
mod tls;
mod watchdog;

pub use cluster::RedisCluster;
pub use postgres::PostgresServer;
pub use proxy::Proxy;
pub use rabbitmq::RabbitNode;
pub use sentinel::SentinelGroup;
pub use tls::TlsFiles;

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A `redis-server` child process owned by one test.
///
/// ```no_run
/// let server = taskq_testkit::RedisServer::start();
/// let url = server.url();
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Arguments after the defaults (cluster mode, replication, ...); `{port}` stands for the
    /// server's port.
    extra_args: Vec<String>,
    /// Set for a TLS-only server: readiness is checked over TLS with these files.
    tls: Option<TlsFiles>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// When `redis-server` (or `$TASKQ_REDIS_SERVER`) cannot be started or never answers.
    pub fn start() -> Self {
        Self::start_with(&[], free_port)
    }

    /// Starts a server with `extra_args` after the defaults, on a port `pick_port` chooses.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with(extra_args: &[String], pick_port: fn() -> u16) -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut server = Self::unstarted(extra_args, pick_port());
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// Starts a TLS-only server (`--port 0 --tls-port <port>`) with the certificates in
    /// `files`; `client_certificates` is `no`, `optional` or `yes` (`--tls-auth-clients`).
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_tls(files: &TlsFiles, client_certificates: &str) -> Self {
        let path = |p: &std::path::Path| p.display().to_string();
        let args: Vec<String> = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            "{port}".into(),
            "--tls-cert-file".into(),
            path(&files.server_cert),
            "--tls-key-file".into(),
            path(&files.server_key),
            "--tls-ca-cert-file".into(),
            path(&files.ca),
            "--tls-auth-clients".into(),
            client_certificates.into(),
        ];
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut server = Self::unstarted(&args, free_port());
            server.tls = Some(files.clone());
            match server.spawn() {
                Ok(()) => return server,
                Err(err) => last_error = err,
            }
        }
        panic!("could not start a TLS redis-server: {last_error}");
    }

    fn unstarted(extra_args: &[String], port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "taskq-redis-{}-{port}-{:x}",
            std::process::id(),
            Instant::now().elapsed().as_nanos() ^ u128::from(port) << 17
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory for redis-server");
        Self {
            child: None,
            port,
            dir,
            extra_args: extra_args.to_vec(),
            tls: None,
        }
    }

    /// `redis://127.0.0.1:<port>` (`rediss://` for a TLS server).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Zeroes the server's command counts (`CONFIG RESETSTAT`), for [`Self::command_calls`].
    pub fn reset_command_stats(&self) {
        cluster::redis_cli(self.port, &["CONFIG".into(), "RESETSTAT".into()]);
    }

    /// How many times the server ran `command` (lower case) since its counts were reset,
    /// commands inside scripts included (`INFO commandstats`): what tests of a command's cost
    /// count. Plain-text servers only.
    pub fn command_calls(&self, command: &str) -> u64 {
        let stats = cluster::redis_cli(self.port, &["INFO".into(), "commandstats".into()]);
        let prefix = format!("cmdstat_{command}:calls=");
        stats
            .lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.trim().parse().expect("a count"))
    }

    /// Creates (or replaces) ACL user `name` with password `password` and `rules` (Redis ACL
    /// syntax, e.g. `~taskq:*`, `+@read`), through `redis-cli`.
    ///
    /// # Panics
    ///
    /// When Redis refuses the rules.
    pub fn add_user(&self, name: &str, password: &str, rules: &[&str]) {
        let mut args: Vec<String> = vec![
            "ACL".into(),
            "SETUSER".into(),
            name.into(),
            "reset".into(),
            "on".into(),
            format!(">{password}"),
        ];
        args.extend(rules.iter().map(|rule| (*rule).to_owned()));
        let reply = cluster::redis_cli(self.port, &args);
        assert_eq!(reply.trim(), "OK", "ACL SETUSER {name} {rules:?}: {reply}");
    }

    /// `redis://name:password@127.0.0.1:<port>`.
    pub fn url_as(&self, name: &str, password: &str) -> String {
        format!("redis://{name}:{password}@127.0.0.1:{}", self.port)
    }

    /// The last `count` lines the server wrote to `redis.log` in its directory (servers
    /// started with `--logfile redis.log`), under a header naming it, for failure messages.
    pub fn log_tail(&self, count: usize) -> String {
        let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let mut text = format!("--- redis-server {}\n", self.port);
        for line in &lines[lines.len().saturating_sub(count)..] {
            text.push_str(line);
            text.push('\n');
        }
        text
    }

    /// The directory the server runs in.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL) and reaps it; its data is lost (persistence is off).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, after [`RedisServer::kill`].
    ///
    /// # Panics
    ///
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(err) if Instant::now() > deadline => {
                    panic!("redis-server did not restart: {err}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Starts the server again on the same port with `extra_args` instead of the ones it had.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::restart`].
    pub fn restart_with(&mut self, extra_args: &[String]) {
        self.extra_args = extra_args.to_vec();
        self.restart();
    }

    fn spawn(&mut self) -> Result<(), String> {
        let binary = std::env::var("TASKQ_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(
                self.extra_args
                    .iter()
                    .map(|arg| arg.replace("{port}", &self.port.to_string())),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|err| {
                format!("`{binary}` failed to start ({err}); install redis-server or set TASKQ_REDIS_SERVER")
            })?;
        crate::watchdog::track(child.id());
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(format!("redis-server exited early with {status}"));
                }
            }
            if self.answers() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err("redis-server did not answer PING within 10 s".into())
    }
}

impl RedisServer {
    /// True when the server answers `PING` (over TLS for a TLS server, through `redis-cli`).
    fn answers(&self) -> bool {
        let Some(files) = &self.tls else {
            return ping(self.port);
        };
        Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&files.ca)
            .arg("--cert")
            .arg(&files.client_cert)
            .arg("--key")
            .arg(&files.client_key)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "PING"])
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "PONG")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free port chosen by the kernel.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// True when a server on `port` answers `PING` (a Redis server or a sentinel).
pub fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
