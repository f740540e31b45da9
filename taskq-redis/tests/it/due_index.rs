//! The due index (`taskq:due`, issue 31): every path that schedules a message or shortens a
//! lease lowers its set's entry, the passes that serve a set write it again, and
//! `passes_due` names exactly the queues whose entry is due. Without it, a fleet's passes
//! would read every queue's sets; with an entry missing, a message would wait for the next
//! pass over every queue (a minute) or a lost worker for its parked lease (minutes).

use std::time::Duration;

use chrono::{DateTime, Utc};
use taskq_core::{
    Envelope, KeyedFlow, Membership, OutboundMessage, PassesDue, Transport, WorkerId,
};
use taskq_redis::RedisBroker;
use taskq_testkit::{suite::message, RedisServer};

use crate::conformance::{admin, config};

/// The due index's entry of `set`, ms.
async fn entry(server: &RedisServer, set: &str) -> Option<i64> {
    let mut admin = admin(server).await;
    redis::cmd("ZSCORE")
        .arg("taskq:due")
        .arg(set)
        .query_async::<Option<f64>>(&mut admin)
        .await
        .unwrap()
        .map(|score| score as i64)
}

/// Asserts that `queue`'s scheduled set has the entry `at` in the due index.
async fn assert_scheduled_entry(server: &RedisServer, queue: &str, at: DateTime<Utc>) {
    assert_eq!(
        entry(server, &scheduled(queue)).await,
        Some(at.timestamp_millis()),
        "{queue}'s scheduled set"
    );
}

fn scheduled(queue: &str) -> String {
    format!("taskq:{{{queue}}}:scheduled")
}

fn leases(queue: &str) -> String {
    format!("taskq:{{{queue}}}:workers")
}

fn queue() -> String {
    format!("due-{}", uuid::Uuid::new_v4())
}

/// A message of `queue` due at `eta`.
fn due_at(queue: &str, eta: DateTime<Utc>) -> OutboundMessage {
    let mut envelope = Envelope::decode(&message(queue, 0).payload, 1 << 20).unwrap();
    envelope.eta = Some(eta);
    OutboundMessage::from_envelope(&envelope, 1 << 20).unwrap()
}

