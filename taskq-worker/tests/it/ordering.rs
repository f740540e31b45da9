//! Order of execution: countdown/ETA, priorities, expiry.

use std::time::Duration;

use taskq_core::{Client, TaskState};

use crate::support::{all_tasks, assert_ended_in, builder, log, start_worker, Record};

async fn collect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.len() < n {
        seen.push(rx.recv().await.expect("log open"));
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn countdown_and_eta_run_in_due_order_never_early() {
    let client = Client::in_memory();
    let mut rx = log("due-");
    let start = client.clock().now();
    let record = |label: &str| Record {
        label: label.into(),
        ms: 0,
    };
    let late = client
        .enqueue(record("due-3s"))
        .countdown(Duration::from_secs(3))
        .await
        .unwrap();
    client
        .enqueue(record("due-1s"))
        .eta(start + chrono::Duration::seconds(1))
        .await
        .unwrap();
    client.enqueue(record("due-now")).await.unwrap();
    let worker = start_worker(all_tasks(builder(&client)).concurrency(1));
    assert_eq!(collect(&mut rx, 3).await, ["due-now", "due-1s", "due-3s"]);
    late.wait(Duration::from_secs(5)).await.unwrap();
    let ran_at = late.info().await.unwrap().unwrap().updated_at;
    assert!(
        ran_at >= start + chrono::Duration::seconds(3),
        "ran early at {ran_at}"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn higher_priority_runs_first() {
    let client = Client::in_memory();
    let mut rx = log("prio-");
    for (label, priority) in [("prio-0", 0), ("prio-9", 9), ("prio-5", 5), ("prio-9b", 9)] {
        client
            .enqueue(Record {
                label: label.into(),
                ms: 10,
            })
            .priority(priority)
            .await
            .unwrap();
    }
    let worker = start_worker(all_tasks(builder(&client)).concurrency(1));
    assert_eq!(
        collect(&mut rx, 4).await,
        ["prio-9", "prio-9b", "prio-5", "prio-0"]
    );
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn expired_task_is_not_run() {
    let client = Client::in_memory();
    let mut rx = log("expiry-");
    let stale = client
        .enqueue(Record {
            label: "expiry-stale".into(),
            ms: 0,
        })
        .countdown(Duration::from_secs(10))
        .expires_in(Duration::from_secs(5))
        .await
        .unwrap();
    let worker = start_worker(all_tasks(builder(&client)));
    assert_ended_in(
        stale.wait(Duration::from_secs(30)).await,
        TaskState::Expired,
    );
    let fresh = client
        .enqueue(Record {
            label: "expiry-fresh".into(),
            ms: 0,
        })
        .expires_in(Duration::from_secs(5))
        .await
        .unwrap();
    fresh.wait(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        collect(&mut rx, 1).await,
        ["expiry-fresh"],
        "the stale one never ran"
    );
    assert_eq!(worker.stop().await.unwrap().expired, 1);
}
