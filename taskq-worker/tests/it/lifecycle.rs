//! Worker lifecycle: graceful shutdown, recovery of a lost worker's messages, configuration.

use std::time::Duration;

use taskq_core::{Broker, Client, TaskId, WorkerId};
use taskq_worker::{Error, Worker};

use crate::support::{all_tasks, builder, log, start_worker, Record};

#[tokio::test(start_paused = true)]
async fn shutdown_finishes_in_flight_work_within_grace() {
    let client = Client::in_memory();
    let mut rx = log("grace-");
    let worker = start_worker(all_tasks(builder(&client)).shutdown_grace(Duration::from_secs(10)));
    let handle = client
        .enqueue(Record {
            label: "grace-1".into(),
            ms: 2_000,
        })
        .await
        .unwrap();
    rx.recv().await.unwrap();
    let report = worker.stop().await.unwrap();
    assert_eq!((report.succeeded, report.requeued), (1, 0));
    assert_eq!(handle.wait(Duration::ZERO).await.unwrap(), "grace-1");
}

#[tokio::test(start_paused = true)]
async fn shutdown_requeues_unstarted_and_unfinished_work() {
    let client = Client::in_memory();
    let mut rx = log("requeue-");
    let ids: Vec<TaskId> = client
        .enqueue_many((0..4).map(|i| Record {
            label: format!("requeue-{i}"),
            ms: 60_000,
        }))
        .await
        .unwrap()
        .iter()
        .map(|h| h.id())
        .collect();
    let worker = start_worker(
        all_tasks(builder(&client))
            .concurrency(1)
            .prefetch(8)
            .shutdown_grace(Duration::from_secs(1)),
    );
    assert_eq!(rx.recv().await.unwrap(), "requeue-0");
    let report = worker.stop().await.unwrap();
    assert_eq!((report.succeeded, report.requeued), (0, 4));
    let stats = client.broker().stats("default").await.unwrap();
    assert_eq!((stats.pending, stats.processing), (4, 0));
    // Back at the head, in their original order, without a retry spent.
    let again = client
        .broker()
        .fetch(
            &WorkerId::generate(),
            &["default".into()],
            10,
            Duration::ZERO,
        )
        .await
        .unwrap();
    let envelopes: Vec<_> = again
        .iter()
        .map(|d| taskq_core::Envelope::decode(d.payload(), 1 << 20).unwrap())
        .collect();
    assert_eq!(envelopes.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert!(envelopes.iter().all(|e| e.attempt == 0));
}

#[tokio::test(start_paused = true)]
async fn messages_of_a_lost_worker_are_run_by_a_live_one() {
    let client = Client::in_memory();
    let handles = client
        .enqueue_many((0..3).map(|i| Record {
            label: format!("lost-{i}"),
            ms: 0,
        }))
        .await
        .unwrap();
    // A worker that took the messages and then vanished without a trace.
    let lost = WorkerId::generate();
    let queues = ["default".to_owned()];
    let broker: &dyn Broker = client.broker().as_ref();
    broker
        .membership()
        .unwrap()
        .heartbeat(&lost, &queues, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(
        broker
            .fetch(&lost, &queues, 10, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        3
    );

    let worker = start_worker(all_tasks(builder(&client)));
    for handle in &handles {
        handle.wait(Duration::from_secs(30)).await.unwrap();
    }
    assert_eq!(worker.stop().await.unwrap().succeeded, 3);
    // The reaper noted it for operators (the dashboard's "recently lost").
    let noted = client.inspector().lost_workers().await.unwrap();
    assert_eq!(
        noted.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(),
        [lost.as_str()]
    );
}

#[test]
fn invalid_configurations_are_refused() {
    let client = Client::in_memory();
    let err = Worker::builder(client.clone()).build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid worker configuration: no tasks registered"
    );
    let err = all_tasks(Worker::builder(client.clone()))
        .concurrency(0)
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Invalid {
            what: "worker configuration",
            ..
        }
    ));
    let err = Worker::builder(client.clone())
        .register::<Record>()
        .register::<Record>()
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid task registration: task name `test.record` is registered twice"
    );
    let err = all_tasks(Worker::builder(client.clone()))
        .liveness(Duration::from_secs(5), Duration::from_secs(5))
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Invalid {
            what: "worker configuration",
            ..
        }
    ));
    let err = all_tasks(Worker::builder(client))
        .queues(["ok", "}broken"])
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid worker configuration: invalid queue: `}broken` contains '}'; use letters, digits and punctuation other than braces"
    );
}

/// A result backend that notes, at every final write, whether the message was still held:
/// the worker must store results before it acknowledges.
#[derive(Debug)]
struct HeldAtWrite {
    inner: taskq_core::MemoryResultBackend,
    broker: std::sync::Arc<dyn Broker>,
    held: std::sync::Mutex<Vec<usize>>,
}

#[async_trait::async_trait]
impl taskq_core::ResultBackend for HeldAtWrite {
    async fn store(
        &self,
        result: &taskq_core::TaskResult,
        ttl: Duration,
    ) -> taskq_core::Result<()> {
        if result.state.is_ready() {
            let processing = self.broker.stats("default").await?.processing;
            self.held.lock().unwrap().push(processing);
        }
        self.inner.store(result, ttl).await
    }

    async fn get(&self, id: TaskId) -> taskq_core::Result<Option<taskq_core::TaskResult>> {
        self.inner.get(id).await
    }

