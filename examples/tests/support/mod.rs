//! What the fault tests share: demo worker processes, and the ledger their tasks write.

#![allow(dead_code)] // each test binary uses its own part

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use taskq_core::{Client, TaskId, TaskState};
use taskq_testkit::RedisServer;

/// A demo worker process.
pub(crate) struct WorkerProcess {
    child: Child,
}

impl WorkerProcess {
    pub(crate) fn start(server: &RedisServer, extra: &[&str]) -> Self {
        Self::start_with_env(server, extra, &[])
    }

    pub(crate) fn start_with_env(
        server: &RedisServer,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_on(&server.url(), extra, env)
    }

    /// A demo worker on the broker at `url`.
    pub(crate) fn start_on(url: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_taskq-demo-worker"))
            .args([
                "--broker",
                url,
                "--heartbeat",
                "200ms",
                "--liveness-ttl",
                "1s",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start taskq-demo-worker");
        Self { child }
    }

    /// Its process id (the second part of its worker ids).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    pub(crate) fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for worker") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn ledger_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("taskq-ledger-{name}-{}", TaskId::new()))
}

/// Executions per task id, from the ledger.
pub(crate) fn executions(ledger: &Path) -> HashMap<TaskId, usize> {
    let text = std::fs::read_to_string(ledger).unwrap_or_default();
    let mut counts = HashMap::new();
    for line in text.lines() {
        let id = line.split_whitespace().next().expect("ledger line");
        *counts
            .entry(id.parse::<TaskId>().expect("task id"))
            .or_default() += 1;
    }
    counts
}

pub(crate) async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Enqueues `n` demo sleeps of `ms` that record each run in `ledger`; their ids.
pub(crate) async fn enqueue_sleeps(
    client: &Client,
    n: usize,
    ms: u64,
    ledger: &Path,
) -> Vec<TaskId> {
    let tasks = (0..n).map(|_| taskq_examples::demo::Sleep {
        ms,
        ledger: Some(ledger.display().to_string()),
    });
    client
        .enqueue_many(tasks)
        .await
        .expect("enqueue")
        .iter()
        .map(|h| h.id())
        .collect()
}

/// The promise of every fault test: each of `ids` ran (one that never did is named); returns
/// the number of duplicate runs.
pub(crate) fn assert_every_id_ran(ids: &[TaskId], ledger: &Path) -> usize {
    let counts = executions(ledger);
    let lost: Vec<_> = ids.iter().filter(|id| !counts.contains_key(id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} tasks never ran: {lost:?}",
        lost.len(),
        ids.len()
    );
    counts.values().map(|n| n - 1).sum()
}

/// Waits up to `within` until the queue `default` has settled (nothing pending, scheduled or
/// held), then states the promise: every id ran (a lost one is named) and succeeded, nothing
/// is left pending or dead; returns the number of duplicate runs. Waiting for the queue, not
/// for the ids, keeps the "lost" assertion meaningful: a message that vanished leaves a settled
/// queue and an id that never ran.
pub(crate) async fn assert_none_lost(
    client: &Client,
    ids: &[TaskId],
    ledger: &Path,
    within: Duration,
) -> usize {
    wait_until("the queue to settle", within, async || {
        let stats = client.broker().stats("default").await.unwrap();
        stats.pending + stats.scheduled + stats.processing == 0
    })
    .await;
    let duplicates = assert_every_id_ran(ids, ledger);
    for id in ids {
        let record = client
            .result(*id)
            .await
            .unwrap()
            .expect("a result for every task");
        assert_eq!(record.state, TaskState::Success, "{id}");
    }
    let stats = client.broker().stats("default").await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
    duplicates
}

/// Waits until every id has a SUCCESS result, then names any id that never ran; returns the
/// number of duplicate runs.
pub(crate) async fn assert_all_succeed(
    client: &Client,
    ids: &[TaskId],
    ledger: &Path,
    within: Duration,
) -> usize {
    wait_until("every task to succeed", within, async || {
        for id in ids {
            match client.result(*id).await {
                Ok(Some(record)) if record.state == TaskState::Success => {}
                _ => return false,
            }
        }
        true
    })
    .await;
    assert_every_id_ran(ids, ledger)
}

/// Runs `taskq-order-producer` with `args`; returns its process once it printed
/// `written <id>`, and the id. With `--hold` in `args` it then waits to be killed.
pub(crate) fn start_producer(args: &[&str]) -> (Child, TaskId) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskq-order-producer"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start taskq-order-producer");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("a line").expect("readable");
    let id = line
        .strip_prefix("written ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {line}"));
    // Keep reading in the background so the producer never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, id)
}
