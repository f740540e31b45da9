//! The worker against a real redis-server (real time): the main paths end to end.

use std::time::Duration;

use taskq_core::{Client, DeadReason, TaskState, DEFAULT_QUEUE};
use taskq_testkit::RedisServer;

use crate::support::{all_tasks, builder, Flaky, Running, Stats, Summary};

async fn redis_client(server: &RedisServer) -> Client {
    taskq_redis::client(taskq_redis::RedisConfig::new(server.url()))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_results_retries_and_dead_letters_on_redis() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let worker = Running::start(all_tasks(builder(&client)));

    let stats = client
        .enqueue(Stats {
            values: vec![2.0, 4.0],
        })
        .await
        .unwrap();
    let flaky = client.enqueue(Flaky { fail_times: 1 }).await.unwrap();
    let unknown = client
        .enqueue_by_name("nobody.home", &serde_json::json!({}))
        .await
        .unwrap();

    let summary = stats.wait(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        summary,
        Summary {
            count: 2,
            mean: 3.0,
            label: None
        }
    );
    // One retry: backoff is at most 1 s, promotion runs every heartbeat.
    assert_eq!(flaky.wait(Duration::from_secs(10)).await.unwrap(), 1);
    assert_eq!(flaky.info().await.unwrap().unwrap().attempts, 2);

    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = client
            .broker()
            .dead_letters(DEFAULT_QUEUE, taskq_core::Page::first(10))
            .await
            .unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, DeadReason::UnknownTask);
    assert_eq!(dead[0].id, Some(unknown.id()));
    assert_eq!(unknown.state().await.unwrap(), TaskState::Pending);

    let report = worker.stop().await;
    assert_eq!(
        (report.succeeded, report.retried, report.dead_lettered),
        (2, 1, 1)
    );
    let stats = client.broker().stats(DEFAULT_QUEUE).await.unwrap();
    assert_eq!(
        (stats.pending, stats.processing, stats.scheduled),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdown_runs_no_earlier_on_redis() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let worker = Running::start(all_tasks(builder(&client)));
    let enqueued = client.clock().now();
    let handle = client
        .enqueue(Stats { values: vec![1.0] })
        .countdown(Duration::from_millis(1500))
        .await
        .unwrap();
    handle.wait(Duration::from_secs(10)).await.unwrap();
    let ran = handle.info().await.unwrap().unwrap().updated_at;
    assert!(
        ran - enqueued >= chrono::Duration::milliseconds(1500),
        "ran after {}",
        ran - enqueued
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_written_by_hand_per_the_protocol_doc_runs() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let worker = Running::start(all_tasks(builder(&client)));
    let id = taskq_core::TaskId::new();
    // What docs/protocol.md tells a producer in another language to write.
    let envelope = serde_json::json!({
        "v": 1,
        "id": id.to_string(),
        "task": "test.stats",
        "args": {"values": [1.0, 2.0, 3.0]},
        "queue": "default",
        "priority": 0,
        "attempt": 0,
        "created_at": "2026-11-22T10:00:00+00:00",
    });
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("LPUSH")
        .arg("taskq:{default}:pending:0")
        .arg(envelope.to_string())
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let summary: Summary = client
        .result_handle(id)
        .wait(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(summary.count, 3);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_and_rate_limited_tasks_on_redis() {
    use crate::semantics::{Limited, Unique};
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let first = client.enqueue(Unique { account: 1 }).await.unwrap();
    let again = client.enqueue(Unique { account: 1 }).await.unwrap();
    assert_eq!(first.id(), again.id());
    let limited = client.enqueue_many((0..4).map(|_| Limited)).await.unwrap();

    let worker = Running::start(
        builder(&client)
            .register::<Unique>()
            .register::<Limited>()
            .concurrency(8),
    );
    first.wait(Duration::from_secs(10)).await.unwrap();
    assert_ne!(
        client.enqueue(Unique { account: 1 }).await.unwrap().id(),
        first.id(),
        "released"
    );
    let mut started = Vec::new();
    for handle in &limited {
        handle.wait(Duration::from_secs(20)).await.unwrap();
        started.push(handle.info().await.unwrap().unwrap().updated_at);
    }
    started.sort();
    let span = *started.last().unwrap() - started[0];
    assert!(
        span >= chrono::Duration::milliseconds(1_400),
        "4 starts at 2/s took only {span}"
    );
    worker.stop().await;
}
