//! Workers on a real Redis Cluster.

use std::{sync::OnceLock, time::Duration};

use taskq_core::TaskId;
use taskq_testkit::RedisCluster;

use crate::support::{
    assert_all_succeed, assert_named_degraded, client, never_succeeded, produce, produce_timed,
    start_worker, start_worker_noting_runs, Echo, RunLog,
};

/// The cluster shared by the tests that leave its masters alone.
fn shared() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}

/// Three queues on three different masters, two workers each listening to all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_task_on_queues_over_three_masters_succeeds() {
    let cluster = shared();
    let queues: Vec<String> = (0..3)
        .map(|i| cluster.queue_on_master(i, "spread"))
        .collect();
    let masters: std::collections::BTreeSet<u16> = queues
        .iter()
        .map(|q| cluster.master_of_slot(cluster.slot_of(&format!("{{{q}}}"))))
        .collect();
    assert_eq!(masters.len(), 3, "one queue per master");
    let client = client(&cluster.url(), false).await;
    let workers = [
        start_worker(&client, &queues),
        start_worker(&client, &queues),
    ];
    let ids = produce(&client, &queues, 300, Duration::ZERO)
        .await
        .unwrap();
    assert_all_succeed(&client, &ids, Duration::from_secs(60)).await;
    let mut succeeded = 0;
    for worker in workers {
        succeeded += worker.stop().await.unwrap().succeeded;
    }
    assert!(succeeded >= 300, "{succeeded} runs for 300 tasks");
}

/// A busy queue's slot moves to another master (MIGRATE, then `SETSLOT NODE`) while workers
/// consume it and a producer fills it: the cluster client follows `ASK` and `MOVED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_busy_queues_slot_to_another_master_loses_nothing() {
    let cluster = shared();
    let queue = cluster.queue_on_master(0, "moving");
    let slot = cluster.slot_of(&format!("{{{queue}}}"));
    let target = cluster.masters()[1];
    let client = client(&cluster.url(), false).await;
    let worker = start_worker(&client, std::slice::from_ref(&queue));
    let producer = produce(
        &client,
        std::slice::from_ref(&queue),
        400,
        Duration::from_millis(5),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::spawn_blocking(move || {
        shared().move_slot(slot, target, Duration::from_millis(20))
    })
    .await
    .unwrap();
    assert_eq!(cluster.master_of_slot(slot), target);
    let ids = producer.await.unwrap();
    assert_all_succeed(&client, &ids, Duration::from_secs(60)).await;
    worker.stop().await.unwrap();
}

/// A master is killed (SIGKILL) mid-run and its replica promoted; the killed node comes back
/// as a replica. Workers are not restarted; with durable writes no task is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_loses_nothing_with_durable_writes() {
    let mut cluster = RedisCluster::start();
    let queues: Vec<String> = (0..3)
        .map(|i| cluster.queue_on_master(i, "failover"))
        .collect();
    let victim = cluster.masters()[0];
    let client = client(&cluster.url(), true).await;
    let workers = [
        start_worker(&client, &queues),
        start_worker(&client, &queues),
    ];
    let producer = produce(&client, &queues, 600, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.kill(victim);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_for_failover(victim, Duration::from_secs(30));
        cluster.restart(victim);
        cluster.wait_until_rejoined(victim, Duration::from_secs(30));
        cluster
    })
    .await
    .unwrap();
    assert!(
        !cluster.masters().contains(&victim),
        "the replica took over"
    );
    let ids = producer.await.unwrap();
    assert_all_succeed(&client, &ids, Duration::from_secs(90)).await;
    for worker in workers {
        worker.stop().await.unwrap();
    }
}

/// Without durable writes a killed master may take the writes of its last moments with it:
/// every task lost must have been enqueued, or have run, within the documented window (one
/// second) before the kill. Counted by id; the count is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_durable_writes_losses_stay_inside_the_failover_window() {
    let mut cluster = RedisCluster::start();
    let queues: Vec<String> = (0..3)
        .map(|i| cluster.queue_on_master(i, "window"))
        .collect();
    let victim = cluster.masters()[0];
    let client = client(&cluster.url(), false).await;
    let runs = RunLog::default();
    let workers = [
        start_worker_noting_runs(&client, &queues, runs.clone()),
        start_worker_noting_runs(&client, &queues, runs.clone()),
    ];
    let producer = produce_timed(&client, &queues, 600, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.kill(victim);
    let killed_at = tokio::time::Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_for_failover(victim, Duration::from_secs(30));
        cluster
    })
    .await
    .unwrap();
    let sent = producer.await.unwrap();
    let ids: Vec<_> = sent.iter().map(|(id, _)| *id).collect();
    let lost = never_succeeded(&client, &ids, Duration::from_secs(30)).await;
    let window = Duration::from_secs(1);
    let inside = |at: Option<&tokio::time::Instant>| {
        at.is_some_and(|at| *at <= killed_at && killed_at.duration_since(*at) <= window)
    };
    let outside: Vec<_> = sent
        .iter()
        .filter(|(id, _)| lost.contains(id))
        .filter(|(id, enqueued)| !inside(Some(enqueued)) && !inside(runs.lock().unwrap().get(id)))
        .collect();
    eprintln!(
        "{} of {} tasks lost, all inside the window",
        lost.len(),
        ids.len()
    );
    assert!(outside.is_empty(), "lost outside the window: {outside:?}");
    for worker in workers {
        worker.stop().await.unwrap();
    }
    drop(cluster);
}

