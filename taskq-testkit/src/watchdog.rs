//! Kills the servers a test process started once that process is gone.
//!
//! Shared fixtures live in statics, which Rust never drops; without this, every test binary
//! would leave its cluster or sentinel group running. Each server started after [`guard`]
//! records its process id in a file (a running `redis-server` renames its process title, so
//! its command line cannot be matched); a shell waits for the test process to end, then kills
//! every id listed there.

use std::{io::Write, path::PathBuf, process::Command, sync::OnceLock};

static PIDS: OnceLock<PathBuf> = OnceLock::new();

/// Starts the watchdog for this process (once).
pub(crate) fn guard() {
    PIDS.get_or_init(|| {
        let pid = std::process::id();
        let file = std::env::temp_dir().join(format!("taskq-watchdog-{pid}.pids"));
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; xargs -r kill -9 < {file} 2>/dev/null; rm -f {file}; rm -rf {tmp}/taskq-redis-{pid}-*",
            file = file.display(),
            tmp = std::env::temp_dir().display()
        );
        // Deliberately never waited on: it must outlive this process.
        #[allow(clippy::zombie_processes)]
        let _watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the watchdog shell");
        file
    });
}

/// Records a server's process id for the watchdog, when one runs.
pub(crate) fn track(pid: u32) {
    if let Some(file) = PIDS.get() {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
        {
            let _ = writeln!(file, "{pid}");
        }
    }
}
