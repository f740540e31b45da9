//! Broker behaviour every implementation must show, written once.
//!
//! Each test gets a fresh broker handle and uses fresh uuid queue names, so implementations
//! backed by one shared server run the suite in parallel. Waiting uses `tokio::time::sleep`,
//! which the memory instance runs on a paused clock.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use taskq_core::{Broker, DeadReason, Delivery, Envelope, OutboundMessage, TaskId, WorkerId};

/// Expands to one test per suite function; `$make` is a future of `(broker, guard)`, where the
/// guard keeps whatever backs the broker (a redis-server) alive for the test.
#[macro_export]
macro_rules! broker_conformance {
    (#[$attr:meta] $name:ident => $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::broker_conformance!(@tests [$attr] $make;
                fifo_within_a_level,
                higher_priority_first,
                queues_in_order_of_preference,
                fetch_returns_empty_after_waiting,
                fetch_is_woken_by_enqueue,
                fetch_is_woken_for_any_queue_and_level,
                fetch_is_woken_by_promotion,
                a_burst_wakes_enough_waiting_fetches,
                ack_is_fenced,
                eta_is_not_fetched_early,
                retry_reschedules_the_next_attempt,
                retry_by_another_worker_changes_nothing,
                requeue_returns_to_the_head,
                dead_letter_keeps_payload_and_reason,
                dead_letter_by_another_worker_changes_nothing,
                lost_worker_is_recovered,
                live_worker_is_not_recovered,
                racing_reapers_recover_once,
                racing_promoters_promote_once,
                poison_message_is_dead_lettered,
                deregister_returns_held_messages,
                stats_count_every_place,
                unique_enqueue_happens_once_per_key,
                rate_limit_spaces_starts,
                revocations_expire,
                control_messages_reach_subscribers,
                worker_info_expires,
                dead_letters_requeue_atomically_with_attempts_reset,
                dead_letters_purge_by_age,
                queue_purge_removes_waiting_messages_only,
            );
        }
    };
    (@tests [$attr:meta] $make:expr; $($test:ident),* $(,)?) => {
        $(
            #[$attr]
            async fn $test() {
                let (broker, _guard) = $make.await;
                $crate::broker_suite::$test(broker).await;
            }
        )*
    };
}

pub type Shared = Arc<dyn Broker>;

fn queue() -> String {
    format!("q-{}", uuid::Uuid::new_v4())
}

pub fn message(queue: &str, priority: u8) -> OutboundMessage {
    let mut envelope = Envelope::new(
        "suite.task",
        &serde_json::json!({"n": 1}),
        queue,
        Utc::now(),
    )
    .unwrap();
    envelope.priority = priority;
    OutboundMessage::from_envelope(&envelope, 1 << 20).unwrap()
}

fn ids(deliveries: &[Delivery]) -> Vec<TaskId> {
    deliveries
        .iter()
        .map(|d| Envelope::decode(d.payload(), 1 << 20).unwrap().id)
        .collect()
}

const NO_WAIT: Duration = Duration::from_millis(0);

