//! The broker conformance suites, one per role: behaviour every implementation must show,
//! written once and expanded per implementation by [`transport_conformance!`](crate::transport_conformance),
//! [`membership_conformance!`](crate::membership_conformance),
//! [`control_conformance!`](crate::control_conformance),
//! [`inspector_conformance!`](crate::inspector_conformance),
//! [`partitions_conformance!`](crate::partitions_conformance),
//! [`keyed_conformance!`](crate::keyed_conformance) and
//! [`catalog_conformance!`](crate::catalog_conformance). Those macros are written by
//! `build.rs` from the suite files: every `pub async fn` of a suite is a test on every backend
//! that does not name it in its `skip` list, and its parameter type picks the fixture.
//!
//! Each test gets a fresh broker handle and uses fresh uuid queue names, so implementations
//! backed by one shared server run the suites in parallel. Waiting uses `tokio::time::sleep`,
//! which the memory instance runs on a paused clock.

pub mod catalog;
pub mod control;
pub mod inspector;
pub mod keyed;
pub mod membership;
pub mod partitions;
pub mod transport;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use taskq_core::{
    Broker, DeadReason, Delivery, Envelope, Membership, OutboundMessage, TaskId, WorkerId,
};

/// The membership role of `broker`, which the membership suite requires.
pub fn members(broker: &Shared) -> &dyn Membership {
    broker
        .membership()
        .expect("the membership suite runs only on brokers with a Membership role")
}

/// The broker under test (the backend's plain fixture).
pub type Shared = Arc<dyn Broker>;

/// A broker whose queues hold at most fifty messages (the `bounded_at_fifty` fixture).
pub type BoundedAtFifty = Shared;

/// A broker that keeps two dead letters per queue (the `capped` fixture).
pub type CappedDeadLetters = Shared;

/// Stands in for a fixture a backend did not give: every test that needs it is in the
/// backend's `skip` list, or this fails the test naming what is missing.
pub async fn missing_fixture<T>(what: &str) -> (T, ()) {
    panic!("this backend gives no `{what}` fixture; give one, or skip the tests that need it")
}

pub fn queue() -> String {
    format!("q-{}", uuid::Uuid::new_v4())
}

/// The suites' envelope: task `suite.task` on `queue` at `priority`.
pub fn envelope(queue: &str, priority: u8) -> Envelope {
    let mut envelope = Envelope::new(
        "suite.task",
        &serde_json::json!({"n": 1}),
        queue,
        Utc::now(),
    )
    .unwrap();
    envelope.priority = priority;
    envelope
}

pub fn message(queue: &str, priority: u8) -> OutboundMessage {
    OutboundMessage::from_envelope(&envelope(queue, priority), 1 << 20).unwrap()
}

pub fn ids(deliveries: &[Delivery]) -> Vec<TaskId> {
    deliveries
        .iter()
        .map(|d| Envelope::decode(d.payload(), 1 << 20).unwrap().id)
        .collect()
}

pub const NO_WAIT: Duration = Duration::from_millis(0);

/// Asserts that `outcome` is the refusal of `feature` (`Error::Unsupported`), which a broker
/// that cannot do it gives before sending anything.
pub fn assert_unsupported<T: std::fmt::Debug>(outcome: taskq_core::Result<T>, feature: &str) {
    match outcome {
        Err(taskq_core::Error::Unsupported { feature: named, .. }) if named == feature => {}
        other => panic!("expected the refusal of {feature}, got {other:?}"),
    }
}

/// One fetch by a new worker that waits (up to 30 s) for up to `max` messages, in the background.
pub fn waiting_fetch(
    broker: &Shared,
    queues: &[String],
    max: usize,
) -> tokio::task::JoinHandle<Vec<Delivery>> {
    let (broker, queues) = (broker.clone(), queues.to_vec());
    tokio::spawn(async move {
        broker
            .fetch(&WorkerId::generate(), &queues, max, Duration::from_secs(30))
            .await
            .unwrap()
    })
}

/// What a waiting fetch returned, failing if it did not return within 10 s.
pub async fn woken(fetch: tokio::task::JoinHandle<Vec<Delivery>>) -> Vec<Delivery> {
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("a waiting fetch must wake on new work, not at its timeout")
        .unwrap()
}

/// Fetches `n` messages of `q` with a new worker and dead-letters them; returns their ids.
pub async fn kill(broker: &Shared, q: &str, n: usize) -> Vec<TaskId> {
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, &[q.to_owned()], n, NO_WAIT)
        .await
        .unwrap();
    for delivery in &got {
        broker
            .dead_letter(
                &worker,
                delivery,
                DeadReason::RetriesExhausted,
                Some("boom".into()),
            )
            .await
            .unwrap();
    }
    ids(&got)
}

/// The bound of the brokers the flow-control tests run on ([`BoundedAtFifty`]).
pub(crate) const BOUND: usize = 50;

/// `result` is the refusal of a full `q` at [`BOUND`].
pub(crate) fn assert_full(result: taskq_core::Result<()>, q: &str) {
    match result {
        Err(taskq_core::Error::QueueFull { queue, capacity }) => {
            assert_eq!((queue.as_str(), capacity), (q, BOUND));
        }
        other => panic!("expected QueueFull for {q}, got {other:?}"),
    }
}
