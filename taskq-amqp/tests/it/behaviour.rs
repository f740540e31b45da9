//! What RabbitMQ does in place of the suite's exceptions: redelivery by the server, the
//! delivery limit, fencing after a channel closed, huge calls, bounded levels, clear errors.

use std::time::Duration;

use taskq_amqp::{AmqpBroker, AmqpConfig};
use taskq_core::{DeadReason, Error, Inspector, Page, TaskId, Transport, WorkerId};
use taskq_testkit::suite::{ids, message, queue};

use crate::support::{config, node};

const NO_WAIT: Duration = Duration::ZERO;

async fn broker(config: AmqpConfig) -> AmqpBroker {
    AmqpBroker::connect(config).await.expect("connect")
}

/// A worker that goes away without settling leaves its deliveries to RabbitMQ, which hands
/// them to the next worker: no reaper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_goes_away_leaves_its_messages_to_the_next() {
    let broker = broker(config()).await;
    let q = queue();
    let sent: Vec<_> = (0..3).map(|_| message(&q, 0)).collect();
    let expected: Vec<TaskId> = sent.iter().map(|m| m.id).collect();
    broker.enqueue(sent).await.unwrap();
    let gone = WorkerId::generate();
    let held = broker
        .fetch(&gone, std::slice::from_ref(&q), 3, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(ids(&held), expected);
    broker.release_worker(&gone).await.unwrap();
    assert_eq!(broker.ack(&gone, &held).await.unwrap(), 0, "fenced");
    let next = WorkerId::generate();
    let again = broker
        .fetch(&next, std::slice::from_ref(&q), 3, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(ids(&again), expected, "redelivered in order");
    assert_eq!(broker.ack(&next, &again).await.unwrap(), 3);
    assert_eq!(broker.stats(&q).await.unwrap().pending, 0);
}

/// Past the delivery limit RabbitMQ dead-letters the message itself, as `worker_lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_lost_by_too_many_workers_is_dead_lettered_as_worker_lost() {
    let broker = broker(config().with_delivery_limit(2)).await;
    let q = queue();
    let poison = message(&q, 4);
    let id = poison.id;
    broker.enqueue(vec![poison]).await.unwrap();
    let mut deliveries = 0;
    for _ in 0..5 {
        let worker = WorkerId::generate();
        let got = broker
            .fetch(&worker, std::slice::from_ref(&q), 1, NO_WAIT)
            .await
            .unwrap();
        deliveries += got.len();
        broker.release_worker(&worker).await.unwrap();
    }
    assert_eq!(deliveries, 3, "the first delivery and two redeliveries");
    let mut dead = Vec::new();
    for _ in 0..50 {
        dead = broker.dead_letters(&q, Page::first(10)).await.unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].id, dead[0].reason),
        (Some(id), DeadReason::WorkerLost)
    );
    assert_eq!(broker.requeue_dead(&q, None).await.unwrap(), 1);
    let back = broker
        .fetch(&WorkerId::generate(), std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(ids(&back), vec![id], "requeued at its own priority");
}

/// One call of 12,000 messages over two levels lands whole, and workers take it highest level
/// first, first in first out; messages due in an hour are not among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_enqueue_lands_whole_and_in_order() {
    let broker = broker(config()).await;
    let q = queue();
    let mut sent: Vec<_> = (0..12_000)
        .map(|i| message(&q, if i % 4 == 0 { 5 } else { 0 }))
        .collect();
    let mut expected: Vec<TaskId> = sent
        .iter()
        .filter(|m| m.priority == 5)
        .map(|m| m.id)
        .collect();
    expected.extend(sent.iter().filter(|m| m.priority == 0).map(|m| m.id));
    let later = broker.clock().now() + chrono::Duration::hours(1);
    sent.extend((0..1_000).map(|_| {
        let mut message = message(&q, 0);
        message.eta = Some(later);
        message
    }));
    broker.enqueue(sent).await.unwrap();
    assert_eq!(broker.stats(&q).await.unwrap().pending, 12_000);
    let worker = WorkerId::generate();
    let mut got = Vec::new();
    loop {
        let batch = broker
            .fetch(&worker, std::slice::from_ref(&q), 5_000, NO_WAIT)
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        broker.ack(&worker, &batch).await.unwrap();
        got.extend(ids(&batch));
    }
    assert_eq!(got, expected);
}

