//! RabbitMQ's delivery acknowledgement timeout (`consumer_timeout`, 5 s on the test node; it
//! is enforced on RabbitMQ's channel tick, about once a minute): a run longer than it neither
//! closes the worker's channel nor runs twice; a guarded run whose worker is gone runs again.

use std::time::{Duration, Instant};

use taskq_amqp::AmqpBroker;
use taskq_core::{Transport, WorkerId};
use taskq_testkit::suite::{ids, message, queue};

use crate::support::config;

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_longer_than_the_consumer_timeout_completes_once() {
    let url_config = config().with_consumer_timeout(TIMEOUT);
    let running = AmqpBroker::connect(url_config.clone()).await.unwrap();
    let elsewhere = AmqpBroker::connect(url_config).await.unwrap();
    let q = queue();
    let long = message(&q, 0);
    let id = long.id;
    running.enqueue(vec![long]).await.unwrap();
    let worker = WorkerId::generate();
    let held = running
        .fetch(&worker, std::slice::from_ref(&q), 1, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(ids(&held), vec![id]);

    // Longer than the timeout plus RabbitMQ's check interval: without the guard the channel
    // is closed and the message delivered again (seen here after about 60 s).
    let start = Instant::now();
    let other = WorkerId::generate();
    while start.elapsed() < Duration::from_secs(75) {
        let got = elsewhere
            .fetch(&other, std::slice::from_ref(&q), 1, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(
            got.is_empty(),
            "delivered again while running, after {:?}",
            start.elapsed()
        );
    }
    assert_eq!(
        running.ack(&worker, &held).await.unwrap(),
        1,
        "the worker's channel stayed open"
    );
    // Its guard copy comes back once more, finds the run finished and goes.
    let after = Instant::now();
    while after.elapsed() < TIMEOUT + Duration::from_secs(2) {
        let got = elsewhere
            .fetch(&other, std::slice::from_ref(&q), 1, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(got.is_empty(), "ran twice");
    }
    // The worker goes on working (the other consumer leaves first, so the message is its).
    elsewhere.release_worker(&other).await.unwrap();
    running.enqueue(vec![message(&q, 0)]).await.unwrap();
    let next = running
        .fetch(&worker, std::slice::from_ref(&q), 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_run_whose_worker_is_gone_runs_again() {
    let url_config = config().with_consumer_timeout(TIMEOUT);
    let crashing = AmqpBroker::connect(url_config.clone()).await.unwrap();
    let survivor = AmqpBroker::connect(url_config).await.unwrap();
    let q = queue();
    let long = message(&q, 0);
    let id = long.id;
    crashing.enqueue(vec![long]).await.unwrap();
    let held = crashing
        .fetch(
            &WorkerId::generate(),
            std::slice::from_ref(&q),
            1,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(ids(&held), vec![id]);
    // Past half the timeout it is guarded (acked early); then the process is gone.
    tokio::time::sleep(TIMEOUT / 2 + Duration::from_secs(2)).await;
    crashing.close().await;
    let start = Instant::now();
    let worker = WorkerId::generate();
    loop {
        let got = survivor
            .fetch(&worker, std::slice::from_ref(&q), 1, Duration::from_secs(1))
            .await
            .unwrap();
        if !got.is_empty() {
            assert_eq!(ids(&got), vec![id]);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the guarded run never came back"
        );
    }
}
