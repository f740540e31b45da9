//! Fault tests on RabbitMQ with real processes: demo workers (`taskq-demo-worker --broker
//! amqp://…?results=redis://…`) on a private RabbitMQ node, results in a real redis-server.
//! Every enqueued task id is counted in the workers' ledger: lost must be zero.

use std::{sync::OnceLock, time::Duration};

use lapin::{options::BasicPublishOptions, BasicProperties};
use support::{
    assert_all_succeed, enqueue_sleeps, executions, ledger_path, wait_until, WorkerProcess,
};
use taskq_core::TaskId;
use taskq_testkit::{RabbitNode, RedisServer};

mod support;

/// One node for this binary (each test takes a vhost); the restart test starts its own.
fn shared_node() -> &'static RabbitNode {
    static NODE: OnceLock<RabbitNode> = OnceLock::new();
    NODE.get_or_init(|| RabbitNode::start(&[]))
}

/// The broker URL a worker and the test's client use: a fresh vhost, results in `results`.
fn url(vhost_url: &str, results: &RedisServer) -> String {
    format!("{vhost_url}?results={}", results.url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_is_lost_when_a_worker_is_killed_on_rabbitmq() {
    let results = RedisServer::start();
    let url = url(&shared_node().fresh_vhost_url(), &results);
    let client = taskq::connect(&url).await.unwrap();
    let ledger = ledger_path("amqp-kill");
    let ids = enqueue_sleeps(&client, 300, 20, &ledger).await;

    let mut victim = WorkerProcess::start_on(&url, &["--concurrency", "16"], &[]);
    let mut survivor = WorkerProcess::start_on(&url, &["--concurrency", "16"], &[]);
    wait_until("some progress", Duration::from_secs(60), async || {
        executions(&ledger).len() >= 60
    })
    .await;
    victim.signal("KILL");
    victim.wait_exit(Duration::from_secs(5));

    let duplicates = assert_all_succeed(&client, &ids, &ledger, Duration::from_secs(90)).await;
    eprintln!(
        "rabbitmq, killed worker: 0 lost, {duplicates} duplicates of {}",
        ids.len()
    );
    let stats = client.broker().stats("default").await.unwrap();
    assert_eq!((stats.pending, stats.dead), (0, 0), "{stats:?}");
    survivor.signal("TERM");
    assert!(survivor.wait_exit(Duration::from_secs(15)).success());
    let _ = std::fs::remove_file(&ledger);
}

/// kill -9 of the node mid-run, then a restart: every confirmed enqueue survives (quorum
/// queues, persistent messages), and the workers reconnect and finish by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_run_loses_no_confirmed_enqueue() {
    let node = RabbitNode::start(&[]);
    let results = RedisServer::start();
    let url = url(&node.fresh_vhost_url(), &results);
    let client = taskq::connect(&url).await.unwrap();
    let ledger = ledger_path("amqp-node-kill");
    // 300 runs of 200 ms on 8 slots: about 7.5 s of work, so the crash lands mid-run.
    let ids = enqueue_sleeps(&client, 300, 200, &ledger).await;
    // RabbitMQ 3.10's Raft library saves a new quorum queue's metadata every 5 s: a queue
    // declared less than that before a hard crash can come back empty (docs/amqp.md, "Known
    // limits"). The queues here were declared by the enqueue; the crash comes later.
    let declared = std::time::Instant::now();

    let mut worker = WorkerProcess::start_on(&url, &["--concurrency", "8"], &[]);
    wait_until("some progress", Duration::from_secs(60), async || {
        executions(&ledger).len() >= 20
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(declared.elapsed())).await;
    node.kill();
    let done_at_crash = executions(&ledger).len();
    assert!(
        done_at_crash < ids.len(),
        "the crash came after the work was done"
    );
    node.restart();

    let duplicates = assert_all_succeed(&client, &ids, &ledger, Duration::from_secs(120)).await;
    eprintln!(
        "rabbitmq, node killed after {done_at_crash} runs: 0 lost, {duplicates} duplicates of {}",
        ids.len()
    );
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).success());
    let _ = std::fs::remove_file(&ledger);
}

/// Hostile bytes published straight into a queue (not JSON, a wrong content type, deeply
/// nested, huge): each is dead-lettered with a reason, and the worker goes on to run a good
/// task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_and_the_worker_survives() {
    let results = RedisServer::start();
    let vhost_url = shared_node().fresh_vhost_url();
    let url = url(&vhost_url, &results);
    let client = taskq::connect(&url).await.unwrap();
    let ledger = ledger_path("amqp-hostile");
    // Declares the queues.
    let good = enqueue_sleeps(&client, 1, 1, &ledger).await;
    let hostile: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        format!(
            "{{\"v\":1,\"id\":\"{}\",\"task\":\"demo.sleep\",\"args\":\"{}\"}}",
            TaskId::new(),
            "x".repeat(4 << 20)
        )
        .into_bytes(),
    ];
    let connection = lapin::Connection::connect(&vhost_url, lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for body in &hostile {
        channel
            .basic_publish(
                "".into(),
                "taskq.default.p0".into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_content_type("text/plain".into()),
            )
            .await
            .unwrap();
    }
    let after = enqueue_sleeps(&client, 1, 1, &ledger).await;

    let mut worker = WorkerProcess::start_on(&url, &["--concurrency", "4"], &[]);
    let mut ids = good.clone();
    ids.extend(&after);
    assert_all_succeed(&client, &ids, &ledger, Duration::from_secs(60)).await;
    wait_until(
        "the hostile messages in dead letters",
        Duration::from_secs(30),
        async || client.broker().stats("default").await.unwrap().dead == hostile.len(),
    )
    .await;
    let dead = client
        .broker()
        .dead_letters("default", taskq_core::Page::first(10))
        .await
        .unwrap();
    for letter in &dead {
        assert!(
            matches!(
                letter.reason,
                taskq_core::DeadReason::Malformed | taskq_core::DeadReason::Oversized
            ),
            "{letter:?}"
        );
    }
    worker.signal("TERM");
    assert!(
        worker.wait_exit(Duration::from_secs(15)).success(),
        "the worker survived"
    );
    let _ = std::fs::remove_file(&ledger);
}
