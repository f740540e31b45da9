//! The worker against a real redis-server (real time): the main paths end to end.

use std::time::Duration;

use taskq_core::{Client, DeadReason, TaskState, DEFAULT_QUEUE};
use taskq_testkit::RedisServer;

use crate::support::{all_tasks, builder, start_worker, Flaky, Stats, Summary};

async fn redis_client(server: &RedisServer) -> Client {
    taskq::connect(&server.url()).await.expect("connect")
}

/// A plain connection to `server`, for what a test writes or reads beside taskq.
async fn admin(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_results_retries_and_dead_letters_on_redis() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let worker = start_worker(all_tasks(builder(&client)));

    let stats = client
        .enqueue(Stats {
            values: vec![2.0, 4.0],
        })
        .await
        .unwrap();
    let flaky = client.enqueue(Flaky { fail_times: 1 }).await.unwrap();
    let unknown = client
        .enqueue_by_name("nobody.home", &serde_json::json!({}))
        .await
        .unwrap();

    let summary = stats.wait(Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        summary,
        Summary {
            count: 2,
            mean: 3.0,
            label: None
        }
    );
    // One retry: backoff is at most 1 s, promotion runs every heartbeat.
    assert_eq!(flaky.wait(Duration::from_secs(10)).await.unwrap(), 1);
    assert_eq!(flaky.info().await.unwrap().unwrap().attempts, 2);

    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = client
            .broker()
            .dead_letters(DEFAULT_QUEUE, taskq_core::Page::first(10))
            .await
            .unwrap();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, DeadReason::UnknownTask);
    assert_eq!(dead[0].id, Some(unknown.id()));
    // Dead-lettered tasks end with a final record, so a waiter does not wait out its timeout.
    let ended = unknown.info().await.unwrap().unwrap();
    assert_eq!(ended.state, TaskState::Failure);
    assert!(
        ended
            .error
            .as_deref()
            .unwrap_or_default()
            .starts_with("dead-lettered as unknown_task"),
        "{ended:?}"
    );

    let report = worker.stop().await.unwrap();
    assert_eq!(
        (report.succeeded, report.retried, report.dead_lettered),
        (2, 1, 1)
    );
    let stats = client.broker().stats(DEFAULT_QUEUE).await.unwrap();
    assert_eq!(
        (stats.pending, stats.processing, stats.scheduled),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn countdown_runs_no_earlier_on_redis() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let worker = start_worker(all_tasks(builder(&client)));
    let enqueued = client.clock().now();
    let handle = client
        .enqueue(Stats { values: vec![1.0] })
        .countdown(Duration::from_millis(1500))
        .await
        .unwrap();
    handle.wait(Duration::from_secs(10)).await.unwrap();
    let ran = handle.info().await.unwrap().unwrap().updated_at;
    assert!(
        ran - enqueued >= chrono::Duration::milliseconds(1500),
        "ran after {}",
        ran - enqueued
    );
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_written_by_hand_per_the_protocol_doc_runs() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let worker = start_worker(all_tasks(builder(&client)));
    let id = taskq_core::TaskId::new();
    // What docs/protocol.md tells a producer in another language to write.
    let envelope = serde_json::json!({
        "v": 1,
        "id": id.to_string(),
        "task": "test.stats",
        "args": {"values": [1.0, 2.0, 3.0]},
        "queue": "default",
        "priority": 0,
        "attempt": 0,
        "created_at": "2026-11-22T10:00:00+00:00",
    });
    let mut conn = admin(&server).await;
    redis::pipe()
        .lpush("taskq:{default}:pending:0", envelope.to_string())
        .lpush("taskq:{default}:wake", "1")
        .ltrim("taskq:{default}:wake", 0, 0)
        .sadd("taskq:queues", "default")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let summary: Summary = client
        .result_handle(id)
        .wait(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(summary.count, 3);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_and_rate_limited_tasks_on_redis() {
    use crate::semantics::{Limited, Unique};
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let first = client.enqueue(Unique { account: 1 }).await.unwrap();
    let again = client.enqueue(Unique { account: 1 }).await.unwrap();
    assert_eq!(first.id(), again.id());
    let limited = client.enqueue_many((0..4).map(|_| Limited)).await.unwrap();

    let worker = start_worker(
        builder(&client)
            .register::<Unique>()
            .register::<Limited>()
            .concurrency(8),
    );
    first.wait(Duration::from_secs(10)).await.unwrap();
    assert_ne!(
        client.enqueue(Unique { account: 1 }).await.unwrap().id(),
        first.id(),
        "released"
    );
    let mut started = Vec::new();
    for handle in &limited {
        handle.wait(Duration::from_secs(20)).await.unwrap();
        started.push(handle.info().await.unwrap().unwrap().updated_at);
    }
    started.sort();
    let span = *started.last().unwrap() - started[0];
    assert!(
        span >= chrono::Duration::milliseconds(1_400),
        "4 starts at 2/s took only {span}"
    );
    worker.stop().await.unwrap();
}

async fn client_with_clock_off_by(server: &RedisServer, seconds: i64) -> Client {
    let host = taskq_core::Clock::system().skewed(chrono::Duration::seconds(seconds));
    taskq_redis::client(taskq_redis::RedisConfig::new(server.url()).with_host_clock(host))
        .await
        .expect("connect")
}

/// Three workers, one whose host clock is 30 s ahead, and a producer 30 s behind: every
/// deadline, due time and lease is decided by the server's clock, so nobody's messages are
/// taken over, nothing runs twice, and countdowns do not start early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_between_hosts_changes_nothing() {
    use std::collections::HashMap;

    use crate::support::{log, Record};

    let server = RedisServer::start();
    let (a, b) = (redis_client(&server).await, redis_client(&server).await);
    let ahead = client_with_clock_off_by(&server, 30).await;
    let behind = client_with_clock_off_by(&server, -30).await;
    let mut labels = log("skew-");
    let workers = [
        start_worker(all_tasks(builder(&a)).concurrency(4)),
        start_worker(all_tasks(builder(&b)).concurrency(4)),
        start_worker(all_tasks(builder(&ahead)).concurrency(4)),
    ];
    let tasks = 36;
    let handles = a
        .enqueue_many((0..tasks).map(|i| Record {
            label: format!("skew-{i}"),
            ms: 300,
        }))
        .await
        .unwrap();
    // A producer 30 s behind: without the server's clock its countdown would be due at once.
    let countdown = behind
        .enqueue(Record {
            label: "skew-countdown".into(),
            ms: 0,
        })
        .countdown(Duration::from_secs(3))
        .await
        .unwrap();
    let enqueued_at = tokio::time::Instant::now();
    for handle in &handles {
        handle.wait(Duration::from_secs(60)).await.unwrap();
    }
    countdown.wait(Duration::from_secs(60)).await.unwrap();
    let countdown_ran_after = enqueued_at.elapsed();
    let mut reports = Vec::new();
    for worker in workers {
        reports.push(worker.stop().await.unwrap());
    }

    let mut runs: HashMap<String, usize> = HashMap::new();
    while let Ok(label) = labels.try_recv() {
        *runs.entry(label).or_default() += 1;
    }
    assert_eq!(runs.len(), tasks + 1, "every task ran: {runs:?}");
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    assert!(
        countdown_ran_after >= Duration::from_millis(2_900),
        "a countdown of 3 s started after {countdown_ran_after:?}"
    );
    let stats = a.broker().stats(DEFAULT_QUEUE).await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled, stats.processing, stats.dead),
        (0, 0, 0, 0)
    );
    let dead_lettered: u64 = reports.iter().map(|r| r.dead_lettered).sum();
    assert_eq!(dead_lettered, 0);
}

