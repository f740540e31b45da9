//! Client behaviour: options land in the envelope, payload limits, typed waiting.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskq_core::{
    Client, Envelope, Error, Run, Task, TaskContext, TaskError, TaskId, TaskResult, TaskState,
    WorkerId,
};

#[derive(Task, Serialize, Deserialize)]
#[task(
    name = "client.echo",
    queue = "echo",
    priority = 3,
    max_retries = 7,
    expires = "1h"
)]
struct Echo {
    text: String,
}

impl Run for Echo {
    type Output = String;
    async fn run(self, _ctx: TaskContext) -> Result<String, TaskError> {
        Ok(self.text)
    }
}

async fn fetch_one(client: &Client, queue: &str) -> Envelope {
    let got = client
        .broker()
        .fetch(
            &WorkerId::generate(),
            &[queue.to_owned()],
            1,
            Duration::ZERO,
        )
        .await
        .unwrap();
    Envelope::decode(got[0].payload(), 1 << 20).unwrap()
}

#[tokio::test(start_paused = true)]
async fn task_defaults_reach_the_envelope() {
    let client = Client::in_memory();
    let handle = client.enqueue(Echo { text: "hi".into() }).await.unwrap();
    let envelope = fetch_one(&client, "echo").await;
    assert_eq!(envelope.id, handle.id());
    assert_eq!(envelope.task, "client.echo");
    assert_eq!(envelope.priority, 3);
    assert_eq!(envelope.max_retries, Some(7));
    assert_eq!(envelope.attempt, 0);
    assert_eq!(envelope.args.get(), r#"{"text":"hi"}"#);
    let ttl = envelope.expires.unwrap() - envelope.created_at;
    assert!((ttl - chrono::Duration::hours(1)).num_seconds().abs() <= 1);
}

#[tokio::test(start_paused = true)]
async fn call_options_override_defaults() {
    let client = Client::in_memory();
    let id = TaskId::new();
    let at = client.clock().now() + chrono::Duration::minutes(5);
    client
        .enqueue(Echo { text: "x".into() })
        .id(id)
        .queue("other")
        .priority(12)
        .max_retries(1)
        .header("trace", "abc")
        .expires_at(at)
        .await
        .unwrap();
    let envelope = fetch_one(&client, "other").await;
    assert_eq!(envelope.id, id);
    assert_eq!(envelope.priority, 9, "priorities clamp to 9");
    assert_eq!(envelope.max_retries, Some(1));
    assert_eq!(
        envelope.headers.get("trace").map(String::as_str),
        Some("abc")
    );
    assert_eq!(envelope.expires, Some(at));
}

#[tokio::test(start_paused = true)]
async fn countdown_and_eta_schedule() {
    let client = Client::in_memory();
    client
        .enqueue(Echo { text: "a".into() })
        .countdown(Duration::from_secs(5))
        .await
        .unwrap();
    let at = client.clock().now() + chrono::Duration::seconds(10);
    client
        .enqueue(Echo { text: "b".into() })
        .eta(at)
        .await
        .unwrap();
    let stats = client.broker().stats("echo").await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (0, 2));
}

#[tokio::test]
async fn oversized_payload_is_refused_and_nothing_is_enqueued() {
    let client = Client::in_memory().with_max_payload_bytes(256);
    let err = client
        .enqueue(Echo {
            text: "x".repeat(1000),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PayloadTooLarge { limit: 256, .. }),
        "{err:?}"
    );
    assert_eq!(client.broker().stats("echo").await.unwrap().pending, 0);
}

/// A queue's default partition limit reaches partitioned invocations that name none, one at a
/// time and in bulk; a call's own limit wins; unpartitioned ones and other queues get none.
#[tokio::test(start_paused = true)]
async fn a_queues_partition_limit_fills_in_for_invocations_without_one() {
    let client = Client::in_memory().with_partition_concurrency("echo", 2);
    client
        .enqueue(Echo { text: "a".into() })
        .partition("t1")
        .await
        .unwrap();
    assert_eq!(fetch_one(&client, "echo").await.partition_limit, Some(2));
    client
        .enqueue(Echo { text: "b".into() })
        .partition("t1")
        .partition_concurrency(5)
        .await
        .unwrap();
    assert_eq!(fetch_one(&client, "echo").await.partition_limit, Some(5));
    client.enqueue(Echo { text: "c".into() }).await.unwrap();
    assert_eq!(fetch_one(&client, "echo").await.partition_limit, None);
    client
        .enqueue(Echo { text: "d".into() })
        .queue("other")
        .partition("t1")
        .await
        .unwrap();
    assert_eq!(fetch_one(&client, "other").await.partition_limit, None);

    let bulk = Client::in_memory().with_partition_concurrency("exports", 1);
    bulk.enqueue_many((0..3).map(|_| Export {
        tenant: "t7".into(),
    }))
    .await
    .unwrap();
    let held = bulk
        .broker()
        .fetch(
            &WorkerId::generate(),
            &["exports".to_owned()],
            10,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1, "one of the partition's three at a time");
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "client.export", queue = "exports", partition = "tenant")]
struct Export {
    tenant: String,
}

impl Run for Export {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[tokio::test]
async fn enqueue_many_sends_one_batch() {
    let client = Client::in_memory();
    let handles = client
        .enqueue_many((0..10).map(|i| Echo {
            text: i.to_string(),
        }))
        .await
        .unwrap();
    assert_eq!(handles.len(), 10);
    assert_eq!(client.broker().stats("echo").await.unwrap().pending, 10);
}

#[tokio::test]
async fn empty_queue_name_is_refused() {
    let client = Client::in_memory();
    let err = client
        .enqueue(Echo { text: "x".into() })
        .queue("")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Invalid { what: "queue", .. }),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn wait_times_out_cleanly() {
    let client = Client::in_memory();
    let handle = client.enqueue(Echo { text: "x".into() }).await.unwrap();
    let err = handle.wait(Duration::from_secs(3)).await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout(d) if d == Duration::from_secs(3)),
        "{err:?}"
    );
    assert_eq!(handle.state().await.unwrap(), TaskState::Pending);
}

#[tokio::test(start_paused = true)]
async fn wait_returns_typed_output_and_failure_states() {
    let client = Client::in_memory();
    let ok = client.result_handle::<Vec<u32>>(TaskId::new());
    let record = TaskResult::new(ok.id(), "t", TaskState::Success, client.clock().now())
        .with_result(serde_json::value::to_raw_value(&vec![1, 2, 3]).unwrap());
    client
        .backend()
        .store(&record, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        ok.wait(Duration::from_secs(1)).await.unwrap(),
        vec![1, 2, 3]
    );

    let wrong_type = client.result_handle::<String>(ok.id());
    assert!(matches!(
        wrong_type.wait(Duration::from_secs(1)).await,
        Err(Error::Deserialize { .. })
    ));

    let failed = client.result_handle::<u32>(TaskId::new());
    let record = TaskResult::new(failed.id(), "t", TaskState::Failure, client.clock().now())
        .with_error("boom");
    client
        .backend()
        .store(&record, Duration::from_secs(60))
        .await
        .unwrap();
    let err = failed.wait(Duration::from_secs(1)).await.unwrap_err();
    assert!(err.is_task_failure());
    assert!(
        matches!(err, Error::TaskFailed { state: TaskState::Failure, ref message, .. } if message == "boom")
    );
    let untyped = client.result(failed.id()).await.unwrap().unwrap();
    assert_eq!(untyped.state, TaskState::Failure);
}