fn in_ms(broker: &RedisBroker, ms: i64) -> DateTime<Utc> {
    broker.clock().now() + chrono::Duration::milliseconds(ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_that_schedules_a_message_lowers_its_due_entry() {
    let server = RedisServer::start();
    let plain = RedisBroker::connect(config(&server)).await.unwrap();
    let bounded = RedisBroker::connect(config(&server).with_max_queue_length(Some(50)))
        .await
        .unwrap();

    // A plain enqueue (one transaction) and a bounded one (enqueue.lua): the entry is the
    // earliest due time, lowered by an earlier message and kept by a later one.
    for broker in [&plain, &bounded] {
        let q = queue();
        let (later, earlier, latest) = (
            in_ms(broker, 60_000),
            in_ms(broker, 30_000),
            in_ms(broker, 90_000),
        );
        broker.enqueue(vec![due_at(&q, later)]).await.unwrap();
        assert_scheduled_entry(&server, &q, later).await;
        broker
            .enqueue(vec![due_at(&q, latest), due_at(&q, earlier)])
            .await
            .unwrap();
        assert_scheduled_entry(&server, &q, earlier).await;
    }

    // A unique enqueue (enqueue_unique.lua).
    let q = queue();
    let eta = in_ms(&plain, 45_000);
    plain
        .enqueue_unique(due_at(&q, eta), "nightly", Duration::from_secs(60))
        .await
        .unwrap();
    assert_scheduled_entry(&server, &q, eta).await;

    // A debounced call (enqueue_keyed.lua): due a window after the call.
    let q = queue();
    let before = plain.clock().now().timestamp_millis();
    let flow = KeyedFlow::Debounce {
        key: "doc-1".into(),
        window: Duration::from_secs(20),
        max_wait: None,
    };
    plain
        .enqueue_keyed(message(&q, 0), &flow, None)
        .await
        .unwrap();
    let debounced = entry(&server, &scheduled(&q)).await.expect("an entry");
    assert!(
        (before + 20_000..before + 25_000).contains(&debounced),
        "{debounced} for a call at {before}"
    );

    // A retry due later (retry.lua).
    let q = queue();
    plain.enqueue(vec![message(&q, 0)]).await.unwrap();
    let worker = WorkerId::generate();
    let got = plain
        .fetch(&worker, std::slice::from_ref(&q), 1, Duration::ZERO)
        .await
        .unwrap();
    let mut next = Envelope::decode(got[0].payload(), 1 << 20).unwrap();
    next.attempt = 1;
    let eta = in_ms(&plain, 15_000);
    next.eta = Some(eta);
    let next = OutboundMessage::from_envelope(&next, 1 << 20).unwrap();
    assert!(plain.retry(&worker, &got[0], next).await.unwrap());
    assert_scheduled_entry(&server, &q, eta).await;
}

/// A promotion pass over a queue writes its entry again: the next due time, or none once the
/// set is empty; `passes_due` names a queue only once its entry is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_due_names_a_queue_once_its_entry_is_due_and_a_pass_settles_it() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let (soon, idle) = (queue(), queue());
    let mine = vec![soon.clone(), idle.clone()];
    let first = in_ms(&broker, 300);
    let second = in_ms(&broker, 60_000);
    broker
        .enqueue(vec![due_at(&soon, first), due_at(&soon, second)])
        .await
        .unwrap();
    assert!(broker.passes_due(&mine).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let passes = broker.passes_due(&mine).await.unwrap();
    assert_eq!(passes.promote, vec![soon.clone()]);
    assert!(passes.reap.is_empty());
    // Another queue's due entry is not this worker's to serve.
    assert!(broker
        .passes_due(std::slice::from_ref(&idle))
        .await
        .unwrap()
        .is_empty());

    assert_eq!(
        broker
            .promote_scheduled(&passes.promote, 100)
            .await
            .unwrap(),
        1
    );
    assert_scheduled_entry(&server, &soon, second).await;
    assert!(broker.passes_due(&mine).await.unwrap().is_empty());
    // A pass over all (what a worker makes now and then) removes the entry of a set it
    // finds empty (emptied here as a purge would).
    let mut admin = admin(&server).await;
    redis::cmd("DEL")
        .arg(scheduled(&soon))
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    broker
        .promote_scheduled(&PassesDue::all(&mine).promote, 100)
        .await
        .unwrap();
    assert_eq!(entry(&server, &scheduled(&soon)).await, None);
}

/// A parked lease's entry is minutes ahead; a fetch that makes the lease short lowers it to
/// the short deadline, so a reaper pass comes when the worker may be lost, recovers it, and
/// removes the entry of the now empty set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_made_short_lowers_its_entry_and_the_reaper_pass_settles_it() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let q = queue();
    let queues = vec![q.clone()];
    let lost = WorkerId::generate();
    let ttl = Duration::from_millis(600);
    broker.heartbeat(&lost, &queues, ttl).await.unwrap();
    let parked = entry(&server, &leases(&q))
        .await
        .expect("a parked lease's entry");
    let now = broker.clock().now().timestamp_millis();
    assert!(parked > now + 60_000, "parked until {parked}, now {now}");

    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    let taken = broker
        .fetch(&lost, &queues, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let short = entry(&server, &leases(&q)).await.expect("an entry");
    assert!(
        short <= now + 2_000,
        "short lease's entry {short}, now {now}"
    );
    assert!(broker.passes_due(&queues).await.unwrap().is_empty());

    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let passes = broker.passes_due(&queues).await.unwrap();
    assert_eq!(passes.reap, queues);
    let report = broker.recover_lost_workers(&passes.reap, 5).await.unwrap();
    assert_eq!((report.workers, report.requeued), (vec![lost], 1));
    assert_eq!(entry(&server, &leases(&q)).await, None);
    assert!(broker.passes_due(&queues).await.unwrap().is_empty());
}
