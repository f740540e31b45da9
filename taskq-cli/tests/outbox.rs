//! The PostgreSQL outbox in front of Redis: tasks written in the application's transaction
//! exist only if it commits, and a relay (`taskq outbox relay`, a real process) SIGKILLed in
//! a loop while 10,000 tasks pass loses none and runs none twice.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{LazyLock, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use taskq::postgres::{EnqueueOutbox, PostgresConfig, PostgresOutbox};
use taskq_core::{Run, Task, TaskContext, TaskError, TaskId};
use taskq_testkit::{PostgresServer, RedisServer};
use taskq_worker::Worker;

/// Executions per task id, across every test of this binary.
static RUNS: LazyLock<Mutex<HashMap<TaskId, usize>>> = LazyLock::new(Default::default);

#[derive(Task, Serialize, Deserialize)]
#[task(name = "outbox.count")]
struct Count {
    n: u64,
}

impl Run for Count {
    type Output = u64;
    async fn run(self, ctx: TaskContext) -> Result<u64, TaskError> {
        *RUNS.lock().unwrap().entry(ctx.id()).or_default() += 1;
        Ok(self.n)
    }
}

async fn outbox_on(server: &PostgresServer) -> (PostgresOutbox, String) {
    let url = format!("{}&migrate=auto", server.fresh_url());
    let outbox = PostgresOutbox::connect(PostgresConfig::new(&url).unwrap())
        .await
        .unwrap();
    (outbox, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_write_exists_only_if_its_transaction_commits() {
    let (redis, postgres) = (RedisServer::start(), PostgresServer::start());
    let client = taskq::connect(&redis.url()).await.unwrap();
    let (outbox, _) = outbox_on(&postgres).await;

    let mut rolled_back = outbox.pool().begin().await.unwrap();
    client
        .enqueue(Count { n: 1 })
        .via_outbox(&outbox, &mut rolled_back)
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    assert_eq!(outbox.waiting().await.unwrap(), 0);

    let mut committed = outbox.pool().begin().await.unwrap();
    let handle = client
        .enqueue(Count { n: 2 })
        .via_outbox(&outbox, &mut committed)
        .await
        .unwrap();
    assert_eq!(client.broker().stats("default").await.unwrap().pending, 0);
    committed.commit().await.unwrap();
    assert_eq!(outbox.waiting().await.unwrap(), 1);
    assert_eq!(
        outbox.relay_once(client.broker().as_ref()).await.unwrap(),
        1
    );
    assert_eq!(outbox.waiting().await.unwrap(), 0);

    let running = Worker::builder(client.clone())
        .register::<Count>()
        .build()
        .unwrap()
        .start();
    assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), 2);
    running.stop().await.unwrap();
    assert_eq!(RUNS.lock().unwrap().get(&handle.id()), Some(&1));
}

/// `taskq --broker REDIS outbox relay --outbox POSTGRES`, as a process.
fn relay(redis: &str, outbox: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args([
            "--broker", redis, "outbox", "relay", "--outbox", outbox, "--poll", "100ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start taskq outbox relay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_in_a_loop_loses_no_task_and_runs_none_twice() {
    let (redis, postgres) = (RedisServer::start(), PostgresServer::start());
    let client = taskq::connect(&redis.url()).await.unwrap();
    let (outbox, outbox_url) = outbox_on(&postgres).await;
    let running = Worker::builder(client.clone())
        .register::<Count>()
        .concurrency(64)
        .build()
        .unwrap()
        .start();

    // 10,000 tasks in 100 committed transactions of 100, while a relay is killed and
    // restarted every 150 ms.
    let mut ids = Vec::with_capacity(10_000);
    let mut relay_process = relay(&redis.url(), &outbox_url);
    let mut kills = 0;
    let mut last_kill = Instant::now();
    for batch in 0..100u64 {
        let mut tx = outbox.pool().begin().await.unwrap();
        for n in 0..100 {
            let handle = client
                .enqueue(Count { n: batch * 100 + n })
                .via_outbox(&outbox, &mut tx)
                .await
                .unwrap();
            ids.push(handle.id());
        }
        tx.commit().await.unwrap();
        if last_kill.elapsed() > Duration::from_millis(150) {
            relay_process.kill().unwrap();
            relay_process.wait().unwrap();
            kills += 1;
            relay_process = relay(&redis.url(), &outbox_url);
            last_kill = Instant::now();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while outbox.waiting().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        if last_kill.elapsed() > Duration::from_millis(150) {
            relay_process.kill().unwrap();
            relay_process.wait().unwrap();
            kills += 1;
            relay_process = relay(&redis.url(), &outbox_url);
            last_kill = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay_process.kill().unwrap();
    relay_process.wait().unwrap();
    let settle = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = client.broker().stats("default").await.unwrap();
        if stats.pending + stats.processing + stats.scheduled == 0 {
            break;
        }
        assert!(
            Instant::now() < settle,
            "the queue did not drain: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await.unwrap();

    let runs = RUNS.lock().unwrap();
    let lost: Vec<_> = ids.iter().filter(|id| !runs.contains_key(id)).collect();
    let twice: Vec<_> = ids.iter().filter(|id| runs[id] > 1).collect();
    eprintln!(
        "outbox relay killed {kills} times: {} lost, {} run twice of {}",
        lost.len(),
        twice.len(),
        ids.len()
    );
    assert!(kills >= 5, "the relay was killed only {kills} times");
    assert!(lost.is_empty(), "{} committed tasks never ran", lost.len());
    assert!(twice.is_empty(), "{} tasks ran twice", twice.len());
}
