//! The real `taskq` binary against a real redis-server: each subcommand's happy path and its
//! error paths.

use std::{
    io::Write,
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use taskq_core::{Client, Run, Task, TaskContext, TaskError};
use taskq_testkit::RedisServer;
use taskq_worker::{RunningWorker, Worker};

#[derive(Task, Serialize, Deserialize)]
#[task(name = "cli.add", queue = "cli")]
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

fn taskq(server: &RedisServer, args: &[&str]) -> Output {
    taskq_with_input(&server.url(), args, "")
}

fn taskq_with_input(url: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args(["--broker", url])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run taskq");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

fn failure(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected failure, got {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err.trim().to_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).expect("valid JSON")
}

async fn start_worker(client: &Client) -> RunningWorker {
    Worker::builder(client.clone())
        .register::<Add>()
        .queues(["cli"])
        .liveness(Duration::from_millis(200), Duration::from_secs(2))
        .build()
        .unwrap()
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_status_and_result() {
    let server = RedisServer::start();
    let id = stdout(&taskq(
        &server,
        &[
            "enqueue",
            "cli.add",
            "--args",
            r#"{"a":1,"b":2}"#,
            "--queue",
            "cli",
            "--force",
        ],
    ));
    let pending = stdout(&taskq(
        &server,
        &[
            "enqueue",
            "cli.add",
            "--args",
            r#"{"a":5,"b":5}"#,
            "--queue",
            "cli",
            "--countdown",
            "1h",
            "--priority",
            "7",
            "--force",
        ],
    ));
    assert_ne!(id, pending);

    let status = json(&taskq(&server, &["status", "--json"]));
    let cli = status["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "cli")
        .unwrap();
    assert_eq!(
        (cli["pending"].as_u64(), cli["scheduled"].as_u64()),
        (Some(1), Some(1))
    );
    let table = stdout(&taskq(&server, &["status"]));
    assert!(table.starts_with("QUEUE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().take(3).collect::<Vec<_>>() == ["cli", "1", "1"]),
        "{table}"
    );

    let client = taskq::connect(&server.url()).await.unwrap();
    let worker = start_worker(&client).await;
    let record = json(&taskq(&server, &["result", &id, "--wait", "10s", "--json"]));
    assert_eq!(record["state"], "SUCCESS");
    assert_eq!(record["result"], 3);
    let text = stdout(&taskq(&server, &["result", &id]));
    assert!(
        text.contains("state     SUCCESS") && text.contains("result    3"),
        "{text}"
    );
    worker.stop().await.unwrap();

    // A running task's progress shows too.
    let running = taskq_core::TaskId::new();
    let mut record = taskq_core::TaskResult::new(
        running,
        "cli.add",
        taskq_core::TaskState::Started,
        client.clock().now(),
    )
    .with_started_at(client.clock().now());
    record.progress = Some(serde_json::json!({"done": 3, "of": 10}));
    client
        .backend()
        .store(&record, Duration::from_secs(60))
        .await
        .unwrap();
    let text = stdout(&taskq(&server, &["result", &running.to_string()]));
    assert!(text.contains("state     STARTED"), "{text}");
    assert!(text.contains(r#"progress  {"done":3,"of":10}"#), "{text}");
    assert!(text.contains("started   "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_and_ping() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let worker = start_worker(&client).await;
    let mut listed = serde_json::Value::Null;
    for _ in 0..50 {
        listed = json(&taskq(&server, &["workers", "--json"]));
        if listed.as_array().is_some_and(|w| !w.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed[0]["id"], worker.id().to_string());
    assert_eq!(listed[0]["queues"], serde_json::json!(["cli"]));
    let table = stdout(&taskq(&server, &["workers"]));
    assert!(table.contains(&worker.id().to_string()), "{table}");

    let answers = json(&taskq(&server, &["ping", "--json", "--timeout", "2s"]));
    assert_eq!(answers[0]["worker"], worker.id().to_string());
    assert!(answers[0]["latency_ms"].as_f64().unwrap() < 2_000.0);
    // A mistyped id is refused; the worker's own makes it stop warm, its run ending by itself.
    let typo = failure(&taskq(&server, &["shutdown", "no-such-worker"]));
    assert!(typo.contains("no live worker `no-such-worker`"), "{typo}");
    let id = worker.id().to_string();
    assert_eq!(
        stdout(&taskq(&server, &["shutdown", &id])),
        format!("asked `{id}` to shut down")
    );
    let mut gone = false;
    for _ in 0..200 {
        if client.broker().workers().await.unwrap().is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the worker stopped when asked and left the list");
    worker.stop().await.unwrap();
    // Nobody left to answer.
    let err = failure(&taskq(&server, &["ping", "--timeout", "300ms"]));
    assert!(err.contains("no worker answered"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_list_show_requeue_purge() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let ids: Vec<_> = client
        .enqueue_many((0..3).map(|i| Add { a: i, b: 0 }))
        .await
        .unwrap()
        .iter()
        .map(|h| h.id())
        .collect();
    // Dead-lettered as retries_exhausted with the error "boom".
    taskq_testkit::suite::kill(client.broker(), "cli", 3).await;

    let listed = json(&taskq(&server, &["dead", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 3);
    let table = stdout(&taskq(&server, &["dead", "list", "--queue", "cli"]));
    assert!(
        table.contains("retries_exhausted") && table.contains("boom"),
        "{table}"
    );
    let shown = json(&taskq(&server, &["dead", "show", &ids[0].to_string()]));
    assert_eq!(shown["id"], ids[0].to_string());
    assert_eq!(shown["reason"], "retries_exhausted");
    assert_eq!(
        shown["payload"]["id"],
        ids[0].to_string(),
        "the payload is shown as JSON, not as an escaped string: {shown}"
    );

    assert_eq!(
        stdout(&taskq(&server, &["dead", "requeue", &ids[0].to_string()])),
        "requeued 1"
    );
    let err = failure(&taskq(&server, &["dead", "requeue", &ids[0].to_string()]));
    assert!(err.contains("requeued 0 of 1"), "{err}");
    let stats = client.broker().stats("cli").await.unwrap();
    assert_eq!((stats.pending, stats.dead), (1, 2));
    // Purging every queue asks first; no answer refuses.
    let refused = failure(&taskq(&server, &["dead", "purge", "--older-than", "1h"]));
    assert!(refused.contains("not purged"), "{refused}");
    assert_eq!(
        stdout(&taskq(
            &server,
            &["dead", "purge", "--older-than", "1h", "--yes"]
        )),
        "purged 0"
    );
    assert_eq!(
        stdout(&taskq(&server, &["dead", "purge", "--queue", "cli"])),
        "purged 2"
    );

    let err = failure(&taskq(&server, &["dead", "show", &ids[1].to_string()]));
    assert!(err.contains("no dead letter"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_purge_asks_first_and_revoke_persists() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    client
        .enqueue_many((0..4).map(|i| Add { a: i, b: 0 }))
        .await
        .unwrap();
    let refused = taskq_with_input(&server.url(), &["queue", "purge", "cli"], "n\n");
    assert!(failure(&refused).contains("not purged"));
    assert_eq!(client.broker().stats("cli").await.unwrap().pending, 4);
    let confirmed = taskq_with_input(&server.url(), &["queue", "purge", "cli"], "y\n");
    assert_eq!(stdout(&confirmed), "purged 4");
    client.enqueue(Add { a: 1, b: 1 }).await.unwrap();
    assert_eq!(
        stdout(&taskq(&server, &["queue", "purge", "cli", "--yes"])),
        "purged 1"
    );

    let id = taskq_core::TaskId::new();
    let said = stdout(&taskq(&server, &["revoke", &id.to_string(), "--terminate"]));
    assert!(said.starts_with(&format!("revoked {id}")), "{said}");
    assert!(said.contains("nothing is known of this id"), "{said}");
    assert!(client.broker().revoked().await.unwrap().contains(&id));
    let known = client.enqueue(Add { a: 2, b: 2 }).await.unwrap().id();
    let record = taskq_core::TaskResult::new(
        known,
        "cli.add",
        taskq_core::TaskState::Retry,
        client.clock().now(),
    );
    client
        .backend()
        .store(&record, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        stdout(&taskq(&server, &["revoke", &known.to_string()])),
        format!("revoked {known}")
    );
}

/// `taskq queue pause` holds a queue back from a running worker (status says so) until
/// `taskq queue resume`; on RabbitMQ the refusal names the feature (see the RabbitMQ test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_pause_holds_a_queue_back_until_resume() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    assert_eq!(
        stdout(&taskq(&server, &["queue", "pause", "cli"])),
        "paused `cli`"
    );
    let _worker = start_worker(&client).await;
    let handles = client
        .enqueue_many((0..3).map(|i| Add { a: i, b: 1 }))
        .await
        .unwrap();
    let status = stdout(&taskq(&server, &["status"]));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("cli (paused) ") && l.contains(" 3 ")),
        "{status}"
    );
    let listed = json(&taskq(&server, &["--json", "status"]));
    assert_eq!(listed["queues"][0]["paused"], true, "{listed}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        client.broker().stats("cli").await.unwrap().pending,
        3,
        "the worker took nothing from the paused queue"
    );
    assert_eq!(
        stdout(&taskq(&server, &["queue", "resume", "cli"])),
        "resumed `cli`"
    );
    for handle in handles {
        handle.wait(Duration::from_secs(10)).await.unwrap();
    }
    let status = stdout(&taskq(&server, &["status"]));
    assert!(!status.contains("(paused)"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_clear_line() {
    let server = RedisServer::start();
    let port = {
        let gone = RedisServer::start();
        gone.port()
    };
    let unreachable = taskq_with_input(
        &format!("redis://app:s3cret@127.0.0.1:{port}"),
        &["status"],
        "",
    );
    let err = failure(&unreachable);
    assert!(
        err.contains(&format!(
            "cannot reach Redis at redis://app:***@127.0.0.1:{port} (is Redis running there?)"
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(
        err.matches("Connection refused").count(),
        1,
        "said once: {err}"
    );

    let malformed = taskq_with_input("reddis://nope", &["status"], "");
    let err = failure(&malformed);
    assert!(
        err.starts_with("taskq: invalid broker URL `reddis://nope`"),
        "{err}"
    );

    let memory = taskq_with_input("memory://", &["status"], "");
    assert!(failure(&memory).contains("memory:// is a broker inside one process"));

    // A port that answers, but not as Redis: one line, not a protocol dump.
    let not_redis = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let not_redis_port = not_redis.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in not_redis.incoming().flatten() {
            let mut stream = stream;
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            );
        }
    });
    let confused = taskq_with_input(
        &format!("redis://127.0.0.1:{not_redis_port}"),
        &["status"],
        "",
    );
    let err = failure(&confused);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("taskq: cannot reach the broker"), "{err}");
    assert!(
        err.contains("does not answer as Redis does: is another service on that port?"),
        "{err}"
    );

    let unknown = taskq_core::TaskId::new().to_string();
    let err = failure(&taskq(&server, &["result", &unknown]));
    assert!(err.contains("no result for"), "{err}");
    let err = failure(&taskq(&server, &["result", "not-a-uuid"]));
    assert!(err.contains("is not a task id"), "{err}");
    let err = failure(&taskq(&server, &["enqueue", "cli.add", "--args", "{a:1"]));
    assert!(err.contains("--args is not valid JSON"), "{err}");
    let err = failure(&taskq(&server, &["result", &unknown, "--wait", "200ms"]));
    assert!(err.contains("no result for"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_refreshes_until_interrupted() {
    use std::io::Read;
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    client.enqueue(Add { a: 1, b: 1 }).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args(["--broker", &server.url(), "status", "--watch", "100ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        child.wait().unwrap().success(),
        "Ctrl-C ends the watch cleanly"
    );
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let frames = out.matches("QUEUE").count();
    assert!(frames >= 2, "refreshed {frames} time(s): {out}");
    assert!(out.contains("\x1b[2J"), "clears the screen between frames");
}

/// `taskq enqueue NAME` without `--queue` follows what a worker declared for the task: its
/// queue and its retries (here `cli.add`, declared with queue `cli`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_by_name_follows_the_declared_queue_and_retries() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    // Before any worker declared it, the task is refused, then goes to `default` when forced.
    let refused = failure(&taskq(
        &server,
        &["enqueue", "cli.add", "--args", r#"{"a":1,"b":1}"#],
    ));
    assert!(
        refused.contains("no worker has declared any task yet"),
        "{refused}"
    );
    let early = stdout(&taskq(
        &server,
        &[
            "enqueue",
            "cli.add",
            "--args",
            r#"{"a":1,"b":1}"#,
            "--force",
        ],
    ));
    assert_eq!(
        client.broker().stats("default").await.unwrap().pending,
        1,
        "{early}"
    );
    let worker = start_worker(&client).await;
    // The worker publishes its declarations as it starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client
        .broker()
        .task_declaration("cli.add")
        .await
        .unwrap()
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "never declared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = stdout(&taskq(
        &server,
        &["enqueue", "cli.add", "--args", r#"{"a":2,"b":3}"#],
    ));
    let record = json(&taskq(&server, &["result", &id, "--wait", "10s", "--json"]));
    assert_eq!(
        record["state"], "SUCCESS",
        "ran on the worker consuming `cli`: {record}"
    );
    assert_eq!(record["result"], 5);

    // What a worker would only dead-letter is refused, in one line naming what is wrong.
    let unknown = failure(&taskq(&server, &["enqueue", "cli.ad", "--args", "{}"]));
    assert_eq!(unknown.trim_end().lines().count(), 1, "{unknown}");
    assert!(
        unknown.contains("no worker has declared a task named `cli.ad`")
            && unknown.contains("known tasks: cli.add")
            && unknown.contains("--force"),
        "{unknown}"
    );
    let array = failure(&taskq(&server, &["enqueue", "cli.add", "--args", "[1,2]"]));
    assert!(
        array.contains(
            "task `cli.add` takes a JSON object with fields a, b (all required), not an array"
        ),
        "{array}"
    );
    let short = failure(&taskq(
        &server,
        &["enqueue", "cli.add", "--args", r#"{"a":1}"#],
    ));
    assert!(short.contains("task `cli.add` needs field b"), "{short}");
    let typo = failure(&taskq(
        &server,
        &["enqueue", "cli.add", "--args", r#"{"a":1,"b":1,"c":1}"#],
    ));
    assert!(typo.contains("has no field c (it takes a, b)"), "{typo}");
    // Refused calls sent nothing: only the forced early one waits in `default`.
    assert_eq!(client.broker().stats("default").await.unwrap().pending, 1);
    worker.stop().await.unwrap();
}

/// `status`, `workers`, `ping` and `result` against a Redis Cluster (3 masters + 3 replicas):
/// the registries, worker records and pub/sub live on different masters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_workers_and_ping_on_a_cluster() {
    let cluster = taskq_testkit::RedisCluster::start();
    let url = cluster.url();
    let client = taskq_redis::client(taskq_redis::RedisConfig::new(&url))
        .await
        .unwrap();
    let worker = start_worker(&client).await;
    let handles = client
        .enqueue_many((0..20).map(|n| Add { a: n, b: 1 }))
        .await
        .unwrap();
    for handle in &handles {
        handle.wait(Duration::from_secs(10)).await.unwrap();
    }
    let status = json(&taskq_with_input(&url, &["status", "--json"], ""));
    let cli = status["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "cli")
        .unwrap_or_else(|| panic!("queue cli listed: {status}"));
    assert_eq!(cli["pending"], 0, "{status}");
    let mut listed = serde_json::Value::Null;
    for _ in 0..50 {
        listed = json(&taskq_with_input(&url, &["workers", "--json"], ""));
        if listed.as_array().is_some_and(|w| !w.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed[0]["id"], worker.id().to_string());
    let answers = json(&taskq_with_input(
        &url,
        &["ping", "--json", "--timeout", "2s"],
        "",
    ));
    assert_eq!(answers[0]["worker"], worker.id().to_string());
    let result = stdout(&taskq_with_input(
        &url,
        &["result", &handles[0].id().to_string()],
        "",
    ));
    assert!(result.contains("SUCCESS"), "{result}");
    // The record of recent outcomes, read from the queue's master: all twenty, newest first.
    let history = json(&taskq_with_input(
        &url,
        &[
            "history", "--json", "--queue", "cli", "--task", "cli.add", "--state", "success",
            "--within", "10m",
        ],
        "",
    ));
    let ids: std::collections::BTreeSet<String> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["id"].as_str().unwrap().to_owned())
        .collect();
    let sent: std::collections::BTreeSet<String> =
        handles.iter().map(|h| h.id().to_string()).collect();
    assert_eq!(ids, sent, "{history}");
    let table = stdout(&taskq_with_input(&url, &["history", "--limit", "3"], ""));
    assert_eq!(table.lines().count(), 4, "a header and three runs: {table}");
    assert!(
        table.contains("SUCCESS") && table.contains("cli.add"),
        "{table}"
    );
    let none = stdout(&taskq_with_input(
        &url,
        &["history", "--state", "FAILURE"],
        "",
    ));
    assert_eq!(none.trim(), "no run matches");
    let refused = failure(&taskq_with_input(&url, &["history", "--state", "done"], ""));
    assert!(refused.contains("not a state a run ends in"), "{refused}");
    worker.stop().await.unwrap();

    // A task a worker holds shows with its worker, from that queue's master.
    let held = client
        .enqueue(Add { a: 1, b: 1 })
        .queue("elsewhere")
        .await
        .unwrap()
        .id();
    let holder = taskq_core::WorkerId::generate();
    client
        .broker()
        .fetch(&holder, &["elsewhere".into()], 1, Duration::ZERO)
        .await
        .unwrap();
    let active = stdout(&taskq_with_input(&url, &["active"], ""));
    assert!(
        active.contains(&held.to_string()) && active.contains(holder.as_str()),
        "{active}"
    );
    let result = stdout(&taskq_with_input(&url, &["result", &held.to_string()], ""));
    assert!(result.starts_with("RECEIVED: held by worker"), "{result}");
    // The queue signals read the same counts from the cluster's masters.
    metrics_agree_with_status(&url, "elsewhere", false).await;
    client
        .enqueue(Add { a: 3, b: 3 })
        .queue("waiting")
        .await
        .unwrap();
    metrics_agree_with_status(&url, "waiting", true).await;
}

/// `--tls-ca`, `--tls-cert` and `--tls-key` (or `TASKQ_TLS_*`) reach the connection: a TLS-only
/// server that requires client certificates answers `status` only with all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_come_from_flags_and_the_environment() {
    let dir = std::env::temp_dir().join(format!("taskq-cli-tls-{}", uuid::Uuid::new_v4().simple()));
    let files = taskq_testkit::TlsFiles::generate(&dir);
    let server = RedisServer::start_tls(&files, "yes");
    let (ca, cert, key) = (
        files.ca.display().to_string(),
        files.client_cert.display().to_string(),
        files.client_key.display().to_string(),
    );
    let with_flags = taskq_with_input(
        &server.url(),
        &[
            "status",
            "--json",
            "--tls-ca",
            &ca,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        "",
    );
    assert!(json(&with_flags)["queues"].is_array());
    let from_env = Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args(["--broker", &server.url(), "status", "--json"])
        .env("TASKQ_TLS_CA", &ca)
        .env("TASKQ_TLS_CERT", &cert)
        .env("TASKQ_TLS_KEY", &key)
        .output()
        .unwrap();
    assert!(json(&from_env)["queues"].is_array());
    let without_client_cert = failure(&taskq_with_input(
        &server.url(),
        &["status", "--tls-ca", &ca],
        "",
    ));
    assert!(
        without_client_cert.contains("cannot reach the broker"),
        "{without_client_cert}"
    );
    let without_ca = failure(&taskq_with_input(&server.url(), &["status"], ""));
    assert!(without_ca.contains("certificate"), "{without_ca}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_and_revoke_of_a_workflow_show_its_members() {
    use taskq_core::workflow::{Chain, Group, Signature};
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    // Sent before any worker declared `cli.add`, so the queue is named.
    let add = |a: i64, b: i64| {
        Signature::by_name("cli.add", serde_json::json!({"a": a, "b": b})).queue("cli")
    };

    // Revoking a group by its id revokes every member.
    let pending = client
        .send_group(Group::<serde_json::Value>::of_signatures(
            (0..3).map(|i| add(i, i)),
        ))
        .await
        .unwrap();
    let revoked = stdout(&taskq(&server, &["revoke", &pending.id().to_string()]));
    assert!(
        revoked.starts_with("revoked workflow") && revoked.contains("3 tasks"),
        "{revoked}"
    );

    let worker = start_worker(&client).await;
    pending.wait_all(Duration::from_secs(10)).await;
    let group = client
        .send_group(Group::<serde_json::Value>::of_signatures(
            (0..3).map(|i| add(i, i)),
        ))
        .await
        .unwrap();
    group.wait(Duration::from_secs(10)).await.unwrap();
    let chain = client
        .send_chain(Chain::<()>::of_signatures([
            add(1, 2),
            add(10, 0).input("b"),
        ]))
        .await
        .unwrap();
    assert_eq!(chain.wait(Duration::from_secs(10)).await.unwrap(), 13);
    worker.stop().await.unwrap();

    let text = stdout(&taskq(&server, &["result", &group.id().to_string()]));
    assert!(
        text.starts_with("group") && text.contains("members   3 SUCCESS"),
        "{text}"
    );
    let revoked_text = stdout(&taskq(&server, &["result", &pending.id().to_string()]));
    assert!(
        revoked_text.contains("members   3 REVOKED"),
        "{revoked_text}"
    );
    let shown = json(&taskq(
        &server,
        &["result", &chain.id().to_string(), "--json"],
    ));
    assert_eq!(shown["workflow"], "chain");
    let states: Vec<_> = shown["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["SUCCESS", "SUCCESS"]);
}

#[test]
fn the_dashboard_refuses_a_public_address_without_authentication() {
    let out = Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args([
            "--broker",
            "memory://",
            "dashboard",
            "--listen",
            "0.0.0.0:0",
        ])
        .output()
        .expect("run taskq");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without authentication"), "{stderr}");
    let hashed = Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args(["dashboard", "--hash-password"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(b"s3cret\n")?;
            child.wait_with_output()
        })
        .expect("run taskq dashboard --hash-password");
    let hash = String::from_utf8_lossy(&hashed.stdout);
    assert!(hash.starts_with("$argon2id$"), "{hash}");
}

/// The operator commands on RabbitMQ (a private node): status from passive declarations, dead
/// letters listed, shown, requeued and purged, a queue purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_commands_work_on_rabbitmq() {
    let node = taskq_testkit::RabbitNode::start(&[]);
    let url = format!("{}?results=memory", node.fresh_vhost_url());
    // A wrong password: one line naming the place and the fix, the server's words once.
    let wrong = url.replacen("guest:guest@", "guest:wrong@", 1);
    let err = failure(&taskq_with_input(&wrong, &["status"], ""));
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach RabbitMQ at amqp://guest:***@")
            && err.contains("RabbitMQ refused the login: check the user and password in the URL")
            && !err.contains("Redis"),
        "{err}"
    );
    assert_eq!(
        err.matches("Login was refused").count(),
        1,
        "said once: {err}"
    );
    // RabbitMQ cannot show what workers hold: `taskq active` says so instead of an empty list.
    let active = failure(&taskq_with_input(&url, &["active"], ""));
    assert!(
        active.contains("does not show the messages workers hold"),
        "{active}"
    );
    let client = taskq::connect(&url).await.unwrap();
    let ids: Vec<_> = client
        .enqueue_many((0..3).map(|i| Add { a: i, b: 0 }))
        .await
        .unwrap()
        .iter()
        .map(|h| h.id())
        .collect();
    let status = stdout(&taskq_with_input(&url, &["status"], ""));
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("cli ") && l.contains(" 3 ")),
        "{status}"
    );

    let refused = failure(&taskq_with_input(&url, &["queue", "pause", "cli"], ""));
    assert!(refused.contains("pausing queues"), "{refused}");
    let unkept = failure(&taskq_with_input(&url, &["history"], ""));
    assert!(unkept.contains("keeps no record"), "{unkept}");
    // The dashboard's queue page shows what RabbitMQ can tell (the counts) and says what it
    // cannot (the listings), instead of failing.
    let port = taskq_testkit::free_port();
    let mut dashboard = Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args(["--broker", &url, "dashboard", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run taskq dashboard");
    let (status, page) = dashboard_get(port, "127.0.0.1", "/queues/cli");
    // History and numbers say plainly that RabbitMQ keeps no record of outcomes.
    let kept = ["/history", "/numbers"].map(|path| dashboard_get(port, "127.0.0.1", path));
    let _ = dashboard.kill();
    let _ = dashboard.wait();
    for (status, page) in kept {
        assert_eq!(status, 200, "{page}");
        assert!(page.contains(r#"id="outcomes-unkept""#), "{page}");
    }
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(r#"<span class="label">Pending</span><span class="value">3</span>"#),
        "{page}"
    );
    assert!(page.contains(r#"id="pending-unlisted""#), "{page}");
    assert!(
        !page.contains("/pause\""),
        "no pause button it would refuse: {page}"
    );
    assert!(page.contains(r#"id="held-unseen""#), "{page}");

    taskq_testkit::suite::kill(client.broker(), "cli", 2).await;
    // The queue signals agree with `taskq status` on RabbitMQ too (it shows no oldest age).
    metrics_agree_with_status(&url, "cli", false).await;
    let table = stdout(&taskq_with_input(
        &url,
        &["dead", "list", "--queue", "cli"],
        "",
    ));
    assert!(
        table.contains("retries_exhausted") && table.contains("boom"),
        "{table}"
    );
    let shown = json(&taskq_with_input(
        &url,
        &["dead", "show", &ids[0].to_string()],
        "",
    ));
    assert_eq!(shown["reason"], "retries_exhausted");
    assert_eq!(
        stdout(&taskq_with_input(
            &url,
            &["dead", "requeue", &ids[0].to_string()],
            ""
        )),
        "requeued 1"
    );
    assert_eq!(
        stdout(&taskq_with_input(
            &url,
            &["dead", "purge", "--queue", "cli"],
            ""
        )),
        "purged 1"
    );
    let stats = client.broker().stats("cli").await.unwrap();
    assert_eq!((stats.pending, stats.dead), (2, 0), "{stats:?}");
    assert_eq!(
        stdout(&taskq_with_input(
            &url,
            &["queue", "purge", "cli", "--yes"],
            ""
        )),
        "purged 2"
    );

    // A running worker shows in `taskq workers` (its reports go to a stream) and answers pings.
    let worker = start_worker(&client).await;
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        listed = json(&taskq_with_input(&url, &["workers", "--json"], ""));
        if listed.as_array().is_some_and(|w| !w.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed[0]["id"], worker.id().to_string(), "{listed}");
    assert_eq!(listed[0]["queues"], serde_json::json!(["cli"]));
    let answers = json(&taskq_with_input(
        &url,
        &["ping", "--json", "--timeout", "2s"],
        "",
    ));
    assert_eq!(answers[0]["worker"], worker.id().to_string());
    worker.stop().await.unwrap();
}

/// `taskq status` says when the server can lose tasks: here a lone master asked for durable
/// writes to one replica (it has none, so writes wait for none) and without AOF.
#[test]
fn status_warns_of_a_durable_master_short_of_replicas() {
    let server = RedisServer::start();
    let url = format!("{}?durable=1", server.url());
    let status = json(&taskq_with_input(&url, &["status", "--json"], ""));
    let warnings: Vec<&str> = status["warnings"]
        .as_array()
        .expect("a warnings list")
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("durable writes degraded: the master has 0 of durable=1")),
        "{warnings:?}"
    );
    let table = stdout(&taskq_with_input(&url, &["status"], ""));
    assert!(
        table.contains("warning: durable writes degraded"),
        "{table}"
    );
    let plain = json(&taskq(&server, &["status", "--json"]));
    assert!(
        plain["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| !w.as_str().unwrap().contains("durable")),
        "no durable warning without durable writes: {plain}"
    );
}

/// `taskq dashboard --allow-host NAME` serves requests for that host name (a proxy's or a DNS
/// name of the machine) and still refuses any other (DNS rebinding).
#[test]
fn the_dashboard_serves_an_allowed_host_name_and_refuses_others() {
    let server = RedisServer::start();
    let port = taskq_testkit::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args(["--broker", &server.url(), "dashboard", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--allow-host", "tasks.internal"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run taskq dashboard");
    let status_for = |host: &str| http_get(port, host, "/").map(|(status, _)| status);
    let allowed = dashboard_get(port, "tasks.internal", "/").0;
    let refused = status_for("attacker.example");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(allowed, 200, "the allowed host name is served");
    assert_eq!(refused, Some(403), "any other host name is refused");
}

/// One GET of `path` from the dashboard on `port` for `host`: its status and body.
fn http_get(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let status = reply.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, reply))
}

/// [`http_get`] once the dashboard listens (within 20 s).
fn dashboard_get(port: u16, host: &str, path: &str) -> (u16, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(reply) = http_get(port, host, path) {
            return reply;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dashboard never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `taskq postgres migrate` creates the schema a URL names, says so, does nothing the second
/// time, and from then on the other commands connect to it; before, they refuse with the fix.
#[test]
fn postgres_migrate_creates_the_schema_once_and_other_commands_name_it_until_then() {
    let server = taskq_testkit::PostgresServer::start();
    let url = server.fresh_url();
    let before = taskq_with_input(&url, &["status"], "");
    assert!(!before.status.success());
    let refusal = String::from_utf8_lossy(&before.stderr);
    assert!(refusal.contains("taskq postgres migrate"), "{refusal}");

    let first = taskq_with_input(&url, &["postgres", "migrate"], "");
    assert!(first.status.success(), "{first:?}");
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(said.contains("version 0 -> "), "{said}");
    let again = taskq_with_input(&url, &["postgres", "migrate"], "");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to do"),
        "{again:?}"
    );

    let enqueued = taskq_with_input(
        &url,
        &["enqueue", "demo.add", "--args", r#"{"a":1}"#, "--force"],
        "",
    );
    assert!(enqueued.status.success(), "{enqueued:?}");
    let status = taskq_with_input(&url, &["--json", "status"], "");
    assert!(status.status.success(), "{status:?}");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("\"pending\":1"), "{text}");
}

/// Runs until told to stop (a minute at most).
#[derive(Task, Serialize, Deserialize)]
#[task(name = "cli.busy", queue = "busy")]
struct Busy;

impl Run for Busy {
    type Output = ();
    async fn run(self, ctx: TaskContext) -> Result<(), TaskError> {
        tokio::select! {
            _ = ctx.cancelled() => Err(TaskError::permanent("stopped")),
            _ = tokio::time::sleep(Duration::from_secs(60)) => Ok(()),
        }
    }
}

/// A running task without a STARTED record (no `track_started`) shows as held by its worker
/// in `taskq active` and `taskq result`, and `taskq revoke --terminate` says whom it told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_shows_with_its_worker_and_revoke_says_what_it_did() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    assert_eq!(
        stdout(&taskq(&server, &["active"])),
        "no task is held by a worker"
    );
    let worker = Worker::builder(client.clone())
        .register::<Busy>()
        .build()
        .unwrap()
        .start();
    let id = client.enqueue(Busy).await.unwrap().id();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client
        .inspector()
        .held("busy", 10)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "never fetched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let holder = client.inspector().held("busy", 10).await.unwrap()[0]
        .worker
        .clone();
    assert!(
        client.result(id).await.unwrap().is_none(),
        "no record of it"
    );

    let active = stdout(&taskq(&server, &["active"]));
    assert!(active.starts_with("ID"), "{active}");
    assert!(
        active.contains(&id.to_string()) && active.contains("cli.busy") && active.contains(&holder),
        "{active}"
    );
    let listed = json(&taskq(&server, &["--json", "active", "--queue", "busy"]));
    assert_eq!(listed[0]["id"], id.to_string());
    let result = stdout(&taskq(&server, &["result", &id.to_string()]));
    assert!(
        result.starts_with("RECEIVED: held by worker") && result.contains(&holder),
        "{result}"
    );
    let said = stdout(&taskq(&server, &["revoke", &id.to_string(), "--terminate"]));
    assert_eq!(
        said,
        format!("revoked {id}: worker {holder} holds it; told to stop it (it ends REVOKED)")
    );
    let record = json(&taskq(
        &server,
        &["result", &id.to_string(), "--wait", "10s", "--json"],
    ));
    assert_eq!(record["state"], "REVOKED", "{record}");
    worker.stop().await.unwrap();
}

/// Scrapes `taskq metrics serve` on the broker at `url` once; the response, head and body.
fn scrape_metrics(url: &str) -> String {
    let port = taskq_testkit::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_taskq"))
        .args(["--broker", url, "metrics", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run taskq metrics serve");
    let scrape = || -> Option<String> {
        use std::io::Read;
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).ok()?;
        Some(reply)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let reply = loop {
        if let Some(reply) = scrape() {
            break reply;
        }
        assert!(std::time::Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    reply
}

/// The value of `series{queue="queue"}` in a scrape.
fn series(scrape: &str, series: &str, queue: &str) -> f64 {
    let prefix = format!("{series}{{queue=\"{queue}\"}} ");
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {scrape}"))
        .trim()
        .parse()
        .unwrap()
}

/// The queue signals agree with `taskq status --json` for `queue` on the broker at `url`; with
/// `ages`, the oldest pending age grows while no worker runs (RabbitMQ cannot tell it).
async fn metrics_agree_with_status(url: &str, queue: &str, ages: bool) {
    let first = scrape_metrics(url);
    let status = json(&taskq_with_input(url, &["status", "--json"], ""));
    let row = status["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == queue)
        .unwrap_or_else(|| panic!("{queue} not in {status}"))
        .clone();
    for (name, field) in [
        ("taskq_queue_pending", "pending"),
        ("taskq_queue_scheduled", "scheduled"),
        ("taskq_queue_processing", "processing"),
        ("taskq_queue_dead", "dead"),
    ] {
        assert_eq!(
            series(&first, name, queue),
            row[field].as_f64().unwrap(),
            "{name} against status: {row}"
        );
    }
    assert!(first.contains("# HELP taskq_queue_pending"), "{first}");
    if ages {
        let before = series(&first, "taskq_queue_oldest_pending_age_seconds", queue);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let after = series(
            &scrape_metrics(url),
            "taskq_queue_oldest_pending_age_seconds",
            queue,
        );
        assert!(
            after >= before + 1.0,
            "the oldest age grows: {before} then {after}"
        );
    }
}

/// `taskq metrics serve`: the queue signals a Prometheus or KEDA scrape reads, from the
/// broker, for a queue nobody consumes too (the cluster and RabbitMQ are checked in their
/// tests above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serve_reports_every_queue_from_the_broker() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    client
        .enqueue_many((0..3).map(|i| Add { a: i, b: 0 }))
        .await
        .unwrap();
    client
        .enqueue(Add { a: 9, b: 9 })
        .countdown(Duration::from_secs(3600))
        .await
        .unwrap();
    let scrape = scrape_metrics(&server.url());
    assert_eq!(series(&scrape, "taskq_queue_pending", "cli"), 3.0);
    assert_eq!(series(&scrape, "taskq_queue_scheduled", "cli"), 1.0);
    assert_eq!(
        series(&scrape, "taskq_queue_completed_per_second", "cli"),
        0.0
    );
    metrics_agree_with_status(&server.url(), "cli", true).await;
}

/// `taskq enqueue --partition` puts tasks in a tenant's partition with its limit, and
/// `taskq status --partitions Q` lists the busy ones (as a table and as JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_enqueued_and_listed() {
    let server = RedisServer::start();
    for tenant in ["acme", "acme", "globex"] {
        stdout(&taskq(
            &server,
            &[
                "enqueue",
                "cli.add",
                "--args",
                r#"{"a":1,"b":2}"#,
                "--queue",
                "tenants",
                "--partition",
                tenant,
                "--partition-concurrency",
                "1",
                "--force",
            ],
        ));
    }
    let table = stdout(&taskq(&server, &["status", "--partitions", "tenants"]));
    let acme = table.find("acme").expect("acme listed");
    let globex = table.find("globex").expect("globex listed");
    assert!(acme < globex, "most pending first:\n{table}");
    assert!(table.contains("PARTITION"), "{table}");
    let listed = json(&taskq(
        &server,
        &["--json", "status", "--groups", "tenants"],
    ));
    let rows = listed["partitions"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(rows[0]["key"], "acme");
    assert_eq!(rows[0]["pending"], 2);
    assert_eq!(rows[0]["limit"], 1);
    let refused = taskq(
        &server,
        &[
            "enqueue",
            "cli.add",
            "--partition-concurrency",
            "2",
            "--force",
        ],
    );
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("--partition <PARTITION>"),
        "{said}"
    );
}

/// `taskq enqueue --debounce KEY --window D` answers the id that will run: the same for every
/// call of a burst, which leaves one scheduled invocation; `--throttle` drops calls inside its
/// window, answering the window's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounce_and_throttle_answer_the_id_that_runs() {
    let server = RedisServer::start();
    let call = |args: &[&str]| {
        let mut all = vec!["enqueue", "cli.add", "--queue", "keyed", "--force"];
        all.extend_from_slice(args);
        stdout(&taskq(&server, &all))
    };
    let first = call(&["--debounce", "doc-1", "--window", "1h"]);
    let second = call(&["--debounce", "doc-1", "--window", "1h", "--max-wait", "2h"]);
    assert_eq!(first, second);
    let status = json(&taskq(&server, &["status", "--json"]));
    let row = status["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "keyed")
        .unwrap()
        .clone();
    assert_eq!(row["scheduled"], 1, "{row}");
    let ran = call(&["--throttle", "user-1", "--window", "1h"]);
    let dropped = call(&["--throttle", "user-1", "--window", "1h"]);
    assert_eq!(ran, dropped);
    let refused = taskq(
        &server,
        &["enqueue", "cli.add", "--debounce", "k", "--force"],
    );
    assert!(!refused.status.success(), "a debounce needs its window");
}
