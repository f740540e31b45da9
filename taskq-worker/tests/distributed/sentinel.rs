//! Workers on a master found through Sentinel.

use std::time::Duration;

use taskq_testkit::SentinelGroup;

use crate::support::{
    assert_all_succeed, assert_named_degraded, client, enqueue_insisting, produce, start_worker,
};

/// The master is killed mid-run; the sentinels promote the replica and clients move to it by
/// themselves (no restart). With durable writes no task is lost; the workers' first fetch on
/// the new master comes within seconds of the promotion. The promoted master has no replica
/// until the old one rejoins, so writes there wait for none (degraded): a judgement made on
/// the wrong server (a `WAIT` the client gave up on, a count read after the connection moved)
/// lost 1-2 of 400 tasks in 2 of 5 runs of this test under load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_follow_a_sentinel_failover_and_lose_nothing_with_durable_writes() {
    let mut group = SentinelGroup::start();
    let queues = vec![format!("sentinel-{}", uuid::Uuid::new_v4())];
    let client = client(&group.url(), true).await;
    let workers = [
        start_worker(&client, &queues),
        start_worker(&client, &queues),
    ];
    let producer = produce(&client, &queues, 400, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let old = group.master_port();
    group.kill_master();
    let killed_at = tokio::time::Instant::now();
    let group = tokio::task::spawn_blocking(move || {
        group.wait_for_new_master(old, Duration::from_secs(30));
        eprintln!("new master after {:?}", killed_at.elapsed());
        group.restart_old_master(old);
        eprintln!("old master rejoined after {:?}", killed_at.elapsed());
        group
    })
    .await
    .unwrap();
    // A task sent once the sentinels named the new master runs within the bound.
    let probe = enqueue_insisting(&client, &queues[0], u64::MAX, 0).await;
    assert_all_succeed(&client, &[probe], Duration::from_secs(20)).await;
    let resumed = killed_at.elapsed();
    eprintln!("workers resumed {resumed:?} after the master was killed");
    assert!(
        resumed < Duration::from_secs(20),
        "resumed after {resumed:?}"
    );
    let ids = producer.await.unwrap();
    assert_all_succeed(&client, &ids, Duration::from_secs(90)).await;
    for worker in workers {
        worker.stop().await.unwrap();
    }
    drop(group);
}

/// Without durable writes nothing waits for the old master to come back: a task sent once
/// the sentinels named the new master runs within seconds (the bound in docs/cluster.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_resume_within_seconds_of_a_sentinel_promotion() {
    let group = SentinelGroup::start();
    let queues = vec![format!("sentinel-{}", uuid::Uuid::new_v4())];
    let client = client(&group.url(), false).await;
    let worker = start_worker(&client, &queues);
    let warm = enqueue_insisting(&client, &queues[0], 0, 0).await;
    assert_all_succeed(&client, &[warm], Duration::from_secs(10)).await;
    let group = fail_over(group).await;
    let promoted_at = tokio::time::Instant::now();
    let probe = enqueue_insisting(&client, &queues[0], 1, 0).await;
    assert_all_succeed(&client, &[probe], Duration::from_secs(10)).await;
    eprintln!(
        "a task sent after the promotion succeeded {:?} later",
        promoted_at.elapsed()
    );
    worker.stop().await.unwrap();
    drop(group);
}

/// Durable writes and a master lost for good: the sentinels promote the only replica, which
/// has no replica of its own, and the old master never returns. Writes then wait for the
/// replicas attached (none; a warning says durable writes are degraded) instead of failing
/// `WAIT` for ever: every task still succeeds. Before, every result write and enqueue failed
/// from the promotion on and the workers stopped completing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_go_on_when_the_master_is_lost_for_good() {
    let group = SentinelGroup::start();
    let queues = vec![format!("sentinel-{}", uuid::Uuid::new_v4())];
    let client = client(&group.url(), true).await;
    let workers = [
        start_worker(&client, &queues),
        start_worker(&client, &queues),
    ];
    let producer = produce(&client, &queues, 400, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let group = fail_over(group).await;
    let ids = producer
        .await
        .expect("every enqueue landed on the promoted master");
    assert_all_succeed(&client, &ids, Duration::from_secs(60)).await;
    assert_named_degraded(&client).await;
    for worker in workers {
        worker.stop().await.unwrap();
    }
    drop(group);
}

/// Durable writes from many producers at once on a promoted master without a replica: the
/// first write's `WAIT` finds none attached and the rest stop waiting. Before, a judgement was
/// voided by any call that timed out on the shared connection, and the `WAIT`s queued there
/// (each its full timeout) made such timeouts: every voided judgement brought more `WAIT`s,
/// and nothing landed for minutes (workers held 80 tasks so in a run of the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_durable_writers_on_a_master_without_replicas_are_not_stalled_by_their_waits() {
    let group = SentinelGroup::start();
    let queue = format!("sentinel-{}", uuid::Uuid::new_v4());
    let client = client(&group.url(), true).await;
    let group = fail_over(group).await;
    let writers: Vec<_> = (0..64)
        .map(|n| {
            let (client, queue) = (client.clone(), queue.clone());
            tokio::spawn(async move { enqueue_insisting(&client, &queue, n, 0).await })
        })
        .collect();
    for writer in writers {
        writer.await.expect("every enqueue landed");
    }
    assert_named_degraded(&client).await;
    drop(group);
}

/// Kills the master and gives the group back once the sentinels have promoted a replica.
async fn fail_over(mut group: SentinelGroup) -> SentinelGroup {
    let old = group.master_port();
    group.kill_master();
    tokio::task::spawn_blocking(move || {
        group.wait_for_new_master(old, Duration::from_secs(30));
        group
    })
    .await
    .unwrap()
}
