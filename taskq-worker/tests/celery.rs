//! Python's Celery (pinned from PyPI, in a fresh virtual environment) against a taskq worker
//! serving Celery's queue on a real redis-server: `send_task` in Python, the task run by the
//! worker, the result read back by `AsyncResult.get()`. Needs python3 with venv and pip
//! (`.ci/run` checks); fails loudly without.

use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use taskq_core::{Run, Task, TaskContext, TaskError};
use taskq_testkit::RedisServer;
use taskq_worker::Worker;

/// `tasks.add`, as a Celery project would name it.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "tasks.add", queue = "celery")]
struct Add {
    a: i64,
    b: i64,
}

impl Run for Add {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.a + self.b)
    }
}

/// Fails for good, naming why.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "tasks.refuse", queue = "celery", max_retries = 0)]
struct Refuse {
    why: String,
}

impl Run for Refuse {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::permanent(format!("refused: {}", self.why)))
    }
}

/// Fails its first attempt, then succeeds with the attempt it ran as.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "tasks.flaky", queue = "celery", max_retries = 3)]
struct Flaky {}

impl Run for Flaky {
    type Output = u32;
    async fn run(self, ctx: TaskContext) -> Result<u32, TaskError> {
        if ctx.attempt() == 0 {
            return Err(TaskError::retry_after(
                std::time::Duration::from_millis(100),
                "first attempts fail",
            ));
        }
        Ok(ctx.attempt())
    }
}

/// What the Python side checks, each step asserting what `AsyncResult` reads.
const PRODUCER: &str = r#"
import datetime, sys, time
from celery import Celery

url = sys.argv[1]
app = Celery("producer", broker=url, backend=url)

def get(result):
    # Polls the stored record until it is final, then reads it through `get()` (from the
    # record it cached): a blocking `get()` on Celery 5.4's Redis pub/sub consumer was seen to
    # hang past its own timeout on a loaded machine.
    deadline = time.monotonic() + 30
    while not result.ready():
        assert time.monotonic() < deadline, f"{result.id} not final within 30 s"
        time.sleep(0.05)
    return result.get(timeout=5)

assert get(app.send_task("tasks.add", kwargs={"a": 2, "b": 3})) == 5, "kwargs"
assert get(app.send_task("tasks.add", args=[4, 5])) == 9, "positional args"
assert get(app.send_task("tasks.add", args=[1], kwargs={"b": 10})) == 11, "both"

started = time.monotonic()
assert get(app.send_task("tasks.add", args=[1, 1], countdown=2)) == 2, "countdown"
assert time.monotonic() - started >= 1.5, "ran before its countdown"

eta = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=1)
assert get(app.send_task("tasks.add", args=[3, 3], eta=eta)) == 6, "eta"

assert get(app.send_task("tasks.flaky")) == 1, "a retried task ends SUCCESS on its second attempt"

failed = app.send_task("tasks.refuse", kwargs={"why": "no thanks"})
try:
    get(failed)
    raise AssertionError("a failure must raise")
except Exception as err:
    assert "refused: no thanks" in str(err), repr(err)
assert failed.status == "FAILURE", failed.status
assert "refused: no thanks" in failed.traceback, failed.traceback

too_many = app.send_task("tasks.add", args=[1, 2, 3])
try:
    get(too_many)
    raise AssertionError("three arguments for two fields must fail")
except Exception as err:
    assert "takes 2 arguments (a, b), not 3" in str(err), repr(err)

for unknown in (app.send_task("tasks.nope", kwargs={"a": 1}), app.send_task("tasks.nope", args=[1])):
    try:
        get(unknown)
        raise AssertionError("a task no worker registered must fail")
    except Exception as err:
        assert "tasks.nope" in str(err) and "registered on this worker" in str(err), repr(err)

past = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
expired = app.send_task("tasks.add", args=[1, 1], expires=past)
try:
    get(expired)
    raise AssertionError("an expired task must not succeed")
except Exception:
    pass
assert expired.status == "REVOKED", expired.status
print("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_celery_sends_and_reads_results_from_a_taskq_worker() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let worker = Worker::builder(client.clone())
        .register::<Add>()
        .register::<Refuse>()
        .register::<Flaky>()
        .celery_queues(["celery"])
        .build()
        .unwrap()
        .start();
    let run = run_producer("producer", PRODUCER, &server.url()).await;
    worker.stop().await.unwrap();
    assert_ran(&run, "the Celery producer");
}

/// A broker that cannot serve Celery's queues makes the worker refuse to start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_celerys_transport_refuses_celery_queues() {
    let client = taskq_core::Client::in_memory();
    let worker = Worker::builder(client)
        .register::<Add>()
        .celery_queues(["celery"])
        .build()
        .unwrap();
    let refused = worker
        .run(std::future::pending::<()>())
        .await
        .expect_err("no Celery queues on the memory broker");
    let refused = taskq_core::error_chain(&refused);
    assert!(refused.contains("Celery-protocol queues"), "{refused}");
}

