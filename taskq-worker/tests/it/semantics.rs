//! Celery-style task semantics on the memory broker with the paused clock: soft time limits,
//! manual retry delays, at-most-once, unique tasks, progress, hooks, rate limits, weighted
//! queues and terminate with a grace period.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use taskq_core::{Client, DeadReason, Run, Task, TaskContext, TaskError, TaskState};

use crate::support::{all_tasks, assert_ended_in, builder, log, report, start_worker, Record};

#[derive(Task, Serialize, Deserialize)]
#[task(name = "sem.polite", soft_timeout = "1s", timeout = "10s")]
struct Polite;

impl Run for Polite {
    type Output = String;
    async fn run(self, ctx: TaskContext) -> Result<String, TaskError> {
        tokio::select! {
            _ = ctx.cancelled() => Ok("cleaned up".into()),
            _ = tokio::time::sleep(Duration::from_secs(60)) => Ok("finished".into()),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn soft_time_limit_signals_the_task_which_can_clean_up() {
    let client = Client::in_memory();
    let worker = start_worker(builder(&client).register::<Polite>());
    let start = client.clock().now();
    let handle = client.enqueue(Polite).await.unwrap();
    assert_eq!(
        handle.wait(Duration::from_secs(30)).await.unwrap(),
        "cleaned up"
    );
    let took = handle.info().await.unwrap().unwrap().updated_at - start;
    assert!(
        took >= chrono::Duration::seconds(1) && took < chrono::Duration::seconds(2),
        "{took}"
    );
    worker.stop().await.unwrap();
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "sem.later", max_retries = 1)]
struct Later;

impl Run for Later {
    type Output = u32;
    async fn run(self, ctx: TaskContext) -> Result<u32, TaskError> {
        if ctx.attempt() == 0 {
            return Err(ctx.retry_after(Duration::from_secs(30), "not yet"));
        }
        Ok(ctx.attempt())
    }
}

#[tokio::test(start_paused = true)]
async fn manual_retry_waits_exactly_as_asked() {
    let client = Client::in_memory();
    let worker = start_worker(builder(&client).register::<Later>());
    let start = client.clock().now();
    let handle = client.enqueue(Later).await.unwrap();
    assert_eq!(handle.wait(Duration::from_secs(120)).await.unwrap(), 1);
    let took = handle.info().await.unwrap().unwrap().updated_at - start;
    assert!(
        took >= chrono::Duration::seconds(30),
        "retried after {took}"
    );
    worker.stop().await.unwrap();
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "sem.once", at_most_once, max_retries = 5)]
struct Once {
    label: String,
    fail: bool,
}

impl Run for Once {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        report(&self.label);
        tokio::time::sleep(Duration::from_secs(1)).await;
        if self.fail {
            return Err(TaskError::retryable("would normally retry"));
        }
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn at_most_once_acks_before_running_and_never_retries() {
    let client = Client::in_memory();
    let prefix = format!("once-{}", taskq_core::TaskId::new());
    let mut rx = log(&prefix);
    let worker = start_worker(builder(&client).register::<Once>());
    let ok = client
        .enqueue(Once {
            label: format!("{prefix}-ok"),
            fail: false,
        })
        .await
        .unwrap();
    rx.recv().await.unwrap();
    let stats = client.broker().stats("default").await.unwrap();
    assert_eq!(stats.processing, 0, "acknowledged before it ran");
    ok.wait(Duration::from_secs(10)).await.unwrap();

    let bad = client
        .enqueue(Once {
            label: format!("{prefix}-bad"),
            fail: true,
        })
        .await
        .unwrap();
    assert_ended_in(bad.wait(Duration::from_secs(10)).await, TaskState::Failure);
    assert_eq!(bad.info().await.unwrap().unwrap().attempts, 1, "no retry");
    let stats = client.broker().stats("default").await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled, stats.processing, stats.dead),
        (0, 0, 0, 0)
    );
    assert_eq!(worker.stop().await.unwrap().retried, 0);
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "sem.unique", unique_for = "10m")]
pub(crate) struct Unique {
    pub(crate) account: u32,
}

impl Run for Unique {
    type Output = u32;
    async fn run(self, _ctx: TaskContext) -> Result<u32, TaskError> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(self.account)
    }
}

