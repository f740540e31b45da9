//! Celery-protocol tasks survive a taskq worker killed with SIGKILL: a Python Celery producer
//! (pinned from PyPI) sends `demo.sleep` tasks to Celery's queue on a real redis-server, two
//! demo worker processes serve it (`--celery-queues celery`), the first is killed mid-run, and
//! every id ends SUCCESS in Python and ran in the workers' ledger. Recovery is taskq's: the
//! messages were moved out of Kombu's list into taskq's queue, held in the killed worker's
//! processing list, and recovered when its lease expired.

use std::{
    io::Read,
    process::{Command, Stdio},
    time::Duration,
};

use support::{assert_every_id_ran, executions, ledger_path, wait_until, WorkerProcess};
use taskq_core::TaskId;
use taskq_testkit::RedisServer;

mod support;

/// Tasks sent.
const TASKS: usize = 40;

/// Sends the tasks, prints their ids, then waits for every result.
const PRODUCER: &str = r#"
import sys
from celery import Celery

url, ledger, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = Celery("producer", broker=url, backend=url)
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
    let ledger = ledger_path("celery-kill");
    let python = taskq_testkit::python::venv("celery-faults", &taskq_testkit::python::CELERY);
    let script =
        std::env::temp_dir().join(format!("taskq-celery-faults-{}.py", std::process::id()));
    std::fs::write(&script, PRODUCER).unwrap();
    let mut producer = Command::new(&python)
        .arg(&script)
        .arg(server.url())
        .arg(&ledger)
        .arg(TASKS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the Celery producer");

    let celery = ["--concurrency", "4", "--celery-queues", "celery"];
    let mut victim = WorkerProcess::start(&server, &celery);
    wait_until("some progress", Duration::from_secs(60), async || {
        executions(&ledger).len() >= 4
    })
    .await;
    victim.signal("KILL");
    victim.wait_exit(Duration::from_secs(5));
    let mut survivor = WorkerProcess::start(&server, &celery);

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
    eprintln!("killed worker, Celery protocol: 0 lost, {duplicates} duplicate runs of {TASKS}");
    survivor.signal("TERM");
    assert!(survivor.wait_exit(Duration::from_secs(10)).success());
    let _ = std::fs::remove_file(&ledger);
    let _ = std::fs::remove_file(&script);
}