/// One of two workers reaches Redis through a proxy that holds every byte for 15 s (a
/// partition: connections stay open) and then heals. Its lease lapses, the other worker
/// recovers its messages; back online it learns it lost its lease, stops, and rejoins by
/// itself. Nothing is lost, and only what it was running at the cut runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_worker_loses_nothing_and_rejoins() {
    use std::collections::HashMap;

    use crate::support::{log, Record};

    let server = RedisServer::start();
    let proxy = taskq_testkit::Proxy::start(server.port());
    let direct = redis_client(&server).await;
    let cut_off = taskq_redis::client(
        taskq_redis::RedisConfig::new(proxy.url()).with_response_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let mut labels = log("partition-");
    let concurrency = 3;
    let behind_proxy = all_tasks(builder(&cut_off))
        .concurrency(concurrency)
        .build()
        .unwrap();
    let first_identity = behind_proxy.id().to_string();
    let behind_proxy = behind_proxy.start();
    let tasks = 24;
    let handles = direct
        .enqueue_many((0..tasks).map(|i| Record {
            label: format!("partition-{i}"),
            ms: 1_500,
        }))
        .await
        .unwrap();
    // Let the proxied worker take its share before the other worker starts.
    let mut started = 0;
    while started < concurrency {
        labels.recv().await.unwrap();
        started += 1;
    }
    proxy.cut();
    let healthy = start_worker(all_tasks(builder(&direct)).concurrency(concurrency));
    tokio::time::sleep(Duration::from_secs(15)).await;
    proxy.heal();
    for handle in &handles {
        handle.wait(Duration::from_secs(60)).await.unwrap();
    }
    // The cut-off worker comes back under a new identity by itself.
    crate::support::eventually("the cut-off worker rejoined", || async {
        let workers = direct.inspector().workers().await.unwrap();
        workers.len() == 2 && workers.iter().all(|w| w.id != first_identity)
    })
    .await;
    let partitioned = behind_proxy.stop().await.unwrap();
    healthy.stop().await.unwrap();

    // Runs started before the cut were counted above; every later one is counted here.
    let mut total = started;
    let mut runs: HashMap<String, usize> = HashMap::new();
    while let Ok(label) = labels.try_recv() {
        *runs.entry(label).or_default() += 1;
        total += 1;
    }
    assert!(
        total >= tasks,
        "every task ran: {total} runs of {tasks} tasks"
    );
    assert!(
        total - tasks <= concurrency,
        "only what the cut-off worker was running may run twice: {} extra runs",
        total - tasks
    );
    assert_eq!(partitioned.lease_losses, 1, "{partitioned:?}");
    let stats = direct.broker().stats(DEFAULT_QUEUE).await.unwrap();
    assert_eq!(
        (stats.pending, stats.processing, stats.dead),
        (0, 0, 0),
        "{stats:?}"
    );
}

