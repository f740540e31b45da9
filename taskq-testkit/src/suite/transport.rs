//! The [`Transport (and rate limiter)`](taskq_core) suite: enqueue, fetch order, waking, settling and its fences, promotion, uniqueness, rate limits.

use std::time::Duration;

use taskq_core::{DeadReason, Page, WorkerId};

use super::*;

pub async fn fifo_within_a_level(broker: Shared) {
    let q = queue();
    let messages: Vec<_> = (0..5).map(|_| message(&q, 0)).collect();
    let expected: Vec<_> = messages.iter().map(|m| m.id).collect();
    broker.enqueue(messages).await.unwrap();
    let got = broker
        .fetch(&WorkerId::generate(), &[q], 10, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(ids(&got), expected);
}

pub async fn higher_priority_first(broker: Shared) {
    let q = queue();
    let (low, high, mid, high2) = (
        message(&q, 0),
        message(&q, 9),
        message(&q, 5),
        message(&q, 9),
    );
    let expected = vec![high.id, high2.id, mid.id, low.id];
    broker.enqueue(vec![low, high, mid, high2]).await.unwrap();
    let worker = WorkerId::generate();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(
            broker
                .fetch(&worker, std::slice::from_ref(&q), 1, NO_WAIT)
                .await
                .unwrap(),
        );
    }
    assert_eq!(ids(&got), expected);
}

pub async fn queues_in_order_of_preference(broker: Shared) {
    let (first, second) = (queue(), queue());
    let later = message(&second, 9);
    let sooner = message(&first, 0);
    let expected = vec![sooner.id, later.id];
    broker.enqueue(vec![later, sooner]).await.unwrap();
    let worker = WorkerId::generate();
    let queues = [first, second];
    let mut got = broker.fetch(&worker, &queues, 1, NO_WAIT).await.unwrap();
    got.extend(broker.fetch(&worker, &queues, 1, NO_WAIT).await.unwrap());
    assert_eq!(ids(&got), expected);
}

pub async fn fetch_returns_empty_after_waiting(broker: Shared) {
    let got = broker
        .fetch(
            &WorkerId::generate(),
            &[queue()],
            5,
            Duration::from_millis(200),
        )
        .await
        .unwrap();
    assert!(got.is_empty());
}

pub async fn fetch_is_woken_by_enqueue(broker: Shared) {
    let q = queue();
    let waiting = waiting_fetch(&broker, std::slice::from_ref(&q), 5);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = message(&q, 0);
    let id = sent.id;
    broker.enqueue(vec![sent]).await.unwrap();
    assert_eq!(ids(&woken(waiting).await), vec![id]);
}

/// One waiting fetch (not a polling loop) must see a message that arrives on any of its
/// queues, at any priority. The Redis suite's block timeout is shorter than the wait, so a fetch
/// that only watched its first queue's default level would come back empty.
pub async fn fetch_is_woken_for_any_queue_and_level(broker: Shared) {
    let (first, second) = (queue(), queue());
    let waiting = waiting_fetch(&broker, &[first, second.clone()], 5);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = message(&second, 5);
    let id = sent.id;
    broker.enqueue(vec![sent]).await.unwrap();
    assert_eq!(ids(&woken(waiting).await), vec![id]);
}

