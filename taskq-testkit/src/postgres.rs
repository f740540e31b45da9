//! [`PostgresServer`]: a private PostgreSQL server per test binary (`initdb` + `pg_ctl` from
//! Debian's `postgresql` package, on a free port, in a temporary directory), never the
//! machine's own. Tests share one server and take a fresh schema each.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// A PostgreSQL server owned by the test process.
///
/// ```no_run
/// let server = taskq_testkit::PostgresServer::start();
/// let url = server.fresh_url(); // postgres://…/postgres?schema=t_…
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PostgresServer {
    /// Creates a cluster (`initdb`, trust authentication on loopback) and starts it.
    ///
    /// # Panics
    ///
    /// When PostgreSQL's binaries are missing or the server does not start (the message holds
    /// the end of its log): PostgreSQL tests never skip.
    pub fn start() -> Self {
        crate::watchdog::guard();
        let bin = binaries();
        let port = crate::free_port();
        let dir = std::env::temp_dir().join(format!(
            "taskq-redis-{}-postgres-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let server = Self { bin, dir, port };
        server.own_dir();
        server.run_as_owner(&format!(
            "{initdb} -D {data} -A trust -U postgres --no-sync -E UTF8 > {dir}/initdb.log 2>&1",
            initdb = server.bin.join("initdb").display(),
            data = server.data().display(),
            dir = server.dir.display(),
        ));
        server.spawn();
        server
    }

    /// The server's data directory.
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `initdb` and `postgres` refuse to run as root: as root, the directory goes to the
    /// `postgres` user and commands run as it.
    fn own_dir(&self) {
        if !is_root() {
            return;
        }
        let owned = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&self.dir)
            .status();
        assert!(
            owned.is_ok_and(|status| status.success()),
            "chown {} to postgres failed: is Debian's postgresql installed?",
            self.dir.display()
        );
    }

    fn run_as_owner(&self, script: &str) {
        let status = if is_root() {
            Command::new("su")
                .args(["postgres", "-s", "/bin/sh", "-c", script])
                .status()
        } else {
            Command::new("sh").args(["-c", script]).status()
        };
        assert!(
            status.is_ok_and(|status| status.success()),
            "`{script}` failed:\n{}",
            self.log_tail(30)
        );
    }

    fn spawn(&self) {
        self.run_as_owner(&format!(
            "{pg_ctl} -D {data} -o '-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c max_connections=300' -l {dir}/log -w -t 60 start > /dev/null",
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data().display(),
            port = self.port,
            dir = self.dir.display(),
        ));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !accepts(self.port) {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL on port {} did not start:\n{}",
                self.port,
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = self.pid() {
            crate::watchdog::track(pid);
        }
    }

    /// The postmaster's process id, from its pid file.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL to the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// A URL naming a schema no other test uses (created by taskq on connect).
    pub fn fresh_url(&self) -> String {
        format!("{}?schema=t_{}", self.url(), uuid::Uuid::new_v4().simple())
    }

    /// Kills the postmaster with SIGKILL (a crash: the restart replays the WAL).
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while accepts(self.port) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts the server again on the same port and data after [`PostgresServer::kill`].
    ///
    /// # Panics
    ///
    /// As [`PostgresServer::start`].
    pub fn restart(&self) {
        self.kill();
        // A killed postmaster leaves its pid file, and where nothing reaps orphans (PID 1 of
        // a container) it stays a zombie whose pid still answers: the server would refuse to
        // start over it. It is dead (the port is closed), so the file goes; the children
        // exit as soon as they see the postmaster gone.
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
        for socket_file in [".s.PGSQL.{port}", ".s.PGSQL.{port}.lock"] {
            let name = socket_file.replace("{port}", &self.port.to_string());
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        self.spawn();
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self, count: usize) -> String {
        let mut text = format!("--- postgres on port {}\n", self.port);
        for file in ["initdb.log", "log"] {
            let log = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            for line in &lines[lines.len().saturating_sub(count)..] {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// True when something accepts connections on `port` (PostgreSQL answers nothing until it is
/// spoken to in its own protocol, so a connection is the test).
fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The newest PostgreSQL server binaries Debian installed (`/usr/lib/postgresql/<v>/bin`).
fn binaries() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no PostgreSQL server under /usr/lib/postgresql/*/bin: install Debian's postgresql")
    })
}
