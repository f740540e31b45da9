//! A real worker on RabbitMQ: tasks run and their results are stored; a worker whose tasks need
//! what RabbitMQ cannot keep refuses to start, naming them.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskq_amqp::AmqpBroker;
use taskq_core::{Client, MemoryResultBackend, Run, Task, TaskContext, TaskError};
use taskq_worker::Worker;

use crate::support::config;

#[derive(Task, Serialize, Deserialize)]
#[task(name = "amqp.double", queue = "amqp-worker")]
struct Double {
    n: i64,
}

impl Run for Double {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.n * 2)
    }
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "amqp.limited", queue = "amqp-worker", rate_limit = "10/s")]
struct Limited;

impl Run for Limited {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

async fn client() -> Client {
    let broker = AmqpBroker::connect(config()).await.unwrap();
    Client::new(
        std::sync::Arc::new(broker),
        std::sync::Arc::new(MemoryResultBackend::new()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_tasks_and_stores_their_results() {
    let client = client().await;
    let handles = client
        .enqueue_many((0..50).map(|n| Double { n }))
        .await
        .unwrap();
    let worker = Worker::builder(client.clone())
        .register::<Double>()
        .build()
        .unwrap();
    let running = worker.start();
    for (n, handle) in handles.iter().enumerate() {
        assert_eq!(
            handle.wait(Duration::from_secs(30)).await.unwrap(),
            n as i64 * 2
        );
    }
    let report = running.stop().await.unwrap();
    assert_eq!(report.succeeded, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_rate_limited_task_refuses_to_start() {
    let worker = Worker::builder(client().await)
        .register::<Double>()
        .register::<Limited>()
        .build()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(20), worker.run(std::future::pending()))
        .await
        .expect("it refuses at start instead of running")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("amqp.limited") && text.contains("rate limit"),
        "{text}"
    );
}

/// Workflows need uniqueness keys, which RabbitMQ lacks: producers are refused before anything
/// is sent, with an error naming the need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_are_refused_workflows_rabbitmq_cannot_continue() {
    use taskq_core::workflow::{chain, Signature};
    let client = client().await;
    let err = client
        .send_chain(chain(Double { n: 1 }).then_ignoring(Double { n: 2 }))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("need the Redis broker"), "{err}");
    let err = client
        .enqueue(Double { n: 1 })
        .on_success(Signature::of(&Double { n: 2 }).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("need the Redis broker"), "{err}");
    let stats = client.inspector().stats("amqp-worker").await.unwrap();
    assert_eq!(stats.pending, 0, "nothing was sent");
}

/// Partition keys need turns between partitions and a shared running count, which RabbitMQ's
/// queues do not keep: the producer is refused, naming the feature, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_are_refused_partition_keys() {
    use taskq_testkit::suite::assert_unsupported;
    let client = client().await;
    let partitioned = client.enqueue(Double { n: 1 }).partition("tenant-1").await;
    if let Err(err) = &partitioned {
        assert!(err.to_string().contains("RabbitMQ"), "{err}");
    }
    assert_unsupported(partitioned, "partition keys");
    let debounced = client
        .enqueue(Double { n: 1 })
        .debounce("doc-1", Duration::from_secs(1))
        .await;
    assert_unsupported(debounced, "debounce and throttle");
    let stats = client.inspector().stats("amqp-worker").await.unwrap();
    assert_eq!(stats.pending, 0, "nothing was sent");
}

/// A message with a workflow reaches a RabbitMQ worker anyway (another producer wrote it): its
/// continuation is refused for good, and it alone is dead-lettered; the unrelated messages
/// settled in the same batch are acknowledged, not left in the worker's hands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_workflow_cannot_continue_holds_no_other_ack() {
    let client = client().await;
    let handles = client
        .enqueue_many((0..40).map(|n| Double { n }))
        .await
        .unwrap();
    let mut envelope = taskq_core::Envelope::new(
        "amqp.double",
        &serde_json::json!({ "n": 100 }),
        "amqp-worker",
        chrono::Utc::now(),
    )
    .unwrap();
    let mut flow = taskq_core::workflow::Flow::default();
    flow.on_success
        .push(taskq_core::workflow::Signature::of(&Double { n: 3 }).unwrap());
    envelope.flow = Some(serde_json::value::to_raw_value(&flow).unwrap());
    let message = taskq_core::OutboundMessage::from_envelope(&envelope, 1 << 20).unwrap();
    client.broker().enqueue(vec![message]).await.unwrap();

    let worker = Worker::builder(client.clone())
        .register::<Double>()
        .build()
        .unwrap();
    let running = worker.start();
    for handle in &handles {
        handle.wait(Duration::from_secs(30)).await.unwrap();
    }
    let mut dead = Vec::new();
    for _ in 0..200 {
        dead = client
            .inspector()
            .dead_letters("amqp-worker", taskq_core::Page::first(10))
            .await
            .unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, Some(envelope.id));
    let error = dead[0].error.as_deref().unwrap_or_default();
    assert!(error.starts_with("not settled"), "{error}");
    // Unacknowledged messages would be back in the queue once the worker's channel closed.
    let stats = client.inspector().stats("amqp-worker").await.unwrap();
    assert_eq!((stats.pending, stats.processing), (0, 0), "{stats:?}");
}
