//! The partitions suite: round-robin between a queue's partitions, the per-partition running
//! limit held until a message is settled or recovered, and what operators see of them. Runs
//! on brokers whose [`Transport::check_partitions`](taskq_core::Transport) accepts them.

use std::time::Duration;

use taskq_core::{DeadReason, OutboundMessage, Page, WorkerId};

use super::*;

/// A message of partition `key` (with running limit `limit`) at `priority`.
pub fn partitioned(queue: &str, key: &str, limit: Option<u32>, priority: u8) -> OutboundMessage {
    let mut envelope = envelope(queue, priority);
    envelope.partition = Some(key.to_owned());
    envelope.partition_limit = limit;
    OutboundMessage::from_envelope(&envelope, 1 << 20).unwrap()
}

/// Enqueues `count` messages of partition `key` (limit `limit`) at level 0 in one call.
async fn enqueue_partitioned(
    broker: &Shared,
    queue: &str,
    key: &str,
    limit: Option<u32>,
    count: usize,
) {
    let messages = (0..count)
        .map(|_| partitioned(queue, key, limit, 0))
        .collect();
    broker.enqueue(messages).await.unwrap();
}

/// The partition of each delivery, as the broker recorded it.
fn keys_of(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.partition().unwrap_or("-").to_owned())
        .collect()
}

/// Fetches everything of `q` in batches of `batch` by one worker, acking each batch; returns
/// the partition of each message in the order they were handed out.
async fn drain_in_batches(broker: &Shared, q: &str, batch: usize) -> Vec<String> {
    let worker = WorkerId::generate();
    let mut order = Vec::new();
    loop {
        let got = broker
            .fetch(&worker, &[q.to_owned()], batch, NO_WAIT)
            .await
            .unwrap();
        if got.is_empty() {
            return order;
        }
        order.extend(keys_of(&got));
        assert_eq!(broker.ack(&worker, &got).await.unwrap(), got.len());
    }
}

pub async fn a_small_partition_does_not_wait_for_a_large_backlog(broker: Shared) {
    let q = queue();
    enqueue_partitioned(&broker, &q, "big", None, 60).await;
    enqueue_partitioned(&broker, &q, "small", None, 5).await;
    let order = drain_in_batches(&broker, &q, 4).await;
    assert_eq!(order.len(), 65, "every message is handed out once");
    let last_small = order.iter().rposition(|k| k == "small").unwrap();
    // Turns alternate: the five small ones are out within the first three batches of four,
    // not after the sixty big ones.
    assert!(
        last_small < 12,
        "the small partition waited behind the large one: {order:?}"
    );
}

pub async fn unpartitioned_messages_take_one_turn(broker: Shared) {
    let q = queue();
    broker
        .enqueue((0..40).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    enqueue_partitioned(&broker, &q, "tenant", None, 3).await;
    let order = drain_in_batches(&broker, &q, 2).await;
    assert_eq!(order.len(), 43);
    let last = order.iter().rposition(|k| k == "tenant").unwrap();
    assert!(
        last < 8,
        "a partition waited behind the unpartitioned backlog: {order:?}"
    );
}

pub async fn priorities_still_order_partitioned_messages(broker: Shared) {
    let q = queue();
    enqueue_partitioned(&broker, &q, "low", None, 10).await;
    broker
        .enqueue(vec![partitioned(&q, "high", None, 9)])
        .await
        .unwrap();
    let first = broker
        .fetch(&WorkerId::generate(), std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(keys_of(&first), ["high"]);
}

pub async fn a_partition_at_its_limit_is_skipped_until_a_message_ends(broker: Shared) {
    let q = queue();
    let queues = [q.clone()];
    enqueue_partitioned(&broker, &q, "one", Some(1), 5).await;
    enqueue_partitioned(&broker, &q, "two", Some(2), 5).await;
    let worker = WorkerId::generate();
    let first = broker.fetch(&worker, &queues, 10, NO_WAIT).await.unwrap();
    let mut keys = keys_of(&first);
    keys.sort();
    assert_eq!(
        keys,
        ["one", "two", "two"],
        "each partition up to its limit"
    );
    let other = WorkerId::generate();
    let none = broker.fetch(&other, &queues, 10, NO_WAIT).await.unwrap();
    assert!(
        none.is_empty(),
        "limits hold across workers: {:?}",
        keys_of(&none)
    );
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.processing), (7, 3));

    // Each kind of settle frees the slot: ack, retry (due now), dead letter.
    let one = first.iter().find(|d| d.partition() == Some("one")).unwrap();
    assert_eq!(
        broker
            .ack(&worker, std::slice::from_ref(one))
            .await
            .unwrap(),
        1
    );
    let next = broker.fetch(&other, &queues, 10, NO_WAIT).await.unwrap();
    assert_eq!(keys_of(&next), ["one"]);
    let retried = partitioned(&q, "one", Some(1), 0);
    assert!(broker.retry(&other, &next[0], retried).await.unwrap());
    let again = broker.fetch(&other, &queues, 10, NO_WAIT).await.unwrap();
    assert_eq!(
        keys_of(&again),
        ["one"],
        "a retry frees its slot and waits its turn"
    );
    assert!(broker
        .dead_letter(&other, &again[0], DeadReason::Failed, None)
        .await
        .unwrap());
    let twos: Vec<_> = first
        .iter()
        .filter(|d| d.partition() == Some("two"))
        .cloned()
        .collect();
    assert_eq!(broker.requeue(&worker, &twos).await.unwrap(), 2);
    let rest = broker.fetch(&other, &queues, 10, NO_WAIT).await.unwrap();
    let mut keys = keys_of(&rest);
    keys.sort();
    assert_eq!(keys, ["one", "two", "two"]);
}

