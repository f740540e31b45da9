//! A demo worker process started with `--otlp-endpoint` sends its spans over OTLP/HTTP: a
//! collector stand-in (a plain HTTP listener, which is all the exporter talks to) receives a
//! protobuf batch at `/v1/traces` holding the run's span with its messaging attributes.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::mpsc,
    time::Duration,
};

use support::WorkerProcess;
use taskq_testkit::RedisServer;

mod support;

/// One HTTP request as the collector saw it.
struct Received {
    head: String,
    body: Vec<u8>,
}

/// Answers every request with 200 and hands it over.
fn collector() -> (u16, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send(Received { head, body });
        }
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_exports_its_spans_over_otlp_http() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let (port, received) = collector();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut worker = WorkerProcess::start(&server, &["--otlp-endpoint", &endpoint]);
    let handle = client
        .enqueue_by_name("demo.add", &serde_json::json!({"a": 2, "b": 3}))
        .await
        .unwrap();
    handle.wait(Duration::from_secs(30)).await.unwrap();
    // The batch goes at the latest when the worker stops.
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).success());

    let request = received
        .recv_timeout(Duration::from_secs(10))
        .expect("the worker sent its spans");
    let head = request.head.to_ascii_lowercase();
    assert!(head.starts_with("post /v1/traces "), "{head}");
    assert!(
        head.contains("content-type: application/x-protobuf"),
        "{head}"
    );
    let body = String::from_utf8_lossy(&request.body);
    for expected in [
        "demo.add process",
        "messaging.system",
        "taskq-worker",
        handle.id().to_string().as_str(),
    ] {
        assert!(body.contains(expected), "{expected} missing from the batch");
    }
}
