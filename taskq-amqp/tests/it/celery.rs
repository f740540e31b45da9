//! Python's Celery (pinned from PyPI, in a fresh virtual environment) against taskq on the
//! private RabbitMQ node, in Celery's own topology: `send_task` in Python reaching a taskq
//! worker and its result read by `AsyncResult.get()` through Celery's `rpc://` backend; the
//! taskq client calling a Python Celery worker and reading its `rpc://` replies; Celery chains
//! across both kinds of worker with results in Redis. Needs python3 with venv and pip
//! (`.ci/run` checks); fails loudly without.

use std::sync::Arc;

use taskq_amqp::{AmqpBroker, AmqpReplyBackend, RepliesAlongside};
use taskq_core::Client;
use taskq_testkit::{
    celery::{
        assert_ran, python_worker_answers, run_script, Add, CeleryWorker, Flaky, Refuse, CHAINS,
        PRODUCER,
    },
    RedisServer,
};
use taskq_worker::Worker;

use crate::support::node;

/// A client on vhost `url` whose results come through its own reply queue (`results=rpc`).
async fn rpc_client(url: &str) -> Client {
    let broker = AmqpBroker::connect(taskq_amqp::AmqpConfig::new(url))
        .await
        .unwrap();
    let results = AmqpReplyBackend::connect(&broker).await.unwrap();
    Client::new(Arc::new(broker), Arc::new(results))
}

/// Every call of the Python producer, over RabbitMQ with results through Celery's `rpc://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_celery_sends_to_a_taskq_worker_and_reads_rpc_replies() {
    let url = node().fresh_vhost_url();
    let worker = Worker::builder(rpc_client(&url).await)
        .register::<Add>()
        .register::<Refuse>()
        .register::<Flaky>()
        .celery_queues(["celery"])
        .build()
        .unwrap()
        .start();
    let run = run_script("amqp-producer", PRODUCER, &[&url, "rpc://"]).await;
    worker.stop().await.unwrap();
    assert_ran(&run, "the Celery producer on RabbitMQ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_taskq_client_calls_a_python_celery_worker_over_rabbitmq() {
    let url = node().fresh_vhost_url();
    let _python = CeleryWorker::start(&url, "rpc://", "celery");
    python_worker_answers(&rpc_client(&url).await).await;
}

/// Chains from Python through a Python worker (queue `py`) and a taskq worker (queue `celery`)
/// on RabbitMQ; results in Redis, which both kinds of worker share (Celery's `rpc://` cannot
/// carry a chain's result: each step's reply would go to the worker that sent it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_chains_run_across_python_and_taskq_workers_on_rabbitmq() {
    let url = node().fresh_vhost_url();
    let redis = RedisServer::start();
    let _python = CeleryWorker::start(&url, &redis.url(), "py");
    let broker = AmqpBroker::connect(taskq_amqp::AmqpConfig::new(&url))
        .await
        .unwrap();
    let stored =
        taskq_redis::RedisResultBackend::connect(taskq_redis::RedisConfig::new(redis.url()))
            .await
            .unwrap();
    let results = RepliesAlongside::new(&broker, Arc::new(stored));
    let client = Client::new(Arc::new(broker), Arc::new(results));
    let worker = Worker::builder(client)
        .register::<Add>()
        .celery_queues(["celery"])
        .build()
        .unwrap()
        .start();
    let run = run_script("amqp-chain", CHAINS, &[&url, &redis.url()]).await;
    worker.stop().await.unwrap();
    assert_ran(&run, "the chains on RabbitMQ");
}

/// A Celery queue an operator declared as a quorum queue is used as it is (declaring it as
/// Celery does would be refused), and a message sent there in Celery's protocol comes out of
/// taskq's queue with its task id, arguments and headers whole, on the level of its priority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_quorum_celery_queue_is_served_as_it_is() {
    use taskq_core::Transport;
    let url = node().fresh_vhost_url();
    let connection = lapin::DefaultConnectionBuilder::new()
        .unwrap()
        .with_uri_str(url.clone())
        .with_properties(lapin::ConnectionProperties::default())
        .connect()
        .await
        .unwrap();
    let mut quorum = lapin::types::FieldTable::default();
    quorum.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    connection
        .create_channel()
        .await
        .unwrap()
        .queue_declare(
            "py-quorum".into(),
            lapin::options::QueueDeclareOptions::durable(),
            quorum,
        )
        .await
        .unwrap();

    let broker = AmqpBroker::connect(taskq_amqp::AmqpConfig::new(&url))
        .await
        .unwrap();
    let id = taskq_core::TaskId::new();
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("b".into(), 3.into());
    let message = taskq_core::celery::message("tasks.add", id, &[2.into()], &kwargs, "py-quorum");
    broker.send_celery("py-quorum", message).await.unwrap();
    let mut moved = 0;
    for _ in 0..50 {
        moved += broker.take_celery("py-quorum", 10).await.unwrap();
        if moved > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(moved, 1);
    let worker = taskq_core::WorkerId::generate();
    let held = broker
        .fetch(
            &worker,
            &["py-quorum".to_owned()],
            10,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    let envelope = taskq_core::celery::envelope_from_celery(
        held[0].payload(),
        "py-quorum",
        chrono::Utc::now(),
        |_| Some(taskq_core::ArgumentShape::new(&["a", "b"], &["a", "b"])),
    )
    .unwrap();
    assert_eq!((envelope.id, envelope.task.as_str()), (id, "tasks.add"));
    assert_eq!(envelope.args.get(), r#"{"a":2,"b":3}"#);
    broker.ack(&worker, &held).await.unwrap();
}