/// One fetch by a new worker that waits (up to 30 s) for up to `max` messages, in the background.
fn waiting_fetch(
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
async fn woken(fetch: tokio::task::JoinHandle<Vec<Delivery>>) -> Vec<Delivery> {
    tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("a waiting fetch must wake on new work, not at its timeout")
        .unwrap()
}

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

pub async fn eta_is_not_fetched_early(broker: Shared) {
    let q = queue();
    let mut later = message(&q, 0);
    later.eta = Some(broker.clock().now() + chrono::Duration::milliseconds(500));
    let id = later.id;
    broker.enqueue(vec![later]).await.unwrap();
    let worker = WorkerId::generate();
    assert!(broker
        .fetch(&worker, std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(broker.stats(&q).await.unwrap().scheduled, 1);
    assert_eq!(
        broker
            .promote_scheduled(std::slice::from_ref(&q), 100)
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    broker
        .promote_scheduled(std::slice::from_ref(&q), 100)
        .await
        .unwrap();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(ids(&got), vec![id]);
    assert_eq!(
        broker
            .promote_scheduled(std::slice::from_ref(&q), 100)
            .await
            .unwrap(),
        0
    );
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
    let dead = broker.dead_letters(&q, 10).await.unwrap();
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

pub async fn lost_worker_is_recovered(broker: Shared) {
    let q = queue();
    let sent = vec![message(&q, 0), message(&q, 0)];
    let expected: Vec<_> = sent.iter().map(|m| m.id).collect();
    broker.enqueue(sent).await.unwrap();
    let lost = WorkerId::generate();
    let queues = [q.clone()];
    broker
        .heartbeat(&lost, &queues, Duration::from_millis(200))
        .await
        .unwrap();
    let held = broker.fetch(&lost, &queues, 2, NO_WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = broker.recover_lost_workers(&queues, 3).await.unwrap();
    assert_eq!(report.workers, vec![lost.clone()]);
    assert_eq!(report.requeued, 2);
    // The lost worker's late ack is fenced off: the messages now belong to someone else.
    assert_eq!(broker.ack(&lost, &held).await.unwrap(), 0);
    let again = broker
        .fetch(&WorkerId::generate(), &queues, 2, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(ids(&again), expected);
}

pub async fn live_worker_is_not_recovered(broker: Shared) {
    let q = queue();
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    let live = WorkerId::generate();
    let queues = [q.clone()];
    broker
        .heartbeat(&live, &queues, Duration::from_secs(30))
        .await
        .unwrap();
    broker.fetch(&live, &queues, 1, NO_WAIT).await.unwrap();
    let report = broker.recover_lost_workers(&queues, 3).await.unwrap();
    assert!(report.workers.iter().all(|w| *w != live));
    assert_eq!(broker.stats(&q).await.unwrap().processing, 1);
}

pub async fn racing_reapers_recover_once(broker: Shared) {
    let q = queue();
    broker
        .enqueue((0..20).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    let lost = WorkerId::generate();
    let queues = vec![q.clone()];
    broker
        .heartbeat(&lost, &queues, Duration::from_millis(100))
        .await
        .unwrap();
    broker.fetch(&lost, &queues, 20, NO_WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reapers: Vec<_> = (0..4)
        .map(|_| {
            let (broker, queues) = (broker.clone(), queues.clone());
            tokio::spawn(async move { broker.recover_lost_workers(&queues, 3).await.unwrap() })
        })
        .collect();
    let mut requeued = 0;
    for reaper in reapers {
        requeued += reaper.await.unwrap().requeued;
    }
    assert_eq!(requeued, 20);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.processing), (20, 0));
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
    // The memory broker also promotes inside fetch, so count what is pending, not only calls.
    assert!(promoted <= 50);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (50, 0));
}

pub async fn poison_message_is_dead_lettered(broker: Shared) {
    let q = queue();
    let sent = message(&q, 0);
    broker.enqueue(vec![sent.clone()]).await.unwrap();
    let queues = [q.clone()];
    for round in 1..=3 {
        let lost = WorkerId::generate();
        broker
            .heartbeat(&lost, &queues, Duration::from_millis(100))
            .await
            .unwrap();
        assert_eq!(
            broker
                .fetch(&lost, &queues, 1, NO_WAIT)
                .await
                .unwrap()
                .len(),
            1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let report = broker.recover_lost_workers(&queues, 2).await.unwrap();
        if round <= 2 {
            assert_eq!(
                (report.requeued, report.dead_lettered),
                (1, 0),
                "round {round}"
            );
        } else {
            assert_eq!(
                (report.requeued, report.dead_lettered),
                (0, 1),
                "round {round}"
            );
        }
    }
    let dead = broker.dead_letters(&q, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, DeadReason::WorkerLost);
    assert_eq!(dead[0].id, Some(sent.id));
    assert_eq!(broker.stats(&q).await.unwrap().pending, 0);
}

pub async fn deregister_returns_held_messages(broker: Shared) {
    let q = queue();
    broker
        .enqueue(vec![message(&q, 0), message(&q, 0)])
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let queues = [q.clone()];
    broker
        .heartbeat(&worker, &queues, Duration::from_secs(30))
        .await
        .unwrap();
    broker.fetch(&worker, &queues, 2, NO_WAIT).await.unwrap();
    broker.deregister(&worker, &queues).await.unwrap();
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.processing), (2, 0));
}

pub async fn stats_count_every_place(broker: Shared) {
    let q = queue();
    let mut later = message(&q, 0);
    later.eta = Some(broker.clock().now() + chrono::Duration::hours(1));
    broker
        .enqueue(vec![message(&q, 0), message(&q, 0), message(&q, 0), later])
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 2, NO_WAIT)
        .await
        .unwrap();
    broker
        .dead_letter(&worker, &got[0], DeadReason::Failed, None)
        .await
        .unwrap();
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled, stats.processing, stats.dead),
        (1, 1, 1, 1)
    );
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
    let first = message(&q, 0);
    let first_id = first.id;
    let claim = broker.enqueue_unique(first, "slot-2", Duration::from_millis(200));
    assert_eq!(claim.await.unwrap(), None);
    let duplicate = broker.enqueue_unique(message(&q, 0), "slot-2", Duration::from_secs(1));
    assert_eq!(
        duplicate.await.unwrap(),
        Some(first_id),
        "a duplicate learns who holds the key"
    );
    assert_eq!(broker.stats(&q).await.unwrap().pending, 2);
    // The claim expires with its ttl.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let third = message(&q, 0);
    let third_id = third.id;
    let ttl = Duration::from_secs(60);
    assert!(broker
        .enqueue_unique(third, "slot-2", ttl)
        .await
        .unwrap()
        .is_none());
    // Released only by its holder.
    broker.release_unique(&q, "slot-2", first_id).await.unwrap();
    assert!(broker
        .enqueue_unique(message(&q, 0), "slot-2", ttl)
        .await
        .unwrap()
        .is_some());
    broker.release_unique(&q, "slot-2", third_id).await.unwrap();
    assert!(broker
        .enqueue_unique(message(&q, 0), "slot-2", ttl)
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

pub async fn revocations_expire(broker: Shared) {
    let id = TaskId::new();
    broker
        .revoke(id, false, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(broker.revoked().await.unwrap().contains(&id));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!broker.revoked().await.unwrap().contains(&id));
}

pub async fn control_messages_reach_subscribers(broker: Shared) {
    let mut first = broker.subscribe_control().await.unwrap();
    let mut second = broker.subscribe_control().await.unwrap();
    let ping = taskq_core::ControlMessage::Ping { nonce: queue() };
    broker.broadcast(&ping).await.unwrap();
    let id = TaskId::new();
    broker
        .revoke(id, true, Duration::from_secs(60))
        .await
        .unwrap();
    for rx in [&mut first, &mut second] {
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(ping.clone()));
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
        assert_eq!(
            got,
            Some(taskq_core::ControlMessage::Revoke {
                id,
                terminate: true
            })
        );
    }
}

pub async fn worker_info_expires(broker: Shared) {
    let id = WorkerId::generate();
    let info = taskq_core::WorkerInfo::new(id.as_str(), vec![queue()], 4, broker.clock().now());
    broker
        .publish_worker_info(&info, Duration::from_millis(300))
        .await
        .unwrap();
    let workers = broker.workers().await.unwrap();
    assert!(
        workers
            .iter()
            .any(|w| w.id == id.as_str() && w.concurrency == 4),
        "{workers:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!broker
        .workers()
        .await
        .unwrap()
        .iter()
        .any(|w| w.id == id.as_str()));
}

/// Fetches `n` messages of `q` with a new worker and dead-letters them; returns their ids.
async fn kill(broker: &Shared, q: &str, n: usize) -> Vec<TaskId> {
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

pub async fn dead_letters_requeue_atomically_with_attempts_reset(broker: Shared) {
    let q = queue();
    let mut tired = message(&q, 0);
    let mut envelope = Envelope::decode(&tired.payload, 1 << 20).unwrap();
    envelope.attempt = 3;
    tired.payload = envelope.encode(1 << 20).unwrap();
    broker
        .enqueue(vec![tired, message(&q, 0), message(&q, 0)])
        .await
        .unwrap();
    let dead = kill(&broker, &q, 3).await;
    assert!(broker.queues().await.unwrap().contains(&q));

    assert_eq!(broker.requeue_dead(&q, Some(&dead[..1])).await.unwrap(), 1);
    assert_eq!(
        broker.requeue_dead(&q, Some(&dead[..1])).await.unwrap(),
        0,
        "never doubled"
    );
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.dead), (1, 2));
    let back = broker
        .fetch(&WorkerId::generate(), std::slice::from_ref(&q), 10, NO_WAIT)
        .await
        .unwrap();
    let envelope = Envelope::decode(back[0].payload(), 1 << 20).unwrap();
    assert_eq!((envelope.id, envelope.attempt), (dead[0], 0));

    // Racing requeues of everything move each letter exactly once.
    let racers: Vec<_> = (0..3)
        .map(|_| {
            let (broker, q) = (broker.clone(), q.clone());
            tokio::spawn(async move { broker.requeue_dead(&q, None).await.unwrap() })
        })
        .collect();
    let mut moved = 0;
    for racer in racers {
        moved += racer.await.unwrap();
    }
    assert_eq!(moved, 2);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.dead), (2, 0));
}

