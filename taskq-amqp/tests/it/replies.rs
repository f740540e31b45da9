//! Results through reply queues (`?results=rpc`): a deployment with RabbitMQ alone waits for
//! results; they reach the process that sent the task and nobody else; a sender that went away
//! costs the worker nothing.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use taskq_amqp::{AmqpBroker, AmqpConfig, AmqpReplyBackend};
use taskq_core::{Client, Inspector, ResultBackend, Run, Task, TaskContext, TaskError, TaskState};
use taskq_worker::{RunningWorker, Worker};

use crate::support::config;

#[derive(Task, Serialize, Deserialize)]
#[task(name = "rpc.square", queue = "rpc")]
struct Square {
    n: i64,
}

impl Run for Square {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.n * self.n)
    }
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "rpc.refuse", queue = "rpc", max_retries = 0)]
struct Refuse;

impl Run for Refuse {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::permanent("refused on purpose"))
    }
}

/// A process of its own: its connection, its reply queue.
async fn process(config: &AmqpConfig) -> (Client, AmqpBroker) {
    let broker = AmqpBroker::connect(config.clone()).await.unwrap();
    let results = AmqpReplyBackend::connect(&broker).await.unwrap();
    (
        Client::new(Arc::new(broker.clone()), Arc::new(results)),
        broker,
    )
}

async fn start_worker(config: &AmqpConfig) -> RunningWorker {
    let (client, _) = process(config).await;
    Worker::builder(client)
        .register::<Square>()
        .register::<Refuse>()
        .build()
        .unwrap()
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_reach_the_process_that_sent_the_task_and_nobody_else() {
    let config = config();
    let (sender, _) = process(&config).await;
    let (bystander, _) = process(&config).await;
    let worker = start_worker(&config).await;

    let squares = sender
        .enqueue_many((0..40).map(|n| Square { n }))
        .await
        .unwrap();
    let refused = sender.enqueue(Refuse).await.unwrap();
    for (n, handle) in squares.iter().enumerate() {
        let n = n as i64;
        assert_eq!(handle.wait(Duration::from_secs(30)).await.unwrap(), n * n);
    }
    let failure = refused.wait(Duration::from_secs(30)).await.unwrap_err();
    assert!(
        failure.to_string().contains("refused on purpose"),
        "{failure}"
    );
    let record = sender.backend().get(refused.id()).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Failure);

    for handle in squares.iter().take(5) {
        assert!(
            bystander
                .backend()
                .get(handle.id())
                .await
                .unwrap()
                .is_none(),
            "a result went to a process that did not send its task"
        );
    }
    let report = worker.stop().await.unwrap();
    assert_eq!(report.succeeded, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_went_away_costs_the_worker_nothing() {
    let config = config();
    let (gone, gone_broker) = process(&config).await;
    let orphans = gone
        .enqueue_many((0..20).map(|n| Square { n }))
        .await
        .unwrap()
        .len();
    // Every holder of its reply backend goes (the handles hold it too).
    drop(gone);
    // Its connection closes: its reply queue is gone before the worker publishes to it.
    gone_broker.close().await;
    drop(gone_broker);

    let (sender, sender_broker) = process(&config).await;
    let worker = start_worker(&config).await;
    let later = sender.enqueue(Square { n: 7 }).await.unwrap();
    assert_eq!(later.wait(Duration::from_secs(30)).await.unwrap(), 49);
    let report = worker.stop().await.unwrap();
    assert_eq!(
        report.succeeded, 21,
        "every orphan ran; its result had nowhere to go"
    );
    assert_eq!(report.failed, 0);
    assert_eq!(orphans, 20);
    // A reply that could not be delivered must not hold its message back: everything was
    // acknowledged, nothing went back to the queue when the worker let go.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = sender_broker.stats("rpc").await.unwrap();
    assert_eq!(
        stats.pending, 0,
        "unacknowledged messages came back: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_names_the_reply_queue_of_its_sender() {
    let config = config();
    let broker = AmqpBroker::connect(config.clone()).await.unwrap();
    let results = AmqpReplyBackend::connect(&broker).await.unwrap();
    assert_eq!(results.reply_to(), Some(results.queue()));
    assert!(results.queue().starts_with("taskq.reply."));
    let other = AmqpReplyBackend::connect(&broker).await.unwrap();
    assert_ne!(
        results.queue(),
        other.queue(),
        "each backend has a queue of its own"
    );
}

/// Mixed settings in one deployment: a producer on `results=rpc`, a worker whose results go to
/// a shared store (what `taskq::connect` gives `results=redis://…`: the store with
/// [`RepliesAlongside`] around it). The worker stores the result and answers the producer's
/// reply queue, so the producer's wait ends instead of timing out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_storing_results_elsewhere_still_answers_a_reply_queue() {
    use taskq_amqp::RepliesAlongside;
    let config = config();
    let (sender, _) = process(&config).await;
    let worker_broker = AmqpBroker::connect(config.clone()).await.unwrap();
    let stored = Arc::new(taskq_core::MemoryResultBackend::new());
    let results = RepliesAlongside::new(&worker_broker, stored.clone());
    let worker = Worker::builder(Client::new(Arc::new(worker_broker), Arc::new(results)))
        .register::<Square>()
        .build()
        .unwrap()
        .start();

    let handle = sender.enqueue(Square { n: 12 }).await.unwrap();
    assert_eq!(handle.wait(Duration::from_secs(30)).await.unwrap(), 144);
    let kept = stored.get(handle.id()).await.unwrap().expect("stored too");
    assert_eq!(kept.state, TaskState::Success);
    worker.stop().await.unwrap();
}
