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
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let stop = stop.clone();
        async move { worker.run(stop.cancelled_owned()).await }
    });
    for (n, handle) in handles.iter().enumerate() {
        assert_eq!(
            handle.wait(Duration::from_secs(30)).await.unwrap(),
            n as i64 * 2
        );
    }
    stop.cancel();
    let report = running.await.unwrap().unwrap();
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
