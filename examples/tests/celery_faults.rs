//! Celery-protocol tasks survive a taskq worker killed with SIGKILL: a Python Celery producer
//! (pinned from PyPI) sends `demo.sleep` tasks to Celery's queue, two demo worker processes
//! serve it (`--celery-queues celery`), the first is killed mid-run, and every id ends SUCCESS
//! in Python and ran in the workers' ledger. On a real redis-server and on a private RabbitMQ
//! node (results in Redis). Recovery is taskq's: the messages were moved out of Celery's queue
//! into taskq's, held by the killed worker (its processing list on Redis, recovered when its
//! lease expired; its unacknowledged deliveries on RabbitMQ, which the node hands out again
//! when its connection dies).

use std::{
    io::Read,
    process::{Command, Stdio},
    time::Duration,
};

use support::{assert_every_id_ran, executions, ledger_path, wait_until, WorkerProcess};
use taskq_core::TaskId;
use taskq_testkit::{RabbitNode, RedisServer};

mod support;

/// Tasks sent.
const TASKS: usize = 40;

/// Sends the tasks, prints their ids, then waits for every result.
const PRODUCER: &str = r#"
import gc, sys
from celery import Celery

gc.disable()  # Celery's result consumer deadlocks when a collection frees a result mid-call

broker, backend, ledger, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
app = Celery("producer", broker=broker, backend=backend)
sent = [app.send_task("demo.sleep", kwargs={"ms": 200, "ledger": ledger}) for _ in range(count)]
for result in sent:
    print(result.id, flush=True)
for result in sent:
    assert result.get(timeout=90) == 200, result.id
print("ok", flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_tasks_survive_a_killed_worker() {
    let server = RedisServer::start();
    survive_a_killed_worker("redis", &server.url(), &server.url(), &server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_tasks_survive_a_killed_worker_on_rabbitmq() {
    let node = RabbitNode::start(&[]);
    let results = RedisServer::start();
    let vhost = node.fresh_vhost_url();
    let workers = format!("{vhost}?results={}", results.url());
    survive_a_killed_worker("rabbitmq", &workers, &vhost, &results.url()).await;
}

/// Python sends [`TASKS`] to Celery's queue at `broker` (results in `backend`); demo workers
/// on `workers` serve it, the first killed mid-run: every id ends SUCCESS and ran.
async fn survive_a_killed_worker(label: &str, workers: &str, broker: &str, backend: &str) {
    let ledger = ledger_path(&format!("celery-kill-{label}"));
    let python = taskq_testkit::python::venv("celery-faults", &taskq_testkit::python::CELERY);
    let script = std::env::temp_dir().join(format!(
        "taskq-celery-faults-{label}-{}.py",
        std::process::id()
    ));
    std::fs::write(&script, PRODUCER).unwrap();
    let mut producer = Command::new(&python)
        .arg(&script)
        .args([broker, backend])
        .arg(&ledger)
        .arg(TASKS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Celery producer");

    let celery = ["--concurrency", "4", "--celery-queues", "celery"];
    let mut victim = WorkerProcess::start_on(workers, &celery, &[]);
    wait_until("some progress", Duration::from_secs(60), async || {
        executions(&ledger).len() >= 4
    })
    .await;
    victim.signal("KILL");
    victim.wait_exit(Duration::from_secs(5));
    let mut survivor = WorkerProcess::start_on(workers, &celery, &[]);

    let finished = tokio::task::spawn_blocking(move || {
        let status = producer.wait().expect("wait for the producer");
        let mut out = String::new();
        let mut err = String::new();
        producer
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        producer
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status, out, err)
    })
    .await
    .unwrap();
    let (status, out, err) = finished;
    assert!(
        status.success() && out.trim_end().ends_with("ok"),
        "the Celery producer failed:\n{out}{err}"
    );
    let ids: Vec<TaskId> = out
        .lines()
        .filter(|line| *line != "ok")
        .map(|line| line.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), TASKS);
    let duplicates = assert_every_id_ran(&ids, &ledger);
    eprintln!(
        "{label}, killed worker, Celery protocol: 0 lost, {duplicates} duplicate runs of {TASKS}"
    );
    survivor.signal("TERM");
    assert!(survivor.wait_exit(Duration::from_secs(10)).success());
    let _ = std::fs::remove_file(&ledger);
    let _ = std::fs::remove_file(&script);
}
