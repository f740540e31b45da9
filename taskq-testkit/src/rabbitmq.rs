//! [`RabbitNode`]: a private RabbitMQ node per test binary, next to (never instead of) any
//! node the machine runs: its own node name, AMQP and distribution ports, data and log
//! directories under a temporary directory. Tests share one node and take a fresh vhost each.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// Vhosts created per `rabbitmqctl` call (one call costs about a second).
const VHOST_BATCH: usize = 24;

/// A `rabbitmq-server` node owned by the test process.
///
/// ```no_run
/// let node = taskq_testkit::RabbitNode::start(&[]);
/// let url = node.fresh_vhost_url();
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RabbitNode {
    name: String,
    port: u16,
    dist_port: u16,
    dir: PathBuf,
    /// The wrapper script we started (it runs the broker as the `rabbitmq` user).
    child: Mutex<Option<Child>>,
    /// The Erlang VM's process id, to kill it hard.
    vm_pid: Mutex<Option<u32>>,
    /// Vhosts created and not handed out yet.
    vhosts: Mutex<Vec<String>>,
    next_vhost: AtomicU64,
}

impl RabbitNode {
    /// Starts a node with `config` lines added to its `rabbitmq.conf` (for example
    /// `consumer_timeout = 5000`) and waits until it is up.
    ///
    /// # Panics
    ///
    /// When `rabbitmq-server` is missing or does not start within a minute (the message holds
    /// the end of its log): RabbitMQ tests never skip.
    pub fn start(config: &[&str]) -> Self {
        crate::watchdog::guard();
        let port = crate::free_port();
        let dist_port = crate::free_port();
        let name = format!("taskq{}x{port}@localhost", std::process::id());
        let dir =
            std::env::temp_dir().join(format!("taskq-redis-{}-rabbit-{port}", std::process::id()));
        std::fs::create_dir_all(dir.join("mnesia")).expect("create the node's directory");
        std::fs::create_dir_all(dir.join("log")).expect("create the node's log directory");
        std::fs::write(dir.join("enabled_plugins"), "[].\n").expect("write enabled_plugins");
        let mut conf = format!("listeners.tcp.default = {port}\nloopback_users = none\n");
        for line in config {
            conf.push_str(line);
            conf.push('\n');
        }
        std::fs::write(dir.join("rabbitmq.conf"), conf).expect("write rabbitmq.conf");
        // The Debian wrapper runs the broker as `rabbitmq`: it must own everything it writes.
        let owned = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(&dir)
            .status();
        assert!(
            owned.is_ok_and(|status| status.success()),
            "chown {} to rabbitmq failed: is Debian's rabbitmq-server installed?",
            dir.display()
        );
        let node = Self {
            name,
            port,
            dist_port,
            dir,
            child: Mutex::new(None),
            vm_pid: Mutex::new(None),
            vhosts: Mutex::new(Vec::new()),
            next_vhost: AtomicU64::new(1),
        };
        node.spawn();
        node
    }

    fn spawn(&self) {
        // As Debian's `rabbitmq-server` wrapper does (`su rabbitmq`), but with the open-files
        // limit raised to the hard limit first: `su` resets it to 1,024, and a node with a few
        // hundred quorum queues runs out of file handles and stops confirming publishes.
        let script = format!(
            "ulimit -n \"$(ulimit -Hn)\"; cd {dir}; exec /usr/lib/rabbitmq/bin/rabbitmq-server",
            dir = self.dir.display()
        );
        let child = Command::new("su")
            .args(["rabbitmq", "-s", "/bin/sh", "-c", &script])
            .current_dir(&self.dir)
            .env("RABBITMQ_NODENAME", &self.name)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", self.dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", self.dir.join("node.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!("`su rabbitmq … rabbitmq-server` failed to start ({err}); install Debian's rabbitmq-server")
            });
        *self.child.lock() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.ctl(&["await_startup", "--timeout", "10"]);
            if ready.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "RabbitMQ node {} did not start: {}\n{}",
                self.name,
                ready.unwrap_err(),
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let pid = self
            .ctl(&["eval", "os:getpid()."])
            .ok()
            .and_then(|out| out.trim().trim_matches('"').parse().ok());
        if let Some(pid) = pid {
            crate::watchdog::track(pid);
        }
        *self.vm_pid.lock() = pid;
    }

    /// Runs `rabbitmqctl` against this node; its output, or why it failed.
    ///
    /// # Errors
    ///
    /// The command's output when it exits unsuccessfully.
    pub fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("rabbitmqctl")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .map_err(|err| format!("rabbitmqctl: {err}"))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// The AMQP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/<vhost>` for a vhost nobody else uses.
    ///
    /// # Panics
    ///
    /// When the node refuses to create vhosts.
    pub fn fresh_vhost_url(&self) -> String {
        let vhost = self.fresh_vhost();
        format!("amqp://guest:guest@127.0.0.1:{}/{vhost}", self.port)
    }

    fn fresh_vhost(&self) -> String {
        let mut pool = self.vhosts.lock();
        if pool.is_empty() {
            let batch: Vec<String> = (0..VHOST_BATCH)
                .map(|_| format!("t{}", self.next_vhost.fetch_add(1, Ordering::Relaxed)))
                .collect();
            let names: Vec<String> = batch.iter().map(|v| format!("<<\"{v}\">>")).collect();
            let code = format!(
                "[begin rabbit_vhost:add(V, <<\"taskq\">>), \
                 rabbit_auth_backend_internal:set_permissions(<<\"guest\">>, V, <<\".*\">>, <<\".*\">>, <<\".*\">>, <<\"taskq\">>) end \
                 || V <- [{}]].",
                names.join(", ")
            );
            self.ctl(&["eval", &code])
                .unwrap_or_else(|err| panic!("creating vhosts on {}: {err}", self.name));
            pool.extend(batch);
        }
        pool.pop().expect("a vhost")
    }

    /// Kills the node's Erlang VM with SIGKILL (a crash: nothing is flushed).
    pub fn kill(&self) {
        if let Some(pid) = self.vm_pid.lock().take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        if let Some(mut child) = self.child.lock().take() {
            let _ = child.wait();
        }
    }

    /// Starts the node again with the same name, ports and data after [`RabbitNode::kill`].
    ///
    /// # Panics
    ///
    /// As [`RabbitNode::start`].
    pub fn restart(&self) {
        self.kill();
        self.spawn();
    }

    /// The end of the node's log, for failure messages.
    pub fn log_tail(&self, count: usize) -> String {
        let mut text = format!("--- rabbitmq node {}\n", self.name);
        let log = std::fs::read_dir(self.dir.join("log"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
            .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
            .collect::<Vec<_>>()
            .join("\n");
        let lines: Vec<&str> = log.lines().collect();
        for line in &lines[lines.len().saturating_sub(count)..] {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
