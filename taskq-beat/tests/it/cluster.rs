//! Two real `taskq-beat` processes on a Redis Cluster (3 masters + 3 replicas): the leader
//! lock and the last fires live on other masters than the queue; the leader is killed once.
//! Every one-second slot must be enqueued exactly once (ids counted), with none missing.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use taskq_core::{Envelope, WorkerId};
use taskq_testkit::RedisCluster;

use crate::replicas::{signal, terminate_all, BeatProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_beats_on_a_cluster_fire_every_slot_exactly_once() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let queue = format!("beat-{}", uuid::Uuid::new_v4().simple());
    let schedule =
        std::env::temp_dir().join(format!("taskq-beat-{}.toml", taskq_core::TaskId::new()));
    std::fs::write(
        &schedule,
        format!("[[entry]]\nname = \"tick\"\ntask = \"demo.add\"\nargs = {{ a = 1, b = 1 }}\nevery = \"1s\"\nqueue = \"{queue}\"\ncatch_up = \"all\"\nbackfill = 30\n"),
    )
    .unwrap();
    let client = taskq_redis::client(taskq_redis::RedisConfig::new(&url))
        .await
        .unwrap();

    let mut beats: Vec<BeatProcess> = (0..2)
        .map(|_| BeatProcess::start(&url, &schedule))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Kill one of them (the leader or not: the survivor must cover every slot either way).
    let victim = beats.remove(0);
    signal(victim.pid(), "KILL");
    drop(victim);
    tokio::time::sleep(Duration::from_secs(5)).await;
    terminate_all(&mut beats);

    let fired = client
        .broker()
        .fetch(
            &WorkerId::generate(),
            std::slice::from_ref(&queue),
            1000,
            Duration::ZERO,
        )
        .await
        .unwrap();
    let mut per_slot: BTreeMap<DateTime<Utc>, Vec<taskq_core::TaskId>> = BTreeMap::new();
    for delivery in &fired {
        let envelope = Envelope::decode(delivery.payload(), 1 << 20).unwrap();
        let slot: DateTime<Utc> = envelope.headers["taskq-beat-slot"].parse().unwrap();
        assert_eq!(envelope.id, taskq_beat::fire_id("tick", slot));
        per_slot.entry(slot).or_default().push(envelope.id);
    }
    let doubled: Vec<_> = per_slot.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(doubled.is_empty(), "slots enqueued twice: {doubled:?}");
    let slots: Vec<_> = per_slot.keys().copied().collect();
    assert!(slots.len() >= 6, "only {} slots fired in ~8 s", slots.len());
    let gaps: Vec<_> = slots
        .windows(2)
        .filter(|pair| pair[1] - pair[0] != chrono::Duration::seconds(1))
        .collect();
    assert!(gaps.is_empty(), "missed slots between {gaps:?}");
    let _ = std::fs::remove_file(schedule);
}
