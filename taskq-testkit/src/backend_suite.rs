//! Result backend behaviour every implementation must show, written once.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use taskq_core::{ResultBackend, TaskId, TaskResult, TaskState};

pub type Shared = Arc<dyn ResultBackend>;

const DAY: Duration = Duration::from_secs(86_400);

fn success(id: TaskId, value: serde_json::Value) -> TaskResult {
    TaskResult::new(id, "suite.task", TaskState::Success, Utc::now())
        .with_result(serde_json::value::to_raw_value(&value).unwrap())
        .with_attempts(1)
}

pub async fn unknown_id_is_none(backend: Shared) {
    assert!(backend.get(TaskId::new()).await.unwrap().is_none());
}

pub async fn stored_record_round_trips(backend: Shared) {
    let id = TaskId::new();
    let failed = TaskResult::new(id, "suite.task", TaskState::Failure, Utc::now())
        .with_error("boom")
        .with_attempts(4)
        .with_worker("w1");
    backend.store(&failed, DAY).await.unwrap();
    let got = backend.get(id).await.unwrap().unwrap();
    assert_eq!(got.state, TaskState::Failure);
    assert_eq!(got.error.as_deref(), Some("boom"));
    assert_eq!(got.attempts, 4);
    assert_eq!(got.worker.as_deref(), Some("w1"));
    assert_eq!(got.task, "suite.task");

    let id = TaskId::new();
    backend
        .store(&success(id, serde_json::json!({"x": [1, 2]})), DAY)
        .await
        .unwrap();
    let got = backend.get(id).await.unwrap().unwrap();
    assert_eq!(got.result.unwrap().get(), r#"{"x":[1,2]}"#);
}

pub async fn later_write_replaces_earlier(backend: Shared) {
    let id = TaskId::new();
    let retry = TaskResult::new(id, "suite.task", TaskState::Retry, Utc::now()).with_error("once");
    backend.store(&retry, DAY).await.unwrap();
    backend
        .store(&success(id, serde_json::json!(7)), DAY)
        .await
        .unwrap();
    assert_eq!(
        backend.get(id).await.unwrap().unwrap().state,
        TaskState::Success
    );
}

pub async fn wait_is_woken_by_the_write(backend: Shared) {
    let id = TaskId::new();
    let waiter = waiting(&backend, id).await;
    let started = TaskResult::new(id, "suite.task", TaskState::Started, Utc::now());
    backend.store(&started, DAY).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    backend
        .store(&success(id, serde_json::json!("done")), DAY)
        .await
        .unwrap();
    assert_eq!(woken(waiter).await.state, TaskState::Success);
}

/// A waiter on `id`, given a moment to subscribe.
async fn waiting(backend: &Shared, id: TaskId) -> tokio::task::JoinHandle<Option<TaskResult>> {
    let waiter = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.wait(id, Duration::from_secs(30)).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    waiter
}

/// What `waiter` returned, which must come from a write rather than its 30 s timeout.
async fn woken(waiter: tokio::task::JoinHandle<Option<TaskResult>>) -> TaskResult {
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("a waiter must wake on the write, not at its timeout")
        .unwrap()
        .expect("a record")
}

/// A backend may hand the record to waiters with its announcement (Redis does, up to 8 KiB)
/// and have them read larger ones: both arrive whole.
pub async fn waiters_get_small_and_large_results_whole(backend: Shared) {
    for size in [10, 100_000] {
        let id = TaskId::new();
        let waiter = waiting(&backend, id).await;
        let value = "x".repeat(size);
        backend
            .store(&success(id, serde_json::json!(value)), DAY)
            .await
            .unwrap();
        let got = woken(waiter).await;
        assert_eq!(got.id, id);
        assert_eq!(got.state, TaskState::Success);
        let output: String = serde_json::from_str(got.result.unwrap().get()).unwrap();
        assert_eq!(output.len(), size);
    }
}

pub async fn wait_returns_latest_on_timeout(backend: Shared) {
    let id = TaskId::new();
    assert!(backend
        .wait(id, Duration::from_millis(100))
        .await
        .unwrap()
        .is_none());
    let started = TaskResult::new(id, "suite.task", TaskState::Started, Utc::now());
    backend.store(&started, DAY).await.unwrap();
    let got = backend
        .wait(id, Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.state, TaskState::Started);
}

pub async fn many_waiters_on_many_ids(backend: Shared) {
    let ids: Vec<TaskId> = (0..500).map(|_| TaskId::new()).collect();
    let waiters: Vec<_> = ids
        .iter()
        .map(|&id| {
            let backend = backend.clone();
            tokio::spawn(async move { backend.wait(id, Duration::from_secs(30)).await.unwrap() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let records: Vec<_> = ids
        .iter()
        .map(|&id| success(id, serde_json::json!(1)))
        .collect();
    backend.store_many(&records, DAY).await.unwrap();
    for waiter in waiters {
        let got = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("every waiter wakes")
            .unwrap();
        assert_eq!(got.unwrap().state, TaskState::Success);
    }
}

pub async fn records_expire_after_ttl(backend: Shared) {
    let id = TaskId::new();
    let record = success(id, serde_json::json!(1));
    backend
        .store(&record, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(backend.get(id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(backend.get(id).await.unwrap().is_none());
}

/// Results are monotonic: a late write of a worker presumed dead (RETRY, STARTED, FAILURE)
/// never replaces the SUCCESS of the copy that ran elsewhere; a final state is replaced only by
/// a final state (a requeued dead letter ends again).
pub async fn final_states_are_never_undone(backend: Shared) {
    let id = TaskId::new();
    backend
        .store(&success(id, serde_json::json!(1)), DAY)
        .await
        .unwrap();
    for late in [TaskState::Retry, TaskState::Started, TaskState::Failure] {
        let record = TaskResult::new(id, "suite.task", late, Utc::now()).with_error("late");
        backend.store(&record, DAY).await.unwrap();
        let kept = backend.get(id).await.unwrap().unwrap();
        assert_eq!(kept.state, TaskState::Success, "{late} replaced SUCCESS");
    }
    let other = TaskId::new();
    let failure = TaskResult::new(other, "suite.task", TaskState::Failure, Utc::now());
    backend.store(&failure, DAY).await.unwrap();
    let retry = TaskResult::new(other, "suite.task", TaskState::Retry, Utc::now());
    backend.store_many(&[retry], DAY).await.unwrap();
    assert_eq!(
        backend.get(other).await.unwrap().unwrap().state,
        TaskState::Failure
    );
    backend
        .store_many(&[success(other, serde_json::json!(2))], DAY)
        .await
        .unwrap();
    assert_eq!(
        backend.get(other).await.unwrap().unwrap().state,
        TaskState::Success
    );
}