/// A settle refused by a condition of the server that passes by itself (here `NOREPLICAS`:
/// `min-replicas-to-write 1` with no replica, for a moment) is retried until it lands, not
/// abandoned: abandoned, the message sat in the worker's processing list with no result for as
/// long as the worker lived (recovery only runs for expired leases or at deregistration).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settle_refused_for_missing_replicas_lands_once_they_are_back() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let mut started = crate::support::log("norep-");
    let worker = start_worker(
        all_tasks(builder(&client)).liveness(Duration::from_millis(500), Duration::from_secs(30)),
    );
    let handle = client
        .enqueue(crate::support::Record {
            label: "norep-1".into(),
            ms: 1_500,
        })
        .await
        .unwrap();
    assert_eq!(started.recv().await.as_deref(), Some("norep-1"));
    let admin = admin(&server).await;
    let refuse_writes = |on: bool| {
        let mut admin = admin.clone();
        async move {
            let () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("min-replicas-to-write")
                .arg(if on { 1 } else { 0 })
                .query_async(&mut admin)
                .await
                .unwrap();
        }
    };
    refuse_writes(true).await;
    // The task ends while writes are refused; its result write and ack meet NOREPLICAS.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    refuse_writes(false).await;
    assert_eq!(
        handle.wait(Duration::from_secs(20)).await.unwrap(),
        "norep-1",
        "the result landed once writes were accepted again"
    );
    // The result is written before the ack: the ack follows it.
    let mut stats = client.inspector().stats(DEFAULT_QUEUE).await.unwrap();
    for _ in 0..200 {
        if stats.processing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stats = client.inspector().stats(DEFAULT_QUEUE).await.unwrap();
    }
    assert_eq!((stats.pending, stats.processing), (0, 0), "{stats:?}");
    worker.stop().await.unwrap();
}

