//! Fault tests on PostgreSQL with real processes: demo workers (`taskq-demo-worker --broker
//! postgres://…`) on a private PostgreSQL server, killed with SIGKILL, paused past their
//! lease with SIGSTOP, and the server itself killed with SIGKILL and restarted. Every
//! enqueued task id is counted in the workers' ledger: lost must be zero.

use std::{path::Path, sync::OnceLock, time::Duration};

use support::{enqueue_sleeps, executions, ledger_path, wait_until, WorkerProcess};
use taskq_core::{Client, TaskId};
use taskq_testkit::PostgresServer;

mod support;

/// One server for this binary (each test takes a schema); the crash test starts its own.
fn shared_server() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

/// A URL on a fresh schema, created by whoever connects first.
fn fresh_url(server: &PostgresServer) -> String {
    format!("{}&migrate=auto", server.fresh_url())
}

/// [`support::assert_none_lost`] with this file's patience.
async fn assert_none_lost(client: &Client, ids: &[TaskId], ledger: &Path) -> usize {
    support::assert_none_lost(client, ids, ledger, Duration::from_secs(90)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_is_lost_when_a_worker_is_killed_on_postgres() {
    let url = fresh_url(shared_server());
    let client = taskq::connect(&url).await.unwrap();
    let ledger = ledger_path("pg-kill");
    let ids = enqueue_sleeps(&client, 300, 20, &ledger).await;

    let mut victim = WorkerProcess::start_on(&url, &["--concurrency", "16"], &[]);
    let mut survivor = WorkerProcess::start_on(&url, &["--concurrency", "16"], &[]);
    wait_until("some progress", Duration::from_secs(60), async || {
        executions(&ledger).len() >= 60
    })
    .await;
    victim.signal("KILL");
    victim.wait_exit(Duration::from_secs(5));

    let duplicates = assert_none_lost(&client, &ids, &ledger).await;
    eprintln!(
        "postgres, killed worker: 0 lost, {duplicates} duplicate executions of {}",
        ids.len()
    );
    survivor.signal("TERM");
    assert!(survivor.wait_exit(Duration::from_secs(15)).success());
    let _ = std::fs::remove_file(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_cannot_duplicate_recovered_work_on_postgres() {
    let url = fresh_url(shared_server());
    let client = taskq::connect(&url).await.unwrap();
    let ledger = ledger_path("pg-pause");
    let ids = enqueue_sleeps(&client, 100, 300, &ledger).await;

    let mut paused = WorkerProcess::start_on(&url, &["--concurrency", "20"], &[]);
    wait_until(
        "the first worker to hold tasks",
        Duration::from_secs(30),
        async || client.broker().stats("default").await.unwrap().processing >= 20,
    )
    .await;
    paused.signal("STOP");
    let mut other = WorkerProcess::start_on(&url, &["--concurrency", "20"], &[]);
    // Past the paused worker's liveness deadline, its tasks are recovered and run by the other.
    tokio::time::sleep(Duration::from_secs(3)).await;
    paused.signal("CONT");

    let duplicates = assert_none_lost(&client, &ids, &ledger).await;
    // The paused worker's in-flight runs finish after resuming (at most its concurrency), but
    // their acks are fenced: nothing it held goes back to the queue a second time.
    assert!(duplicates <= 20, "{duplicates} duplicates");
    eprintln!(
        "postgres, paused worker: 0 lost, {duplicates} duplicate executions of {}",
        ids.len()
    );
    paused.signal("TERM");
    other.signal("TERM");
    paused.wait_exit(Duration::from_secs(15));
    assert!(other.wait_exit(Duration::from_secs(15)).success());
    let _ = std::fs::remove_file(&ledger);
}

/// kill -9 of the postmaster mid-run, then a restart: every committed enqueue survives (the
/// WAL is replayed), and the worker reconnects and finishes by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_killed_mid_run_loses_no_committed_task() {
    let server = PostgresServer::start();
    let url = fresh_url(&server);
    let client = taskq::connect(&url).await.unwrap();
    let ledger = ledger_path("pg-crash");
    // 200 runs of 100 ms on 8 slots: about 2.5 s of work, so the crash lands mid-run.
    let ids = enqueue_sleeps(&client, 200, 100, &ledger).await;

    let mut worker = WorkerProcess::start_on(&url, &["--concurrency", "8"], &[]);
    wait_until("some progress", Duration::from_secs(60), async || {
        executions(&ledger).len() >= 20
    })
    .await;
    server.kill();
    let done_at_crash = executions(&ledger).len();
    assert!(
        done_at_crash < ids.len(),
        "the crash came after the work was done"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart();

    let duplicates = assert_none_lost(&client, &ids, &ledger).await;
    eprintln!(
        "postgres, server killed after {done_at_crash} runs: 0 lost, {duplicates} duplicates of {}",
        ids.len()
    );
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).success());
    let _ = std::fs::remove_file(&ledger);
}

/// Runs the order producer on the PostgreSQL broker at `url`; returns its process once it
/// wrote, and the task id.
fn start_producer(
    url: &str,
    order: i64,
    ledger: &Path,
    hold: bool,
) -> (std::process::Child, TaskId) {
    let (order, ledger) = (order.to_string(), ledger.display().to_string());
    let mut args = vec!["--broker", url, "--order", &order, "--ledger", &ledger];
    if hold {
        args.push("--hold");
    }
    support::start_producer(&args)
}

/// A producer SIGKILLed between its business write and its commit leaves neither the order
/// nor its task; one that commits leaves both, and the task runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_killed_before_its_commit_leaves_neither_the_order_nor_the_task() {
    let url = fresh_url(shared_server());
    let client = taskq::connect(&url).await.unwrap();
    let schema = taskq::postgres::PostgresConfig::new(&url)
        .unwrap()
        .schema()
        .to_owned();
    let pool = taskq::postgres::pool_of(&client).unwrap().clone();
    let ledger = ledger_path("pg-producer");

    let (mut killed, lost_id) = start_producer(&url, 1, &ledger, true);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let (mut committed, kept_id) = start_producer(&url, 2, &ledger, false);
    assert!(committed.wait().unwrap().success());

    let orders: Vec<i64> =
        taskq::postgres::sqlx::query_scalar(&format!("SELECT id FROM {schema}.orders ORDER BY id"))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        orders,
        vec![2],
        "the killed producer's order is gone, the other's kept"
    );
    let mut worker = WorkerProcess::start_on(&url, &["--concurrency", "4"], &[]);
    let duplicates = assert_none_lost(&client, &[kept_id], &ledger).await;
    assert_eq!(duplicates, 0);
    assert!(
        !executions(&ledger).contains_key(&lost_id),
        "the killed producer's task never existed"
    );
    assert!(client.result(lost_id).await.unwrap().is_none());
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).success());
    let _ = std::fs::remove_file(&ledger);
}
