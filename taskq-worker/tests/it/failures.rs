//! Failure paths: exhausted retries, permanent errors, panics, time limits, bad messages.
//! In every case the worker keeps running and later work still succeeds.

use std::time::Duration;

use taskq_core::{Client, DeadReason, Envelope, OutboundMessage, TaskState, DEFAULT_QUEUE};

use crate::support::{
    all_tasks, assert_ended_in, builder, start_worker, Flaky, Panic, Record, Reject, Slow,
};

/// Asserts the worker still runs tasks after whatever the test threw at it.
async fn still_works(client: &Client) {
    let label = format!("alive-{}", uuid_like());
    let handle = client
        .enqueue(Record {
            label: label.clone(),
            ms: 0,
        })
        .await
        .unwrap();
    assert_eq!(handle.wait(Duration::from_secs(30)).await.unwrap(), label);
}

fn uuid_like() -> String {
    taskq_core::TaskId::new().to_string()
}

async fn only_dead_letter(client: &Client) -> taskq_core::DeadLetter {
    let dead = client
        .broker()
        .dead_letters(DEFAULT_QUEUE, taskq_core::Page::first(10))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    dead.into_iter().next().unwrap()
}

#[tokio::test(start_paused = true)]
async fn exhausted_retries_fail_and_dead_letter() {
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let handle = client.enqueue(Flaky { fail_times: 10 }).await.unwrap();
    assert_ended_in(
        handle.wait(Duration::from_secs(600)).await,
        TaskState::Failure,
    );
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!(record.attempts, 4, "first attempt plus max_retries = 3");
    assert_eq!(record.error.as_deref(), Some("flaky attempt 3"));
    let dead = only_dead_letter(&client).await;
    assert_eq!(dead.reason, DeadReason::RetriesExhausted);
    assert_eq!(dead.id, Some(handle.id()));
    still_works(&client).await;
    let report = worker.stop().await.unwrap();
    assert_eq!(
        (report.retried, report.failed, report.dead_lettered),
        (3, 1, 1)
    );
}