/// A waiting fetch also wakes when scheduled messages are promoted.
pub async fn fetch_is_woken_by_promotion(broker: Shared) {
    let q = queue();
    let mut later = message(&q, 0);
    later.eta = Some(broker.clock().now() + chrono::Duration::milliseconds(200));
    let id = later.id;
    broker.enqueue(vec![later]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let waiting = waiting_fetch(&broker, std::slice::from_ref(&q), 5);
    tokio::time::sleep(Duration::from_millis(100)).await;
    broker
        .promote_scheduled(std::slice::from_ref(&q), 100)
        .await
        .unwrap();
    assert_eq!(ids(&woken(waiting).await), vec![id]);
}

/// A burst larger than one waiter's batch wakes further waiters: none of the messages waits
/// for a timeout while a worker is idle.
pub async fn a_burst_wakes_enough_waiting_fetches(broker: Shared) {
    let q = queue();
    let first = waiting_fetch(&broker, std::slice::from_ref(&q), 1);
    let second = waiting_fetch(&broker, std::slice::from_ref(&q), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let burst = vec![message(&q, 0), message(&q, 0)];
    let mut expected: Vec<_> = burst.iter().map(|m| m.id).collect();
    broker.enqueue(burst).await.unwrap();
    let mut got = ids(&woken(first).await);
    got.extend(ids(&woken(second).await));
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

pub async fn ack_is_fenced(broker: Shared) {
    let q = queue();
    broker
        .enqueue(vec![message(&q, 0), message(&q, 0)])
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 2, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(broker.ack(&WorkerId::generate(), &got).await.unwrap(), 0);
    assert_eq!(broker.ack(&worker, &got).await.unwrap(), 2);
    assert_eq!(broker.ack(&worker, &got).await.unwrap(), 0);
    assert_eq!(broker.stats(&q).await.unwrap().processing, 0);
}

/// One message due in a minute is never fetched or promoted during the test; one due in
/// 200 ms is promoted and fetched once it is due: no assertion depends on how fast the test
/// runs.
pub async fn eta_is_not_fetched_early(broker: Shared) {
    let q = queue();
    let queues = std::slice::from_ref(&q);
    let mut much_later = message(&q, 0);
    much_later.eta = Some(broker.clock().now() + chrono::Duration::seconds(60));
    let mut soon = message(&q, 0);
    soon.eta = Some(broker.clock().now() + chrono::Duration::milliseconds(200));
    let soon_id = soon.id;
    broker.enqueue(vec![much_later, soon]).await.unwrap();
    let worker = WorkerId::generate();
    assert!(broker
        .fetch(&worker, queues, 2, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(broker.stats(&q).await.unwrap().scheduled, 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(broker.promote_scheduled(queues, 100).await.unwrap(), 1);
    let got = broker.fetch(&worker, queues, 2, NO_WAIT).await.unwrap();
    assert_eq!(ids(&got), vec![soon_id]);
    assert_eq!(broker.promote_scheduled(queues, 100).await.unwrap(), 0);
    assert_eq!(broker.stats(&q).await.unwrap().scheduled, 1);
}

pub async fn retry_reschedules_the_next_attempt(broker: Shared) {
    let q = queue();
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    let mut next = Envelope::decode(got[0].payload(), 1 << 20).unwrap();
    next.attempt = 1;
    next.eta = Some(broker.clock().now() + chrono::Duration::milliseconds(300));
    let next = OutboundMessage::from_envelope(&next, 1 << 20).unwrap();
    assert!(broker.retry(&worker, &got[0], next.clone()).await.unwrap());
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.processing, stats.scheduled), (0, 1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    broker
        .promote_scheduled(std::slice::from_ref(&q), 100)
        .await
        .unwrap();
    let again = broker.fetch(&worker, &[q], 1, NO_WAIT).await.unwrap();
    assert_eq!(again[0].payload(), next.payload);
}

pub async fn retry_by_another_worker_changes_nothing(broker: Shared) {
    let q = queue();
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    let stranger = WorkerId::generate();
    assert!(!broker
        .retry(&stranger, &got[0], message(&q, 0))
        .await
        .unwrap());
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.processing, stats.scheduled, stats.pending),
        (1, 0, 0)
    );
}

pub async fn retry_stays_in_the_delivery_queue(broker: Shared) {
    let (q, elsewhere) = (queue(), queue());
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    let mut next = Envelope::decode(got[0].payload(), 1 << 20).unwrap();
    next.attempt = 1;
    next.queue = elsewhere.clone();
    let next = OutboundMessage::from_envelope(&next, 1 << 20).unwrap();
    assert_eq!(next.queue, elsewhere);
    assert!(broker.retry(&worker, &got[0], next.clone()).await.unwrap());
    assert_eq!(broker.stats(&elsewhere).await.unwrap().pending, 0);
    let again = broker.fetch(&worker, &[q], 1, NO_WAIT).await.unwrap();
    assert_eq!(ids(&again), vec![next.id]);
}

pub async fn requeue_returns_to_the_head(broker: Shared) {
    let q = queue();
    let (first, second) = (message(&q, 0), message(&q, 0));
    let expected = vec![first.id, second.id];
    broker.enqueue(vec![first, second]).await.unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(broker.requeue(&worker, &got).await.unwrap(), 1);
    assert_eq!(broker.requeue(&worker, &got).await.unwrap(), 0);
    let again = broker.fetch(&worker, &[q], 2, NO_WAIT).await.unwrap();
    assert_eq!(ids(&again), expected);
}

pub async fn dead_letter_keeps_payload_and_reason(broker: Shared) {
    let q = queue();
    let sent = message(&q, 0);
    broker.enqueue(vec![sent.clone()]).await.unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    let moved = broker
        .dead_letter(
            &worker,
            &got[0],
            DeadReason::UnknownTask,
            Some("nobody".into()),
        )
        .await
        .unwrap();
    assert!(moved);
    let dead = broker.dead_letters(&q, Page::first(10)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, Some(sent.id));
    assert_eq!(dead[0].reason, DeadReason::UnknownTask);
    assert_eq!(dead[0].payload, sent.payload);
    assert_eq!(dead[0].error.as_deref(), Some("nobody"));
    assert_eq!(dead[0].worker.as_deref(), Some(worker.as_str()));
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.processing, stats.dead), (0, 1));
}

pub async fn dead_letter_by_another_worker_changes_nothing(broker: Shared) {
    let q = queue();
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    let got = broker
        .fetch(&WorkerId::generate(), std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    let moved = broker
        .dead_letter(&WorkerId::generate(), &got[0], DeadReason::Failed, None)
        .await
        .unwrap();
    assert!(!moved);
    assert_eq!(broker.stats(&q).await.unwrap().dead, 0);
}

pub async fn racing_promoters_promote_once(broker: Shared) {
    let q = queue();
    let due = broker.clock().now() + chrono::Duration::milliseconds(200);
    let messages: Vec<_> = (0..50)
        .map(|_| {
            let mut m = message(&q, 0);
            m.eta = Some(due);
            m
        })
        .collect();
    broker.enqueue(messages).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let promoters: Vec<_> = (0..4)
        .map(|_| {
            let (broker, q) = (broker.clone(), q.clone());
            tokio::spawn(async move { broker.promote_scheduled(&[q], 1000).await.unwrap() })
        })
        .collect();
    let mut promoted = 0;
    for promoter in promoters {
        promoted += promoter.await.unwrap();
    }
    assert_eq!(
        promoted, 50,
        "each due message is promoted by exactly one promoter"
    );
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (50, 0));
}

pub async fn unique_enqueue_happens_once_per_key(broker: Shared) {
    let q = queue();
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let (broker, q) = (broker.clone(), q.clone());
            tokio::spawn(async move {
                broker
                    .enqueue_unique(message(&q, 0), "slot-1", Duration::from_secs(60))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut enqueued = 0;
    for racer in racers {
        enqueued += usize::from(racer.await.unwrap().is_none());
    }
    assert_eq!(enqueued, 1);
    let ttl = Duration::from_secs(60);
    let first = message(&q, 0);
    let first_id = first.id;
    assert_eq!(
        broker.enqueue_unique(first, "slot-2", ttl).await.unwrap(),
        None
    );
    let duplicate = broker.enqueue_unique(message(&q, 0), "slot-2", ttl);
    assert_eq!(
        duplicate.await.unwrap(),
        Some(first_id),
        "a duplicate learns who holds the key"
    );
    assert_eq!(broker.stats(&q).await.unwrap().pending, 2);
    // Released only by its holder.
    broker
        .release_unique(&q, "slot-2", TaskId::new())
        .await
        .unwrap();
    assert!(broker
        .enqueue_unique(message(&q, 0), "slot-2", ttl)
        .await
        .unwrap()
        .is_some());
    broker.release_unique(&q, "slot-2", first_id).await.unwrap();
    assert!(broker
        .enqueue_unique(message(&q, 0), "slot-2", ttl)
        .await
        .unwrap()
        .is_none());
    // A claim also ends with its ttl (a separate key, so that no assertion above depends on
    // how fast the test runs).
    let short = broker.enqueue_unique(message(&q, 0), "slot-3", Duration::from_millis(100));
    assert_eq!(short.await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(broker
        .enqueue_unique(message(&q, 0), "slot-3", ttl)
        .await
        .unwrap()
        .is_none());
}

pub async fn rate_limit_spaces_starts(broker: Shared) {
    let q = queue();
    let limit: taskq_core::RateLimit = "5/s".parse().unwrap();
    assert_eq!(broker.rate_limit(&q, "t", limit).await.unwrap(), None);
    let wait = broker
        .rate_limit(&q, "t", limit)
        .await
        .unwrap()
        .expect("limited");
    assert!(
        wait <= Duration::from_millis(200) && wait > Duration::ZERO,
        "{wait:?}"
    );
    assert_eq!(
        broker.rate_limit(&q, "other", limit).await.unwrap(),
        None,
        "per task name"
    );
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    assert_eq!(broker.rate_limit(&q, "t", limit).await.unwrap(), None);
}

/// A fetch asking for more than a broker moves at once returns a part and loses nothing (on
/// Redis, a fetch of 8,000 or more used to trim pending and then fail to push them).
pub async fn a_huge_fetch_loses_nothing(broker: Shared) {
    let q = queue();
    let total = 9_000;
    let sent: Vec<_> = (0..total).map(|_| message(&q, 0)).collect();
    broker.enqueue(sent).await.unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), total, NO_WAIT)
        .await
        .unwrap();
    assert!(!got.is_empty());
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(stats.processing, got.len());
    assert_eq!(stats.pending + stats.processing, total, "{stats:?}");
}

/// One call with more messages than a Lua call can take arguments (Redis pushes them in
/// chunks), over two levels, scheduled ones included: every message lands, in order.
pub async fn a_huge_enqueue_lands_whole_and_in_order(broker: Shared) {
    let q = queue();
    // 9,000 on one level and 9,000 scheduled: past the ~8,000 arguments `unpack` takes.
    let mut sent: Vec<_> = (0..12_000)
        .map(|i| message(&q, if i % 4 == 0 { 5 } else { 0 }))
        .collect();
    let later = broker.clock().now() + chrono::Duration::hours(1);
    sent.extend((0..9_000).map(|_| {
        let mut message = message(&q, 0);
        message.eta = Some(later);
        message
    }));
    let expected_high: Vec<_> = sent
        .iter()
        .filter(|m| m.priority == 5)
        .map(|m| m.id)
        .collect();
    let expected_low: Vec<_> = sent
        .iter()
        .filter(|m| m.priority == 0 && m.eta.is_none())
        .map(|m| m.id)
        .collect();
    broker.enqueue(sent).await.unwrap();
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled),
        (12_000, 9_000),
        "{stats:?}"
    );
    let worker = WorkerId::generate();
    let mut got = Vec::new();
    while got.len() < 12_000 {
        let batch = broker
            .fetch(&worker, std::slice::from_ref(&q), 1_000, NO_WAIT)
            .await
            .unwrap();
        assert!(!batch.is_empty(), "fetched {} of 12000", got.len());
        got.extend(ids(&batch));
    }
    assert_eq!(got[..3_000], expected_high[..]);
    assert_eq!(got[3_000..], expected_low[..]);
}

/// A call that would take a queue past its bound is refused whole, naming the queue; pending
/// and scheduled messages count, messages being processed do not.
pub async fn a_full_queue_refuses_the_whole_call_naming_the_queue(broker: BoundedAtFifty) {
    let q = queue();
    broker
        .enqueue((0..BOUND - 2).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    assert_full(
        broker
            .enqueue((0..3).map(|_| message(&q, 3)).collect())
            .await,
        &q,
    );
    assert_eq!(
        broker.stats(&q).await.unwrap().pending,
        BOUND - 2,
        "nothing of it landed"
    );
    broker
        .enqueue((0..2).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    let mut later = message(&q, 0);
    later.eta = Some(broker.clock().now() + chrono::Duration::hours(1));
    assert_full(broker.enqueue(vec![later.clone()]).await, &q);
    broker
        .fetch(&WorkerId::generate(), std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    broker
        .enqueue(vec![later])
        .await
        .expect("a fetched message frees its place");
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (BOUND - 1, 1));
}

/// Producers racing for the last places never push a queue past its bound.
pub async fn concurrent_producers_never_exceed_the_bound(broker: BoundedAtFifty) {
    let q = queue();
    let producers: Vec<_> = (0..10)
        .map(|_| {
            let (broker, q) = (broker.clone(), q.clone());
            tokio::spawn(async move {
                let mut accepted = 0;
                for _ in 0..10 {
                    match broker.enqueue(vec![message(&q, 0)]).await {
                        Ok(()) => accepted += 1,
                        Err(taskq_core::Error::QueueFull { .. }) => {}
                        Err(err) => panic!("{err}"),
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted = 0;
    for producer in producers {
        accepted += producer.await.unwrap();
    }
    assert_eq!(accepted, BOUND);
    assert_eq!(broker.stats(&q).await.unwrap().pending, BOUND);
}

/// A unique enqueue into a full queue is refused and leaves no claim behind, so the same key
/// goes through once there is room.
pub async fn a_unique_enqueue_into_a_full_queue_is_refused_and_claims_nothing(
    broker: BoundedAtFifty,
) {
    let q = queue();
    broker
        .enqueue((0..BOUND).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    let unique = message(&q, 0);
    let refused = broker
        .enqueue_unique(unique.clone(), "the-key", Duration::from_secs(60))
        .await
        .map(|_| ());
    assert_full(refused, &q);
    broker
        .fetch(&WorkerId::generate(), std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    let holder = broker
        .enqueue_unique(unique, "the-key", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(holder, None, "enqueued once there was room");
}
