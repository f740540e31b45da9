//! A task, a producer that insists through failovers, and the final count of results.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use taskq_core::{Client, Page, Run, Task, TaskContext, TaskError, TaskId, TaskState};
use taskq_redis::RedisConfig;
use taskq_worker::{RunningWorker, Worker};
use tokio::task::JoinHandle;

/// Sleeps `ms`, then returns `n`.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "distributed.echo", max_retries = 5)]
pub(crate) struct Echo {
    pub(crate) n: u64,
    pub(crate) ms: u64,
}

impl Run for Echo {
    type Output = u64;
    async fn run(self, _ctx: TaskContext) -> Result<u64, TaskError> {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(self.n)
    }
}

/// Short waits so that tests move quickly; durable writes wait for one replica.
pub(crate) async fn client(url: &str, durable: bool) -> Client {
    // Warnings show with a failing test's output (the test writer), never with a passing one.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_test_writer()
        .try_init();
    let mut config = RedisConfig::new(url)
        .with_block_timeout(Duration::from_millis(500))
        .with_response_timeout(Duration::from_secs(2));
    if durable {
        config = config.with_durable_writes(1, Duration::from_secs(2));
    }
    taskq_redis::client(config).await.expect("connect")
}

/// When each task last succeeded, by id.
pub(crate) type RunLog = Arc<Mutex<HashMap<TaskId, tokio::time::Instant>>>;

/// A worker consuming `queues` in the background.
pub(crate) fn start_worker(client: &Client, queues: &[String]) -> RunningWorker {
    start_worker_noting_runs(client, queues, RunLog::default())
}

/// A worker that notes in `runs` when each task succeeded.
pub(crate) fn start_worker_noting_runs(
    client: &Client,
    queues: &[String],
    runs: RunLog,
) -> RunningWorker {
    Worker::builder(client.clone())
        .register::<Echo>()
        .on_success(move |event| {
            if let Some(id) = event.id {
                runs.lock().unwrap().insert(id, tokio::time::Instant::now());
            }
            Ok(())
        })
        .queues(queues.iter().cloned())
        .concurrency(8)
        .liveness(Duration::from_millis(500), Duration::from_secs(10))
        .build()
        .expect("valid worker")
        .start()
}

/// Enqueues `Echo { n }` on `queue` under a fixed id, retrying transient errors (a failover
/// in progress) for up to a minute; a retried enqueue may duplicate, never lose, the task.
pub(crate) async fn enqueue_insisting(client: &Client, queue: &str, n: u64, ms: u64) -> TaskId {
    let id = TaskId::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client.enqueue(Echo { n, ms }).queue(queue).id(id).await {
            Ok(_) => return id,
            Err(err) if err.is_transient() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("enqueue {n} failed for good: {err:?}"),
        }
    }
}

/// Enqueues `count` tasks round-robin over `queues`, `pause` apart, in the background.
pub(crate) fn produce(
    client: &Client,
    queues: &[String],
    count: u64,
    pause: Duration,
) -> JoinHandle<Vec<TaskId>> {
    let produced = produce_timed(client, queues, count, pause);
    tokio::spawn(async move {
        let sent = produced.await.expect("producer");
        sent.into_iter().map(|(id, _)| id).collect()
    })
}

/// As [`produce`], with the moment each enqueue returned.
pub(crate) fn produce_timed(
    client: &Client,
    queues: &[String],
    count: u64,
    pause: Duration,
) -> JoinHandle<Vec<(TaskId, tokio::time::Instant)>> {
    let (client, queues) = (client.clone(), queues.to_vec());
    tokio::spawn(async move {
        let mut sent = Vec::new();
        for n in 0..count {
            let queue = &queues[usize::try_from(n).unwrap_or(0) % queues.len()];
            let id = enqueue_insisting(&client, queue, n, 5).await;
            sent.push((id, tokio::time::Instant::now()));
            tokio::time::sleep(pause).await;
        }
        sent
    })
}