/// With a bound, a level that is full refuses the publish: the enqueue fails naming the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_level_refuses_the_enqueue_naming_the_queue() {
    let broker = broker(config().with_max_queue_length(Some(5))).await;
    let q = queue();
    broker
        .enqueue((0..5).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    match broker.enqueue(vec![message(&q, 0)]).await {
        Err(Error::QueueFull { queue, capacity }) => assert_eq!((queue, capacity), (q.clone(), 5)),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    broker.enqueue(vec![message(&q, 7)]).await.unwrap();
    assert_eq!(
        broker.stats(&q).await.unwrap().pending,
        6,
        "another level has room"
    );
}

/// Features that need shared state say so instead of pretending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uniqueness_and_rate_limits_say_they_need_redis() {
    let broker = broker(config()).await;
    let q = queue();
    let err = broker
        .enqueue_unique(message(&q, 0), "k", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unique enqueue"), "{err}");
    assert!(
        taskq_core::error_chain(&err).contains("needs the Redis broker"),
        "{err}"
    );
}

/// A port where nothing listens: one clear error naming the (redacted) URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_a_clear_error() {
    let port = taskq_testkit::free_port();
    let url = format!("amqp://guest:secret@127.0.0.1:{port}/%2f");
    let err = AmqpBroker::connect(AmqpConfig::new(url)).await.unwrap_err();
    let text = taskq_core::error_chain(&err);
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("secret"), "password redacted: {text}");
    assert!(err.is_transient());
    let _ = node();
}

/// Dead letters are capped per queue as on Redis (the oldest go), so that a page, which reads
/// the dead-letter queue with one `basic.get` per message, reads a bounded number of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_capped_newest_first() {
    let broker = broker(config().with_max_dead_letters(2)).await;
    let q = queue();
    let sent: Vec<_> = (0..3).map(|_| message(&q, 0)).collect();
    let expected: Vec<TaskId> = sent.iter().map(|m| m.id).collect();
    broker.enqueue(sent).await.unwrap();
    let worker = WorkerId::generate();
    for _ in 0..3 {
        let held = broker
            .fetch(&worker, std::slice::from_ref(&q), 1, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(held.len(), 1);
        broker
            .dead_letter(&worker, &held[0], DeadReason::Failed, Some("no".into()))
            .await
            .unwrap();
    }
    let dead: Vec<_> = broker
        .dead_letters(&q, Page::first(10))
        .await
        .unwrap()
        .iter()
        .map(|letter| letter.id.unwrap())
        .collect();
    assert_eq!(
        dead,
        vec![expected[2], expected[1]],
        "the newest two, newest first"
    );
    assert_eq!(broker.stats(&q).await.unwrap().dead, 2);
}

/// Handing back a delivery that never ran (a worker's leftovers at shutdown, deliveries a busy
/// worker could not start in time) is not a failed delivery: with nack-requeue, each return
/// counted toward `x-delivery-limit` (RabbitMQ 3.10-3.13), and a message returned a few times
/// was dead-lettered as `worker_lost` without ever running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_handed_back_unstarted_do_not_count_toward_the_delivery_limit() {
    let broker = broker(config().with_delivery_limit(2)).await;
    let q = queue();
    let sent = message(&q, 0);
    let id = sent.id;
    broker.enqueue(vec![sent]).await.unwrap();
    for round in 0..5 {
        let worker = WorkerId::generate();
        let held = broker
            .fetch(&worker, std::slice::from_ref(&q), 1, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            ids(&held),
            vec![id],
            "round {round}: the message is still there"
        );
        assert_eq!(broker.requeue(&worker, &held).await.unwrap(), 1);
        broker.release_worker(&worker).await.unwrap();
    }
    let dead = broker.dead_letters(&q, Page::first(10)).await.unwrap();
    assert!(dead.is_empty(), "dead-lettered without running: {dead:?}");
}

/// RabbitMQ pushes messages to consumers: there is no fetch to hold back, so pausing a queue
/// is refused, naming the feature, and the queue goes on as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_queue_is_refused_naming_the_feature() {
    let broker = broker(config()).await;
    let q = queue();
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    taskq_testkit::suite::assert_unsupported(broker.set_paused(&q, true).await, "pausing queues");
    assert!(!broker.stats(&q).await.unwrap().paused);
    let got = broker
        .fetch(&WorkerId::generate(), std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
}
