//! Exactly once per slot with real workers running: a worker that finishes a fired task must
//! not make its slot fireable again (the slot marker outlives the task).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use taskq::Worker;
use taskq_beat::{fire_id, Beat, BeatStore, CatchUp, Entry, Every, MemoryBeatStore};
use taskq_core::{Run, Task, TaskContext, TaskError, TaskId};
use taskq_testkit::RedisServer;

/// Runs of each fired task id.
static RUNS: Mutex<BTreeMap<TaskId, u32>> = Mutex::new(BTreeMap::new());

/// Counts its runs by task id.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "beat.count_runs")]
struct CountRuns {}

impl Run for CountRuns {
    type Output = ();
    async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        *RUNS.lock().unwrap().entry(ctx.id()).or_default() += 1;
        Ok(())
    }
}

fn runs_of(ids: &[TaskId]) -> Vec<u32> {
    let runs = RUNS.lock().unwrap();
    ids.iter()
        .map(|id| runs.get(id).copied().unwrap_or(0))
        .collect()
}

/// Waits until every id ran at least once.
async fn all_ran(ids: &[TaskId]) {
    for _ in 0..200 {
        if runs_of(ids).iter().all(|runs| *runs > 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not every fire ran: {:?}", runs_of(ids));
}

/// A beat fires, a worker runs and finishes each fire, then a second beat plans the same slots
/// again: the state a leader that died between the fire and recording it leaves behind (or a
/// second leader that lagged). Each slot must run once, not once per plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_replanned_after_its_task_ran_does_not_fire_again() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let queue = format!("beat-{}", uuid::Uuid::new_v4().simple());
    let worker = Worker::builder(client.clone())
        .register::<CountRuns>()
        .queues([queue.clone()])
        .build()
        .unwrap();
    let running = worker.start();

    let every_second = Every::new(Duration::from_secs(1)).unwrap();
    let entry = || {
        Entry::new("tick", "beat.count_runs", every_second)
            .with_queue(queue.clone())
            .with_catch_up(CatchUp::All { backfill: 100 })
    };
    let store = Arc::new(MemoryBeatStore::new());
    let first = Beat::new(client.clone(), store.clone(), vec![entry()]).unwrap();
    let report = first
        .run(tokio::time::sleep(Duration::from_millis(3_500)))
        .await
        .unwrap();
    assert!(report.fired >= 2, "{report:?}");
    let last = store.last_fire("tick").await.unwrap().unwrap();
    let slots: Vec<_> = (0..report.fired as i64)
        .map(|back| last - chrono::Duration::seconds(back))
        .collect();
    let ids: Vec<_> = slots.iter().map(|slot| fire_id("tick", *slot)).collect();
    all_ran(&ids).await;

    let rewound = Arc::new(MemoryBeatStore::new());
    let before_first = *slots.last().unwrap() - chrono::Duration::seconds(1);
    rewound.set_last_fire("tick", before_first).await.unwrap();
    let second = Beat::new(client.clone(), rewound, vec![entry()]).unwrap();
    let replanned = second
        .run(tokio::time::sleep(Duration::from_millis(300)))
        .await
        .unwrap();
    assert!(
        replanned.already_fired >= report.fired,
        "the replanned slots were fired again: {replanned:?}"
    );
    // Let the worker take whatever the second beat may have enqueued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await.unwrap();
    assert_eq!(runs_of(&ids), vec![1; ids.len()], "each slot ran once");
}
