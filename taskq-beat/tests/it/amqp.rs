//! Three real `taskq-beat` processes coordinated by RabbitMQ alone (no Redis anywhere): the
//! leader is killed, the next one is frozen past its connection's heartbeat and thawed. No
//! slot may be enqueued twice; RabbitMQ's beat claims a slot before enqueueing it, so a
//! leader that dies between the two loses that one fire (at most once per slot), and nothing
//! else may be missing.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use taskq_core::{BeatStore, Envelope, WorkerId};
use taskq_testkit::RabbitNode;

use crate::replicas::{signal, terminate_all, BeatProcess};

/// The pid of the leader that published the newest status.
async fn leader_pid(store: &dyn BeatStore) -> u32 {
    for _ in 0..100 {
        if let Some(pid) = store
            .status()
            .await
            .unwrap()
            .and_then(|status| status.leader.split(':').nth(1)?.parse().ok())
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no beat published a status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beats_on_rabbitmq_alone_never_fire_a_slot_twice_across_failures() {
    let node = RabbitNode::start(&[]);
    let vhost = node.fresh_vhost_url();
    // A two-second heartbeat: RabbitMQ notices a frozen replica within seconds.
    let url = format!("{vhost}?heartbeat=2&results=memory");
    let schedule =
        std::env::temp_dir().join(format!("taskq-beat-{}.toml", taskq_core::TaskId::new()));
    std::fs::write(
        &schedule,
        "[[entry]]\nname = \"tick\"\ntask = \"demo.add\"\nargs = { a = 1, b = 1 }\nevery = \"1s\"\nqueue = \"beat\"\ncatch_up = \"all\"\nbackfill = 60\n",
    )
    .unwrap();
    let store = taskq::connect_beat_store(&url).await.unwrap();

    let mut beats: Vec<BeatProcess> = (0..3)
        .map(|_| BeatProcess::start(&url, &schedule))
        .collect();
    tokio::time::sleep(Duration::from_secs(4)).await;

    let first = leader_pid(store.as_ref()).await;
    assert!(
        beats.iter().any(|b| b.pid() == first),
        "the leader is one of ours"
    );
    signal(first, "KILL");
    beats.retain(|b| b.pid() != first);
    // RabbitMQ gives the token to the next consumer as soon as the connection drops.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let second = leader_pid(store.as_ref()).await;
    assert_ne!(second, first, "a replica took over from the killed leader");
    signal(second, "STOP");
    tokio::time::sleep(Duration::from_secs(10)).await;
    signal(second, "CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    terminate_all(&mut beats);

    let client = taskq::connect(&url).await.unwrap();
    let reader = WorkerId::generate();
    let mut per_slot: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    loop {
        let batch = client
            .broker()
            .fetch(&reader, &["beat".to_owned()], 500, Duration::from_secs(1))
            .await
            .unwrap();
        if batch.is_empty() {
            break;
        }
        for delivery in &batch {
            let envelope = Envelope::decode(delivery.shared_payload(), 1 << 20).unwrap();
            let slot: DateTime<Utc> = envelope.headers["taskq-beat-slot"].parse().unwrap();
            assert_eq!(envelope.id, taskq_beat::fire_id("tick", slot));
            *per_slot.entry(slot).or_default() += 1;
        }
        client.broker().ack(&reader, &batch).await.unwrap();
    }
    let doubled: Vec<_> = per_slot.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "slots enqueued twice: {doubled:?}");
    let slots: Vec<_> = per_slot.keys().copied().collect();
    assert!(
        slots.len() >= 15,
        "only {} slots fired in ~22 s",
        slots.len()
    );
    let missing: i64 = slots
        .windows(2)
        .map(|pair| (pair[1] - pair[0]).num_seconds() - 1)
        .sum();
    // Two leaders were lost; each may have claimed one slot it never enqueued.
    assert!(missing <= 2, "{missing} slots missing: {slots:?}");
    eprintln!(
        "{} slots, none enqueued twice, {missing} missing",
        slots.len()
    );
    let _ = std::fs::remove_file(schedule);
}
