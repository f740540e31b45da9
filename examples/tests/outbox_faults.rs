//! The PostgreSQL outbox in front of Redis and of RabbitMQ, with real processes: a task
//! written through the outbox in the application's transaction exists if and only if that
//! transaction commits. A rolled-back write never runs; a committed one runs once (relayed
//! by a demo worker started with `--outbox`); a producer (`taskq-order-producer --outbox`)
//! SIGKILLed between its business write and its commit leaves neither the order nor the task.
//! Every id is counted in the workers' ledger.

use std::{path::Path, sync::OnceLock, time::Duration};

use support::{assert_all_succeed, executions, ledger_path, wait_until, WorkerProcess};
use taskq::postgres::{sqlx, EnqueueOutbox, PostgresConfig, PostgresOutbox};
use taskq_core::TaskId;
use taskq_testkit::{PostgresServer, RabbitNode, RedisServer};

mod support;

/// One PostgreSQL server for this binary (each test takes a schema).
fn shared_postgres() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

/// A URL on a fresh schema, created by whoever connects first.
fn fresh_postgres_url() -> String {
    format!("{}&migrate=auto", shared_postgres().fresh_url())
}

/// The order producer's arguments for `order` through the outbox, held before its commit
/// when `hold`.
fn producer_args(broker: &str, outbox: &str, order: i64, ledger: &Path, hold: bool) -> Vec<String> {
    let mut args: Vec<String> = ["--broker", broker, "--outbox", outbox, "--order"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(order.to_string());
    args.extend(["--ledger".to_owned(), ledger.display().to_string()]);
    if hold {
        args.push("--hold".to_owned());
    }
    args
}

/// Runs the order producer through the outbox; returns its process and the task id.
fn start_producer(
    broker: &str,
    outbox: &str,
    order: i64,
    ledger: &Path,
    hold: bool,
) -> (std::process::Child, TaskId) {
    let args = producer_args(broker, outbox, order, ledger, hold);
    support::start_producer(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// The three promises of transactional enqueue through the outbox, on the broker at
/// `broker` (whose results every process can read).
async fn the_outbox_holds_exactly_what_committed(broker: &str, name: &str) {
    let client = taskq::connect(broker).await.unwrap();
    let outbox_url = fresh_postgres_url();
    let config = PostgresConfig::new(&outbox_url).unwrap();
    let outbox = PostgresOutbox::connect(config.clone()).await.unwrap();
    let ledger = ledger_path(name);
    let sleep = || taskq_examples::demo::Sleep {
        ms: 1,
        ledger: Some(ledger.display().to_string()),
    };

    // Rolled back: the task never exists.
    let mut rolled_back = outbox.pool().begin().await.unwrap();
    let never = client
        .enqueue(sleep())
        .via_outbox(&outbox, &mut rolled_back)
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    // Committed: each runs once.
    let mut ids = Vec::new();
    let mut committed = outbox.pool().begin().await.unwrap();
    for _ in 0..50 {
        let handle = client
            .enqueue(sleep())
            .via_outbox(&outbox, &mut committed)
            .await
            .unwrap();
        ids.push(handle.id());
    }
    committed.commit().await.unwrap();
    // A producer killed before its commit leaves neither its order nor its task; one that
    // commits leaves both.
    let (mut killed, lost) = start_producer(broker, &outbox_url, 1, &ledger, true);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let (mut producer, kept) = start_producer(broker, &outbox_url, 2, &ledger, false);
    assert!(producer.wait().unwrap().success());
    ids.push(kept);
    let orders: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT id FROM {}.orders ORDER BY id",
        config.schema()
    ))
    .fetch_all(outbox.pool())
    .await
    .unwrap();
    assert_eq!(orders, vec![2], "the killed producer's order is gone");
    assert_eq!(client.broker().stats("default").await.unwrap().pending, 0);

    let mut worker = WorkerProcess::start_on(
        broker,
        &["--concurrency", "8", "--outbox", &outbox_url],
        &[],
    );
    wait_until("the outbox to drain", Duration::from_secs(60), async || {
        outbox.waiting().await.unwrap() == 0
    })
    .await;
    let duplicates = assert_all_succeed(&client, &ids, &ledger, Duration::from_secs(60)).await;
    assert_eq!(duplicates, 0, "duplicate runs");
    for id in [never.id(), lost] {
        assert!(!executions(&ledger).contains_key(&id), "{id} ran");
        assert!(
            client.result(id).await.unwrap().is_none(),
            "{id} has a result"
        );
    }
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).success());
    let _ = std::fs::remove_file(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_in_front_of_redis_holds_exactly_what_committed() {
    let redis = RedisServer::start();
    the_outbox_holds_exactly_what_committed(&redis.url(), "outbox-redis").await;
}

/// RabbitMQ with its results in PostgreSQL (`results=postgres://…`): the database the
/// application already has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_in_front_of_rabbitmq_holds_exactly_what_committed() {
    let node = RabbitNode::start(&[]);
    let broker = format!(
        "{}?results={}",
        node.fresh_vhost_url(),
        fresh_postgres_url()
    );
    the_outbox_holds_exactly_what_committed(&broker, "outbox-rabbitmq").await;
}