/// Every attempt's error stays visible in the record, the oldest dropped past the bound: a
/// task failing 14 times keeps its last error and the ten before it.
#[tokio::test(start_paused = true)]
async fn the_record_keeps_earlier_attempts_errors_up_to_a_bound() {
    let client = Client::in_memory();
    let _worker = start_worker(all_tasks(builder(&client)));
    let handle = client
        .enqueue(Flaky { fail_times: 100 })
        .max_retries(13)
        .await
        .unwrap();
    assert_ended_in(
        handle.wait(Duration::from_secs(36_000)).await,
        TaskState::Failure,
    );
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!(record.attempts, 14);
    assert_eq!(record.error.as_deref(), Some("flaky attempt 13"));
    let expected: Vec<String> = (3..13).map(|n| format!("flaky attempt {n}")).collect();
    assert_eq!(
        record.earlier_errors, expected,
        "the ten attempts before the last"
    );
    // A retry in flight carries them too: the second record already lists the first error.
    let second = client.enqueue(Flaky { fail_times: 2 }).await.unwrap();
    assert_eq!(second.wait(Duration::from_secs(600)).await.unwrap(), 2);
    let record = second.info().await.unwrap().unwrap();
    assert_eq!(
        record.earlier_errors,
        ["flaky attempt 0", "flaky attempt 1"],
        "a success after retries shows what came before"
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_error_is_not_retried() {
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let handle = client.enqueue(Reject).await.unwrap();
    handle.wait(Duration::from_secs(30)).await.unwrap_err();
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!((record.state, record.attempts), (TaskState::Failure, 1));
    assert_eq!(only_dead_letter(&client).await.reason, DeadReason::Failed);
    assert_eq!(worker.stop().await.unwrap().retried, 0);
}

#[tokio::test(start_paused = true)]
async fn panic_is_a_failed_attempt() {
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let handle = client.enqueue(Panic).await.unwrap();
    handle.wait(Duration::from_secs(60)).await.unwrap_err();
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!((record.state, record.attempts), (TaskState::Failure, 2));
    // The panic's message and where it happened; both attempts' errors are kept.
    let error = record.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("task panicked at ")
            && error.contains("support.rs:")
            && error.ends_with(": kaboom"),
        "{error}"
    );
    assert_eq!(record.earlier_errors, [error], "the first attempt's error");
    still_works(&client).await;
    assert_eq!(worker.stop().await.unwrap().retried, 1);
}

#[tokio::test(start_paused = true)]
async fn time_limit_fails_the_attempt() {
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let started = client.clock().now();
    let handle = client.enqueue(Slow).await.unwrap();
    handle.wait(Duration::from_secs(60)).await.unwrap_err();
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Failure);
    assert_eq!(record.error.as_deref(), Some("time limit of 2s exceeded"));
    let took = record.updated_at - started;
    assert!(
        took < chrono::Duration::seconds(3),
        "stopped at the limit, took {took}"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn unknown_task_is_dead_lettered() {
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let handle = client
        .enqueue_by_name("nobody.handles.this", &serde_json::json!({"x": 1}))
        .await
        .unwrap();
    still_works(&client).await;
    let dead = only_dead_letter(&client).await;
    assert_eq!(dead.reason, DeadReason::UnknownTask);
    assert_eq!(dead.id, Some(handle.id()));
    assert!(dead.error.unwrap().contains("nobody.handles.this"));
    // The waiter is told, instead of waiting out its timeout.
    crate::support::assert_ended_in(
        handle.wait(Duration::from_secs(1)).await,
        TaskState::Failure,
    );
    assert_eq!(worker.stop().await.unwrap().dead_lettered, 1);
}

#[tokio::test(start_paused = true)]
async fn malformed_payload_is_dead_lettered_with_raw_bytes() {
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let mut garbage = OutboundMessage::from_envelope(
        &Envelope::new("x", &(), DEFAULT_QUEUE, client.clock().now()).unwrap(),
        1 << 20,
    )
    .unwrap();
    garbage.payload = "{not json at all".into();
    client.broker().enqueue(vec![garbage]).await.unwrap();
    still_works(&client).await;
    let dead = only_dead_letter(&client).await;
    assert_eq!(dead.reason, DeadReason::Malformed);
    assert_eq!(dead.payload, "{not json at all");
    assert!(dead.error.unwrap().starts_with("malformed envelope"));
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn arguments_of_the_wrong_shape_are_dead_lettered() {
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let handle = client
        .enqueue_by_name("test.record", &serde_json::json!({"label": 5}))
        .await
        .unwrap();
    let record = handle.wait(Duration::from_secs(30)).await;
    assert!(record.is_err());
    let dead = only_dead_letter(&client).await;
    assert_eq!(dead.reason, DeadReason::Malformed);
    assert!(dead
        .error
        .unwrap()
        .starts_with("invalid arguments for `test.record`"));
    still_works(&client).await;
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn oversized_payload_is_dead_lettered_not_run() {
    let client = Client::in_memory();
    let worker = start_worker(
        all_tasks(taskq_worker::Worker::builder(client.clone())).configure(|config| {
            config.max_payload_bytes = 500;
            config.liveness_ttl = Duration::from_millis(500);
            config.heartbeat_interval = Duration::from_millis(100);
        }),
    );
    let big = client
        .enqueue(Record {
            label: "x".repeat(1_000),
            ms: 0,
        })
        .await
        .unwrap();
    still_works(&client).await;
    let dead = only_dead_letter(&client).await;
    assert_eq!(dead.reason, DeadReason::Oversized);
    assert_eq!(dead.id, Some(big.id()));
    assert!(dead
        .error
        .unwrap()
        .contains("exceeds the limit of 500 bytes"));
    crate::support::assert_ended_in(big.wait(Duration::from_secs(1)).await, TaskState::Failure);
    worker.stop().await.unwrap();
}
