//! Happy paths: typed results, retries that end in success, headers, ignored results.

use std::time::Duration;

use taskq_core::{Client, Run, Task, TaskContext, TaskError, TaskState};

use crate::support::{all_tasks, builder, start_worker, Flaky, Stats, Summary};

#[tokio::test(start_paused = true)]
async fn typed_result_round_trip() {
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let handle = client
        .enqueue(Stats {
            values: vec![1.0, 2.0, 6.0],
        })
        .header("label", "trio")
        .await
        .unwrap();
    let summary = handle.wait(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        summary,
        Summary {
            count: 3,
            mean: 3.0,
            label: Some("trio".into())
        }
    );
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!((record.state, record.attempts), (TaskState::Success, 1));
    assert_eq!(worker.stop().await.unwrap().succeeded, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_then_success() {
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let handle = client.enqueue(Flaky { fail_times: 2 }).await.unwrap();
    // Backoff is 1s doubling with jitter; the paused clock jumps through it.
    assert_eq!(handle.wait(Duration::from_secs(60)).await.unwrap(), 2);
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!(record.attempts, 3);
    let report = worker.stop().await.unwrap();
    assert_eq!((report.retried, report.succeeded, report.failed), (2, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn retry_state_is_visible_with_last_error() {
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let handle = client.enqueue(Flaky { fail_times: 1 }).await.unwrap();
    crate::support::eventually("RETRY", || async {
        handle.state().await.unwrap() == TaskState::Retry
    })
    .await;
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!(record.error.as_deref(), Some("flaky attempt 0"));
    assert_eq!(record.attempts, 1);
    handle.wait(Duration::from_secs(60)).await.unwrap();
    worker.stop().await.unwrap();
}

#[derive(Task, serde::Serialize, serde::Deserialize)]
#[task(name = "test.quiet", ignore_result)]
struct Quiet;

impl Run for Quiet {
    type Output = u8;
    async fn run(self, _ctx: TaskContext) -> Result<u8, TaskError> {
        Ok(1)
    }
}

#[tokio::test(start_paused = true)]
async fn ignore_result_writes_nothing() {
    let client = Client::in_memory();
    let worker = start_worker(builder(&client).register::<Quiet>());
    let handle = client.enqueue(Quiet).await.unwrap();
    crate::support::eventually("drained", || async {
        let stats = client.broker().stats("default").await.unwrap();
        stats.pending + stats.processing == 0
    })
    .await;
    assert_eq!(worker.stop().await.unwrap().succeeded, 1);
    assert_eq!(handle.state().await.unwrap(), TaskState::Pending);
}

/// Declares a queue of its own and no retries; always fails retryably.
#[derive(Task, serde::Serialize, serde::Deserialize)]
#[task(name = "test.routed", queue = "routed", max_retries = 0)]
struct Routed;

impl Run for Routed {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::retryable("always"))
    }
}

#[tokio::test(start_paused = true)]
async fn by_name_enqueue_follows_what_the_worker_declared() {
    let client = Client::in_memory();
    let worker = start_worker(builder(&client).register::<Routed>());
    crate::support::eventually("declarations published", || async {
        client
            .broker()
            .task_declaration(Routed::NAME)
            .await
            .unwrap()
            .is_some()
    })
    .await;
    // No queue and no retries given: the declared queue `routed` (the only one the worker
    // consumes) and the declared 0 retries (not the default 3) apply.
    let handle = client
        .enqueue_by_name(Routed::NAME, &serde_json::json!(null))
        .await
        .unwrap();
    crate::support::assert_ended_in(
        handle.wait(Duration::from_secs(60)).await,
        TaskState::Failure,
    );
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!(record.attempts, 1, "declared max_retries = 0: one attempt");
    let report = worker.stop().await.unwrap();
    assert_eq!((report.retried, report.failed), (0, 1));
}
