//! Partitions with real processes: demo workers (`taskq-demo-worker`) against a real
//! redis-server. A tenant with a huge backlog does not hold up another tenant's few tasks, and
//! a partition's running limit holds across three workers while one is SIGKILLed in a loop and
//! another SIGSTOPped past its lease, every task ending SUCCESS.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use support::{wait_until, WorkerProcess};
use taskq_core::{Client, TaskId, TaskState};
use taskq_examples::demo::TenantJob;
use taskq_testkit::RedisServer;

mod support;

/// The workers' lease settings (see `support::WorkerProcess`): a 1 s liveness TTL renewed
/// every 200 ms, so a lease a worker renewed last at `t` lapses no earlier than `t + 1 s`.
const EARLIEST_RECOVERY_AFTER_SIGNAL: u128 = 1_000 - 200 - 100; // TTL - heartbeat - slack

/// One ledger record: (task id, worker id, "start" | "end", tenant, unix ms).
type Mark = (TaskId, String, String, String, u128);

fn marks(ledger: &Path) -> Vec<Mark> {
    std::fs::read_to_string(ledger)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 5, "ledger line {line:?}");
            (
                fields[0].parse().expect("task id"),
                fields[1].to_owned(),
                fields[2].to_owned(),
                fields[3].to_owned(),
                fields[4].parse().expect("unix ms"),
            )
        })
        .collect()
}

/// Waits until worker process `pid` is in the middle of a run (its start is in the ledger, its
/// end is not), so that signalling it now interrupts one.
async fn wait_for_a_run_on(ledger: &Path, pid: u32) {
    let pid = format!(":{pid}:");
    wait_until(
        "a run in progress on the worker",
        Duration::from_secs(20),
        async || {
            let marks = marks(ledger);
            marks.iter().any(|(id, worker, what, ..)| {
                what == "start"
                    && worker.contains(&pid)
                    && !marks
                        .iter()
                        .any(|m| m.0 == *id && m.1 == *worker && m.2 == "end")
            })
        },
    )
    .await;
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// Enqueues `count` jobs of `tenant` in chunks (one round trip per chunk); their ids.
async fn enqueue_jobs(
    client: &Client,
    tenant: &str,
    count: usize,
    ms: u64,
    limit: Option<u32>,
    ledger: &Path,
    mark_end: bool,
) -> Vec<TaskId> {
    let mut ids = Vec::with_capacity(count);
    let mut left = count;
    while left > 0 {
        let chunk = left.min(10_000);
        left -= chunk;
        let jobs = (0..chunk).map(|_| TenantJob {
            tenant: tenant.to_owned(),
            ms,
            ledger: Some(ledger.display().to_string()),
            mark_end,
        });
        let handles = match limit {
            // A per-call limit: one call per job.
            Some(limit) => {
                let mut handles = Vec::new();
                for job in jobs {
                    handles.push(
                        client
                            .enqueue(job)
                            .partition_concurrency(limit)
                            .await
                            .expect("enqueue"),
                    );
                }
                handles
            }
            None => client.enqueue_many(jobs).await.expect("enqueue"),
        };
        ids.extend(handles.iter().map(|h| h.id()));
    }
    ids
}

async fn wait_for_every_success(client: &Client, ids: &[TaskId], within: Duration) {
    wait_until("the queue to settle", within, async || {
        let stats = client.broker().stats("default").await.unwrap();
        stats.pending + stats.scheduled + stats.processing == 0
    })
    .await;
    for id in ids {
        let record = client.result(*id).await.unwrap();
        assert_eq!(
            record.map(|r| r.state),
            Some(TaskState::Success),
            "task {id} did not end SUCCESS"
        );
    }
}

/// Tenant A enqueues 200,000 jobs, then tenant B 100; then two workers start. B's jobs all
/// start while A's backlog has barely moved (without partitions B would start after all of A).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_few_tasks_start_before_a_noisy_tenants_backlog_drains() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let ledger = support::ledger_path("noisy");
    let noisy = enqueue_jobs(&client, "A", 200_000, 0, None, &ledger, false).await;
    let enqueued_b = unix_millis();
    let quiet = enqueue_jobs(&client, "B", 100, 0, None, &ledger, false).await;
    let workers = [
        WorkerProcess::start(&server, &["--concurrency", "32"]),
        WorkerProcess::start(&server, &["--concurrency", "32"]),
    ];
    wait_until("B's jobs to start", Duration::from_secs(120), async || {
        marks(&ledger).iter().filter(|m| m.3 == "B").count() >= 100
    })
    .await;
    let order = marks(&ledger);
    let last_b = order.iter().rposition(|m| m.3 == "B").unwrap();
    let a_before = order[..last_b].iter().filter(|m| m.3 == "A").count();
    let mut waits: Vec<u128> = order
        .iter()
        .filter(|m| m.3 == "B")
        .map(|m| m.4.saturating_sub(enqueued_b))
        .collect();
    waits.sort();
    eprintln!(
        "noisy neighbour: B's 100 started after {a_before} of A's 200,000 (B's wait p50 {} ms, p99 {} ms)",
        waits[49], waits[98]
    );
    assert!(
        a_before < 5_000,
        "B waited behind {a_before} of A's jobs: more than a few fetch rounds"
    );
    // B's own tasks end SUCCESS (A's backlog is left to drain: how long 200,000 take depends
    // on the machine, not on what this test checks).
    wait_until("B's jobs to succeed", Duration::from_secs(60), async || {
        let states = client.states(&quiet).await.unwrap();
        states.iter().all(|state| *state == TaskState::Success)
    })
    .await;
    drop(workers);
    assert_eq!(noisy.len(), 200_000);
    let _ = std::fs::remove_file(&ledger);
}

