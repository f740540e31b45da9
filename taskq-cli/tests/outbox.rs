//! The PostgreSQL outbox in front of Redis and of RabbitMQ: tasks written in the
//! application's transaction exist only if it commits; a row relayed a second time (a relay
//! killed after the broker confirmed, before its delete) runs once; and a relay (`taskq
//! outbox relay`, a real process) SIGKILLed in a loop while 10,000 tasks pass loses none and
//! runs none twice, on either broker.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{LazyLock, Mutex, OnceLock},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use taskq::postgres::{sqlx, EnqueueOutbox, PostgresConfig, PostgresOutbox};
use taskq_core::{Run, Task, TaskContext, TaskError, TaskId};
use taskq_testkit::{PostgresServer, RabbitNode, RedisServer};
use taskq_worker::Worker;

/// Executions per task id, across every test of this binary.
static RUNS: LazyLock<Mutex<HashMap<TaskId, usize>>> = LazyLock::new(Default::default);

/// The run counts, even after a failed assertion elsewhere poisoned the lock.
fn runs() -> std::sync::MutexGuard<'static, HashMap<TaskId, usize>> {
    RUNS.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "outbox.count")]
struct Count {
    n: u64,
}

impl Run for Count {
    type Output = u64;
    async fn run(self, ctx: TaskContext) -> Result<u64, TaskError> {
        *runs().entry(ctx.id()).or_default() += 1;
        Ok(self.n)
    }
}

/// One PostgreSQL server for this binary (each test takes a schema).
fn shared_postgres() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

/// One RabbitMQ node for this binary (each test takes a vhost).
fn shared_rabbit() -> &'static RabbitNode {
    static NODE: OnceLock<RabbitNode> = OnceLock::new();
    NODE.get_or_init(|| RabbitNode::start(&[]))
}

/// A RabbitMQ broker URL on a fresh vhost, with its results in PostgreSQL.
fn rabbit_url() -> String {
    let results = format!("{}&migrate=auto", shared_postgres().fresh_url());
    format!("{}?results={results}", shared_rabbit().fresh_vhost_url())
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
    let redis = RedisServer::start();
    let client = taskq::connect(&redis.url()).await.unwrap();
    let (outbox, _) = outbox_on(shared_postgres()).await;

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
    let ran = runs().get(&handle.id()).copied();
    assert_eq!(ran, Some(1));
}

/// `taskq --broker BROKER outbox relay --outbox POSTGRES`, as a process, with a short lease
/// so that a killed relay's rows are sent again soon.
fn relay(broker: &str, outbox: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args(["--broker", broker, "outbox", "relay", "--outbox", outbox])
        .args(["--poll", "100ms", "--lease", "1s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start taskq outbox relay")
}

/// A relay process SIGKILLed and started again every 150 ms, counting the kills.
struct KilledRelay<'a> {
    broker: &'a str,
    outbox: &'a str,
    process: Child,
    kills: usize,
    last_kill: Instant,
}

impl<'a> KilledRelay<'a> {
    fn start(broker: &'a str, outbox: &'a str) -> Self {
        Self {
            broker,
            outbox,
            process: relay(broker, outbox),
            kills: 0,
            last_kill: Instant::now(),
        }
    }

    /// Kills the relay and starts another when 150 ms passed since the last kill.
    fn kill_when_due(&mut self) {
        if self.last_kill.elapsed() > Duration::from_millis(150) {
            self.process.kill().unwrap();
            self.process.wait().unwrap();
            self.kills += 1;
            self.process = relay(self.broker, self.outbox);
            self.last_kill = Instant::now();
        }
    }

    /// Kills the last relay; returns how many were killed before it.
    fn stop(mut self) -> usize {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
        self.kills
    }
}

