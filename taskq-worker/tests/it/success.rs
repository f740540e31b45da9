//! Happy paths: typed results, retries that end in success, headers, ignored results.

use std::time::Duration;

use taskq_core::{Client, Run, Task, TaskContext, TaskError, TaskState};

use crate::support::{all_tasks, builder, Flaky, Running, Stats, Summary};

#[tokio::test(start_paused = true)]
async fn typed_result_round_trip() {
    let client = Client::in_memory();
    let worker = Running::start(all_tasks(builder(&client)));
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
    assert_eq!(worker.stop().await.succeeded, 1);
}

#[tokio::test(start_paused = true)]
async fn retry_then_success() {
    let client = Client::in_memory();
    let worker = Running::start(all_tasks(builder(&client)));
    let handle = client.enqueue(Flaky { fail_times: 2 }).await.unwrap();
    // Backoff is 1s doubling with jitter; the paused clock jumps through it.
    assert_eq!(handle.wait(Duration::from_secs(60)).await.unwrap(), 2);
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!(record.attempts, 3);
    let report = worker.stop().await;
    assert_eq!((report.retried, report.succeeded, report.failed), (2, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn retry_state_is_visible_with_last_error() {
    let client = Client::in_memory();
    let worker = Running::start(all_tasks(builder(&client)));
    let handle = client.enqueue(Flaky { fail_times: 1 }).await.unwrap();
    crate::support::eventually("RETRY", || async {
        handle.state().await.unwrap() == TaskState::Retry
    })
    .await;
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!(record.error.as_deref(), Some("flaky attempt 0"));
    assert_eq!(record.attempts, 1);
    handle.wait(Duration::from_secs(60)).await.unwrap();
    worker.stop().await;
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
    let worker = Running::start(builder(&client).register::<Quiet>());
    let handle = client.enqueue(Quiet).await.unwrap();
    crate::support::eventually("drained", || async {
        let stats = client.broker().stats("default").await.unwrap();
        stats.pending + stats.processing == 0
    })
    .await;
    assert_eq!(worker.stop().await.succeeded, 1);
    assert_eq!(handle.state().await.unwrap(), TaskState::Pending);
}
