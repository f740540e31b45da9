//! One trace across the queue (feature `otel`): a task enqueued inside a request's span runs
//! under a span that is the child of the `taskq send` span, itself the request span's child,
//! with OpenTelemetry's messaging attributes; read back from an SDK tracer exporting to
//! memory through the `tracing-opentelemetry` bridge, as an application would install it.

use std::{sync::OnceLock, time::Duration};

use opentelemetry::{
    trace::{SpanKind, TracerProvider as _},
    Value,
};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use taskq_core::{workflow::group, Client, Run, Task, TaskContext, TaskError};
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

/// Sums a chord's members.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "otel.sum")]
struct Sum {
    #[task(input)]
    values: Vec<u32>,
}

impl Run for Sum {
    type Output = u32;
    async fn run(self, _ctx: TaskContext) -> Result<u32, TaskError> {
        Ok(self.values.iter().sum())
    }
}

/// The process-wide tracer the tests share (a subscriber is installed once per process):
/// spans go to memory, and each test picks its own by trace id.
fn tracing_to_memory() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    static TRACING: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    TRACING.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("taskq-test")))
            .init();
        (exporter, provider)
    })
}

/// The finished span called `name` that `pick` accepts; panics listing the names otherwise.
fn named<'a>(spans: &'a [SpanData], name: &str, pick: impl Fn(&SpanData) -> bool) -> &'a SpanData {
    spans
        .iter()
        .find(|span| span.name == name && pick(span))
        .unwrap_or_else(|| {
            panic!(
                "no span `{name}` among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
}

fn attribute(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_joins_the_trace_of_the_request_that_enqueued_it() {
    let (exporter, provider) = tracing_to_memory();

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
    let id = handle.id().to_string();
    let request = named(&spans, "http request", |_| true);
    let of_the_message =
        |span: &SpanData| attribute(span, "messaging.message.id") == Some(id.clone().into());
    let send = named(&spans, "taskq send", of_the_message);
    let process = named(&spans, "otel.echo process", of_the_message);
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

/// A chord's callback is sent by the member whose report completes the group: it runs in the
/// trace of the request that sent the chord, under a `taskq continue` span parented on that
/// member's run. Fails when a group's continuation drops its members' trace context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chords_callback_runs_in_the_trace_that_sent_the_chord() {
    let (exporter, provider) = tracing_to_memory();

    let client = Client::in_memory();
    let worker = Worker::builder(client.clone())
        .register::<Echo>()
        .register::<Sum>()
        .build()
        .unwrap()
        .start();
    let chord = group((1..=3).map(|n| Echo { n })).then(Sum { values: vec![] });
    let handle = async { client.send_chain(chord).await.unwrap() }
        .instrument(tracing::info_span!("chord request"))
        .await;
    assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), 6);
    worker.stop().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let request = named(&spans, "chord request", |_| true);
    let trace = request.span_context.trace_id();
    let callback = named(&spans, "otel.sum process", |_| true);
    assert_eq!(
        callback.span_context.trace_id(),
        trace,
        "the callback runs in the chord's trace"
    );
    let sent_by = named(&spans, "taskq send", |span| {
        span.span_context.span_id() == callback.parent_span_id
    });
    let continued_from = named(&spans, "taskq continue", |span| {
        span.span_context.span_id() == sent_by.parent_span_id
    });
    let members: Vec<_> = spans
        .iter()
        .filter(|span| span.name == "otel.echo process" && span.span_context.trace_id() == trace)
        .collect();
    assert_eq!(members.len(), 3, "every member runs in the chord's trace");
    assert!(
        members
            .iter()
            .any(|member| continued_from.span_context.trace_id() == trace
                && continued_from.parent_span_id == member.parent_span_id),
        "the callback is sent under the context of a member's message"
    );
}