/// Six partitions with a limit of two each, on three workers: one SIGKILLed and restarted in
/// a loop, one SIGSTOPped past its lease. At no instant do more than two runs of a partition
/// overlap, counting a killed or frozen worker's run as running until its lease could first
/// have been recovered; every task ends SUCCESS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitions_limit_holds_while_workers_are_killed_and_paused() {
    const LIMIT: usize = 2;
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let ledger = support::ledger_path("partition-limit");
    let mut ids = Vec::new();
    for doc in 0..6 {
        let tenant = format!("doc-{doc}");
        ids.extend(
            enqueue_jobs(&client, &tenant, 40, 200, Some(LIMIT as u32), &ledger, true).await,
        );
    }
    let flags = ["--concurrency", "8", "--max-redeliveries", "100"];
    let mut killed = WorkerProcess::start(&server, &flags);
    let paused = WorkerProcess::start(&server, &flags);
    let _steady = WorkerProcess::start(&server, &flags);
    // pid -> when it was signalled (KILL or STOP): its runs count as running until a recovery
    // could first have freed their slots.
    let mut signalled: HashMap<u32, u128> = HashMap::new();

    for round in 0..4 {
        wait_for_a_run_on(&ledger, killed.pid()).await;
        killed.signal("KILL");
        signalled.insert(killed.pid(), unix_millis());
        killed.wait_exit(Duration::from_secs(5));
        killed = WorkerProcess::start(&server, &flags);
        if round == 1 {
            wait_for_a_run_on(&ledger, paused.pid()).await;
            paused.signal("STOP");
            signalled.insert(paused.pid(), unix_millis());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    paused.signal("CONT");
    wait_for_every_success(&client, &ids, Duration::from_secs(120)).await;

    let marks = marks(&ledger);
    let mut runs: HashMap<String, Vec<(u128, u128)>> = HashMap::new();
    let mut interrupted = 0;
    for (id, worker, what, tenant, at) in &marks {
        if what != "start" {
            continue;
        }
        let pid: u32 = worker
            .split(':')
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap();
        let cut = signalled
            .get(&pid)
            .filter(|when| **when >= *at)
            .map(|when| when + EARLIEST_RECOVERY_AFTER_SIGNAL);
        let end = marks
            .iter()
            .find(|m| m.0 == *id && m.1 == *worker && m.2 == "end")
            .map(|m| m.4);
        let end = match (end, cut) {
            (Some(end), Some(cut)) => end.min(cut),
            (Some(end), None) => end,
            (None, Some(cut)) => {
                interrupted += 1;
                cut
            }
            (None, None) => panic!("run of {id} on {worker} never ended and was not signalled"),
        };
        runs.entry(tenant.clone()).or_default().push((*at, end));
    }
    for (tenant, intervals) in &runs {
        let mut edges: Vec<(u128, i32)> = intervals
            .iter()
            .flat_map(|(start, end)| [(*start, 1), (*end, -1)])
            .collect();
        // Ends before starts at the same instant: touching runs do not overlap.
        edges.sort();
        let (mut running, mut most) = (0, 0);
        for (_, change) in edges {
            running += change;
            most = most.max(running);
        }
        assert!(
            most <= LIMIT as i32,
            "{tenant}: {most} runs at once, limit {LIMIT}: {intervals:?}"
        );
    }
    let duplicates = marks.iter().filter(|m| m.2 == "start").count() - ids.len();
    eprintln!(
        "partition limit under kills and a pause: never above {LIMIT}, {} tasks SUCCESS, \
         {interrupted} runs cut off by a signal, {duplicates} repeated runs",
        ids.len()
    );
    assert!(
        interrupted > 0,
        "no signal interrupted a run: the faults were not exercised"
    );
    let _ = std::fs::remove_file(&ledger);
}
