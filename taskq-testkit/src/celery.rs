//! Python's Celery beside taskq, for the tests of Celery's protocol on each broker (Redis in
//! taskq-worker, RabbitMQ in taskq-amqp): the taskq tasks a Python producer calls, the
//! producer's script, a Python Celery worker process, and running a script to its end.
//! Needs python3 with venv and pip ([`crate::python`]); fails loudly without.

use std::process::{Command, Output, Stdio};

use serde::{Deserialize, Serialize};
use taskq_core::{Run, Task, TaskContext, TaskError};

use crate::python::{venv, CELERY};

/// `tasks.add`, as a Celery project would name it.
#[derive(Debug, Task, Serialize, Deserialize)]
#[task(name = "tasks.add", queue = "celery")]
pub struct Add {
    /// The first term.
    pub a: i64,
    /// The second term.
    pub b: i64,
}

impl Run for Add {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.a + self.b)
    }
}

/// Fails for good, naming why.
#[derive(Debug, Task, Serialize, Deserialize)]
#[task(name = "tasks.refuse", queue = "celery", max_retries = 0)]
pub struct Refuse {
    /// Said in the error.
    pub why: String,
}

impl Run for Refuse {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Err(TaskError::permanent(format!("refused: {}", self.why)))
    }
}

/// Fails its first attempt, then succeeds a second later with the attempt it ran as.
#[derive(Debug, Task, Serialize, Deserialize)]
#[task(name = "tasks.flaky", queue = "celery", max_retries = 3)]
pub struct Flaky {}

impl Run for Flaky {
    type Output = u32;
    async fn run(self, ctx: TaskContext) -> Result<u32, TaskError> {
        if ctx.attempt() == 0 {
            return Err(TaskError::retry_after(
                std::time::Duration::from_secs(1),
                "first attempts fail",
            ));
        }
        Ok(ctx.attempt())
    }
}

/// A Python producer calling [`Add`], [`Refuse`] and [`Flaky`] the ways Celery users do,
/// asserting what `AsyncResult` reads; run with the broker URL and the result backend URL.
/// Prints "ok" at the end.
pub const PRODUCER: &str = r#"
import datetime, gc, sys, time
from celery import Celery

# Celery 5.4's Redis result consumer deadlocks when the cyclic garbage collector frees an
# AsyncResult while the consumer holds its pub/sub lock: its __del__ unsubscribes and waits for
# the lock the interrupted subscribe holds (seen here: send_task -> subscribe -> __del__ ->
# unsubscribe, the script stuck for good). The script is short; collect nothing mid-call.
gc.disable()

app = Celery("producer", broker=sys.argv[1], backend=sys.argv[2])

def get(result):
    # Polls the record until it is final, then reads it through `get()` (from the record it
    # cached): a blocking `get()` on Celery 5.4's Redis pub/sub consumer was seen to hang
    # past its own timeout on a loaded machine.
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

flaky = app.send_task("tasks.flaky")
states = set()
deadline = time.monotonic() + 30
while not flaky.ready():
    assert time.monotonic() < deadline, "the retried task did not end"
    states.add(flaky.state)
    time.sleep(0.05)
assert "RETRY" in states, f"the wait between attempts reads RETRY, not {states}"
assert flaky.get(timeout=5) == 1, "a retried task ends SUCCESS on its second attempt"
# Kombu's Redis transport keeps a priority in a list of its own; RabbitMQ in the property.
assert get(app.send_task("tasks.add", args=[2, 2], priority=5)) == 4, "a priority"

if not sys.argv[2].startswith("rpc"):
    # A callback's result goes to whoever sent the callback: with rpc:// that is the worker.
    callback = app.signature("tasks.add", args=(10,))
    frozen = callback.freeze()
    assert get(app.send_task("tasks.add", args=[1, 2], link=callback)) == 3, "a linked task"
    assert get(app.AsyncResult(frozen.id)) == 13, "its callback, with the output first"

errback = app.send_task("tasks.add", args=[1, 2], link_error=app.signature("tasks.add", args=(1,)))
try:
    get(errback)
    raise AssertionError("errbacks are refused")
except AssertionError:
    raise
except Exception as err:
    assert "`errbacks`" in str(err), repr(err)

failed = app.send_task("tasks.refuse", kwargs={"why": "no thanks"})
try:
    get(failed)
    raise AssertionError("a failure must raise")
except AssertionError:
    raise
except Exception as err:
    assert "refused: no thanks" in str(err), repr(err)
assert failed.status == "FAILURE", failed.status
assert "refused: no thanks" in failed.traceback, failed.traceback

too_many = app.send_task("tasks.add", args=[1, 2, 3])
try:
    get(too_many)
    raise AssertionError("three arguments for two fields must fail")
except AssertionError:
    raise
except Exception as err:
    assert "takes 2 arguments (a, b), not 3" in str(err), repr(err)

for unknown in (app.send_task("tasks.nope", kwargs={"a": 1}), app.send_task("tasks.nope", args=[1])):
    try:
        get(unknown)
        raise AssertionError("a task no worker registered must fail")
    except AssertionError:
        raise
    except Exception as err:
        assert "tasks.nope" in str(err) and "registered on this worker" in str(err), repr(err)

# Expires while put off to its countdown (on RabbitMQ Celery also gives the message a TTL, and
# RabbitMQ drops one already past it before anyone sees it, as it would for Celery's workers).
expired = app.send_task("tasks.add", args=[1, 1], countdown=5, expires=3)
try:
    get(expired)
    raise AssertionError("an expired task must not succeed")
except AssertionError:
    raise
except Exception:
    pass
assert expired.status == "REVOKED", expired.status
print("ok")
"#;

