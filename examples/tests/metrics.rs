//! A running demo worker serves Prometheus metrics, and the counters move as it works.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use taskq_examples::demo::{Add, Fail};
use taskq_testkit::RedisServer;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The value of the first sample line starting with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_on_the_metrics_endpoint() {
    let server = RedisServer::start();
    let log_path =
        std::env::temp_dir().join(format!("taskq-json-log-{}", taskq_core::TaskId::new()));
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _worker = Killed(
        Command::new(env!("CARGO_BIN_EXE_taskq-demo-worker"))
            .args([
                "--broker",
                &server.url(),
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .args([
                "--heartbeat",
                "200ms",
                "--liveness-ttl",
                "1s",
                "--log-format",
                "json",
            ])
            // The default level: spans (task, worker) are info spans.
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(&log_path).expect("create the log file"),
            ))
            .spawn()
            .unwrap(),
    );
    let client = taskq::connect(&server.url()).await.unwrap();
    let handles = client
        .enqueue_many((0..5).map(|a| Add { a, b: 1 }))
        .await
        .unwrap();
    for handle in &handles {
        handle.wait(Duration::from_secs(10)).await.unwrap();
    }
    client
        .enqueue(Fail { times: 1 })
        .await
        .unwrap()
        .wait(Duration::from_secs(10))
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        if let Some(text) = scrape(port) {
            if sample(&text, "taskq_tasks_succeeded_total{task=\"demo.fail\"").is_some() {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "metrics endpoint never showed the counters"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(
            &metrics,
            "taskq_tasks_succeeded_total{task=\"demo.add\",queue=\"default\"}"
        ),
        Some(5.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "taskq_tasks_retried_total{task=\"demo.fail\",queue=\"default\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "taskq_tasks_started_total{task=\"demo.fail\",queue=\"default\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE taskq_task_run_seconds histogram"),
        "histograms, not summaries: {metrics}"
    );
    assert!(
        metrics.contains("taskq_task_run_seconds_bucket"),
        "{metrics}"
    );

    // JSON logs: the retry's warning carries the task's and the worker's span fields, and
    // redirected logs carry no colour codes.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let retry = log
        .lines()
        .find(|line| line.contains("attempt failed; retrying"))
        .unwrap_or_else(|| panic!("no retry line in:\n{log}"));
    let line: serde_json::Value = serde_json::from_str(retry).unwrap();
    let spans = line["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("no span list in {retry}"));
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "worker" && s["worker"].is_string()),
        "{retry}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "task" && s["task.name"] == "demo.fail"),
        "{retry}"
    );
    assert!(!log.contains('\u{1b}'), "colour codes in a redirected log");
    let _ = std::fs::remove_file(&log_path);
    assert!(
        metrics.contains("taskq_task_queue_wait_seconds"),
        "{metrics}"
    );
}