/// Waits up to `timeout` for every id in `ids` to have a SUCCESS result, then asserts that
/// none is missing (naming how many and a few of them).
pub(crate) async fn assert_all_succeed(client: &Client, ids: &[TaskId], timeout: Duration) {
    let missing = never_succeeded(client, ids, timeout).await;
    let sample: Vec<_> = missing.iter().take(5).collect();
    if missing.is_empty() {
        return;
    }
    let whereabouts = whereabouts(client, &missing).await;
    panic!(
        "{} of {} tasks never succeeded, e.g. {sample:?}; where they are: {whereabouts}",
        missing.len(),
        ids.len()
    );
}

/// Where each of `missing` is now, counted by place (its result's state; ready, scheduled,
/// held by a worker that is or is not live, dead-lettered; nowhere), so that a failure says
/// which path stranded them.
async fn whereabouts(client: &Client, missing: &BTreeSet<TaskId>) -> String {
    let inspector = client.inspector();
    let mut places: BTreeMap<String, usize> = BTreeMap::new();
    let mut lists: Vec<(String, String)> = Vec::new();
    let live: BTreeSet<String> = match inspector.workers().await {
        Ok(workers) => workers.into_iter().map(|w| w.id).collect(),
        Err(err) => return format!("(no worker list: {err})"),
    };
    for queue in inspector.queues().await.unwrap_or_default() {
        let all = Page::first(100_000);
        for payload in inspector.pending(&queue, all).await.unwrap_or_default() {
            lists.push(("ready".into(), payload));
        }
        for message in inspector.scheduled(&queue, all).await.unwrap_or_default() {
            lists.push(("scheduled".into(), message.payload));
        }
        for held in inspector.held(&queue, 100_000).await.unwrap_or_default() {
            let whose = if live.contains(&held.worker) {
                "a live"
            } else {
                "a gone"
            };
            lists.push((
                format!("held by {whose} worker {}", held.worker),
                held.payload,
            ));
        }
        for dead in inspector
            .dead_letters(&queue, all)
            .await
            .unwrap_or_default()
        {
            if let Some(id) = dead.id {
                lists.push((format!("dead ({:?})", dead.reason), id.to_string()));
            }
        }
    }
    for id in missing {
        let result = match client.backend().get(*id).await {
            Ok(Some(result)) => format!("{:?}", result.state),
            Ok(None) => "no result".into(),
            Err(err) => format!("result unreadable ({err})"),
        };
        let text = id.to_string();
        let found: Vec<&str> = lists
            .iter()
            .filter(|(_, payload)| payload.contains(&text))
            .map(|(place, _)| place.as_str())
            .collect();
        let place = if found.is_empty() {
            "nowhere".to_string()
        } else {
            found.join(" + ")
        };
        *places.entry(format!("{result}, {place}")).or_default() += 1;
    }
    format!("{places:?} (live workers: {live:?})")
}

/// The ids of `ids` without a SUCCESS result after waiting up to `timeout` for them.
pub(crate) async fn never_succeeded(
    client: &Client,
    ids: &[TaskId],
    timeout: Duration,
) -> BTreeSet<TaskId> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut missing: BTreeSet<TaskId> = ids.iter().copied().collect();
    while !missing.is_empty() && tokio::time::Instant::now() < deadline {
        let mut still = BTreeSet::new();
        for id in missing {
            match client.backend().get(id).await {
                Ok(Some(result)) if result.state == TaskState::Success => {}
                _ => {
                    still.insert(id);
                }
            }
        }
        missing = still;
        if !missing.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    missing
}

/// Asserts that the broker names a master degraded under durable writes (no replica of the
/// one asked for), as `taskq status` and the dashboard show it.
pub(crate) async fn assert_named_degraded(client: &Client) {
    let warnings = client.broker().durability_warnings().await.unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("durable writes degraded") && w.contains("0 of durable=1")),
        "no degraded master named: {warnings:?}"
    );
}