/// 10,000 tasks through the outbox to the broker at `broker` while its relay is SIGKILLed
/// and restarted every 150 ms: every committed id runs, none twice.
async fn a_relay_killed_in_a_loop_loses_no_task_and_runs_none_twice(
    broker: &str,
    postgres: &PostgresServer,
) {
    let client = taskq::connect(broker).await.unwrap();
    let (outbox, outbox_url) = outbox_on(postgres).await;
    let running = Worker::builder(client.clone())
        .register::<Count>()
        .concurrency(64)
        .build()
        .unwrap()
        .start();

    // 10,000 tasks in 100 committed transactions of 100, while a relay is killed and
    // restarted every 150 ms.
    let mut ids = Vec::with_capacity(10_000);
    let mut relays = KilledRelay::start(broker, &outbox_url);
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
        relays.kill_when_due();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while outbox.waiting().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        relays.kill_when_due();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kills = relays.stop();
    // Every id ran and nothing waits (RabbitMQ counts no "processing": the graceful stop
    // below finishes what is in hand, and anything it gave back would show as pending).
    let settle = Instant::now() + Duration::from_secs(120);
    loop {
        let stats = client.broker().stats("default").await.unwrap();
        let all_ran = {
            let runs = runs();
            ids.iter().all(|id| runs.contains_key(id))
        };
        if all_ran && stats.pending + stats.processing + stats.scheduled == 0 {
            break;
        }
        assert!(
            Instant::now() < settle,
            "the queue did not drain: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await.unwrap();
    assert_eq!(client.broker().stats("default").await.unwrap().pending, 0);

    let runs = runs().clone();
    let lost: Vec<_> = ids.iter().filter(|id| !runs.contains_key(id)).collect();
    let twice: Vec<_> = ids.iter().filter(|id| runs[id] > 1).collect();
    eprintln!(
        "outbox relay to {} killed {kills} times: {} lost, {} run twice of {}",
        broker.split(':').next().unwrap_or_default(),
        lost.len(),
        twice.len(),
        ids.len()
    );
    assert!(kills >= 5, "the relay was killed only {kills} times");
    assert!(lost.is_empty(), "{} committed tasks never ran", lost.len());
    assert!(twice.is_empty(), "{} tasks ran twice", twice.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_in_a_loop_in_front_of_redis_loses_no_task_and_runs_none_twice() {
    let redis = RedisServer::start();
    a_relay_killed_in_a_loop_loses_no_task_and_runs_none_twice(&redis.url(), shared_postgres())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_in_a_loop_in_front_of_rabbitmq_loses_no_task_and_runs_none_twice() {
    a_relay_killed_in_a_loop_loses_no_task_and_runs_none_twice(&rabbit_url(), shared_postgres())
        .await;
}

/// What a relay killed after RabbitMQ confirmed, before its delete committed, leaves behind:
/// the row, sent again once its lease runs out. RabbitMQ keeps no uniqueness keys, so the
/// second copy reaches the queue; the worker finds the first copy's success in the result
/// backend and acknowledges the second without running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_relayed_again_after_its_task_ran_does_not_run_again_on_rabbitmq() {
    let client = taskq::connect(&rabbit_url()).await.unwrap();
    let (outbox, outbox_url) = outbox_on(shared_postgres()).await;
    let schema = PostgresConfig::new(&outbox_url)
        .unwrap()
        .schema()
        .to_owned();
    let running = Worker::builder(client.clone())
        .register::<Count>()
        .build()
        .unwrap()
        .start();

    let mut tx = outbox.pool().begin().await.unwrap();
    let handle = client
        .enqueue(Count { n: 7 })
        .via_outbox(&outbox, &mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // The row as a relay killed before its delete would leave it.
    let saved = format!("CREATE TABLE {schema}.saved AS SELECT * FROM {schema}.outbox");
    sqlx::query(&saved).execute(outbox.pool()).await.unwrap();
    assert_eq!(
        outbox.relay_once(client.broker().as_ref()).await.unwrap(),
        1
    );
    assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), 7);

    let left_behind = format!("INSERT INTO {schema}.outbox SELECT * FROM {schema}.saved");
    sqlx::query(&left_behind)
        .execute(outbox.pool())
        .await
        .unwrap();
    assert_eq!(
        outbox.relay_once(client.broker().as_ref()).await.unwrap(),
        1,
        "the second copy is sent"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.broker().stats("default").await.unwrap().pending > 0 {
        assert!(Instant::now() < deadline, "the second copy was not taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await.unwrap();
    assert_eq!(
        client.broker().stats("default").await.unwrap().pending,
        0,
        "the second copy was settled, not given back"
    );
    let ran = runs().get(&handle.id()).copied();
    assert_eq!(ran, Some(1));
}
