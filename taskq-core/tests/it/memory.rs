//! The conformance suites on the in-memory implementations (paused clock), and what only the
//! memory broker promises (bounded capacity).

use std::sync::Arc;

use taskq_core::{
    Broker, Error, Inspector, MemoryBroker, MemoryBrokerConfig, MemoryResultBackend, ResultBackend,
    Transport,
};

use taskq_testkit::suite::message;

async fn memory_broker() -> (Arc<dyn Broker>, ()) {
    (Arc::new(MemoryBroker::new()), ())
}

async fn capped_memory_broker() -> (Arc<dyn Broker>, ()) {
    let config = MemoryBrokerConfig::default()
        .with_max_dead_letters(2)
        .with_max_dead_letter_bytes(taskq_testkit::suite::inspector::CAPPED_DEAD_BYTES);
    (Arc::new(MemoryBroker::with_config(config)), ())
}

async fn bounded_memory_broker() -> (Arc<dyn Broker>, ()) {
    let config = MemoryBrokerConfig::default().with_capacity(50);
    (Arc::new(MemoryBroker::with_config(config)), ())
}

async fn memory_backend() -> (Arc<dyn ResultBackend>, ()) {
    (Arc::new(MemoryResultBackend::new()), ())
}

taskq_testkit::transport_conformance!(#[tokio::test(start_paused = true)] transport => memory_broker(), bounded_at_fifty => bounded_memory_broker());
taskq_testkit::membership_conformance!(#[tokio::test(start_paused = true)] membership => memory_broker());
taskq_testkit::control_conformance!(#[tokio::test(start_paused = true)] control => memory_broker());
taskq_testkit::inspector_conformance!(#[tokio::test(start_paused = true)] inspector => memory_broker(), capped => capped_memory_broker());
taskq_testkit::catalog_conformance!(#[tokio::test(start_paused = true)] catalog => memory_broker());
taskq_testkit::partitions_conformance!(#[tokio::test(start_paused = true)] partitions => memory_broker(), bounded_at_fifty => bounded_memory_broker());
taskq_testkit::keyed_conformance!(#[tokio::test(start_paused = true)] keyed => memory_broker(), bounded_at_fifty => bounded_memory_broker());
taskq_testkit::backend_conformance!(#[tokio::test(start_paused = true)] backend => memory_backend());

#[tokio::test]
async fn full_queue_refuses_enqueue_and_keeps_what_it_has() {
    let broker = MemoryBroker::with_config(MemoryBrokerConfig::default().with_capacity(2));
    broker
        .enqueue(vec![message("q", 0), message("q", 0)])
        .await
        .unwrap();
    let err = broker.enqueue(vec![message("q", 0)]).await.unwrap_err();
    assert!(
        matches!(err, Error::QueueFull { capacity: 2, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(err.to_string(), "queue `q` is full (2 messages)");
    // A batch that does not fit is refused as a whole.
    let other = broker.enqueue(vec![message("r", 0), message("r", 0), message("r", 0)]);
    assert!(other.await.is_err());
    assert_eq!(broker.stats("q").await.unwrap().pending, 2);
    assert_eq!(broker.stats("r").await.unwrap().pending, 0);
}
