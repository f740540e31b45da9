//! Fault tests with real processes: demo workers (`taskq-demo-worker`) against a real
//! redis-server, killed with SIGKILL, paused with SIGSTOP and stopped with SIGTERM. Every
//! enqueued task id is counted in the workers' ledger: lost must be zero; duplicates (possible
//! only after a worker is lost) are reported.

use std::{path::Path, time::Duration};

use support::{enqueue_sleeps, executions, ledger_path, wait_until, WorkerProcess};
use taskq_core::{Client, TaskId};
use taskq_testkit::RedisServer;

mod support;

/// [`support::assert_none_lost`] with this file's patience.
async fn assert_none_lost(client: &Client, ids: &[TaskId], ledger: &Path) -> usize {
    support::assert_none_lost(client, ids, ledger, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_is_lost_when_a_worker_is_killed() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let ledger = ledger_path("kill");
    let ids = enqueue_sleeps(&client, 300, 20, &ledger).await;

    let mut victim = WorkerProcess::start(&server, &["--concurrency", "16"]);
    let mut survivor = WorkerProcess::start(&server, &["--concurrency", "16"]);
    wait_until("some progress", Duration::from_secs(30), async || {
        executions(&ledger).len() >= 60
    })
    .await;
    victim.signal("KILL");
    victim.wait_exit(Duration::from_secs(5));

    let duplicates = assert_none_lost(&client, &ids, &ledger).await;
    eprintln!(
        "killed worker: 0 lost, {duplicates} duplicate executions of {} tasks",
        ids.len()
    );

    survivor.signal("TERM");
    assert!(survivor.wait_exit(Duration::from_secs(10)).success());
    let _ = std::fs::remove_file(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_worker_cannot_duplicate_recovered_work_after_it_resumes() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let ledger = ledger_path("pause");
    let ids = enqueue_sleeps(&client, 100, 300, &ledger).await;

    let mut paused = WorkerProcess::start(&server, &["--concurrency", "20"]);
    wait_until(
        "the first worker to hold tasks",
        Duration::from_secs(30),
        async || client.broker().stats("default").await.unwrap().processing >= 20,
    )
    .await;
    paused.signal("STOP");
    let mut other = WorkerProcess::start(&server, &["--concurrency", "20"]);
    // Past the paused worker's liveness deadline, its tasks are recovered and run by the other.
    tokio::time::sleep(Duration::from_secs(3)).await;
    paused.signal("CONT");

    let duplicates = assert_none_lost(&client, &ids, &ledger).await;
    // The paused worker's in-flight runs finish after resuming (at most its concurrency), but
    // their acks are fenced: nothing it held goes back to the queue a second time.
    assert!(duplicates <= 20, "{duplicates} duplicates");
    eprintln!(
        "paused worker: 0 lost, {duplicates} duplicate executions of {} tasks",
        ids.len()
    );

    paused.signal("TERM");
    other.signal("TERM");
    assert!(paused.wait_exit(Duration::from_secs(10)).success());
    assert!(other.wait_exit(Duration::from_secs(10)).success());
    let _ = std::fs::remove_file(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_requeues_unfinished_work_and_a_new_worker_completes_it() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let ledger = ledger_path("term");
    let ids = enqueue_sleeps(&client, 20, 5_000, &ledger).await;

    let mut first = WorkerProcess::start(
        &server,
        &["--concurrency", "4", "--shutdown-grace", "300ms"],
    );
    wait_until(
        "the worker to start tasks",
        Duration::from_secs(30),
        async || client.broker().stats("default").await.unwrap().processing >= 4,
    )
    .await;
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let stats = client.broker().stats("default").await.unwrap();
    assert_eq!(
        (stats.pending, stats.processing),
        (20, 0),
        "everything went back: {stats:?}"
    );
    assert!(
        executions(&ledger).is_empty(),
        "nothing finished within the grace period"
    );

    let mut second = WorkerProcess::start(&server, &["--concurrency", "20"]);
    let duplicates = assert_none_lost(&client, &ids, &ledger).await;
    assert_eq!(duplicates, 0, "a warm shutdown causes no duplicates");
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(10)).success());
    let _ = std::fs::remove_file(&ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_resumes_by_itself_after_redis_restarts() {
    let mut server = RedisServer::start();
    let ledger = ledger_path("restart");
    let mut worker = WorkerProcess::start(&server, &["--concurrency", "8"]);
    {
        let client = taskq::connect(&server.url()).await.unwrap();
        let before = enqueue_sleeps(&client, 10, 10, &ledger).await;
        wait_until(
            "tasks before the restart",
            Duration::from_secs(30),
            async || executions(&ledger).len() == before.len(),
        )
        .await;
    }
    server.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = taskq::connect(&server.url()).await.unwrap();
    let after = enqueue_sleeps(&client, 10, 10, &ledger).await;
    assert_none_lost(&client, &after, &ledger).await;
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(10)).success());
    let _ = std::fs::remove_file(&ledger);
}

/// Debian's libfaketime (package `faketime`, installed by `.ci/run`).
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// One of three worker processes runs with its wall clock 30 s ahead (libfaketime; its
/// monotonic clock untouched, as on a badly synced VM). Deadlines, leases and due times come
/// from Redis's clock, so its reaper does not take the healthy workers' messages: nothing is
/// lost, nothing runs twice, nothing is dead-lettered as `worker_lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_whose_clock_is_30s_ahead_changes_nothing() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: install Debian's `faketime` package (.ci/run does)"
    );
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let ledger = ledger_path("skew");
    let ids = enqueue_sleeps(&client, 150, 300, &ledger).await;
    let skew = [
        ("LD_PRELOAD", LIBFAKETIME),
        ("FAKETIME", "+30s"),
        ("DONT_FAKE_MONOTONIC", "1"),
    ];
    let mut workers = [
        WorkerProcess::start(&server, &["--concurrency", "8"]),
        WorkerProcess::start(&server, &["--concurrency", "8"]),
        WorkerProcess::start_with_env(&server, &["--concurrency", "8"], &skew),
    ];
    // The skew is real: the worker measured it against Redis and reports it.
    wait_until(
        "the skewed worker to report its skew",
        Duration::from_secs(20),
        async || {
            let workers = client.inspector().workers().await.unwrap();
            workers
                .iter()
                .any(|w| w.clock_skew_ms.is_some_and(|ms| ms > 25_000))
        },
    )
    .await;
    let duplicates = assert_none_lost(&client, &ids, &ledger).await;
    assert_eq!(duplicates, 0, "a skewed clock made tasks run twice");
    for worker in &workers {
        worker.signal("TERM");
    }
    for worker in &mut workers {
        assert!(worker.wait_exit(Duration::from_secs(10)).success());
    }
    let _ = std::fs::remove_file(&ledger);
}

