//! Waiters on the Redis result backend: their subscriptions are dropped in batches once their
//! waits end, and never from under a waiter of the same id.

use std::time::Duration;

use chrono::Utc;
use taskq_core::{ResultBackend, TaskId, TaskResult, TaskState};
use taskq_redis::{RedisConfig, RedisResultBackend};
use taskq_testkit::RedisServer;

use crate::conformance::admin;

/// A backend that polls once a minute: a waiter hears of its result by its announcement only.
async fn announced_only(server: &RedisServer) -> RedisResultBackend {
    RedisResultBackend::connect(
        RedisConfig::new(server.url()).with_result_poll_interval(Duration::from_secs(60)),
    )
    .await
    .unwrap()
}

fn success(id: TaskId) -> TaskResult {
    TaskResult::new(id, "test.noop", TaskState::Success, Utc::now())
}

/// The result channels the server holds subscriptions on.
async fn subscribed(conn: &mut redis::aio::MultiplexedConnection) -> usize {
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("taskq:result-ready:*")
        .query_async(conn)
        .await
        .unwrap();
    channels.len()
}

/// Seventy waits end in quick succession: the 65th subscription unsubscribes the 64 gathered
/// before it in one request, and the rest are gone within the batching's second.
#[tokio::test]
async fn subscriptions_of_ended_waits_are_dropped_in_batches() {
    let server = RedisServer::start();
    let backend = announced_only(&server).await;
    let mut admin = admin(&server).await;
    for _ in 0..70 {
        let id = TaskId::new();
        backend
            .store(&success(id), Duration::from_secs(60))
            .await
            .unwrap();
        let found = backend.wait(id, Duration::from_secs(5)).await.unwrap();
        assert_eq!(found.map(|r| r.state), Some(TaskState::Success));
    }
    // At most the six after the batch (fewer if the second's timer also ran meanwhile; with
    // neither, all seventy).
    let right_after = subscribed(&mut admin).await;
    assert!(
        right_after <= 6,
        "{right_after} subscriptions stayed past the batch"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        subscribed(&mut admin).await,
        0,
        "stale subscriptions stayed"
    );
}

/// A wait for an id whose previous wait ended (its unsubscription pending) keeps its
/// subscription through the batch that drops the others, and hears the announcement.
#[tokio::test]
async fn an_id_waited_on_again_keeps_its_subscription_through_a_batch() {
    let server = RedisServer::start();
    let backend = announced_only(&server).await;
    let mut admin = admin(&server).await;
    let id = TaskId::new();
    let first = backend.wait(id, Duration::from_millis(100)).await.unwrap();
    assert!(first.is_none(), "nothing stored yet");
    let waiting = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.wait(id, Duration::from_secs(10)).await })
    };
    // Past a batch of the stale: the id is stale and waited on again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(subscribed(&mut admin).await, 1, "the waiter's subscription");
    backend
        .store(&success(id), Duration::from_secs(60))
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the announcement woke the waiter")
        .unwrap()
        .unwrap();
    assert_eq!(heard.map(|r| r.state), Some(TaskState::Success));
}
