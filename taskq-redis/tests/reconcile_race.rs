//! The reconcile race, forced: an ack lands between reconciliation's two reads (what this
//! process handed out, then the processing list). Read in the other order, the acked message is
//! in the list but no longer handed out, and would be adopted and run a second time.
//!
//! A test binary of its own: the fail point is process-wide, and no other test may hit it.

use std::{sync::Arc, time::Duration};

use parking_lot::Mutex;
use taskq_core::{Delivery, Envelope, TaskId, Transport, WorkerId};
use taskq_redis::{RedisBroker, RedisConfig};
use taskq_testkit::{suite::message, RedisServer};

fn ids(deliveries: &[Delivery]) -> Vec<TaskId> {
    let mut ids: Vec<TaskId> = deliveries
        .iter()
        .map(|d| Envelope::decode(d.payload(), 1 << 20).unwrap().id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_between_the_reads_of_a_reconcile_is_not_run_again() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(
        RedisConfig::new(server.url())
            .with_block_timeout(Duration::from_millis(500))
            .with_response_timeout(Duration::from_millis(150)),
    )
    .await
    .unwrap();
    let q = format!("q-{}", uuid::Uuid::new_v4());
    let queues = [q.clone()];
    let worker = WorkerId::generate();

    // One message handed out normally: the worker is running it.
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    let running = broker
        .fetch(&worker, &queues, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(running.len(), 1);

    // Two more moved by a fetch whose reply is lost (the server paused past the timeout).
    let lost: Vec<_> = (0..2).map(|_| message(&q, 0)).collect();
    let mut lost_ids: Vec<TaskId> = lost.iter().map(|m| m.id).collect();
    lost_ids.sort();
    broker.enqueue(lost).await.unwrap();
    let admin = redis::Client::open(server.url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(600)
        .arg("ALL")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let failed = broker.fetch(&worker, &queues, 10, Duration::ZERO).await;
    assert!(
        failed.is_err(),
        "the reply should have timed out: {failed:?}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;

    // The running message finishes (is acked) exactly between the two reads.
    let acked = Arc::new(Mutex::new(None));
    let to_ack = Mutex::new(Some(running.clone()));
    {
        let (broker, worker, acked) = (broker.clone(), worker.clone(), acked.clone());
        fail::cfg_callback("reconcile-between-reads", move || {
            let Some(deliveries) = to_ack.lock().take() else {
                return;
            };
            let result = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(broker.ack(&worker, &deliveries))
            });
            *acked.lock() = Some(result);
        })
        .unwrap();
    }
    let adopted = broker
        .fetch(&worker, &queues, 10, Duration::ZERO)
        .await
        .unwrap();
    fail::remove("reconcile-between-reads");
    let acked = acked.lock().take().expect("the fail point was reached");
    assert_eq!(acked.unwrap(), 1, "the ack went through");
    assert_eq!(
        ids(&adopted),
        lost_ids,
        "only the lost fetch's messages are adopted, not the one acked meanwhile"
    );
}
