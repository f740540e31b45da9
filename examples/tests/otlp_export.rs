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

/// A span as the collector received it.
#[derive(Debug)]
struct Exported {
    trace: String,
    id: Vec<u8>,
    parent: Vec<u8>,
    name: String,
    message_id: Option<String>,
}

/// Every span in the batches received so far (protobuf, decoded with opentelemetry-proto).
fn decode(received: &[Received]) -> Vec<Exported> {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value,
    };
    use prost::Message;
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let mut spans = Vec::new();
    for request in received {
        let batch =
            ExportTraceServiceRequest::decode(request.body.as_slice()).expect("OTLP protobuf");
        for scope in batch.resource_spans.iter().flat_map(|r| &r.scope_spans) {
            for span in &scope.spans {
                let message_id = span
                    .attributes
                    .iter()
                    .find(|kv| kv.key == "messaging.message.id")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(text) => Some(text.clone()),
                        _ => None,
                    });
                spans.push(Exported {
                    trace: hex(&span.trace_id),
                    id: span.span_id.clone(),
                    parent: span.parent_span_id.clone(),
                    name: span.name.clone(),
                    message_id,
                });
            }
        }
    }
    spans
}

/// Two processes, one trace: a producer (`taskq-traced-producer`) and a demo worker, each
/// exporting to the collector stand-in. The worker's run of the producer's task is the child of
/// the producer's `taskq send` span; the retry is a second run in the same trace; a chain's
/// second step (sent by the worker) is in it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_and_a_worker_share_one_trace_across_retries_and_chain_steps() {
    let server = RedisServer::start();
    let (port, received) = collector();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut worker = WorkerProcess::start(&server, &["--otlp-endpoint", &endpoint]);
    let producer = std::process::Command::new(env!("CARGO_BIN_EXE_taskq-traced-producer"))
        .args(["--broker", &server.url(), "--otlp-endpoint", &endpoint])
        .output()
        .expect("run taskq-traced-producer");
    assert!(
        producer.status.success(),
        "{}",
        String::from_utf8_lossy(&producer.stderr)
    );
    let said = String::from_utf8_lossy(&producer.stdout);
    let mut words = said.split_whitespace();
    let (trace, fail) = match (words.next(), words.next(), words.next(), words.next()) {
        (Some("trace"), Some(trace), Some("fail"), Some(fail)) => {
            (trace.to_owned(), fail.to_owned())
        }
        _ => panic!("unexpected output: {said}"),
    };
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).success());

    let mut batches = Vec::new();
    while let Ok(batch) = received.recv_timeout(Duration::from_secs(3)) {
        batches.push(batch);
    }
    let spans = decode(&batches);
    let in_trace: Vec<&Exported> = spans.iter().filter(|s| s.trace == trace).collect();
    let named = |name: &str| {
        in_trace
            .iter()
            .filter(|s| s.name == name)
            .collect::<Vec<_>>()
    };
    assert_eq!(named("request").len(), 1, "{in_trace:#?}");
    let send = named("taskq send")
        .into_iter()
        .find(|s| s.message_id.as_deref() == Some(fail.as_str()))
        .unwrap_or_else(|| panic!("no send span of {fail} in {in_trace:#?}"));
    let fail_runs = named("demo.fail process");
    assert_eq!(
        fail_runs.len(),
        2,
        "the run and its retry, in the producer's trace: {spans:#?}"
    );
    assert!(
        fail_runs.iter().any(|run| run.parent == send.id),
        "the first run is the producer's send span's child: {in_trace:#?}"
    );
    assert_eq!(
        named("demo.step process").len(),
        2,
        "both chain steps in the producer's trace: {spans:#?}"
    );
}