/// The Python Celery worker's tasks.
const PYTHON_TASKS: &str = r#"
import os
from celery import Celery

app = Celery("tasks", broker=os.environ["BROKER"], backend=os.environ["BROKER"])

@app.task(name="py.mul")
def mul(a, b):
    return a * b

@app.task(name="py.boom")
def boom():
    raise ValueError("python says no")
"#;

/// A Python Celery worker process, killed on drop.
struct CeleryWorker(std::process::Child);

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl CeleryWorker {
    /// A Python Celery worker running [`PYTHON_TASKS`] from `queue` of the Redis at `url`.
    fn start(url: &str, queue: &str) -> Self {
        let python = taskq_testkit::python::venv("celery", &taskq_testkit::python::CELERY);
        let dir =
            std::env::temp_dir().join(format!("taskq-celery-tasks-{}-{queue}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tasks.py"), PYTHON_TASKS).unwrap();
        let worker = [
            "worker",
            "--pool",
            "solo",
            "--without-gossip",
            "--without-mingle",
        ];
        Self(
            Command::new(&python)
                .args(["-m", "celery", "-A", "tasks"])
                .args(worker)
                .args(["--without-heartbeat", "-l", "warning", "-Q", queue])
                .current_dir(&dir)
                .env("BROKER", url)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                // Celery warns about running as root and about settings of its next release.
                .stderr(Stdio::null())
                .spawn()
                .expect("start a Python Celery worker"),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_taskq_client_sends_to_a_python_celery_worker_and_reads_its_results() {
    let server = RedisServer::start();
    let _worker = CeleryWorker::start(&server.url(), "celery");
    let client = taskq::connect(&server.url()).await.unwrap();
    let celery = client.celery();
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("b".into(), 7.into());
    let id = celery
        .send_task("py.mul", vec![6.into()], kwargs)
        .await
        .unwrap();
    let wait = std::time::Duration::from_secs(60);
    let product = celery.wait(id, wait).await.unwrap();
    assert_eq!(
        (product.status.as_str(), product.result.clone()),
        ("SUCCESS", serde_json::json!(42)),
        "{product:?}"
    );
    let boom = celery
        .send_task("py.boom", Vec::new(), serde_json::Map::new())
        .await
        .unwrap();
    let failed = celery.wait(boom, wait).await.unwrap();
    assert_eq!(failed.status, "FAILURE", "{failed:?}");
    assert!(
        failed
            .traceback
            .as_deref()
            .is_some_and(|t| t.contains("python says no")),
        "{failed:?}"
    );
}

/// Celery chains sent from Python across both kinds of worker: a first step on Python and a
/// second on taskq (the Python worker sends it), and one that starts on taskq, goes through
/// Python and ends on taskq (the taskq worker sends the next step, its output first among the
/// arguments, as a Celery worker does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_chains_run_across_python_and_taskq_workers() {
    let server = RedisServer::start();
    let _python_worker = CeleryWorker::start(&server.url(), "py");
    let client = taskq::connect(&server.url()).await.unwrap();
    let worker = Worker::builder(client.clone())
        .register::<Add>()
        .celery_queues(["celery"])
        .build()
        .unwrap()
        .start();
    let run = run_producer("chain", CHAINS, &server.url()).await;
    worker.stop().await.unwrap();
    assert_ran(&run, "the chains");
}

/// The chains the chain test sends.
const CHAINS: &str = r#"
import sys
from celery import Celery, chain

app = Celery("producer", broker=sys.argv[1], backend=sys.argv[1])
steps = chain(app.signature("py.mul", args=(2, 3), queue="py"), app.signature("tasks.add", args=(4,)))
result = steps.apply_async()
assert result.get(timeout=60) == 10, result.get(timeout=1)
assert result.parent.get(timeout=1) == 6
# Starting on taskq, through Python, back to taskq: ((2 + 3) * 4) + 1.
there_and_back = chain(
    app.signature("tasks.add", args=(2, 3)),
    app.signature("py.mul", args=(4,), queue="py"),
    app.signature("tasks.add", args=(1,)),
).apply_async()
assert there_and_back.get(timeout=60) == 21, there_and_back.get(timeout=1)
print("ok")
"#;

/// Runs a Python producer `script` (named `label`) against the Redis at `url`, in the Celery
/// virtual environment, off the runtime's threads.
async fn run_producer(label: &str, script: &str, url: &str) -> std::process::Output {
    let python = taskq_testkit::python::venv("celery", &taskq_testkit::python::CELERY);
    let path = std::env::temp_dir().join(format!("taskq-celery-{label}-{}.py", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        // Bounded: a producer that hangs fails the test instead of holding CI.
        Command::new("timeout")
            .arg("300")
            .arg(&python)
            .arg(&path)
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .expect("run a Celery producer")
    })
    .await
    .unwrap()
}

/// Asserts that a producer exited well and printed "ok", showing what it printed if not.
fn assert_ran(run: &std::process::Output, what: &str) {
    assert!(
        run.status.success() && String::from_utf8_lossy(&run.stdout).contains("ok"),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
