//! The [`ControlChannel`](taskq_core) suite: broadcasts reach every subscriber, revocations persist and expire.

use std::time::Duration;

use futures_util::StreamExt;
use taskq_core::TaskId;

use super::*;

/// Presence is checked on a revocation that lives a minute and expiry on one that lives
/// 100 ms, so no assertion depends on how fast the test runs.
pub async fn revocations_expire(broker: Shared) {
    let (kept, expiring) = (TaskId::new(), TaskId::new());
    broker
        .revoke(kept, false, Duration::from_secs(60))
        .await
        .unwrap();
    broker
        .revoke(expiring, false, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(broker.revoked().await.unwrap().contains(&kept));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked = broker.revoked().await.unwrap();
    assert!(revoked.contains(&kept));
    assert!(!revoked.contains(&expiring));
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
    let revoke = taskq_core::ControlMessage::Revoke {
        id,
        terminate: true,
    };
    for rx in [&mut first, &mut second] {
        // Other tests may broadcast on a shared broker meanwhile: only ours count, in order.
        let mine = tokio::time::timeout(Duration::from_secs(5), async {
            let mut mine = Vec::new();
            while mine.len() < 2 {
                match rx.next().await {
                    Some(message) if message == ping || message == revoke => mine.push(message),
                    Some(_) => {}
                    None => break,
                }
            }
            mine
        })
        .await
        .expect("both messages arrive");
        assert_eq!(mine, [ping.clone(), revoke.clone()]);
    }
}

pub async fn worker_info_expires(broker: Shared) {
    let (kept, expiring) = (WorkerId::generate(), WorkerId::generate());
    for (id, ttl) in [
        (&kept, Duration::from_secs(60)),
        (&expiring, Duration::from_millis(100)),
    ] {
        let info = taskq_core::WorkerInfo::new(
            id.as_str(),
            "suite-host",
            vec![queue()],
            4,
            broker.clock().now(),
        );
        broker.publish_worker_info(&info, ttl).await.unwrap();
    }
    let workers = broker.workers().await.unwrap();
    assert!(
        workers
            .iter()
            .any(|w| w.id == kept.as_str() && w.concurrency == 4),
        "{workers:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let workers = broker.workers().await.unwrap();
    assert!(workers.iter().any(|w| w.id == kept.as_str()), "{workers:?}");
    assert!(!workers.iter().any(|w| w.id == expiring.as_str()));
}

/// A worker that stops withdraws its record: it leaves the list at once, not when the record
/// would have expired; another worker's record stays.
pub async fn a_withdrawn_worker_leaves_the_list_at_once(broker: Shared) {
    let infos: Vec<taskq_core::WorkerInfo> = (0..2)
        .map(|_| {
            taskq_core::WorkerInfo::new(
                WorkerId::generate().as_str(),
                "suite-host",
                vec![queue()],
                2,
                broker.clock().now(),
            )
        })
        .collect();
    for info in &infos {
        broker
            .publish_worker_info(info, Duration::from_secs(60))
            .await
            .unwrap();
    }
    broker.withdraw_worker_info(&infos[0]).await.unwrap();
    // A broker that reads records from a log may see the withdrawal a moment later.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut workers = broker.workers().await.unwrap();
    while workers.iter().any(|w| w.id == infos[0].id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        workers = broker.workers().await.unwrap();
    }
    assert!(
        !workers.iter().any(|w| w.id == infos[0].id),
        "the withdrawn worker is still listed: {workers:?}"
    );
    assert!(workers.iter().any(|w| w.id == infos[1].id), "{workers:?}");
}

/// Readers at the same time (a worker refreshing its revoked set while another does, the CLI
/// and the dashboard listing workers) each see everything: a read must not hide from one
/// reader what another is reading.
pub async fn concurrent_readers_each_see_every_revocation_and_worker(broker: Shared) {
    let revoked: Vec<TaskId> = (0..30).map(|_| TaskId::new()).collect();
    for id in &revoked {
        broker
            .revoke(*id, false, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let workers: Vec<WorkerId> = (0..3).map(|_| WorkerId::generate()).collect();
    for id in &workers {
        let info = taskq_core::WorkerInfo::new(
            id.as_str(),
            "suite-host",
            vec![queue()],
            2,
            broker.clock().now(),
        );
        broker
            .publish_worker_info(&info, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let revoked_reads = futures_util::future::try_join_all((0..8).map(|_| broker.revoked())).await;
    for read in revoked_reads.unwrap() {
        let missing = revoked.iter().filter(|id| !read.contains(id)).count();
        assert_eq!(
            missing, 0,
            "a reader missed revocations another was reading"
        );
    }
    let worker_reads = futures_util::future::try_join_all((0..4).map(|_| broker.workers())).await;
    for read in worker_reads.unwrap() {
        let missing = workers
            .iter()
            .filter(|id| !read.iter().any(|w| w.id == id.as_str()))
            .count();
        assert_eq!(missing, 0, "a reader missed workers another was reading");
    }
}