pub async fn dead_letters_purge_by_age(broker: Shared) {
    let q = queue();
    broker
        .enqueue(vec![message(&q, 0), message(&q, 0)])
        .await
        .unwrap();
    kill(&broker, &q, 2).await;
    let cutoff = broker.clock().now() - chrono::Duration::hours(1);
    assert_eq!(
        broker.purge_dead(&q, Some(cutoff)).await.unwrap(),
        0,
        "none are that old"
    );
    let cutoff = broker.clock().now() + chrono::Duration::seconds(1);
    assert_eq!(broker.purge_dead(&q, Some(cutoff)).await.unwrap(), 2);
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    kill(&broker, &q, 1).await;
    assert_eq!(broker.purge_dead(&q, None).await.unwrap(), 1);
    assert_eq!(broker.stats(&q).await.unwrap().dead, 0);
}

pub async fn queue_purge_removes_waiting_messages_only(broker: Shared) {
    let q = queue();
    let mut later = message(&q, 0);
    later.eta = Some(broker.clock().now() + chrono::Duration::hours(1));
    let first = message(&q, 3);
    let created = Envelope::decode(&first.payload, 1 << 20)
        .unwrap()
        .created_at;
    broker
        .enqueue(vec![first, message(&q, 0), later, message(&q, 0)])
        .await
        .unwrap();
    assert!(broker
        .stats(&q)
        .await
        .unwrap()
        .oldest_pending
        .is_some_and(|t| t <= created + chrono::Duration::seconds(1)));
    let held = broker
        .fetch(&WorkerId::generate(), std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(broker.purge_queue(&q).await.unwrap(), 3);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled, stats.processing),
        (0, 0, 1)
    );
    assert_eq!(stats.oldest_pending, None);
}