/// Celery chains sent from Python across both kinds of worker, run with the broker URL and
/// the result backend URL: a first step on Python (queue `py`) and a second on taskq, and one
/// that starts on taskq, goes through Python and ends on taskq. Prints "ok" at the end.
pub const CHAINS: &str = r#"
import gc, sys
from celery import Celery, chain

gc.disable()  # as in PRODUCER: Celery's result consumer deadlocks in a collection mid-call

app = Celery("producer", broker=sys.argv[1], backend=sys.argv[2])
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

/// The Python Celery worker's tasks: `py.mul(a, b)` and `py.boom()` (raises "python says
/// no").
const PYTHON_TASKS: &str = r#"
import os
from celery import Celery

app = Celery("tasks", broker=os.environ["BROKER"], backend=os.environ["BACKEND"])

@app.task(name="py.mul")
def mul(a, b):
    return a * b

@app.task(name="py.boom")
def boom():
    raise ValueError("python says no")
"#;

/// A Python Celery worker process (solo pool), killed on drop.
#[derive(Debug)]
pub struct CeleryWorker(std::process::Child);

impl Drop for CeleryWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl CeleryWorker {
    /// A Python Celery worker serving `py.mul` and `py.boom` from `queue` of the broker at
    /// `broker`, its results in `backend` (a URL, or `rpc://`).
    ///
    /// # Panics
    ///
    /// When the virtual environment cannot be made or Python cannot start.
    pub fn start(broker: &str, backend: &str, queue: &str) -> Self {
        let python = venv("celery", &CELERY);
        let dir = own_dir(&format!("tasks-{queue}"));
        std::fs::write(dir.join("tasks.py"), PYTHON_TASKS).expect("write tasks.py");
        let child = Command::new(&python)
            .args(["-m", "celery", "-A", "tasks", "worker", "--pool", "solo"])
            .args([
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ])
            .args(["-l", "warning", "-Q", queue])
            .current_dir(&dir)
            .env("BROKER", broker)
            .env("BACKEND", backend)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Celery warns about running as root and about settings of its next release.
            .stderr(Stdio::null())
            .spawn()
            .expect("start a Python Celery worker");
        Self(child)
    }
}

/// Sends `py.mul(6, b=7)`, `py.mul(2, 3)` with a countdown of a second, and `py.boom()`
/// through `client` to a [`CeleryWorker`] on Celery's default queue, and asserts what comes
/// back: 42, 6 no earlier than the countdown, and a FAILURE with Python's traceback.
///
/// # Panics
///
/// When either answer is not as expected, or does not come within a minute.
pub async fn python_worker_answers(client: &taskq_core::Client) {
    let celery = client.celery();
    let mut kwargs = serde_json::Map::new();
    kwargs.insert("b".into(), 7.into());
    let id = celery
        .send_task("py.mul", vec![6.into()], kwargs)
        .await
        .expect("send py.mul");
    let wait = std::time::Duration::from_secs(60);
    let product = celery.wait(id, wait).await.expect("py.mul's result");
    assert_eq!(
        (product.status.as_str(), product.result.clone()),
        ("SUCCESS", serde_json::json!(42)),
        "{product:?}"
    );
    let sent = std::time::Instant::now();
    let later = client
        .celery()
        .countdown(std::time::Duration::from_secs(1))
        .send_task("py.mul", vec![2.into(), 3.into()], serde_json::Map::new())
        .await
        .expect("send py.mul with a countdown");
    let product = celery.wait(later, wait).await.expect("py.mul's result");
    assert_eq!(product.result, serde_json::json!(6), "{product:?}");
    assert!(
        sent.elapsed() >= std::time::Duration::from_millis(900),
        "ran before its countdown"
    );
    let boom = celery
        .send_task("py.boom", Vec::new(), serde_json::Map::new())
        .await
        .expect("send py.boom");
    let failed = celery.wait(boom, wait).await.expect("py.boom's result");
    assert_eq!(failed.status, "FAILURE", "{failed:?}");
    assert!(
        failed
            .traceback
            .as_deref()
            .is_some_and(|t| t.contains("python says no")),
        "{failed:?}"
    );
}

/// Runs a Python `script` (named `label`) with `args`, in the Celery virtual environment, off
/// the runtime's threads, under a 300-second limit (a script that hangs fails the test instead
/// of holding CI).
///
/// The script runs from a directory of its own: Python puts a script's directory first on its
/// import path, so a stray `bisect.py` in the shared temporary directory once replaced the
/// standard library's inside Celery.
///
/// # Panics
///
/// When the virtual environment cannot be made or the script cannot start.
pub async fn run_script(label: &str, script: &str, args: &[&str]) -> Output {
    let python = venv("celery", &CELERY);
    let dir = own_dir("script");
    let path = dir.join(format!("taskq-celery-{label}.py"));
    std::fs::write(&path, script).expect("write the Python script");
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let run = Command::new("timeout")
            .arg("300")
            .arg(&python)
            .arg(&path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run a Python script");
        let _ = std::fs::remove_dir_all(&dir);
        run
    })
    .await
    .expect("the script's thread")
}

/// A new directory of its own under the temporary directory, for Python to run from: Python
/// puts the directory it runs from first on its import path, so nothing else may lie there.
fn own_dir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "taskq-celery-{what}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("a directory of its own for Python");
    dir
}

/// Asserts that a script exited well and printed "ok", showing what it printed if not.
///
/// # Panics
///
/// When it did not.
pub fn assert_ran(run: &Output, what: &str) {
    assert!(
        run.status.success() && String::from_utf8_lossy(&run.stdout).contains("ok"),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