#[tokio::test(start_paused = true)]
async fn unique_tasks_return_the_existing_id_until_it_finishes() {
    let client = Client::in_memory();
    let first = client.enqueue(Unique { account: 7 }).await.unwrap();
    let again = client.enqueue(Unique { account: 7 }).await.unwrap();
    let other = client.enqueue(Unique { account: 8 }).await.unwrap();
    assert_eq!(first.id(), again.id());
    assert_ne!(first.id(), other.id());
    let keyed = client
        .enqueue(Unique { account: 9 })
        .unique_key("account-7")
        .await
        .unwrap();
    let keyed_again = client
        .enqueue(Unique { account: 10 })
        .unique_key("account-7")
        .await
        .unwrap();
    assert_eq!(
        keyed.id(),
        keyed_again.id(),
        "a custom key decides what is a duplicate"
    );
    assert_eq!(client.broker().stats("default").await.unwrap().pending, 3);

    let worker = start_worker(builder(&client).register::<Unique>());
    assert_eq!(first.wait(Duration::from_secs(10)).await.unwrap(), 7);
    // Finished: the lock is released and a new enqueue creates a new task.
    let later = client.enqueue(Unique { account: 7 }).await.unwrap();
    assert_ne!(later.id(), first.id());
    later.wait(Duration::from_secs(10)).await.unwrap();
    worker.stop().await.unwrap();
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "sem.progress")]
struct Progress;

