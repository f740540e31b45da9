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
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = taskq_redis::client(taskq_redis::RedisConfig::new(server.url()))
        .await
        .unwrap();
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
    assert!(metrics.contains("taskq_task_run_seconds"), "{metrics}");
    assert!(
        metrics.contains("taskq_task_queue_wait_seconds"),
        "{metrics}"
    );
}