/// A master is killed for good (SIGKILL, never restarted) under durable writes: its replica
/// is promoted with no replica of its own, writes to that shard wait for the replicas attached
/// (none; the broker names it degraded) and every task on every shard still succeeds. Before,
/// every write to the promoted master failed `WAIT` for ever; with the degraded state kept per
/// slot instead of per master, each result key paid its own one-second `WAIT` in the worker's
/// one settle path and the run had not finished after five minutes (13 s now).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_lost_for_good_leaves_durable_writes_degraded_not_stopped() {
    let mut cluster = RedisCluster::start();
    let queues: Vec<String> = (0..3).map(|i| cluster.queue_on_master(i, "lost")).collect();
    let victim = cluster.masters()[0];
    let client = client(&cluster.url(), true).await;
    let workers = [
        start_worker(&client, &queues),
        start_worker(&client, &queues),
    ];
    let producer = produce(&client, &queues, 600, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(800)).await;
    cluster.kill(victim);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_for_failover(victim, Duration::from_secs(30));
        cluster
    })
    .await
    .unwrap();
    let ids = producer.await.unwrap();
    assert_all_succeed(&client, &ids, Duration::from_secs(90)).await;
    assert_named_degraded(&client).await;
    for worker in workers {
        worker.stop().await.unwrap();
    }
    drop(cluster);
}

/// One shard stalls: durable writes on, and the only replica of one master stopped (SIGSTOP:
/// still attached, never acknowledging), so every result write to that master fails after the
/// `WAIT` timeout. Tasks whose result key lives on the other masters are still stored and
/// acknowledged while it lasts, and the stalled ones once the replica runs again. Before, the
/// acker insisted on a batch holding a stalled result, and every completion behind it waited
/// (the healthy results were never stored: the test failed at its first assertion).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_shard_holds_only_the_results_written_there() {
    let cluster = RedisCluster::start();
    let stalled_master = cluster.masters()[0];
    let replica = cluster.replica_of(stalled_master);
    let queue = cluster.queue_on_master(1, "stall");
    let client = client(&cluster.url(), true).await;
    let worker = start_worker(&client, std::slice::from_ref(&queue));
    let warm = crate::support::enqueue_insisting(&client, &queue, 0, 0).await;
    assert_all_succeed(&client, &[warm], Duration::from_secs(20)).await;

    let on_stalled = |id: &TaskId| {
        cluster.master_of_slot(cluster.slot_of(&format!("taskq:result:{id}"))) == stalled_master
    };
    let (mut stalled, mut healthy) = (Vec::new(), Vec::new());
    while stalled.len() < 3 || healthy.len() < 3 {
        let id = TaskId::new();
        match on_stalled(&id) {
            true if stalled.len() < 3 => stalled.push(id),
            false if healthy.len() < 3 => healthy.push(id),
            _ => {}
        }
    }
    cluster.pause(replica);
    // The stalled ones first: they run first and finish first, ahead of the healthy ones.
    for (n, id) in stalled.iter().chain(&healthy).enumerate() {
        client
            .enqueue(Echo {
                n: n as u64,
                ms: 300,
            })
            .queue(&queue)
            .id(*id)
            .await
            .expect("the queue's master is healthy");
    }
    // The healthy ones are stored and acknowledged while the stall lasts; the stalled ones
    // (written on their master, not replicated) stay unacknowledged in the worker's hands.
    assert_all_succeed(&client, &healthy, Duration::from_secs(15)).await;
    let in_hand = |wanted: usize| {
        let (client, queue) = (client.clone(), queue.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                let processing = client.broker().stats(&queue).await.unwrap().processing;
                if processing == wanted {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{processing} messages in the worker's hands, not {wanted}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    in_hand(3).await;
    cluster.resume(replica);
    assert_all_succeed(&client, &stalled, Duration::from_secs(30)).await;
    in_hand(0).await;
    worker.stop().await.unwrap();
}