/// A fetch waiting while a partition's only ready messages wait for its slot is woken when the
/// slot frees: before, the next message of a partition with a limit of one waited for an idle
/// worker's blocked fetch to time out (about a second per message).
pub async fn a_waiting_fetch_is_woken_when_a_partition_slot_frees(broker: Shared) {
    let q = queue();
    let queues = [q.clone()];
    enqueue_partitioned(&broker, &q, "doc-3", Some(1), 2).await;
    let worker = WorkerId::generate();
    let first = broker.fetch(&worker, &queues, 2, NO_WAIT).await.unwrap();
    assert_eq!(first.len(), 1, "one slot");
    let waiting = waiting_fetch(&broker, &queues, 2);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(broker.ack(&worker, &first).await.unwrap(), 1);
    let next = woken(waiting).await;
    assert_eq!(keys_of(&next), ["doc-3"]);
}

pub async fn a_lost_workers_slots_come_back_with_its_messages(broker: Shared) {
    let q = queue();
    let queues = [q.clone()];
    enqueue_partitioned(&broker, &q, "doc-7", Some(1), 3).await;
    let lost = WorkerId::generate();
    members(&broker)
        .heartbeat(&lost, &queues, Duration::from_millis(200))
        .await
        .unwrap();
    let held = broker.fetch(&lost, &queues, 3, NO_WAIT).await.unwrap();
    assert_eq!(held.len(), 1);
    let other = WorkerId::generate();
    members(&broker)
        .heartbeat(&other, &queues, Duration::from_secs(30))
        .await
        .unwrap();
    // Not recovered yet: the slot is still the lost worker's, whatever its health.
    assert!(broker
        .fetch(&other, &queues, 3, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        broker
            .fetch(&other, &queues, 3, NO_WAIT)
            .await
            .unwrap()
            .is_empty(),
        "a lapsed lease frees nothing before it is recovered"
    );
    let report = members(&broker)
        .recover_lost_workers(&queues, 3)
        .await
        .unwrap();
    assert_eq!(report.requeued, 1);
    let after = broker.fetch(&other, &queues, 3, NO_WAIT).await.unwrap();
    assert_eq!(after.len(), 1, "one slot, back with the recovery");
    assert_eq!(ids(&after), ids(&held), "the recovered message runs next");
    assert_eq!(broker.ack(&lost, &held).await.unwrap(), 0, "fenced");
    assert!(broker
        .fetch(&other, &queues, 3, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
}

pub async fn a_due_partitioned_message_returns_to_its_partition(broker: Shared) {
    let q = queue();
    let queues = [q.clone()];
    let mut later = partitioned(&q, "acct", Some(1), 0);
    later.eta = Some(broker.clock().now() + chrono::Duration::milliseconds(100));
    broker
        .enqueue(vec![partitioned(&q, "acct", Some(1), 0), later])
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let first = broker.fetch(&worker, &queues, 5, NO_WAIT).await.unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(broker.promote_scheduled(&queues, 10).await.unwrap(), 1);
    assert!(
        broker
            .fetch(&worker, &queues, 5, NO_WAIT)
            .await
            .unwrap()
            .is_empty(),
        "the promoted message waits for its partition's slot"
    );
    broker.ack(&worker, &first).await.unwrap();
    let second = broker.fetch(&worker, &queues, 5, NO_WAIT).await.unwrap();
    assert_eq!(keys_of(&second), ["acct"]);
}

pub async fn a_requeued_dead_letter_returns_to_its_partition(broker: Shared) {
    let q = queue();
    let queues = [q.clone()];
    enqueue_partitioned(&broker, &q, "t", Some(1), 2).await;
    let worker = WorkerId::generate();
    let first = broker.fetch(&worker, &queues, 5, NO_WAIT).await.unwrap();
    broker
        .dead_letter(&worker, &first[0], DeadReason::Failed, None)
        .await
        .unwrap();
    let second = broker.fetch(&worker, &queues, 5, NO_WAIT).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(broker.requeue_dead(&q, None).await.unwrap(), 1);
    assert!(
        broker
            .fetch(&worker, &queues, 5, NO_WAIT)
            .await
            .unwrap()
            .is_empty(),
        "the requeued dead letter is back in its partition, behind its limit"
    );
    broker.ack(&worker, &second).await.unwrap();
    let third = broker.fetch(&worker, &queues, 5, NO_WAIT).await.unwrap();
    assert_eq!(ids(&third), ids(&first));
}

pub async fn operators_see_busy_partitions(broker: Shared) {
    let q = queue();
    enqueue_partitioned(&broker, &q, "a", Some(1), 4).await;
    enqueue_partitioned(&broker, &q, "b", None, 2).await;
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    let worker = WorkerId::generate();
    let held = broker
        .fetch(&worker, std::slice::from_ref(&q), 3, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(held.len(), 3, "a (limit 1), b and the unpartitioned one");
    let busy = broker.partitions(&q, 10).await.unwrap();
    let seen: Vec<_> = busy
        .iter()
        .map(|p| (p.key.as_str(), p.pending, p.running, p.limit))
        .collect();
    // Running counts are kept for partitions with a limit (their slots), not for the rest.
    assert_eq!(seen, [("a", 3, 1, Some(1)), ("b", 1, 0, None)]);
    assert_eq!(broker.stats(&q).await.unwrap().pending, 4);
    assert_eq!(broker.pending(&q, Page::first(10)).await.unwrap().len(), 4);
    broker.ack(&worker, &held).await.unwrap();
    assert_eq!(broker.purge_queue(&q).await.unwrap(), 4);
    assert!(broker.partitions(&q, 10).await.unwrap().is_empty());
    assert!(broker
        .fetch(&worker, std::slice::from_ref(&q), 10, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
}

pub async fn concurrent_fetchers_never_pass_a_partitions_limit(broker: Shared) {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    };
    let q = queue();
    for key in ["p1", "p2", "p3"] {
        enqueue_partitioned(&broker, &q, key, Some(2), 20).await;
    }
    // Per partition: messages between their fetch and their ack, and the most seen at once.
    let in_hand: Arc<Mutex<std::collections::HashMap<String, (usize, usize)>>> = Arc::default();
    let handled = Arc::new(AtomicUsize::new(0));
    let fetchers: Vec<_> = (0..6)
        .map(|_| {
            let (broker, q) = (broker.clone(), q.clone());
            let (in_hand, handled) = (in_hand.clone(), handled.clone());
            tokio::spawn(async move {
                let worker = WorkerId::generate();
                let mut idle_rounds = 0;
                while idle_rounds < 20 {
                    let got = broker
                        .fetch(&worker, std::slice::from_ref(&q), 3, NO_WAIT)
                        .await
                        .unwrap();
                    if got.is_empty() {
                        idle_rounds += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    idle_rounds = 0;
                    for key in keys_of(&got) {
                        let mut counts = in_hand.lock().unwrap();
                        let entry = counts.entry(key).or_default();
                        entry.0 += 1;
                        entry.1 = entry.1.max(entry.0);
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                    for key in keys_of(&got) {
                        in_hand.lock().unwrap().get_mut(&key).unwrap().0 -= 1;
                    }
                    handled.fetch_add(got.len(), Ordering::Relaxed);
                    assert_eq!(broker.ack(&worker, &got).await.unwrap(), got.len());
                }
            })
        })
        .collect();
    for fetcher in fetchers {
        fetcher.await.unwrap();
    }
    assert_eq!(handled.load(Ordering::Relaxed), 60, "every message once");
    let most: Vec<_> = {
        let counts = in_hand.lock().unwrap();
        let mut most: Vec<_> = counts.iter().map(|(k, (_, m))| (k.clone(), *m)).collect();
        most.sort();
        most
    };
    assert!(
        most.iter().all(|(_, m)| *m <= 2),
        "a partition ran past its limit of 2: {most:?}"
    );
}

pub async fn partitioned_messages_count_against_the_queues_bound(broker: BoundedAtFifty) {
    let q = queue();
    let spread = (0..BOUND - 10)
        .map(|i| partitioned(&q, &format!("t{}", i % 7), Some(1), 0))
        .collect();
    broker.enqueue(spread).await.unwrap();
    broker
        .enqueue((0..10).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    assert_full(
        broker
            .enqueue(vec![partitioned(&q, "t0", Some(1), 0)])
            .await,
        &q,
    );
    assert_full(broker.enqueue(vec![message(&q, 0)]).await, &q);
    assert_eq!(broker.stats(&q).await.unwrap().pending, BOUND);
    // Held messages do not count: one taken leaves room for one.
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    broker
        .enqueue(vec![partitioned(&q, "t3", Some(1), 0)])
        .await
        .unwrap();
    assert_full(broker.enqueue(vec![message(&q, 0)]).await, &q);
}
