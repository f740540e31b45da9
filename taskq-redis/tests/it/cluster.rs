//! The conformance suites on a real Redis Cluster of 3 masters and 3 replicas, shared by the
//! tests of this binary (each test uses fresh queue names), plus queues spread over masters.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use taskq_core::{Broker, ResultBackend, Transport, WorkerId};
use taskq_redis::{RedisBroker, RedisConfig, RedisResultBackend};
use taskq_testkit::{suite::message, RedisCluster};

/// The cluster every test here shares (started on first use).
pub(crate) fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}

fn config() -> RedisConfig {
    RedisConfig::new(cluster().url())
        .with_block_timeout(Duration::from_millis(500))
        .with_result_poll_interval(Duration::from_millis(200))
}

async fn cluster_broker() -> (Arc<dyn Broker>, ()) {
    let broker = RedisBroker::connect(config()).await.expect("connect");
    (Arc::new(broker), ())
}

async fn capped_cluster_broker() -> (Arc<dyn Broker>, ()) {
    let broker = RedisBroker::connect(
        config()
            .with_max_dead_letters(2)
            .with_max_dead_letter_bytes(taskq_testkit::suite::inspector::CAPPED_DEAD_BYTES),
    )
    .await
    .expect("connect");
    (Arc::new(broker), ())
}

async fn bounded_cluster_broker() -> (Arc<dyn Broker>, ()) {
    let broker = RedisBroker::connect(config().with_max_queue_length(Some(50)))
        .await
        .expect("connect");
    (Arc::new(broker), ())
}

async fn cluster_backend() -> (Arc<dyn ResultBackend>, ()) {
    let config = config().with_result_poll_interval(Duration::from_secs(3600));
    let backend = RedisResultBackend::connect(config).await.expect("connect");
    (Arc::new(backend), ())
}

taskq_testkit::transport_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] transport => cluster_broker(), bounded_at_fifty => bounded_cluster_broker());
taskq_testkit::membership_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] membership => cluster_broker());
taskq_testkit::control_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] control => cluster_broker());
taskq_testkit::inspector_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] inspector => cluster_broker(), capped => capped_cluster_broker());
taskq_testkit::catalog_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] catalog => cluster_broker());
taskq_testkit::partitions_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] partitions => cluster_broker(), bounded_at_fifty => bounded_cluster_broker());
taskq_testkit::keyed_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] keyed => cluster_broker(), bounded_at_fifty => bounded_cluster_broker());
taskq_testkit::backend_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] backend => cluster_backend());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_enqueue_over_queues_on_every_master_lands_whole() {
    let cluster = cluster();
    let queues: Vec<String> = (0..3)
        .map(|i| cluster.queue_on_master(i, "spread"))
        .collect();
    let broker = RedisBroker::connect(config()).await.unwrap();
    let messages: Vec<_> = queues
        .iter()
        .flat_map(|q| (0..5).map(|_| message(q, 0)))
        .collect();
    broker.enqueue(messages).await.unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, &queues, 100, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.len(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_fetch_is_woken_by_a_queue_on_another_master() {
    let cluster = cluster();
    let queues: Vec<String> = (0..3).map(|i| cluster.queue_on_master(i, "wake")).collect();
    let broker = RedisBroker::connect(config().with_block_timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    for target in &queues {
        let waiting = {
            let (broker, queues) = (broker.clone(), queues.clone());
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let got = broker
                    .fetch(&WorkerId::generate(), &queues, 1, Duration::from_secs(5))
                    .await
                    .unwrap();
                (got, started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = message(target, 0);
        broker.enqueue(vec![sent.clone()]).await.unwrap();
        let (got, waited) = waiting.await.unwrap();
        assert_eq!(got.len(), 1, "woken for {target} after {waited:?}");
        assert_eq!(got[0].id(), Some(sent.id));
        assert!(
            waited < Duration::from_secs(4),
            "woken by the token, not the timeout: {waited:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_a_cluster_url_reach_every_node() {
    let cluster = cluster();
    let user = format!("u{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    cluster.add_user(&user, "s3cret");
    let with = |password: &str| {
        cluster.url().replacen(
            "redis+cluster://",
            &format!("redis+cluster://{user}:{password}@"),
            1,
        )
    };
    let queues: Vec<String> = (0..3).map(|i| cluster.queue_on_master(i, "acl")).collect();
    let broker = RedisBroker::connect(RedisConfig::new(with("s3cret")))
        .await
        .unwrap();
    let sent: Vec<_> = queues.iter().map(|q| message(q, 0)).collect();
    broker.enqueue(sent).await.unwrap();
    let got = broker
        .fetch(&WorkerId::generate(), &queues, 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.len(), 3, "one message from each master");
    let refused = RedisBroker::connect(RedisConfig::new(with("wrong"))).await;
    let err = refused.expect_err("a wrong password is refused");
    assert!(!err.is_transient(), "{err:?}");
}

/// Celery's Redis transport does not run on a cluster (its lists and taskq's queue would fall
/// in different slots): both directions refuse, naming the feature, instead of moving nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_queues_are_refused_on_a_cluster() {
    let broker = RedisBroker::connect(config()).await.expect("connect");
    let taken = broker.take_celery("celery", 0).await.unwrap_err();
    let message = taskq_core::celery::message(
        "tasks.add",
        taskq_core::TaskId::new(),
        &[],
        &serde_json::Map::new(),
        "celery",
    );
    let sent = broker.send_celery("celery", message).await.unwrap_err();
    for refused in [taken, sent] {
        let refused = taskq_core::error_chain(&refused);
        assert!(refused.contains("Celery-protocol queues"), "{refused}");
    }
}

/// A cluster keeps no due index (a script writing it beside a queue's keys would cross slots):
/// every turn passes over every queue, and scheduling writes no index (the scripts would fail
/// with a cross-slot error if they tried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_passes_over_every_queue_and_keeps_no_due_index() {
    let cluster = cluster();
    let queues: Vec<String> = (0..3).map(|i| cluster.queue_on_master(i, "due")).collect();
    let broker = RedisBroker::connect(config()).await.unwrap();
    let later: Vec<_> = queues
        .iter()
        .map(|q| {
            let mut envelope =
                taskq_core::Envelope::decode(&message(q, 0).payload, 1 << 20).unwrap();
            envelope.eta = Some(broker.clock().now() + chrono::Duration::seconds(60));
            taskq_core::OutboundMessage::from_envelope(&envelope, 1 << 20).unwrap()
        })
        .collect();
    broker.enqueue(later).await.unwrap();
    assert_eq!(
        broker.passes_due(&queues).await.unwrap(),
        taskq_core::PassesDue::all(&queues)
    );
    assert_eq!(broker.promote_scheduled(&queues, 100).await.unwrap(), 0);
}
