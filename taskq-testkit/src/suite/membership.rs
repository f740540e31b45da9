//! The [`Membership`](taskq_core) suite: leases, recovery of lost workers, poison messages, deregistration, worker reports.

use std::time::Duration;

use taskq_core::{DeadReason, Page, WorkerId};

use super::*;

pub async fn lost_worker_is_recovered(broker: Shared) {
    let q = queue();
    let sent = vec![message(&q, 0), message(&q, 0)];
    let expected: Vec<_> = sent.iter().map(|m| m.id).collect();
    broker.enqueue(sent).await.unwrap();
    let lost = WorkerId::generate();
    let queues = [q.clone()];
    members(&broker)
        .heartbeat(&lost, &queues, Duration::from_millis(200))
        .await
        .unwrap();
    let held = broker.fetch(&lost, &queues, 2, NO_WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = members(&broker)
        .recover_lost_workers(&queues, 3)
        .await
        .unwrap();
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
    members(&broker)
        .heartbeat(&live, &queues, Duration::from_secs(30))
        .await
        .unwrap();
    broker.fetch(&live, &queues, 1, NO_WAIT).await.unwrap();
    let report = members(&broker)
        .recover_lost_workers(&queues, 3)
        .await
        .unwrap();
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
    members(&broker)
        .heartbeat(&lost, &queues, Duration::from_millis(100))
        .await
        .unwrap();
    broker.fetch(&lost, &queues, 20, NO_WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reapers: Vec<_> = (0..4)
        .map(|_| {
            let (broker, queues) = (broker.clone(), queues.clone());
            tokio::spawn(async move {
                members(&broker)
                    .recover_lost_workers(&queues, 3)
                    .await
                    .unwrap()
            })
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

pub async fn poison_message_is_dead_lettered(broker: Shared) {
    let q = queue();
    let sent = message(&q, 0);
    broker.enqueue(vec![sent.clone()]).await.unwrap();
    for round in 1..=3 {
        let (_, report) = lose_and_recover(&broker, &q, 2).await;
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
            assert_eq!(
                report.poisoned,
                vec![(sent.id, sent.payload.to_string())],
                "given whole, so that its waiter can be told and its workflow ended"
            );
        }
    }
    let dead = broker.dead_letters(&q, Page::first(10)).await.unwrap();
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
    members(&broker)
        .heartbeat(&worker, &queues, Duration::from_secs(30))
        .await
        .unwrap();
    broker.fetch(&worker, &queues, 2, NO_WAIT).await.unwrap();
    members(&broker).deregister(&worker, &queues).await.unwrap();
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.processing), (2, 0));
}

/// Presence is checked on a report that lives a minute and expiry on one that lives 100 ms,
/// so no assertion depends on how fast the test runs.
pub async fn recovery_is_per_queue(broker: Shared) {
    let (a, b) = (queue(), queue());
    broker
        .enqueue(vec![message(&a, 0), message(&b, 0)])
        .await
        .unwrap();
    let lost = WorkerId::generate();
    let queues = [a.clone(), b.clone()];
    members(&broker)
        .heartbeat(&lost, &queues, Duration::from_millis(200))
        .await
        .unwrap();
    let held = broker.fetch(&lost, &queues, 2, NO_WAIT).await.unwrap();
    assert_eq!(held.len(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A reaper of `a` recovers what the lost worker held from `a`, and nothing of `b`.
    let report = members(&broker)
        .recover_lost_workers(std::slice::from_ref(&a), 3)
        .await
        .unwrap();
    assert_eq!((report.workers, report.requeued), (vec![lost.clone()], 1));
    let (stats_a, stats_b) = (
        broker.stats(&a).await.unwrap(),
        broker.stats(&b).await.unwrap(),
    );
    assert_eq!((stats_a.pending, stats_b.pending), (1, 0));
    assert_eq!(stats_b.processing, 1, "b's message waits for b's reaper");
    let report = members(&broker)
        .recover_lost_workers(std::slice::from_ref(&b), 3)
        .await
        .unwrap();
    assert_eq!((report.workers, report.requeued), (vec![lost], 1));
    assert_eq!(broker.stats(&b).await.unwrap().pending, 1);
}

pub async fn a_recovered_worker_learns_it_lost_its_lease(broker: Shared) {
    let q = queue();
    let queues = [q.clone()];
    broker
        .enqueue(vec![message(&q, 0), message(&q, 0)])
        .await
        .unwrap();
    let (paused, report) = lose_and_recover(&broker, &q, 3).await;
    assert_eq!(report.workers, vec![paused.clone()]);
    // Back from its pause, the worker neither renews nor fetches under its old identity.
    let renewed = members(&broker)
        .heartbeat(&paused, &queues, Duration::from_secs(5))
        .await;
    assert!(
        matches!(renewed, Err(taskq_core::Error::LeaseLost { .. })),
        "{renewed:?}"
    );
    let fetched = broker.fetch(&paused, &queues, 10, NO_WAIT).await;
    assert!(
        matches!(fetched, Err(taskq_core::Error::LeaseLost { .. })),
        "{fetched:?}"
    );
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.processing), (2, 0), "nothing moved");
    assert!(members(&broker)
        .recover_lost_workers(&queues, 3)
        .await
        .unwrap()
        .workers
        .is_empty());
}

pub async fn a_lapsed_lease_not_yet_recovered_is_renewed(broker: Shared) {
    let q = queue();
    let queues = [q.clone()];
    let slow = WorkerId::generate();
    members(&broker)
        .heartbeat(&slow, &queues, Duration::from_millis(100))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // No reaper ran in between: the late heartbeat keeps the worker.
    members(&broker)
        .heartbeat(&slow, &queues, Duration::from_secs(30))
        .await
        .unwrap();
    let report = members(&broker)
        .recover_lost_workers(&queues, 3)
        .await
        .unwrap();
    assert!(report.workers.is_empty(), "{report:?}");
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    assert_eq!(
        broker
            .fetch(&slow, &queues, 1, NO_WAIT)
            .await
            .unwrap()
            .len(),
        1
    );
}

/// Loses one message of `q` to a worker that vanishes, then recovers it with `max` allowed
/// redeliveries; returns the vanished worker and the report.
async fn lose_and_recover(
    broker: &Shared,
    q: &str,
    max: u32,
) -> (WorkerId, taskq_core::RecoveryReport) {
    let queues = [q.to_owned()];
    let lost = WorkerId::generate();
    members(broker)
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
    let report = members(broker)
        .recover_lost_workers(&queues, max)
        .await
        .unwrap();
    (lost, report)
}

pub async fn a_requeued_dead_letter_starts_its_redelivery_count_afresh(broker: Shared) {
    let q = queue();
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    for _ in 0..2 {
        assert_eq!(lose_and_recover(&broker, &q, 2).await.1.requeued, 1);
    }
    // Recovered twice, then it fails for good and an operator requeues it.
    kill(&broker, &q, 1).await;
    assert_eq!(broker.requeue_dead(&q, None).await.unwrap(), 1);
    let (_, report) = lose_and_recover(&broker, &q, 2).await;
    assert_eq!(
        (report.requeued, report.dead_lettered),
        (1, 0),
        "the old count must not make it poison"
    );
}
