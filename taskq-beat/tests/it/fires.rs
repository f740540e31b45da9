//! Fires on the in-memory broker with tokio's paused clock.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use taskq_beat::{fire_id, Beat, BeatStore, CatchUp, Entry, Every, MemoryBeatStore, Schedule};
use taskq_core::{Client, Envelope, WorkerId};

/// Runs a beat for `for_` of simulated time and returns the fired slots, in fetch order.
async fn run_beat(
    client: &Client,
    store: Arc<MemoryBeatStore>,
    entry: Entry,
    for_: Duration,
) -> Vec<Envelope> {
    let beat = Beat::new(client.clone(), store, vec![entry]).unwrap();
    beat.run(tokio::time::sleep(for_)).await.unwrap();
    let got = client
        .broker()
        .fetch(
            &WorkerId::generate(),
            &["default".into()],
            10_000,
            Duration::ZERO,
        )
        .await
        .unwrap();
    got.iter()
        .map(|d| Envelope::decode(d.payload(), 1 << 20).unwrap())
        .collect()
}

/// Whole seconds crossed between `start` and `start + run`: the one-second slots a beat
/// started at `start` fires while running for `run`.
fn expected_slots(start: DateTime<Utc>, run: Duration) -> u64 {
    let end = start + chrono::Duration::from_std(run).unwrap();
    (end.timestamp() - start.timestamp()) as u64
}

fn slot_of(envelope: &Envelope) -> DateTime<Utc> {
    envelope.headers["taskq-beat-slot"].parse().unwrap()
}

