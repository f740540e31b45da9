//! The conformance suites on Redis, each test against its own real redis-server, plus what
//! only a networked broker must survive: server restarts, lost replies, bad URLs.

use std::{sync::Arc, time::Duration};

use taskq_core::{Broker, Error, Inspector, Membership, ResultBackend, Transport, WorkerId};
use taskq_redis::{RedisBroker, RedisConfig, RedisResultBackend};
use taskq_testkit::{suite::message, RedisServer};

pub(crate) fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig::new(server.url())
        .with_block_timeout(Duration::from_millis(500))
        .with_result_poll_interval(Duration::from_millis(200))
}

async fn redis_broker() -> (Arc<dyn Broker>, RedisServer) {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server))
        .await
        .expect("connect");
    (Arc::new(broker), server)
}

async fn capped_redis_broker() -> (Arc<dyn Broker>, RedisServer) {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(
        config(&server)
            .with_max_dead_letters(2)
            .with_max_dead_letter_bytes(taskq_testkit::suite::inspector::CAPPED_DEAD_BYTES),
    )
    .await
    .expect("connect");
    (Arc::new(broker), server)
}

async fn bounded_redis_broker() -> (Arc<dyn Broker>, RedisServer) {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server).with_max_queue_length(Some(50)))
        .await
        .expect("connect");
    (Arc::new(broker), server)
}

async fn redis_backend() -> (Arc<dyn ResultBackend>, RedisServer) {
    let server = RedisServer::start();
    // No polling fallback within any test's time: a waiter is woken by pub/sub or not at all,
    // so `wait_is_woken_by_the_write` fails when the wake-up is broken.
    let config = config(&server).with_result_poll_interval(Duration::from_secs(3600));
    let backend = RedisResultBackend::connect(config).await.expect("connect");
    (Arc::new(backend), server)
}

taskq_testkit::transport_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] transport => redis_broker(), bounded_at_fifty => bounded_redis_broker());
taskq_testkit::membership_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] membership => redis_broker());
taskq_testkit::control_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] control => redis_broker());
taskq_testkit::inspector_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] inspector => redis_broker(), capped => capped_redis_broker());
taskq_testkit::catalog_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] catalog => redis_broker());
taskq_testkit::partitions_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] partitions => redis_broker(), bounded_at_fifty => bounded_redis_broker());
taskq_testkit::keyed_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] keyed => redis_broker(), bounded_at_fifty => bounded_redis_broker());
taskq_testkit::backend_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] backend => redis_backend());