/// A second SIGTERM stops a worker at once (no library code exits the process: the binary's
/// `main` returns), with a failure status; what it held is recovered by another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_stops_at_once_and_nothing_is_lost() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let ledger = ledger_path("twice");
    let ids = enqueue_sleeps(&client, 8, 3_000, &ledger).await;
    let mut first =
        WorkerProcess::start(&server, &["--concurrency", "4", "--shutdown-grace", "60s"]);
    wait_until(
        "the worker to start tasks",
        Duration::from_secs(30),
        async || client.broker().stats("default").await.unwrap().processing >= 4,
    )
    .await;
    first.signal("TERM");
    std::thread::sleep(Duration::from_millis(200));
    first.signal("TERM");
    // Well inside the 60 s grace period a warm shutdown would have taken.
    let status = first.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{status}");
    let mut second = WorkerProcess::start(&server, &["--concurrency", "8"]);
    assert_none_lost(&client, &ids, &ledger).await;
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(10)).success());
    let _ = std::fs::remove_file(&ledger);
}

/// A worker process started with `--signing-keys` and `--require-signatures` (from the
/// environment here) runs what a producer signed with an accepted key and dead-letters an
/// unsigned task and one signed with a key it does not hold, as `bad_signature`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_requiring_signatures_runs_only_signed_tasks() {
    let server = RedisServer::start();
    let secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let accepted = format!("new:{secret}");
    let keys = format!("old:{},{accepted}", "ab".repeat(32));
    let mut worker = WorkerProcess::start_with_env(
        &server,
        &[],
        &[
            ("TASKQ_SIGNING_KEYS", keys.as_str()),
            ("TASKQ_REQUIRE_SIGNATURES", "true"),
        ],
    );
    let plain = taskq::connect(&server.url()).await.unwrap();
    let signed = plain
        .clone()
        .with_signing_key(taskq_core::SigningKey::parse(&accepted).unwrap());
    let stranger = plain
        .clone()
        .with_signing_key(taskq_core::SigningKey::parse(&format!("stranger:{secret}")).unwrap());
    let args = serde_json::json!({ "a": 1, "b": 2 });
    let good = signed.enqueue_by_name("demo.add", &args).await.unwrap();
    let unsigned = plain.enqueue_by_name("demo.add", &args).await.unwrap();
    let unknown = stranger.enqueue_by_name("demo.add", &args).await.unwrap();
    assert_eq!(
        good.wait(Duration::from_secs(20)).await.unwrap(),
        serde_json::json!(3)
    );
    for refused in [unsigned, unknown] {
        let err = refused.wait(Duration::from_secs(20)).await.unwrap_err();
        assert!(err.to_string().contains("bad_signature"), "{err}");
    }
    // The FAILURE record is written before the dead letter: wait for both letters.
    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = plain
            .broker()
            .dead_letters(taskq_core::DEFAULT_QUEUE, taskq_core::Page::first(10))
            .await
            .unwrap();
        if dead.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead
        .iter()
        .all(|d| d.reason == taskq_core::DeadReason::BadSignature));
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(10)).success());
}

/// A worker process given `TASKQ_ENCRYPTION_KEYS` opens sealed arguments and seals the
/// result: the producer with the keys reads 42, a reader without them only learns that the
/// result is encrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_with_encryption_keys_runs_sealed_tasks() {
    let server = RedisServer::start();
    let keys = format!("k1:{}", "3c".repeat(32));
    let mut worker =
        WorkerProcess::start_with_env(&server, &[], &[("TASKQ_ENCRYPTION_KEYS", keys.as_str())]);
    let plain = taskq::connect(&server.url()).await.unwrap();
    let sealed = plain
        .clone()
        .with_encryption(taskq_core::Encryption::parse(&keys).unwrap());
    let handle = sealed
        .enqueue_by_name("demo.add", &serde_json::json!({ "a": 20, "b": 22 }))
        .await
        .unwrap();
    assert_eq!(
        handle.wait(Duration::from_secs(20)).await.unwrap(),
        serde_json::json!(42)
    );
    let err = plain
        .result_handle::<serde_json::Value>(handle.id())
        .wait(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(10)).success());
}