impl Run for Progress {
    type Output = ();
    async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        ctx.set_progress(&serde_json::json!({"done": 5, "total": 10}))
            .await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn progress_is_visible_while_running() {
    let client = Client::in_memory();
    let worker = start_worker(builder(&client).register::<Progress>());
    let handle = client.enqueue(Progress).await.unwrap();
    crate::support::eventually("progress", || async {
        handle
            .info()
            .await
            .unwrap()
            .is_some_and(|r| r.progress.is_some())
    })
    .await;
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Started);
    assert_eq!(
        record.progress,
        Some(serde_json::json!({"done": 5, "total": 10}))
    );
    handle.wait(Duration::from_secs(30)).await.unwrap();
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn hooks_see_outcomes_and_cannot_hurt_the_worker() {
    let client = Client::in_memory();
    let counts: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
    let c = counts.clone();
    let worker = start_worker(
        all_tasks(builder(&client))
            .on_success(move |_| {
                c[0].fetch_add(1, Ordering::SeqCst);
                Err("alerting is down".into())
            })
            .on_retry({
                let c = counts.clone();
                move |event| {
                    assert!(event.error.is_some());
                    c[1].fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .on_failure({
                let c = counts.clone();
                move |_| {
                    c[2].fetch_add(1, Ordering::SeqCst);
                    panic!("a hook that panics")
                }
            })
            .on_dead_letter({
                let c = counts.clone();
                move |event| {
                    assert_eq!(event.reason, Some(DeadReason::RetriesExhausted));
                    c[3].fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }),
    );
    let ok = client
        .enqueue(crate::support::Flaky { fail_times: 1 })
        .await
        .unwrap();
    ok.wait(Duration::from_secs(60)).await.unwrap();
    let bad = client
        .enqueue(crate::support::Flaky { fail_times: 10 })
        .await
        .unwrap();
    bad.wait(Duration::from_secs(600)).await.unwrap_err();
    let load = |i: usize| counts[i].load(Ordering::SeqCst);
    assert_eq!((load(0), load(1), load(2), load(3)), (1, 1 + 3, 1, 1));
    // Still working after a failing and a panicking hook.
    let again = client
        .enqueue(Record {
            label: "after-hooks".into(),
            ms: 0,
        })
        .await
        .unwrap();
    again.wait(Duration::from_secs(10)).await.unwrap();
    worker.stop().await.unwrap();
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "sem.limited", rate_limit = "2/s")]
pub(crate) struct Limited;

impl Run for Limited {
    type Output = chrono::DateTime<chrono::Utc>;
    async fn run(self, _ctx: TaskContext) -> Result<Self::Output, TaskError> {
        Ok(chrono::Utc::now())
    }
}

#[derive(Task, Serialize, Deserialize)]
#[task(
    name = "sem.per_tenant",
    partition = "tenant",
    partition_rate_limit = "2/s"
)]
pub(crate) struct PerTenant {
    tenant: String,
}

impl Run for PerTenant {
    type Output = chrono::DateTime<chrono::Utc>;
    async fn run(self, _ctx: TaskContext) -> Result<Self::Output, TaskError> {
        Ok(chrono::Utc::now())
    }
}

/// Each partition gets its own 2/s: four starts of one tenant span at least 1.5 s, and two
/// tenants run side by side (eight starts in far less than the 3.5 s one shared limit takes).
#[tokio::test(start_paused = true)]
async fn a_partition_rate_limit_spaces_each_partition_on_its_own() {
    let client = Client::in_memory();
    let tenants = ["a", "b"];
    let handles = client
        .enqueue_many((0..8).map(|n| PerTenant {
            tenant: tenants[n % 2].to_owned(),
        }))
        .await
        .unwrap();
    let worker = start_worker(builder(&client).register::<PerTenant>().concurrency(8));
    let mut starts: [Vec<chrono::DateTime<chrono::Utc>>; 2] = Default::default();
    for (n, handle) in handles.iter().enumerate() {
        handle.wait(Duration::from_secs(60)).await.unwrap();
        // The record's time follows the broker's clock, which follows tokio's paused time.
        starts[n % 2].push(handle.info().await.unwrap().unwrap().updated_at);
    }
    let mut all = Vec::new();
    for tenant in &mut starts {
        tenant.sort();
        let span = *tenant.last().unwrap() - tenant[0];
        assert!(
            span >= chrono::Duration::milliseconds(1_400),
            "4 starts of one tenant at 2/s took only {span}"
        );
        all.extend(tenant.iter().copied());
    }
    all.sort();
    let span = *all.last().unwrap() - all[0];
    assert!(
        span < chrono::Duration::milliseconds(2_500),
        "the tenants waited for each other: {span}"
    );
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rate_limit_spaces_starts_without_dropping_any() {
    let client = Client::in_memory();
    let handles = client.enqueue_many((0..6).map(|_| Limited)).await.unwrap();
    let worker = start_worker(builder(&client).register::<Limited>().concurrency(8));
    let mut started = Vec::new();
    for handle in &handles {
        handle.wait(Duration::from_secs(60)).await.unwrap();
        started.push(handle.info().await.unwrap().unwrap().updated_at);
    }
    started.sort();
    let span = *started.last().unwrap() - started[0];
    assert!(
        span >= chrono::Duration::milliseconds(2_500),
        "6 starts at 2/s took only {span}"
    );
    assert_eq!(
        worker.stop().await.unwrap().retried,
        0,
        "waiting for the limiter spends no retry"
    );
}

#[tokio::test(start_paused = true)]
async fn weighted_queues_lead_by_weight() {
    let client = Client::in_memory();
    let prefix = format!("w-{}", taskq_core::TaskId::new());
    let mut rx = log(&prefix);
    for _ in 0..6 {
        for queue in ["a", "b"] {
            let label = format!("{prefix}-{queue}");
            client
                .enqueue(Record { label, ms: 0 })
                .queue(queue)
                .await
                .unwrap();
        }
    }
    let worker = start_worker(
        all_tasks(builder(&client))
            .queue_weights([("a", 3), ("b", 1)])
            .concurrency(1)
            .prefetch(0),
    );
    let mut order = String::new();
    for _ in 0..8 {
        let label = rx.recv().await.unwrap();
        order.push_str(label.rsplit('-').next().unwrap());
    }
    assert_eq!(order, "aabaaaba");
    worker.stop().await.unwrap();
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "sem.stubborn")]
struct Stubborn {
    label: String,
}

impl Run for Stubborn {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        report(&self.label);
        // Ignores its cancellation signal: only the hard stop after the grace ends it.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn terminate_signals_then_stops_after_the_grace() {
    let client = Client::in_memory();
    let prefix = format!("stubborn-{}", taskq_core::TaskId::new());
    let mut rx = log(&prefix);
    let worker = start_worker(
        builder(&client)
            .register::<Stubborn>()
            .register::<Polite>()
            .revoke_grace(Duration::from_secs(3)),
    );
    let stubborn = client
        .enqueue(Stubborn {
            label: prefix.clone(),
        })
        .await
        .unwrap();
    rx.recv().await.unwrap();
    let revoked_at = client.clock().now();
    client.revoke(stubborn.id(), true).await.unwrap();
    assert_ended_in(
        stubborn.wait(Duration::from_secs(30)).await,
        TaskState::Revoked,
    );
    let stopped = stubborn.info().await.unwrap().unwrap().updated_at - revoked_at;
    assert!(
        stopped >= chrono::Duration::seconds(3),
        "stopped after {stopped}, before the grace"
    );

    // A task that listens stops as soon as it is told, well before the grace, and ends
    // REVOKED although it returned normally.
    let polite = client.enqueue(Polite).await.unwrap();
    crate::support::eventually("polite running", || async {
        client.broker().stats("default").await.unwrap().processing == 1
    })
    .await;
    let revoked_at = client.clock().now();
    client.revoke(polite.id(), true).await.unwrap();
    assert_ended_in(
        polite.wait(Duration::from_secs(30)).await,
        TaskState::Revoked,
    );
    let stopped = polite.info().await.unwrap().unwrap().updated_at - revoked_at;
    assert!(stopped < chrono::Duration::seconds(1), "took {stopped}");
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn at_most_once_run_stopped_by_shutdown_ends_as_failure_and_is_not_requeued() {
    let client = Client::in_memory();
    let prefix = format!("once-stop-{}", taskq_core::TaskId::new());
    let mut rx = log(&prefix);
    let worker = start_worker(
        builder(&client)
            .register::<Once>()
            .shutdown_grace(Duration::from_millis(100)),
    );
    let handle = client
        .enqueue(Once {
            label: format!("{prefix}-1"),
            fail: false,
        })
        .await
        .unwrap();
    rx.recv().await.unwrap();
    // The run takes 1 s; the grace period is 100 ms.
    let report = worker.stop().await.unwrap();
    assert_eq!((report.requeued, report.failed), (0, 1), "{report:?}");
    let stats = client.broker().stats("default").await.unwrap();
    assert_eq!((stats.pending, stats.processing), (0, 0), "not requeued");
    assert_ended_in(
        handle.wait(Duration::from_secs(1)).await,
        TaskState::Failure,
    );
    let record = handle.info().await.unwrap().unwrap();
    assert!(record.error.unwrap().contains("at-most-once"));
}

/// Runs until told to stop, then reports why (`label: reason`) and does what the docs of
/// [`taskq_core::CancelReason`] allow: it returns an error, permanent unless the soft limit
/// stopped it (a retryable one then, for the retry policy to decide).
#[derive(Task, Serialize, Deserialize)]
#[task(name = "sem.obedient", soft_timeout = "5s", max_retries = 1)]
struct Obedient {
    label: String,
    /// Run this long before looking at the signal at all (past the soft limit when > 5 s).
    work_ms: u64,
}

impl Run for Obedient {
    type Output = ();
    async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        tokio::select! {
            _ = ctx.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(self.work_ms)) => return Ok(()),
        }
        let reason = ctx.cancel_reason();
        report(&format!("{}: {reason:?}", self.label));
        Err(match reason {
            Some(taskq_core::CancelReason::SoftTimeLimit) => TaskError::retryable("out of time"),
            _ => TaskError::permanent(format!("stopped: {reason:?}")),
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_run_stopped_by_shutdown_is_requeued_whatever_it_returns() {
    let client = Client::in_memory();
    let mut rx = log("obey-shutdown");
    let worker = start_worker(
        builder(&client)
            .register::<Obedient>()
            .shutdown_grace(Duration::from_secs(30)),
    );
    let handle = client
        .enqueue(Obedient {
            label: "obey-shutdown".into(),
            work_ms: 4_000,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = worker.stop().await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), "obey-shutdown: Some(Shutdown)");
    // It returned a permanent error when told to stop: still not a failure, not a retry.
    assert_eq!((report.requeued, report.failed), (1, 0), "{report:?}");
    assert_eq!(client.broker().stats("default").await.unwrap().pending, 1);
    assert!(
        handle
            .info()
            .await
            .unwrap()
            .is_none_or(|r| !r.state.is_ready()),
        "no final state was stored"
    );
    // It runs again, as a first attempt, on the next worker.
    let next = start_worker(builder(&client).register::<Obedient>());
    handle.wait(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        handle.info().await.unwrap().unwrap().attempts,
        1,
        "the stopped run did not count"
    );
    next.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_stopped_by_revocation_ends_revoked_and_knows_why() {
    let client = Client::in_memory();
    let mut rx = log("obey-revoke");
    let worker = start_worker(builder(&client).register::<Obedient>());
    let handle = client
        .enqueue(Obedient {
            label: "obey-revoke".into(),
            work_ms: 4_000,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.revoke(handle.id(), true).await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), "obey-revoke: Some(Revoked)");
    assert_ended_in(
        handle.wait(Duration::from_secs(30)).await,
        TaskState::Revoked,
    );
    worker.stop().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_run_stopped_by_its_soft_limit_follows_its_retry_policy() {
    let client = Client::in_memory();
    let mut rx = log("obey-soft");
    let worker = start_worker(builder(&client).register::<Obedient>());
    let handle = client
        .enqueue(Obedient {
            label: "obey-soft".into(),
            work_ms: 60_000,
        })
        .await
        .unwrap();
    // Both attempts (max_retries = 1) reach the soft limit and ask for a retry.
    assert_eq!(rx.recv().await.unwrap(), "obey-soft: Some(SoftTimeLimit)");
    assert_eq!(rx.recv().await.unwrap(), "obey-soft: Some(SoftTimeLimit)");
    assert_ended_in(
        handle.wait(Duration::from_secs(120)).await,
        TaskState::Failure,
    );
    let record = handle.info().await.unwrap().unwrap();
    assert_eq!(record.attempts, 2, "retried once, as its policy says");
    worker.stop().await.unwrap();
}