#[tokio::test]
async fn unreachable_server_is_a_clear_error() {
    let port = {
        let server = RedisServer::start();
        server.port()
    };
    let err = RedisBroker::connect(RedisConfig::new(format!("redis://127.0.0.1:{port}")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Broker { .. }), "{err:?}");
    assert!(err.is_transient());
    // What `fn main() -> taskq::Result<()>` prints: one line naming the place and the fix.
    let printed = format!("{err:?}");
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert!(
        printed.contains(&format!(
            "cannot reach Redis at redis://127.0.0.1:{port} (is Redis running there?)"
        )),
        "{printed}"
    );
    let err = RedisBroker::connect(RedisConfig::new("http://nope"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Invalid {
                what: "redis url",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn broker_resumes_after_the_server_restarts() {
    let mut server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let q = format!("q-{}", uuid::Uuid::new_v4());
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    server.kill();
    let err = broker.enqueue(vec![message(&q, 0)]).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    server.restart();
    // The connection manager reconnects by itself; allow it a few attempts.
    let mut resumed = false;
    for _ in 0..50 {
        if broker.enqueue(vec![message(&q, 0)]).await.is_ok() {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "broker did not resume after redis came back");
    let got = broker
        .fetch(&WorkerId::generate(), &[q], 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        got.len(),
        1,
        "data before the restart is gone (no persistence in tests)"
    );
}

/// Waiters hear of results on one subscriber connection per backend; a restart of the server
/// closes it, and it is opened again with their subscriptions: a result written after the
/// restart wakes a waiter that started before it, though its polling fallback is an hour away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_hears_of_a_result_written_after_the_server_restarts() {
    use chrono::Utc;
    use taskq_core::{TaskId, TaskResult, TaskState};
    let mut server = RedisServer::start();
    let config = config(&server).with_result_poll_interval(Duration::from_secs(3600));
    let backend = RedisResultBackend::connect(config).await.unwrap();
    let id = TaskId::new();
    let waiter = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.wait(id, Duration::from_secs(600)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kill();
    server.restart();
    let record = TaskResult::new(id, "restart.task", TaskState::Success, Utc::now());
    let mut stored = false;
    for _ in 0..100 {
        if backend
            .store(&record, Duration::from_secs(60))
            .await
            .is_ok()
        {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(stored, "the backend did not resume after redis came back");
    let woken = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the waiter must hear of the result, not wait for its poll")
        .unwrap()
        .unwrap()
        .expect("a record");
    assert_eq!(woken.state, TaskState::Success);
}

#[tokio::test]
async fn durability_warnings_name_the_risky_settings() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let warnings = broker.durability_warnings().await.unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("appendonly")),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("maxmemory-policy")),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn messages_of_a_fetch_whose_reply_was_lost_are_adopted() {
    let server = RedisServer::start();
    let broker =
        RedisBroker::connect(config(&server).with_response_timeout(Duration::from_millis(150)))
            .await
            .unwrap();
    let q = format!("q-{}", uuid::Uuid::new_v4());
    let sent: Vec<_> = (0..3).map(|_| message(&q, 0)).collect();
    let mut expected: Vec<_> = sent.iter().map(|m| m.id).collect();
    broker.enqueue(sent).await.unwrap();

    // Load the fetch script first: a paused EVALSHA of an unknown script would fail, not run.
    let worker = WorkerId::generate();
    let queues = [q.clone()];
    broker
        .fetch(&worker, &["warm-up".to_owned()], 1, Duration::ZERO)
        .await
        .unwrap();

    // Pause the server so that the fetch times out on our side but still runs afterwards.
    let mut admin = admin(&server).await;
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(600)
        .arg("ALL")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let lost = broker.fetch(&worker, &queues, 10, Duration::ZERO).await;
    assert!(lost.is_err(), "the reply should have timed out: {lost:?}");
    tokio::time::sleep(Duration::from_millis(800)).await;

    let adopted = broker
        .fetch(&worker, &queues, 10, Duration::ZERO)
        .await
        .unwrap();
    let mut got: Vec<_> = adopted
        .iter()
        .map(|d| {
            taskq_core::Envelope::decode(d.payload(), 1 << 20)
                .unwrap()
                .id
        })
        .collect();
    got.sort();
    expected.sort();
    assert_eq!(
        got, expected,
        "every message moved by the lost fetch is handed out"
    );
    assert_eq!(broker.ack(&worker, &adopted).await.unwrap(), 3);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.processing), (0, 0));
}

#[tokio::test]
async fn acl_user_and_password_in_the_url() {
    let server = RedisServer::start();
    let mut admin = admin(&server).await;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("taskq")
        .arg("on")
        .arg(">s3cret")
        .arg("~taskq:*")
        .arg("&*")
        .arg("+@all")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://taskq:s3cret@127.0.0.1:{}", server.port());
    let broker = RedisBroker::connect(RedisConfig::new(&url)).await.unwrap();
    broker.enqueue(vec![message("acl", 0)]).await.unwrap();
    assert_eq!(broker.stats("acl").await.unwrap().pending, 1);

    let wrong = format!("redis://taskq:wrong@127.0.0.1:{}", server.port());
    let err = RedisBroker::connect(RedisConfig::new(&wrong))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Broker { .. }), "{err:?}");
}

/// A fresh queue on its own server, `taken` of its `enqueued` messages held by a worker whose
/// lease lasts `ttl`, and an admin connection to tamper with it.
struct Held {
    server: RedisServer,
    broker: RedisBroker,
    q: String,
    queues: [String; 1],
    worker: WorkerId,
    held: Vec<taskq_core::Delivery>,
    conn: redis::aio::MultiplexedConnection,
}

impl Held {
    async fn take(enqueued: usize, taken: usize, ttl: Duration) -> Self {
        use taskq_core::Membership;
        let server = RedisServer::start();
        let broker = RedisBroker::connect(config(&server)).await.unwrap();
        let q = format!("q-{}", uuid::Uuid::new_v4());
        let queues = [q.clone()];
        let worker = WorkerId::generate();
        broker
            .enqueue((0..enqueued).map(|_| message(&q, 0)).collect())
            .await
            .unwrap();
        broker.heartbeat(&worker, &queues, ttl).await.unwrap();
        let held = broker
            .fetch(&worker, &queues, taken, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(held.len(), taken);
        let conn = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Self {
            server,
            broker,
            q,
            queues,
            worker,
            held,
            conn,
        }
    }
}

/// A held message whose priority is NaN must not make recovery fail halfway: every held message
/// goes back, none stays stranded in the lost worker's processing list.
#[tokio::test]
async fn recovery_survives_a_held_message_with_a_nan_priority() {
    use taskq_core::Membership;
    let Held {
        server: _server,
        broker,
        q,
        queues,
        worker,
        mut conn,
        ..
    } = Held::take(2, 2, Duration::from_millis(100)).await;
    // A third message reaches the processing list with a priority cjson reads as NaN.
    let poisoned = r#"{"v":1,"id":"5b0f8a3e-7d3c-4a5e-9a51-3d2f1b0c9e11","task":"t","args":{},"queue":"x","priority":NaN}"#;
    redis::cmd("LPUSH")
        .arg(format!("taskq:{{{q}}}:processing:{worker}"))
        .arg(poisoned)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = broker.recover_lost_workers(&queues, 3).await.unwrap();
    assert_eq!(report.requeued, 3, "{report:?}");
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.processing), (3, 0), "{stats:?}");
}

