//! The keyed flow suite: debounce and throttle, each decided atomically with its enqueue, with
//! racing producers. Runs on brokers that keep per-key state (Redis, memory).

use std::time::Duration;

use taskq_core::{Client, MemoryResultBackend, Page, TaskId};

use super::*;

fn client(broker: &Shared) -> Client {
    Client::new(broker.clone(), Arc::new(MemoryResultBackend::new()))
}

async fn debounced(client: &Client, q: &str, key: &str, n: u64, window: Duration) -> TaskId {
    client
        .enqueue_by_name("suite.keyed", &serde_json::json!({ "n": n }))
        .queue(q)
        .debounce(key, window)
        .await
        .unwrap()
        .id()
}

/// Every due message of `q`, promoted and fetched: the `n` argument of each.
async fn run_due(broker: &Shared, q: &str) -> Vec<u64> {
    broker
        .promote_scheduled(&[q.to_owned()], 10_000)
        .await
        .unwrap();
    let got = broker
        .fetch(&WorkerId::generate(), &[q.to_owned()], 1_000, NO_WAIT)
        .await
        .unwrap();
    got.iter()
        .map(|d| {
            let envelope = Envelope::decode(d.payload(), 1 << 20).unwrap();
            let args: serde_json::Value = serde_json::from_str(envelope.args.get()).unwrap();
            args["n"].as_u64().unwrap()
        })
        .collect()
}

pub async fn a_debounce_keeps_one_invocation_with_the_last_arguments(broker: Shared) {
    let q = queue();
    let client = client(&broker);
    let window = Duration::from_millis(300);
    let mut ids = Vec::new();
    for n in 0..1_000 {
        ids.push(debounced(&client, &q, "doc-7", n, window).await);
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every call answers the id that will run"
    );
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (0, 1));
    assert!(
        run_due(&broker, &q).await.is_empty(),
        "not before the window"
    );
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    assert_eq!(
        run_due(&broker, &q).await,
        [999],
        "once, with the last call's arguments"
    );
    // The key is free again: the next call starts a new invocation.
    let next = debounced(&client, &q, "doc-7", 1_000, window).await;
    assert_ne!(next, ids[0]);
}

pub async fn racing_producers_debounce_into_one_invocation(broker: Shared) {
    let q = queue();
    let window = Duration::from_secs(30);
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let (client, q) = (client(&broker), q.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..500 {
                    ids.push(debounced(&client, &q, "doc-9", p * 1_000 + n, window).await);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for producer in producers {
        ids.extend(producer.await.unwrap());
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "both producers got the one id"
    );
    assert_eq!(broker.stats(&q).await.unwrap().scheduled, 1);
    let due = broker.scheduled(&q, Page::first(10)).await.unwrap();
    let held = Envelope::decode(&due[0].payload, 1 << 20).unwrap();
    assert_eq!(held.id, ids[0]);
}

pub async fn a_debounce_starts_no_later_than_its_max_wait(broker: Shared) {
    let q = queue();
    let client = client(&broker);
    let first = broker.clock().now();
    for n in 0..3 {
        client
            .enqueue_by_name("suite.keyed", &serde_json::json!({ "n": n }))
            .queue(&q)
            .debounce("doc-1", Duration::from_secs(60))
            .debounce_max_wait(Duration::from_millis(400))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let due = broker.scheduled(&q, Page::first(10)).await.unwrap();
    assert_eq!(due.len(), 1);
    let bound = first + chrono::Duration::milliseconds(400);
    assert!(
        due[0].due <= bound + chrono::Duration::milliseconds(50),
        "due {} past the max wait {bound}",
        due[0].due
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(run_due(&broker, &q).await, [2]);
}

pub async fn a_throttle_runs_at_most_once_per_window_under_a_storm(broker: Shared) {
    let q = queue();
    let window = Duration::from_millis(200);
    let storm = Duration::from_millis(1_900); // less than ten windows
    let started = tokio::time::Instant::now();
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let (client, q) = (client(&broker), q.clone());
            tokio::spawn(async move {
                let mut calls = 0u64;
                while started.elapsed() < storm {
                    client
                        .enqueue_by_name("suite.keyed", &serde_json::json!({ "n": p }))
                        .queue(&q)
                        .throttle("user-3", window)
                        .await
                        .unwrap();
                    calls += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for producer in producers {
        calls += producer.await.unwrap();
    }
    let ran = run_due(&broker, &q).await.len();
    assert!(calls > 100, "a storm: {calls} calls");
    assert!(
        (5..=10).contains(&ran),
        "{ran} runs from {calls} calls over fewer than ten windows"
    );
}

pub async fn a_throttle_keeps_the_last_extra_call_for_the_windows_end(broker: Shared) {
    let q = queue();
    let client = client(&broker);
    let window = Duration::from_millis(300);
    let call = |n: u64| {
        client
            .enqueue_by_name("suite.keyed", &serde_json::json!({ "n": n }))
            .queue(&q)
            .throttle_keep_last("user-4", window)
    };
    let first = call(0).await.unwrap().id();
    let second = call(1).await.unwrap().id();
    let third = call(2).await.unwrap().id();
    assert_ne!(first, second);
    assert_eq!(second, third, "the kept call is replaced, keeping its id");
    assert_eq!(run_due(&broker, &q).await, [0], "the first runs at once");
    tokio::time::sleep(window + Duration::from_millis(200)).await;
    assert_eq!(
        run_due(&broker, &q).await,
        [2],
        "the last extra call, at the window's end"
    );
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (0, 0));
}

pub async fn a_debounced_invocation_waits_for_its_partitions_slot(broker: Shared) {
    let q = queue();
    let queues = [q.clone()];
    let client = client(&broker);
    let window = Duration::from_millis(100);
    let running = client
        .enqueue_by_name("suite.keyed", &serde_json::json!({ "n": 0 }))
        .queue(&q)
        .partition("acct-1")
        .partition_concurrency(1)
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let held = broker.fetch(&worker, &queues, 5, NO_WAIT).await.unwrap();
    assert_eq!(ids(&held), [running.id()]);
    let debounced = client
        .enqueue_by_name("suite.keyed", &serde_json::json!({ "n": 1 }))
        .queue(&q)
        .partition("acct-1")
        .partition_concurrency(1)
        .debounce("acct-1-sync", window)
        .await
        .unwrap();
    tokio::time::sleep(window + Duration::from_millis(100)).await;
    assert_eq!(broker.promote_scheduled(&queues, 10).await.unwrap(), 1);
    assert!(
        broker
            .fetch(&worker, &queues, 5, NO_WAIT)
            .await
            .unwrap()
            .is_empty(),
        "due, but its partition's one slot is taken"
    );
    broker.ack(&worker, &held).await.unwrap();
    let next = broker.fetch(&worker, &queues, 5, NO_WAIT).await.unwrap();
    assert_eq!(ids(&next), [debounced.id()]);
    assert_eq!(next[0].partition(), Some("acct-1"));
}

pub async fn a_keyed_call_into_a_full_queue_is_refused_naming_it(broker: BoundedAtFifty) {
    let q = queue();
    broker
        .enqueue((0..BOUND).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    let client = client(&broker);
    let call = || {
        client
            .enqueue_by_name("suite.keyed", &serde_json::json!({ "n": 0 }))
            .queue(&q)
    };
    let window = Duration::from_secs(60);
    for outcome in [
        call().debounce("doc-1", window).await.map(|_| ()),
        call().throttle("user-1", window).await.map(|_| ()),
    ] {
        assert_full(outcome, &q);
    }
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled),
        (BOUND, 0),
        "nothing landed"
    );
}