/// Enqueues a message on each of `queues` and waits for each one's result: an idle worker of
/// them all was woken for each.
async fn a_message_on_each_queue_runs(client: &Client, queues: &[String]) {
    let mut handles = Vec::new();
    for (n, queue) in queues.iter().enumerate() {
        let stats = Stats {
            values: vec![n as f64, 2.0],
        };
        handles.push(client.enqueue(stats).queue(queue).await.unwrap());
    }
    for (n, handle) in handles.into_iter().enumerate() {
        let summary = handle.wait(Duration::from_secs(5)).await.unwrap();
        assert_eq!(summary.mean, (n as f64 + 2.0) / 2.0);
    }
}

/// Issue 31: an idle worker's heartbeats send nothing, however many queues it serves (its
/// leases are parked: `taskq-redis/src/broker/leases.rs`), and it is still woken at once by a
/// message on any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workers_of_three_queues_renew_no_lease_and_still_wake() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let queues: Vec<String> = (0..3)
        .map(|n| format!("idle{n}-{}", uuid::Uuid::new_v4()))
        .collect();
    let workers: Vec<_> = (0..4)
        .map(|_| start_worker(all_tasks(builder(&client)).queues(queues.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.reset_command_stats();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Four workers of three queues heartbeat about 80 times in 2 s (every 100 ms): renewing
    // per queue, that is 240 lease writes (`ZADD`). What is left is the registry entry each
    // publishes with its info (every ten rounds: about two each); parking a lease is a script
    // that reads its list (`LLEN`), made once, before the window.
    let zadds = server.command_calls("zadd");
    assert!(
        zadds <= 4 * 3,
        "{zadds} ZADDs: idle heartbeats wrote leases"
    );
    assert_eq!(server.command_calls("llen"), 0, "leases parked again");
    a_message_on_each_queue_runs(&client, &queues).await;
    for worker in workers {
        worker.stop().await.unwrap();
    }
}

/// Issue 31: a lone idle worker of three queues sends no command per queue on its idle rounds:
/// its turn reads the due index (one `ZRANGEBYSCORE`) whatever its queues, where it asked every
/// queue whether a lease had ended (a `ZRANGEBYSCORE` each) and whether a message was due (a
/// `ZCOUNT` each). With it, a message on any queue still wakes it, a message due in half a
/// second runs when due, and a worker lost holding a message has it recovered and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_idle_worker_of_three_queues_sends_no_command_per_queue_and_still_serves_them() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let queues: Vec<String> = (0..3)
        .map(|n| format!("lone{n}-{}", uuid::Uuid::new_v4()))
        .collect();
    // A worker that takes a message of the third queue and dies: its lease ends 2.5 s in.
    let (_, recovered) =
        a_worker_dies_holding(&client, &queues[2], Duration::from_millis(2500), [5.0, 7.0]).await;

    let worker = start_worker(all_tasks(builder(&client)).queues(queues.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.reset_command_stats();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // At most 20 rounds in 2 s (every 100 ms). Asking each queue would be 60 and more of
    // each; one more ZRANGEBYSCORE is the reaper's, on the queue whose lease ended.
    let rounds = 20;
    let index_reads = server.command_calls("zrangebyscore");
    assert!(
        (1..=rounds + 2).contains(&index_reads),
        "{index_reads} ZRANGEBYSCOREs in {rounds} idle rounds of three queues"
    );
    assert_eq!(
        server.command_calls("zcount"),
        0,
        "promotion asked each queue"
    );

    let summary = recovered.wait(Duration::from_secs(5)).await.unwrap();
    assert_eq!(summary.mean, 6.0, "the lost worker's message was recovered");
    a_message_on_each_queue_runs(&client, &queues).await;
    // Due in half a second: the index names it then (a pass over every queue, the fallback,
    // comes only every 60 rounds).
    let later = client
        .enqueue(Stats {
            values: vec![1.0, 1.0],
        })
        .queue(&queues[1])
        .countdown(Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(later.wait(Duration::from_secs(2)).await.unwrap().mean, 1.0);
    worker.stop().await.unwrap();
}

/// Issue 31: what the due index cannot name, the pass over every queue every 60 rounds still
/// serves: a scheduled message without its entry (as a producer of an older version writes
/// it) is promoted and runs, and a processing list no lease covers (its lease vanished without
/// a recovery) is swept back and runs. The worker's first round sees both too early (the
/// message is not due, the list not yet orphaned for its grace), so only the later full pass,
/// 6 s in at a 100 ms heartbeat, can serve them; without it neither ever runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pass_over_every_queue_serves_what_the_due_index_does_not_name() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let mut admin = admin(&server).await;
    let queue = format!("unnamed-{}", uuid::Uuid::new_v4());
    // A processing list whose lease vanished: taken by a worker, then its lease removed.
    let (lost, orphaned) =
        a_worker_dies_holding(&client, &queue, Duration::from_secs(60), [2.0, 2.0]).await;
    let () = redis::cmd("ZREM")
        .arg(format!("taskq:{{{queue}}}:workers"))
        .arg(lost.as_str())
        .query_async(&mut admin)
        .await
        .unwrap();

    let worker = start_worker(all_tasks(builder(&client)).queues([queue.clone()]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Due in a second, its entry removed at once, as if never written.
    let unnamed = client
        .enqueue(Stats {
            values: vec![3.0, 3.0],
        })
        .queue(&queue)
        .countdown(Duration::from_secs(1))
        .await
        .unwrap();
    let () = redis::cmd("ZREM")
        .arg("taskq:due")
        .arg(format!("taskq:{{{queue}}}:scheduled"))
        .query_async(&mut admin)
        .await
        .unwrap();

    assert_eq!(
        orphaned.wait(Duration::from_secs(15)).await.unwrap().mean,
        2.0,
        "the orphaned list was swept back and ran"
    );
    assert_eq!(
        unnamed.wait(Duration::from_secs(15)).await.unwrap().mean,
        3.0,
        "the unnamed scheduled message was promoted and ran"
    );
    worker.stop().await.unwrap();
}

/// Issue 31: ten idle workers of one queue take turns at the passes any of them may make for
/// all (reaping, promoting): the fleet makes about two per heartbeat, not one per worker. A
/// lost worker's message is still recovered and run, by turns spaced for the fleet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workers_take_turns_at_reaping_and_still_recover_a_lost_one() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let queue = format!("turns-{}", uuid::Uuid::new_v4());
    // A worker that takes a message and dies before the fleet starts: its lease ends 2.5 s in,
    // once the fleet has counted itself and spaced its turns.
    let (_, handle) =
        a_worker_dies_holding(&client, &queue, Duration::from_millis(2500), [1.0, 3.0]).await;

    let workers: Vec<_> = (0..10)
        .map(|_| start_worker(all_tasks(builder(&client)).queues([queue.clone()])))
        .collect();
    // Past the first turns, which count the peers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.reset_command_stats();
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Each turn reads the due index with one ZRANGEBYSCORE (and the reaper pass the lost
    // worker's lease makes due, one more). Ten workers heartbeat at most 300 times in 3 s
    // (every 100 ms); every worker taking a turn every heartbeat would match them one for one
    // (idle heartbeats send nothing to count).
    let heartbeats = 10 * 3_000 / 100;
    let turns = server.command_calls("zrangebyscore");
    assert!(
        turns * 10 <= heartbeats * 4,
        "{turns} turns for {heartbeats} heartbeats of ten workers"
    );
    assert!(turns > 0, "no turn in 3 s");
    assert_eq!(
        server.command_calls("zcount"),
        0,
        "promotion asked each queue"
    );
    // The lost worker's message was recovered and ran.
    let summary = handle.wait(Duration::from_secs(5)).await.unwrap();
    assert_eq!(summary.mean, 2.0);
    for worker in workers {
        worker.stop().await.unwrap();
    }
}

/// A worker leased on `queue` for `lease` that takes a `Stats` message of `values` and dies
/// holding it: its id, and the message's handle.
async fn a_worker_dies_holding(
    client: &Client,
    queue: &str,
    lease: Duration,
    values: [f64; 2],
) -> (taskq_core::WorkerId, taskq_core::AsyncResult<Summary>) {
    let broker = client.broker();
    let lost = taskq_core::WorkerId::generate();
    let membership = broker.membership().expect("Redis has leases");
    let queues = [queue.to_owned()];
    membership.heartbeat(&lost, &queues, lease).await.unwrap();
    let handle = client
        .enqueue(Stats {
            values: values.to_vec(),
        })
        .queue(queue)
        .await
        .unwrap();
    let taken = broker
        .fetch(&lost, &queues, 1, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "the worker took the message");
    (lost, handle)
}