/// Under `maxmemory` with `noeviction`, a script that would write is refused before its first
/// write, so no transition happens halfway (a dead letter removed from the processing list
/// but never pushed to `dead` would be lost); acks, which free memory, still work.
#[tokio::test]
async fn out_of_memory_refuses_transitions_whole_and_loses_nothing() {
    use taskq_core::DeadReason;
    let Held {
        server: _server,
        broker,
        q,
        queues,
        worker,
        held,
        mut conn,
    } = Held::take(5, 3, Duration::from_secs(60)).await;
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .unwrap();
    let used: u64 = info
        .lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    for (name, value) in [
        ("maxmemory-policy", "noeviction".to_owned()),
        ("maxmemory", (used + 2_000_000).to_string()),
    ] {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    // Fill in big chunks, then small ones: a big SET can be refused only because its own
    // query buffer tipped the balance, leaving room for small writes after it.
    let mut full = false;
    let mut i = 0;
    for size in [100_000, 1_000, 10] {
        let filler = "x".repeat(size);
        full = false;
        for _ in 0..10_000 {
            i += 1;
            let set: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("filler:{i}"))
                .arg(&filler)
                .query_async(&mut conn)
                .await;
            if set.is_err() {
                full = true;
                break;
            }
        }
    }
    assert!(full, "redis never ran out of memory");

    let err = broker.enqueue(vec![message(&q, 0)]).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(taskq_core::error_chain(&err).contains("OOM"), "{err:?}");
    assert!(broker
        .dead_letter(&worker, &held[0], DeadReason::Failed, None)
        .await
        .is_err());
    assert!(broker
        .fetch(&worker, &queues, 2, Duration::ZERO)
        .await
        .is_err());
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.pending, stats.processing, stats.dead),
        (2, 3, 0),
        "nothing moved halfway"
    );
    assert_eq!(
        broker.ack(&worker, &held[1..2]).await.unwrap(),
        1,
        "acks free memory"
    );

    redis::cmd("FLUSHDB")
        .arg("ASYNC")
        .query_async::<()>(&mut conn)
        .await
        .ok();
    let _ = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query_async::<()>(&mut conn)
        .await;
}

/// A processing list whose worker holds no lease (nothing in this protocol leaves one; the
/// sweep is the backstop) shows in the stats and goes back to pending after a grace period.
#[tokio::test]
async fn an_orphaned_processing_list_is_counted_and_swept_back_after_a_grace_period() {
    use taskq_core::Membership;
    let Held {
        server: _server,
        broker,
        q,
        queues,
        worker,
        mut conn,
        ..
    } = Held::take(2, 2, Duration::from_secs(60)).await;
    // The lease vanishes without a recovery.
    redis::cmd("ZREM")
        .arg(format!("taskq:{{{q}}}:workers"))
        .arg(worker.as_str())
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        broker.stats(&q).await.unwrap().processing,
        2,
        "still counted"
    );
    let grace = Duration::from_millis(300);
    let first = broker.sweep_orphans(&queues, grace, 3).await.unwrap();
    assert_eq!(first.requeued, 0, "not before the grace period");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = broker.sweep_orphans(&queues, grace, 3).await.unwrap();
    assert_eq!((second.requeued, second.workers), (2, vec![worker]));
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.processing), (2, 0));
}

