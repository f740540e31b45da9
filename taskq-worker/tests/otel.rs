//! One trace across the queue (feature `otel`): a task enqueued inside a request's span runs
//! under a span that is the child of the `taskq send` span, itself the request span's child,
//! with OpenTelemetry's messaging attributes; read back from an SDK tracer exporting to
//! memory through the `tracing-opentelemetry` bridge, as an application would install it.

use std::time::Duration;

use opentelemetry::{
    trace::{SpanKind, TracerProvider as _},
    Value,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use taskq_core::{Client, Run, Task, TaskContext, TaskError};
use taskq_worker::Worker;
use tracing::Instrument;
use tracing_subscriber::prelude::*;

#[derive(Task, Serialize, Deserialize)]
#[task(name = "otel.echo")]
struct Echo {
    n: u32,
}

impl Run for Echo {
    type Output = u32;
    async fn run(self, _ctx: TaskContext) -> Result<u32, TaskError> {
        Ok(self.n)
    }
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_joins_the_trace_of_the_request_that_enqueued_it() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("taskq-test")))
        .init();

    let client = Client::in_memory();
    let worker = Worker::builder(client.clone())
        .register::<Echo>()
        .build()
        .unwrap()
        .start();
    let handle = async { client.enqueue(Echo { n: 7 }).await.unwrap() }
        .instrument(tracing::info_span!("http request"))
        .await;
    assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), 7);
    worker.stop().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let find = |name: &str| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no span `{name}` among {:?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let (request, send, process) = (
        find("http request"),
        find("taskq send"),
        find("otel.echo process"),
    );
    let trace = request.span_context.trace_id();
    assert_eq!(
        send.span_context.trace_id(),
        trace,
        "the send is in the request's trace"
    );
    assert_eq!(send.parent_span_id, request.span_context.span_id());
    assert_eq!(send.span_kind, SpanKind::Producer);
    assert_eq!(
        process.span_context.trace_id(),
        trace,
        "the run is in the request's trace"
    );
    assert_eq!(
        process.parent_span_id,
        send.span_context.span_id(),
        "the run is the send's child"
    );
    assert!(
        process.parent_span_is_remote,
        "its parent came through the envelope"
    );
    assert_eq!(process.span_kind, SpanKind::Consumer);
    let id = handle.id().to_string();
    for (span, operation) in [(send, "send"), (process, "process")] {
        assert_eq!(attribute(span, "messaging.system"), Some("taskq".into()));
        assert_eq!(
            attribute(span, "messaging.operation.type"),
            Some(operation.into())
        );
        assert_eq!(
            attribute(span, "messaging.destination.name"),
            Some("default".into())
        );
        assert_eq!(
            attribute(span, "messaging.message.id"),
            Some(id.clone().into())
        );
    }
}