    async fn wait(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> taskq_core::Result<Option<taskq_core::TaskResult>> {
        self.inner.wait(id, timeout).await
    }
}

#[tokio::test(start_paused = true)]
async fn results_are_written_before_the_ack() {
    let broker: std::sync::Arc<dyn Broker> = std::sync::Arc::new(taskq_core::MemoryBroker::new());
    let backend = std::sync::Arc::new(HeldAtWrite {
        inner: taskq_core::MemoryResultBackend::new(),
        broker: broker.clone(),
        held: std::sync::Mutex::new(Vec::new()),
    });
    let client = Client::new(broker, backend.clone());
    let worker = start_worker(all_tasks(builder(&client)));
    for i in 0..3 {
        let handle = client
            .enqueue(Record {
                label: format!("ordered-{i}"),
                ms: 0,
            })
            .await
            .unwrap();
        handle.wait(Duration::from_secs(10)).await.unwrap();
    }
    worker.stop().await.unwrap();
    // One task at a time: at each final write the message was still in the processing set.
    assert_eq!(*backend.held.lock().unwrap(), vec![1, 1, 1]);
}

/// A result backend that is down: every write fails with a transient error.
#[derive(Debug)]
struct DownBackend;

#[async_trait::async_trait]
impl taskq_core::ResultBackend for DownBackend {
    async fn store(&self, _: &taskq_core::TaskResult, _: Duration) -> taskq_core::Result<()> {
        Err(taskq_core::Error::Timeout(Duration::from_secs(1)))
    }
    async fn get(&self, _: TaskId) -> taskq_core::Result<Option<taskq_core::TaskResult>> {
        Ok(None)
    }
    async fn wait(
        &self,
        _: TaskId,
        _: Duration,
    ) -> taskq_core::Result<Option<taskq_core::TaskResult>> {
        Ok(None)
    }
}

#[tokio::test(start_paused = true)]
async fn no_ack_without_a_written_result_and_shutdown_ends_with_the_grace_period() {
    let broker = std::sync::Arc::new(taskq_core::MemoryBroker::new());
    let client = Client::new(broker.clone(), std::sync::Arc::new(DownBackend));
    let mut rx = log("unwritten-");
    let worker = start_worker(all_tasks(builder(&client)).shutdown_grace(Duration::from_secs(5)));
    client
        .enqueue(Record {
            label: "unwritten-1".into(),
            ms: 0,
        })
        .await
        .unwrap();
    rx.recv().await.unwrap();
    // The run finished; its result cannot be written. Shutdown must end with the grace
    // period instead of waiting for the backend forever, and must not ack the message.
    let stopped = tokio::time::timeout(Duration::from_secs(60), worker.stop()).await;
    let report = stopped
        .expect("shutdown waited past its grace period")
        .unwrap();
    assert_eq!(report.succeeded, 1);
    let stats = taskq_core::Inspector::stats(broker.as_ref(), "default")
        .await
        .unwrap();
    assert_eq!(
        (stats.pending, stats.processing),
        (1, 0),
        "the unacknowledged message is given back, not lost with its result"
    );
}

#[tokio::test(start_paused = true)]
async fn a_worker_that_lost_its_lease_stops_its_runs_and_rejoins_under_a_fresh_identity() {
    let client = Client::in_memory();
    let mut labels = log("rejoin-");
    let worker = all_tasks(builder(&client)).build().unwrap();
    let first_id = worker.id().clone();
    let running = worker.start();
    let handle = client
        .enqueue(Record {
            label: "rejoin-1".into(),
            ms: 10_000,
        })
        .await
        .unwrap();
    assert_eq!(labels.recv().await.unwrap(), "rejoin-1");
    // What another worker's reaper does to a worker it presumes dead: its lease goes and its
    // messages return to the queue.
    client
        .broker()
        .membership()
        .unwrap()
        .deregister(&first_id, &["default".to_owned()])
        .await
        .unwrap();
    // The worker learns it at its next heartbeat, stops the run, rejoins, and runs the
    // message again under its new identity.
    assert_eq!(labels.recv().await.unwrap(), "rejoin-1");
    assert_eq!(
        handle.wait(Duration::from_secs(60)).await.unwrap(),
        "rejoin-1"
    );
    let record = handle.info().await.unwrap().unwrap();
    assert_ne!(record.worker.as_deref(), Some(first_id.as_str()));
    let report = running.stop().await.unwrap();
    assert_eq!((report.lease_losses, report.succeeded), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_poison_message_ends_with_a_failure_its_waiter_sees() {
    let client = Client::in_memory();
    let handle = client
        .enqueue(Record {
            label: "poison-1".into(),
            ms: 0,
        })
        .await
        .unwrap();
    crate::support::vanished_worker_holding(&client, 1).await;
    // A reaper that allows no redelivery dead-letters it as worker_lost at once.
    let worker = start_worker(all_tasks(builder(&client)).configure(|config| {
        config.max_redeliveries = 0;
    }));
    crate::support::assert_ended_in(
        handle.wait(Duration::from_secs(30)).await,
        taskq_core::TaskState::Failure,
    );
    let record = handle.info().await.unwrap().unwrap();
    assert!(
        record
            .error
            .as_deref()
            .unwrap_or_default()
            .starts_with("dead-lettered as worker_lost"),
        "{record:?}"
    );
    assert_eq!(record.task, "test.record");
    worker.stop().await.unwrap();
}