/// A fetch that moved messages and then failed in a later step (here: passing the wake-up on,
/// refused by an ACL) reports an error; the messages it moved must not count as handed out,
/// or the next fetch would never adopt them and they would sit in the worker's list for its
/// whole life.
#[tokio::test]
async fn messages_moved_by_a_fetch_that_then_failed_are_adopted_by_the_next() {
    let server = RedisServer::start();
    let mut admin = admin(&server).await;
    // Everything, except LTRIM outside the pending lists: passing a wake-up on fails.
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("fetcher")
        .arg("on")
        .arg(">pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg("-ltrim")
        .arg("(+ltrim ~taskq:*:pending:*)")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    let url = format!("redis://fetcher:pw@127.0.0.1:{}", server.port());
    let restricted =
        RedisBroker::connect(RedisConfig::new(&url).with_block_timeout(Duration::from_secs(5)))
            .await
            .unwrap();
    let producer = RedisBroker::connect(config(&server)).await.unwrap();
    let q = format!("q-{}", uuid::Uuid::new_v4());
    let queues = [q.clone()];
    let worker = WorkerId::generate();
    let waiting = {
        let (broker, queues, worker) = (restricted.clone(), queues.clone(), worker.clone());
        tokio::spawn(async move {
            broker
                .fetch(&worker, &queues, 2, Duration::from_secs(5))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    producer
        .enqueue(vec![message(&q, 0), message(&q, 0)])
        .await
        .unwrap();
    let failed = waiting.await.unwrap();
    assert!(
        failed.is_err(),
        "passing the wake-up on must fail here: {failed:?}"
    );
    assert_eq!(
        producer.stats(&q).await.unwrap().processing,
        2,
        "moved, then failed"
    );
    let adopted = restricted
        .fetch(&worker, &queues, 2, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        adopted.len(),
        2,
        "the next fetch adopts what the failed one moved"
    );
}

/// Back-pressure: a producer whose queue is full waits for room (up to its room wait) and goes
/// through as soon as a worker takes a message; without room it fails naming the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_waits_for_room_in_a_full_queue() {
    let server = RedisServer::start();
    let config = config(&server).with_max_queue_length(Some(5));
    let client = taskq_redis::client(config)
        .await
        .unwrap()
        .with_room_wait(Duration::from_secs(10));
    let q = format!("room-{}", uuid::Uuid::new_v4());
    let args = || (0..5).map(|n| serde_json::json!({ "n": n }));
    for args in args() {
        client
            .enqueue_by_name("room.task", &args)
            .queue(&q)
            .await
            .unwrap();
    }
    let waiting = {
        let (client, q) = (client.clone(), q.clone());
        tokio::spawn(async move {
            client
                .enqueue_by_name("room.task", &serde_json::json!({ "n": 5 }))
                .queue(q)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the producer waits while the queue is full"
    );
    client
        .broker()
        .fetch(
            &WorkerId::generate(),
            std::slice::from_ref(&q),
            1,
            Duration::ZERO,
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("room was made")
        .unwrap()
        .expect("enqueued once there was room");

    let impatient = client.with_room_wait(Duration::from_millis(200));
    let started = tokio::time::Instant::now();
    let full = impatient
        .enqueue_by_name("room.task", &serde_json::json!({ "n": 6 }))
        .queue(&q)
        .await;
    assert!(
        matches!(&full, Err(Error::QueueFull { queue, capacity: 5 }) if *queue == q),
        "{full:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}

/// Durable writes on a master whose replica is attached but does not answer (stopped with
/// SIGSTOP): an enqueue and a result write report that no replica acknowledged them (a
/// transient error, so callers retry), instead of returning as if they were safe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_fail_when_an_attached_replica_does_not_acknowledge() {
    let server = RedisServer::start();
    let replica = RedisServer::start_with(
        &[
            "--replicaof".into(),
            "127.0.0.1".into(),
            server.port().to_string(),
        ],
        taskq_testkit::free_port,
    );
    let config = config(&server).with_durable_writes(1, Duration::from_millis(100));
    let broker = RedisBroker::connect(config.clone()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let degraded = |warnings: Vec<String>| {
        warnings
            .iter()
            .any(|w| w.contains("durable writes degraded"))
    };
    while degraded(broker.durability_warnings().await.unwrap()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replica never attached"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = replica.pid().expect("replica running").to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let err = broker
        .enqueue(vec![message(
            &format!("durable-{}", uuid::Uuid::new_v4()),
            0,
        )])
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        taskq_core::error_chain(&err).contains("0 of 1 replicas acknowledged"),
        "{err:?}"
    );
    let backend = RedisResultBackend::connect(config).await.unwrap();
    let record = taskq_core::TaskResult::new(
        taskq_core::TaskId::new(),
        "t",
        taskq_core::TaskState::Success,
        chrono::Utc::now(),
    );
    let stored = backend.store(&record, Duration::from_secs(60)).await;
    signal("-CONT");
    assert!(stored.unwrap_err().is_transient());
}

/// Durable writes on a master with no replica attached (one lost for good): writes wait for
/// the replicas attached, none, instead of failing for ever, and the broker names the
/// degraded master for `taskq status` and the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_on_a_master_without_replicas_go_on_degraded() {
    let server = RedisServer::start();
    let config = config(&server).with_durable_writes(1, Duration::from_millis(100));
    let broker = RedisBroker::connect(config.clone()).await.unwrap();
    broker
        .enqueue(vec![message(
            &format!("durable-{}", uuid::Uuid::new_v4()),
            0,
        )])
        .await
        .expect("a write waits for none when none is attached");
    let warnings = broker.durability_warnings().await.unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("durable writes degraded: the master has 0 of durable=1")),
        "{warnings:?}"
    );
}

/// The queue registry forgets a queue only when it holds nothing, no worker consumes it and no
/// producer registered it for the idle time; a forgotten queue comes back with its next
/// message.
#[tokio::test]
async fn idle_queues_are_forgotten_and_come_back() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let name = |what: &str| format!("{what}-{}", uuid::Uuid::new_v4());
    let (idle, busy, consumed, dead, fresh) = (
        name("idle"),
        name("busy"),
        name("consumed"),
        name("dead"),
        name("fresh"),
    );
    let worker = WorkerId::generate();
    let drain = |q: String| {
        let (broker, worker) = (broker.clone(), worker.clone());
        async move {
            broker.enqueue(vec![message(&q, 0)]).await.unwrap();
            let got = broker
                .fetch(&worker, std::slice::from_ref(&q), 1, Duration::ZERO)
                .await
                .unwrap();
            broker.ack(&worker, &got).await.unwrap();
        }
    };
    drain(idle.clone()).await;
    drain(consumed.clone()).await;
    broker.enqueue(vec![message(&busy, 0)]).await.unwrap();
    broker.enqueue(vec![message(&dead, 0)]).await.unwrap();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&dead), 1, Duration::ZERO)
        .await
        .unwrap();
    broker
        .dead_letter(&worker, &got[0], taskq_core::DeadReason::Failed, None)
        .await
        .unwrap();
    // The fetching worker leaves (its fetches leased it on those queues).
    broker
        .deregister(&worker, &[idle.clone(), consumed.clone(), dead.clone()])
        .await
        .unwrap();
    let consumer = WorkerId::generate();
    broker
        .heartbeat(
            &consumer,
            std::slice::from_ref(&consumed),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    drain(fresh.clone()).await;
    // The fetch's lease left the idle queue an entry in the due index; it goes with the queue.
    let mut admin = admin(&server).await;
    let idle_lease_entry = format!("taskq:{{{idle}}}:workers");
    let entries = || {
        redis::cmd("ZSCORE")
            .arg("taskq:due")
            .arg(&idle_lease_entry)
            .to_owned()
    };
    let before: Option<f64> = entries().query_async(&mut admin).await.unwrap();
    assert!(before.is_some(), "the fetch's lease lowered the entry");

    let forgotten = broker
        .forget_idle_queues(Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(forgotten, vec![idle.clone()], "only the idle queue goes");
    let after: Option<f64> = entries().query_async(&mut admin).await.unwrap();
    assert_eq!(
        after, None,
        "a forgotten queue's entry stays in the due index"
    );
    let listed = broker.queues().await.unwrap();
    for kept in [&busy, &consumed, &dead, &fresh] {
        assert!(listed.contains(kept), "{kept} is kept: {listed:?}");
    }
    assert!(!listed.contains(&idle));

    // Another process enqueues to it: it is listed again.
    let producer = RedisBroker::connect(config(&server)).await.unwrap();
    producer.enqueue(vec![message(&idle, 0)]).await.unwrap();
    assert!(broker.queues().await.unwrap().contains(&idle));
    assert!(broker
        .forget_idle_queues(Duration::from_millis(300))
        .await
        .unwrap()
        .is_empty());
}

/// A connection of the test's own, beside the broker's.
pub(crate) async fn admin(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A worker's fetch of up to 10 messages, waiting up to 5 s, running while the test goes on.
fn fetch_in_background(
    broker: &RedisBroker,
    worker: &WorkerId,
    queues: &[String],
) -> tokio::task::JoinHandle<Vec<taskq_core::Delivery>> {
    let (broker, worker, queues) = (broker.clone(), worker.clone(), queues.to_vec());
    tokio::spawn(async move {
        broker
            .fetch(&worker, &queues, 10, Duration::from_secs(5))
            .await
            .unwrap()
    })
}

/// A message for `queue`, enqueued while `worker` waits in a fetch of `queues`: that fetch
/// wakes and takes exactly it (asserted), and is returned for the caller to settle.
async fn woken_by_an_enqueue(
    broker: &RedisBroker,
    worker: &WorkerId,
    queues: &[String],
    queue: &str,
) -> Vec<taskq_core::Delivery> {
    let waiting = fetch_in_background(broker, worker, queues);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = message(queue, 0);
    let id = sent.id;
    broker.enqueue(vec![sent]).await.unwrap();
    let fetched = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("woken by the enqueue")
        .unwrap();
    assert_eq!(
        fetched
            .iter()
            .map(|d| (d.id(), d.queue()))
            .collect::<Vec<_>>(),
        [(Some(id), queue)]
    );
    fetched
}

/// The server's text answer to `command` (e.g. `INFO commandstats`), on a connection of the
/// test's own.
async fn server_says(server: &RedisServer, command: &[&str]) -> String {
    let mut cmd = redis::cmd(command[0]);
    cmd.arg(&command[1..]);
    cmd.query_async(&mut admin(server).await).await.unwrap()
}

/// Connections to the server, as `CLIENT LIST` counts them.
async fn client_count(server: &RedisServer) -> usize {
    let list = server_says(server, &["CLIENT", "LIST"]).await;
    // Less the connection that asked.
    list.lines().count() - 1
}

#[tokio::test]
async fn an_idle_worker_fetches_behind_its_pop_and_lets_its_connection_go() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let q = format!("q-{}", uuid::Uuid::new_v4());
    let worker = WorkerId::generate();
    let queues = [q.clone()];
    let before = client_count(&server).await;
    // Idle: the wait times out; the worker now has a blocking connection of its own.
    let none = broker
        .fetch(&worker, &queues, 10, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(client_count(&server).await, before + 1);
    // A message enqueued while it waits arrives with its wake-up, in that one round trip.
    let fetched = woken_by_an_enqueue(&broker, &worker, &queues, &q).await;
    broker.ack(&worker, &fetched).await.unwrap();
    // The worker ends: its blocking connection goes with it.
    broker.release_worker(&worker).await.unwrap();
    let mut count = client_count(&server).await;
    for _ in 0..50 {
        if count == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        count = client_count(&server).await;
    }
    assert_eq!(
        count, before,
        "the ended worker's blocking connection is closed"
    );
}

/// `fetch.lua` calls (`EVALSHA`) the server has run since its counters were reset.
async fn fetch_scripts_run(server: &RedisServer) -> u64 {
    server.command_calls("evalsha")
}

/// Issue 31: a worker of three queues that heartbeats and finds nothing sends no command per
/// queue on its idle fetches (no `LMPOP`, `MGET` or lease `ZSCORE`: one `EXISTS` over every
/// ready list answers), and an enqueue still wakes it.
#[tokio::test]
async fn an_idle_fetch_sends_no_command_per_queue() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let queues: Vec<String> = (0..3)
        .map(|n| format!("q{n}-{}", uuid::Uuid::new_v4()))
        .collect();
    let worker = WorkerId::generate();
    broker
        .heartbeat(&worker, &queues, Duration::from_secs(30))
        .await
        .unwrap();
    let idle_wait = Duration::from_millis(50);
    assert!(broker
        .fetch(&worker, &queues, 10, idle_wait)
        .await
        .unwrap()
        .is_empty());

    let mut admin = admin(&server).await;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    for _ in 0..5 {
        let none = broker.fetch(&worker, &queues, 10, idle_wait).await.unwrap();
        assert!(none.is_empty());
    }
    let scripts = fetch_scripts_run(&server).await;
    assert!(
        scripts >= 5,
        "every idle round ran its fetch script: {scripts}"
    );
    for per_queue in ["lmpop", "mget", "zscore"] {
        assert_eq!(
            server.command_calls(per_queue),
            0,
            "an idle fetch sent {per_queue}"
        );
    }
    assert_eq!(server.command_calls("exists"), scripts);

    let fetched = woken_by_an_enqueue(&broker, &worker, &queues, &queues[2]).await;
    broker.ack(&worker, &fetched).await.unwrap();
}

/// An ack that frees a slot of a partition with ready messages leaves a wake-up token: the
/// workers blocked on the queue look again at once, not when their block times out (the
/// suite's `a_waiting_fetch_is_woken_when_a_partition_slot_frees` passes either way here, its
/// block timeout being short).
#[tokio::test]
async fn a_freed_partition_slot_wakes_an_idle_worker() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let q = format!("doc-{}", uuid::Uuid::new_v4());
    let queues = [q.clone()];
    let messages = (0..2)
        .map(|_| taskq_testkit::suite::partitions::partitioned(&q, "doc-9", Some(1), 0))
        .collect();
    broker.enqueue(messages).await.unwrap();
    let worker = WorkerId::generate();
    let first = broker
        .fetch(&worker, &queues, 2, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.len(), 1, "one slot");
    let mut admin = admin(&server).await;
    let wake = format!("taskq:{{{q}}}:wake");
    // The enqueue's token was taken by a worker that found the partition at its limit.
    redis::cmd("DEL")
        .arg(&wake)
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    assert_eq!(broker.ack(&worker, &first).await.unwrap(), 1);
    let tokens: usize = redis::cmd("LLEN")
        .arg(&wake)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(tokens, 1);
}

/// Issue 31: a fetch that took everything ready (less than it asked for) leaves the next
/// waiting fetch to its pop, whose pipeline fetches once a message is enqueued: one fetch
/// script run for that message, not a first run that finds nothing and then the pipelined one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_took_everything_waits_without_fetching_again() {
    let server = RedisServer::start();
    let broker = Arc::new(RedisBroker::connect(config(&server)).await.unwrap());
    let q = format!("drained-{}", uuid::Uuid::new_v4());
    let queues = vec![q.clone()];
    let worker = WorkerId::generate();
    broker
        .enqueue(vec![message(&q, 0), message(&q, 0)])
        .await
        .unwrap();
    let first = broker
        .fetch(&worker, &queues, 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(first.len(), 2, "two of the ten asked for: everything ready");
    broker.ack(&worker, &first).await.unwrap();
    // The fetch above took the messages without their wake-up token (it did not wait).
    redis::cmd("DEL")
        .arg(format!("taskq:{{{q}}}:wake"))
        .query_async::<()>(&mut admin(&server).await)
        .await
        .unwrap();
    server.reset_command_stats();
    let waiting = {
        let (broker, worker, queues) = (broker.clone(), worker.clone(), queues.clone());
        tokio::spawn(async move {
            broker
                .fetch(&worker, &queues, 10, Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the enqueue wakes the waiting fetch")
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        server.command_calls("evalsha"),
        1,
        "only the fetch behind the pop ran the script"
    );
}

/// Issue 29: with more partitions ready than a fetch takes, a turn takes two messages (one
/// `RPOP` for two, the drain's cost over many partitions), and still every partition is served
/// once before any is served again.
#[tokio::test]
async fn a_turn_takes_two_when_more_partitions_wait_than_a_fetch_takes() {
    use std::collections::HashMap;
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let q = format!("turns-{}", uuid::Uuid::new_v4());
    let queues = [q.clone()];
    let keys: Vec<String> = (0..8).map(|k| format!("tenant-{k}")).collect();
    for key in &keys {
        let messages = (0..4)
            .map(|_| taskq_testkit::suite::partitions::partitioned(&q, key, None, 0))
            .collect();
        broker.enqueue(messages).await.unwrap();
    }
    let worker = WorkerId::generate();
    let mut first_round: HashMap<String, usize> = HashMap::new();
    for _ in 0..4 {
        let got = broker
            .fetch(&worker, &queues, 4, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got.len(), 4);
        let mut this_fetch: HashMap<String, usize> = HashMap::new();
        for delivery in &got {
            let key = delivery.partition().unwrap().to_owned();
            *this_fetch.entry(key.clone()).or_default() += 1;
            *first_round.entry(key).or_default() += 1;
        }
        assert_eq!(this_fetch.len(), 2, "two turns of two: {this_fetch:?}");
        broker.ack(&worker, &got).await.unwrap();
    }
    // Sixteen messages in fetches of four: every one of the eight partitions gave two.
    assert_eq!(first_round.len(), 8, "{first_round:?}");
    assert!(first_round.values().all(|&n| n == 2), "{first_round:?}");
}

/// Issue 31: the peers a worker spaces its reaper passes by are the workers holding leases on
/// the least shared of its queues.
#[tokio::test]
async fn peers_are_the_lease_holders_of_the_least_shared_queue() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let shared = format!("shared-{}", uuid::Uuid::new_v4());
    let lonely = format!("lonely-{}", uuid::Uuid::new_v4());
    let both = [shared.clone(), lonely.clone()];
    let live = Duration::from_secs(30);
    broker
        .heartbeat(&WorkerId::generate(), &both, live)
        .await
        .unwrap();
    for _ in 0..2 {
        broker
            .heartbeat(&WorkerId::generate(), std::slice::from_ref(&shared), live)
            .await
            .unwrap();
    }
    assert_eq!(
        broker.peers(std::slice::from_ref(&shared)).await.unwrap(),
        Some(3)
    );
    assert_eq!(broker.peers(&both).await.unwrap(), Some(1));
}

/// Issue 31: a worker holding nothing in a queue parks its lease there (a deadline minutes
/// ahead, set once), so its idle heartbeats send nothing; the fetch that gives it messages
/// makes the lease short again in the same script, so it is recovered within its liveness
/// deadline if it dies holding them.
#[tokio::test]
async fn an_idle_lease_is_parked_and_a_fetch_makes_it_short_again() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let reaper = RedisBroker::connect(config(&server)).await.unwrap();
    let queues: Vec<String> = (0..3)
        .map(|n| format!("parked{n}-{}", uuid::Uuid::new_v4()))
        .collect();
    let worker = WorkerId::generate();
    let ttl = Duration::from_millis(800);
    let mut admin = admin(&server).await;
    let lease = |queue: &str| {
        redis::cmd("ZSCORE")
            .arg(format!("taskq:{{{queue}}}:workers"))
            .arg(worker.as_str())
            .clone()
    };
    let ahead_ms = |score: f64| score as i64 - chrono::Utc::now().timestamp_millis();

    broker.heartbeat(&worker, &queues, ttl).await.unwrap();
    for queue in &queues {
        let score: f64 = lease(queue).query_async(&mut admin).await.unwrap();
        assert!(ahead_ms(score) > 60_000, "{queue}: parked minutes ahead");
    }
    server.reset_command_stats();
    for _ in 0..5 {
        broker.heartbeat(&worker, &queues, ttl).await.unwrap();
    }
    assert_eq!(
        server.command_calls("zadd") + server.command_calls("evalsha"),
        0,
        "idle heartbeats renew nothing, on any of the three queues"
    );

    broker.enqueue(vec![message(&queues[1], 0)]).await.unwrap();
    let taken = broker
        .fetch(&worker, &queues, 10, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let score: f64 = lease(&queues[1]).query_async(&mut admin).await.unwrap();
    assert!(
        ahead_ms(score) <= ttl.as_millis() as i64 + 100,
        "the fetch made the lease short: {} ms ahead",
        ahead_ms(score)
    );
    let other: f64 = lease(&queues[0]).query_async(&mut admin).await.unwrap();
    assert!(
        ahead_ms(other) > 60_000,
        "a queue it took nothing from stays parked"
    );

    // The worker dies holding the message: no more heartbeats. Its short lease lapses and
    // another process's reaper returns the message.
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    let report = reaper.recover_lost_workers(&queues, 5).await.unwrap();
    assert_eq!(report.requeued, 1, "{report:?}");
    assert_eq!(report.workers, vec![worker.clone()]);
}

/// A worker that fetched before its first heartbeat holds messages: that heartbeat keeps its
/// lease short (`park_lease.lua` parks only an empty processing list).
#[tokio::test]
async fn a_first_heartbeat_after_a_fetch_keeps_the_lease_short() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let queue = format!("early-{}", uuid::Uuid::new_v4());
    let worker = WorkerId::generate();
    broker.enqueue(vec![message(&queue, 0)]).await.unwrap();
    let taken = broker
        .fetch(&worker, std::slice::from_ref(&queue), 10, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    let ttl = Duration::from_millis(800);
    broker
        .heartbeat(&worker, std::slice::from_ref(&queue), ttl)
        .await
        .unwrap();
    let score: f64 = redis::cmd("ZSCORE")
        .arg(format!("taskq:{{{queue}}}:workers"))
        .arg(worker.as_str())
        .query_async(&mut admin(&server).await)
        .await
        .unwrap();
    let ahead = score as i64 - chrono::Utc::now().timestamp_millis();
    assert!(
        (0..=900).contains(&ahead),
        "short, not parked: {ahead} ms ahead"
    );
}

/// A worker that acked all it held parks its lease again at its next heartbeat, and renews it
/// while it holds something.
#[tokio::test]
async fn a_lease_is_renewed_while_messages_are_held_and_parked_once_they_are_not() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let queue = format!("renewed-{}", uuid::Uuid::new_v4());
    let queues = [queue.clone()];
    let worker = WorkerId::generate();
    let ttl = Duration::from_millis(800);
    let admin = admin(&server).await;
    let ahead_ms = || {
        let mut admin = admin.clone();
        let key = format!("taskq:{{{queue}}}:workers");
        let worker = worker.to_string();
        async move {
            let score: f64 = redis::cmd("ZSCORE")
                .arg(key)
                .arg(worker)
                .query_async(&mut admin)
                .await
                .unwrap();
            score as i64 - chrono::Utc::now().timestamp_millis()
        }
    };
    broker.heartbeat(&worker, &queues, ttl).await.unwrap();
    broker.enqueue(vec![message(&queue, 0)]).await.unwrap();
    let taken = broker
        .fetch(&worker, &queues, 10, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(taken.len(), 1);
    // Held past its first deadline, kept by heartbeats.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        broker.heartbeat(&worker, &queues, ttl).await.unwrap();
        let ahead = ahead_ms().await;
        assert!(
            (0..=900).contains(&ahead),
            "renewed short: {ahead} ms ahead"
        );
    }
    broker.ack(&worker, &taken).await.unwrap();
    broker.heartbeat(&worker, &queues, ttl).await.unwrap();
    assert!(
        ahead_ms().await > 60_000,
        "parked again once nothing is held"
    );
}

#[tokio::test]
async fn an_idle_worker_of_three_queues_is_woken_and_fetches_in_one_script() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let queues: Vec<String> = (0..3)
        .map(|n| format!("q{n}-{}", uuid::Uuid::new_v4()))
        .collect();
    let worker = WorkerId::generate();
    // The queues are known (registered) and the worker idle: its wait has timed out once.
    for queue in &queues {
        broker.enqueue(vec![message(queue, 0)]).await.unwrap();
    }
    let first = broker
        .fetch(&worker, &queues, 10, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(first.len(), 3, "one call took from every queue");
    broker.ack(&worker, &first).await.unwrap();
    let none = broker
        .fetch(&worker, &queues, 10, Duration::from_millis(200))
        .await
        .unwrap();
    assert!(none.is_empty());

    let mut admin = admin(&server).await;
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut admin)
        .await
        .unwrap();
    // A message for the last queue wakes the worker, and the fetch behind its pop takes it.
    let fetched = woken_by_an_enqueue(&broker, &worker, &queues, &queues[2]).await;
    assert_eq!(
        fetch_scripts_run(&server).await,
        1,
        "the wake-up and the fetch of all three queues took one script, not one per queue"
    );
    broker.ack(&worker, &fetched).await.unwrap();
}

#[tokio::test]
async fn a_server_without_lmpop_is_refused_at_connect() {
    // Redis before 7.0 has no LMPOP; a server with the command renamed away answers as one.
    let server = RedisServer::start_with(
        &[
            "--rename-command".to_owned(),
            "LMPOP".to_owned(),
            String::new(),
        ],
        taskq_testkit::free_port,
    );
    let refused = RedisBroker::connect(config(&server)).await;
    match refused {
        Err(Error::Invalid { what, reason }) => {
            assert_eq!(what, "redis server");
            assert!(reason.contains("Redis 7.0"), "{reason}");
        }
        other => panic!("expected a clear refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_worker_lost_on_one_queue_takes_nothing_from_its_others() {
    let server = RedisServer::start();
    let broker = RedisBroker::connect(config(&server)).await.unwrap();
    let (a, b) = (
        format!("a-{}", uuid::Uuid::new_v4()),
        format!("b-{}", uuid::Uuid::new_v4()),
    );
    let both = [a.clone(), b.clone()];
    let lost = WorkerId::generate();
    broker
        .heartbeat(&lost, &both, Duration::from_millis(100))
        .await
        .unwrap();
    broker.enqueue(vec![message(&b, 0)]).await.unwrap();
    assert_eq!(
        broker
            .fetch(&lost, &both, 1, Duration::ZERO)
            .await
            .unwrap()
            .len(),
        1
    );
    // b's reaper recovers the silent worker; its lease on a is still listed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let report = broker
        .recover_lost_workers(std::slice::from_ref(&b), 3)
        .await
        .unwrap();
    assert_eq!(report.workers, vec![lost.clone()]);
    broker.enqueue(vec![message(&a, 0)]).await.unwrap();
    // One script checks every queue's lease before it moves anything: a's message stays.
    let fetched = broker.fetch(&lost, &both, 10, Duration::ZERO).await;
    assert!(
        matches!(fetched, Err(Error::LeaseLost { .. })),
        "{fetched:?}"
    );
    let stats = broker.stats(&a).await.unwrap();
    assert_eq!(
        (stats.pending, stats.processing),
        (1, 0),
        "nothing moved from a"
    );
}