fn every_second() -> Every {
    Every::new(Duration::from_secs(1)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn fires_every_slot_once_with_deterministic_ids_never_early() {
    let client = Client::in_memory();
    let store = Arc::new(MemoryBeatStore::new());
    let start = client.clock().now();
    let entry = Entry::new("tick", "demo.add", every_second())
        .with_args(serde_json::json!({"a": 1, "b": 2}));
    let fired = run_beat(&client, store, entry, Duration::from_millis(5_500)).await;
    let slots: Vec<_> = fired.iter().map(slot_of).collect();
    // The first sight of the entry sets the baseline; every later slot fires.
    assert_eq!(
        slots.len() as u64,
        expected_slots(start, Duration::from_millis(5_500)),
        "{slots:?}"
    );
    for pair in slots.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(1));
    }
    for envelope in &fired {
        let slot = slot_of(envelope);
        assert_eq!(envelope.id, fire_id("tick", slot));
        assert!(
            envelope.created_at >= slot,
            "fired early: {} < {slot}",
            envelope.created_at
        );
        assert_eq!(envelope.task, "demo.add");
        assert_eq!(envelope.args.get(), r#"{"a":1,"b":2}"#);
    }
    assert!(slots[0] > start);
}

/// Pretends a previous beat last fired `missed` slots ago, then runs briefly.
async fn after_downtime(catch_up: CatchUp, missed: i64) -> Vec<DateTime<Utc>> {
    let client = Client::in_memory();
    let store = Arc::new(MemoryBeatStore::new());
    let now = client.clock().now();
    let last = every_second().last_at_or_before(now).unwrap() - chrono::Duration::seconds(missed);
    store.set_last_fire("tick", last).await.unwrap();
    let entry = Entry::new("tick", "demo.add", every_second()).with_catch_up(catch_up);
    // Long enough for the first look, short of the next slot.
    let fired = run_beat(&client, store, entry, Duration::from_millis(1)).await;
    fired.iter().map(slot_of).collect()
}

#[tokio::test(start_paused = true)]
async fn catch_up_once_fires_one_for_everything_missed() {
    assert_eq!(after_downtime(CatchUp::Once, 30).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn catch_up_skip_fires_nothing_for_missed_slots() {
    // The latest slot is the current second's; under the 2 s grace it counts as on time, so
    // make the newest missed slot older than the grace by measuring from 3 s ago.
    let client = Client::in_memory();
    let store = Arc::new(MemoryBeatStore::new());
    let now = client.clock().now();
    let every_ten = Every::new(Duration::from_secs(10)).unwrap();
    let latest = every_ten.last_at_or_before(now).unwrap();
    store
        .set_last_fire("tick", latest - chrono::Duration::seconds(60))
        .await
        .unwrap();
    // Wait until the latest slot is more than the grace late, without reaching the next one.
    let entry = Entry::new("tick", "demo.add", every_ten).with_catch_up(CatchUp::Skip);
    let beat = Beat::new(client.clone(), store.clone(), vec![entry]).unwrap();
    let late = (now - latest).to_std().unwrap();
    if late < Duration::from_secs(3) {
        tokio::time::advance(Duration::from_secs(3) - late).await;
    }
    let report = beat
        .run(tokio::time::sleep(Duration::from_millis(1)))
        .await
        .unwrap();
    assert_eq!(report.fired, 0);
    assert_eq!(
        store.last_fire("tick").await.unwrap(),
        Some(latest),
        "state moved on"
    );
}

#[tokio::test(start_paused = true)]
async fn catch_up_all_backfills_up_to_the_cap() {
    let fired = after_downtime(CatchUp::All { backfill: 4 }, 30).await;
    assert_eq!(fired.len(), 4);
    assert!(fired
        .windows(2)
        .all(|p| p[1] - p[0] == chrono::Duration::seconds(1)));
    assert_eq!(
        after_downtime(CatchUp::All { backfill: 100 }, 7)
            .await
            .len(),
        7
    );
}

#[tokio::test(start_paused = true)]
async fn a_restarted_beat_continues_where_the_last_one_stopped() {
    let client = Client::in_memory();
    let store = Arc::new(MemoryBeatStore::new());
    let entry = || Entry::new("tick", "demo.add", every_second());
    let first = run_beat(
        &client,
        store.clone(),
        entry(),
        Duration::from_millis(3_500),
    )
    .await;
    let second = run_beat(
        &client,
        store.clone(),
        entry(),
        Duration::from_millis(2_000),
    )
    .await;
    let mut slots: Vec<_> = first.iter().chain(&second).map(slot_of).collect();
    let count = slots.len();
    slots.dedup();
    assert_eq!(slots.len(), count, "no slot fired twice across the restart");
    assert!(
        slots
            .windows(2)
            .all(|p| p[1] - p[0] == chrono::Duration::seconds(1)),
        "no gap: {slots:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn two_beats_on_one_store_fire_each_slot_once() {
    let client = Client::in_memory();
    let store = Arc::new(MemoryBeatStore::new());
    let entry = || vec![Entry::new("tick", "demo.add", every_second())];
    let start = client.clock().now();
    let a = Beat::new(client.clone(), store.clone(), entry()).unwrap();
    let b = Beat::new(client.clone(), store.clone(), entry()).unwrap();
    let (ra, rb) = tokio::join!(
        a.run(tokio::time::sleep(Duration::from_millis(4_500))),
        b.run(tokio::time::sleep(Duration::from_millis(4_500)))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.terms + rb.terms, 1, "one leader");
    assert_eq!(
        ra.fired + rb.fired,
        expected_slots(start, Duration::from_millis(4_500))
    );
    assert_eq!(
        ra.already_fired + rb.already_fired,
        0,
        "the follower never fired"
    );
}

#[tokio::test(start_paused = true)]
async fn two_beats_that_both_lead_still_fire_each_slot_once() {
    // Separate stores: each beat holds "the" lock, as if the lock misbehaved. The slot's
    // uniqueness key is the second line of defence.
    let client = Client::in_memory();
    let entry = || vec![Entry::new("tick", "demo.add", every_second())];
    let start = client.clock().now();
    let a = Beat::new(client.clone(), Arc::new(MemoryBeatStore::new()), entry()).unwrap();
    let b = Beat::new(client.clone(), Arc::new(MemoryBeatStore::new()), entry()).unwrap();
    let (ra, rb) = tokio::join!(
        a.run(tokio::time::sleep(Duration::from_millis(4_500))),
        b.run(tokio::time::sleep(Duration::from_millis(4_500)))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!((ra.terms, rb.terms), (1, 1), "both lead");
    let slots = ra.fired + ra.already_fired;
    assert_eq!(rb.fired + rb.already_fired, slots, "both saw every slot");
    assert_eq!(ra.fired + rb.fired, slots, "each slot enqueued once");
    assert_eq!(
        client.broker().stats("default").await.unwrap().pending as u64,
        slots
    );
    assert_eq!(slots, expected_slots(start, Duration::from_millis(4_500)));
}

/// Fires of `reports.build`, declared by a worker with queue `reports`, priority 2 and 9
/// retries, then fetched from `queue`.
async fn fires_of_declared_task(entry: Entry, queue: &str) -> Vec<Envelope> {
    use taskq_core::{TaskDeclaration, TaskOptions};
    let client = Client::in_memory();
    let declared = TaskOptions::new()
        .with_queue("reports")
        .with_priority(2)
        .with_max_retries(9);
    client
        .broker()
        .publish_tasks(&[TaskDeclaration::new("reports.build", &declared)])
        .await
        .unwrap();
    let beat = Beat::new(
        client.clone(),
        Arc::new(MemoryBeatStore::new()),
        vec![entry],
    )
    .unwrap();
    beat.run(tokio::time::sleep(Duration::from_millis(2_500)))
        .await
        .unwrap();
    client
        .broker()
        .fetch(&WorkerId::generate(), &[queue.into()], 100, Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .map(|d| Envelope::decode(d.payload(), 1 << 20).unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn fires_take_the_task_declaration_and_the_entry_wins_over_it() {
    let plain = Entry::new("report", "reports.build", every_second());
    let fired = fires_of_declared_task(plain, "reports").await;
    assert!(!fired.is_empty(), "fires go to the declared queue");
    for envelope in &fired {
        assert_eq!((envelope.priority, envelope.max_retries), (2, Some(9)));
    }

    let routed = Entry::new("report", "reports.build", every_second())
        .with_queue("elsewhere")
        .with_priority(7);
    let fired = fires_of_declared_task(routed, "elsewhere").await;
    assert!(!fired.is_empty(), "the entry's queue wins");
    for envelope in &fired {
        assert_eq!((envelope.priority, envelope.max_retries), (7, Some(9)));
    }
}
