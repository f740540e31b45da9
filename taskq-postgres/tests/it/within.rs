//! Transactional enqueue: a task written in the application's transaction exists if and only
//! if that transaction commits, and then runs once.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use taskq_core::{Client, Run, Task, TaskContext, TaskError, TaskState};
use taskq_postgres::{pool_of, sqlx, EnqueueWithin};
use taskq_worker::Worker;

use super::support::config;

/// How many times the receipt task ran (only one test runs a worker).
static RUNS: AtomicUsize = AtomicUsize::new(0);

#[derive(Task, Serialize, Deserialize)]
#[task(name = "orders.receipt")]
struct SendReceipt {
    order: i64,
}

impl Run for SendReceipt {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(self.order)
    }
}

/// A client on a fresh schema, and the application's own table beside taskq's.
async fn client_with_orders() -> (Client, String) {
    let config = config();
    let schema = config.schema().to_owned();
    let client = taskq_postgres::client(config).await.unwrap();
    let pool = pool_of(&client).unwrap();
    sqlx::query(&format!(
        "CREATE TABLE {schema}.orders (id bigint PRIMARY KEY)"
    ))
    .execute(pool)
    .await
    .unwrap();
    (client, schema)
}

async fn orders(client: &Client, schema: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.orders"))
        .fetch_one(pool_of(client).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_transaction_leaves_no_task() {
    let (client, schema) = client_with_orders().await;
    let mut tx = pool_of(&client).unwrap().begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {schema}.orders VALUES (1)"))
        .execute(&mut *tx)
        .await
        .unwrap();
    let handle = client
        .enqueue(SendReceipt { order: 1 })
        .within(&mut tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    assert_eq!(orders(&client, &schema).await, 0);
    let stats = client.broker().stats("default").await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (0, 0), "{stats:?}");
    assert_eq!(handle.state().await.unwrap(), TaskState::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_runs_its_task_once_and_not_before_the_commit() {
    let (client, schema) = client_with_orders().await;
    let running = Worker::builder(client.clone())
        .register::<SendReceipt>()
        .build()
        .unwrap()
        .start();
    let before = RUNS.load(Ordering::SeqCst);
    let mut tx = pool_of(&client).unwrap().begin().await.unwrap();
    sqlx::query(&format!("INSERT INTO {schema}.orders VALUES (7)"))
        .execute(&mut *tx)
        .await
        .unwrap();
    let handle = client
        .enqueue(SendReceipt { order: 7 })
        .within(&mut tx)
        .await
        .unwrap();
    // Uncommitted: no other connection sees it, so no worker can take it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.broker().stats("default").await.unwrap().pending, 0);
    assert_eq!(handle.state().await.unwrap(), TaskState::Pending);
    tx.commit().await.unwrap();

    assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), 7);
    assert_eq!(orders(&client, &schema).await, 1);
    let report = running.stop().await.unwrap();
    assert_eq!(report.succeeded, 1);
    assert_eq!(RUNS.load(Ordering::SeqCst) - before, 1, "ran once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_enqueue_within_a_transaction_claims_its_key_only_if_it_commits() {
    let (client, _) = client_with_orders().await;
    let pool = pool_of(&client).unwrap().clone();
    let unique = || {
        client
            .enqueue_by_name("orders.receipt", &serde_json::json!({"order": 3}))
            .unique_key("receipt:3")
            .unique_for(Duration::from_secs(60))
    };
    let mut rolled_back = pool.begin().await.unwrap();
    let first = unique().send_within(&mut rolled_back).await.unwrap();
    assert!(matches!(first, taskq_core::Sent::Enqueued(_)));
    rolled_back.rollback().await.unwrap();

    let mut committed = pool.begin().await.unwrap();
    let second = unique().send_within(&mut committed).await.unwrap();
    assert!(
        matches!(second, taskq_core::Sent::Enqueued(_)),
        "the rolled-back claim left nothing behind"
    );
    committed.commit().await.unwrap();
    let mut later = pool.begin().await.unwrap();
    let third = unique().send_within(&mut later).await.unwrap();
    later.commit().await.unwrap();
    assert!(matches!(third, taskq_core::Sent::Duplicate(_)));
    assert_eq!(client.broker().stats("default").await.unwrap().pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_another_broker_is_refused_clearly() {
    let client = Client::in_memory();
    let (pg_client, _) = client_with_orders().await;
    let mut tx = pool_of(&pg_client).unwrap().begin().await.unwrap();
    let err = client
        .enqueue(SendReceipt { order: 9 })
        .within(&mut tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not PostgreSQL"), "{err}");
    assert!(pool_of(&client).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_enqueue_within_a_transaction_lands_whole_and_in_order_only_on_commit() {
    use taskq_postgres::EnqueueManyWithin;
    let (client, _) = client_with_orders().await;
    let pool = pool_of(&client).unwrap().clone();
    let batch = || {
        (0..50)
            .map(|order| SendReceipt { order })
            .collect::<Vec<_>>()
    };

    let mut rolled_back = pool.begin().await.unwrap();
    client
        .enqueue_many_within(&mut rolled_back, batch())
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    assert_eq!(client.broker().stats("default").await.unwrap().pending, 0);

    let mut committed = pool.begin().await.unwrap();
    let handles = client
        .enqueue_many_within(&mut committed, batch())
        .await
        .unwrap();
    committed.commit().await.unwrap();
    let pending = client
        .inspector()
        .pending("default", taskq_core::Page::first(100))
        .await
        .unwrap();
    let ids: Vec<_> = pending
        .iter()
        .map(|payload| taskq_core::Envelope::decode(payload, 1 << 20).unwrap().id)
        .collect();
    let expected: Vec<_> = handles.iter().map(|handle| handle.id()).collect();
    assert_eq!(ids, expected, "every invocation, in the order given");
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "math.double")]
struct Double {
    #[task(input)]
    n: i64,
}

impl Run for Double {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.n * 2)
    }
}

/// A chord and a chain sent inside a transaction: rolled back, neither the workflow's record
/// nor any step exists; committed, the chain runs to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_sent_within_a_transaction_exists_only_if_it_commits() {
    use taskq_core::workflow::{chain, group};
    use taskq_postgres::WorkflowWithin;
    let (client, _) = client_with_orders().await;
    let pool = pool_of(&client).unwrap().clone();

    let mut rolled_back = pool.begin().await.unwrap();
    let chord = client
        .send_chain_within(
            &mut rolled_back,
            group((1..=3).map(|n| Double { n })).then(SumOf { values: vec![] }),
        )
        .await
        .unwrap();
    rolled_back.rollback().await.unwrap();
    assert!(client.workflow(chord.id()).await.unwrap().is_none());
    assert_eq!(client.broker().stats("default").await.unwrap().pending, 0);

    let running = Worker::builder(client.clone())
        .register::<Double>()
        .register::<SumOf>()
        .build()
        .unwrap()
        .start();
    let mut committed = pool.begin().await.unwrap();
    let sent = client
        .send_chain_within(
            &mut committed,
            chain(Double { n: 3 })
                .then(Double { n: 0 })
                .then(Double { n: 0 }),
        )
        .await
        .unwrap();
    let chord = client
        .send_chain_within(
            &mut committed,
            group((1..=3).map(|n| Double { n })).then(SumOf { values: vec![] }),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        client.workflow(sent.id()).await.unwrap().is_none(),
        "not before the commit"
    );
    committed.commit().await.unwrap();
    assert_eq!(sent.wait(Duration::from_secs(10)).await.unwrap(), 24);
    assert_eq!(chord.wait(Duration::from_secs(10)).await.unwrap(), 12);
    running.stop().await.unwrap();
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "math.sum_of")]
struct SumOf {
    #[task(input)]
    values: Vec<i64>,
}

impl Run for SumOf {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.values.iter().sum())
    }
}
