//! The delay chain: countdowns of 1 s, 10 s and 2 minutes reach a waiting worker never early
//! and at most about a second late; a retry's backoff goes the same way.

use std::time::{Duration, Instant};

use taskq_amqp::AmqpBroker;
use taskq_core::{Envelope, OutboundMessage, TaskId, Transport, WorkerId};
use taskq_testkit::suite::{ids, message, queue};

use crate::support::config;

/// Lateness allowed on top of the whole-second rounding: hops through the chain and a loaded
/// two-core machine.
const SLACK: Duration = Duration::from_millis(1500);

/// Waits for one delivery of `q` and says how long after `start` it came.
async fn arrival(
    broker: &AmqpBroker,
    q: &str,
    start: Instant,
    limit: Duration,
) -> (TaskId, Duration) {
    let worker = WorkerId::generate();
    loop {
        let got = broker
            .fetch(&worker, &[q.to_owned()], 1, Duration::from_millis(500))
            .await
            .unwrap();
        if let Some(first) = got.first() {
            broker.ack(&worker, &got).await.unwrap();
            return (ids(std::slice::from_ref(first))[0], start.elapsed());
        }
        assert!(start.elapsed() < limit, "nothing arrived within {limit:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdowns_are_never_early_and_at_most_a_second_late() {
    let broker = AmqpBroker::connect(config()).await.unwrap();
    let delays = [
        Duration::from_secs(1),
        Duration::from_secs(10),
        Duration::from_secs(120),
    ];
    let mut waits = Vec::new();
    for delay in delays {
        let q = queue();
        let mut delayed = message(&q, 0);
        let start = Instant::now();
        delayed.eta = Some(broker.clock().now() + chrono::Duration::from_std(delay).unwrap());
        let id = delayed.id;
        broker.enqueue(vec![delayed]).await.unwrap();
        let broker = broker.clone();
        waits.push(tokio::spawn(async move {
            let (got, after) = arrival(&broker, &q, start, delay + Duration::from_secs(30)).await;
            (delay, id, got, after)
        }));
    }
    for wait in waits {
        let (delay, id, got, after) = wait.await.unwrap();
        assert_eq!(got, id);
        assert!(
            after >= delay,
            "{delay:?} countdown arrived early, after {after:?}"
        );
        assert!(
            after <= delay + Duration::from_secs(1) + SLACK,
            "{delay:?} countdown arrived after {after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waits_out_its_backoff_in_the_delivery_queue() {
    let broker = AmqpBroker::connect(config()).await.unwrap();
    let q = queue();
    broker.enqueue(vec![message(&q, 2)]).await.unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 1, Duration::ZERO)
        .await
        .unwrap();
    let mut next = Envelope::decode(got[0].payload(), 1 << 20).unwrap();
    next.attempt = 1;
    next.queue = "elsewhere".into();
    let start = Instant::now();
    next.eta = Some(broker.clock().now() + chrono::Duration::seconds(2));
    let next = OutboundMessage::from_envelope(&next, 1 << 20).unwrap();
    assert!(broker.retry(&worker, &got[0], next.clone()).await.unwrap());
    assert!(
        !broker.retry(&worker, &got[0], next.clone()).await.unwrap(),
        "fenced"
    );
    let (id, after) = arrival(&broker, &q, start, Duration::from_secs(30)).await;
    assert_eq!(id, next.id);
    assert!(after >= Duration::from_secs(2), "early: {after:?}");
}
