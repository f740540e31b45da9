//! W3C trace context across the queue (feature `otel`): at enqueue a `taskq send` span (the
//! OpenTelemetry messaging conventions' producer span) is opened under the caller's current
//! span and its context written into the envelope's headers as `traceparent` and `tracestate`
//! (signed like every header); the worker reads them back ([`extract`]) and makes its run's
//! span a child, so one trace shows the request, the enqueue, the wait and the run.
//!
//! Through the `tracing-opentelemetry` bridge: nothing happens unless the application
//! installs its layer; without the feature, nothing of this is compiled.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::envelope::Envelope;

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";

struct Headers<'a>(&'a mut BTreeMap<String, String>);

impl Injector for Headers<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct ReadHeaders<'a>(&'a BTreeMap<String, String>);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Opens the `taskq send` span for `envelope` under the current span and writes its context
/// into the envelope's headers, unless the caller set `traceparent` itself.
pub(crate) fn inject(envelope: &mut Envelope) {
    if envelope.headers.contains_key(TRACEPARENT) {
        return;
    }
    let span = tracing::info_span!(
        "taskq send",
        otel.kind = "producer",
        messaging.system = "taskq",
        messaging.operation.type = "send",
        messaging.destination.name = %envelope.queue,
        messaging.message.id = %envelope.id,
        taskq.task = %envelope.task,
    );
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut Headers(&mut envelope.headers));
}

/// The trace context an envelope's headers carry (empty when they carry none): the parent of
/// the worker's span for the run.
pub fn extract(headers: &BTreeMap<String, String>) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&ReadHeaders(headers))
}

/// Enters a `taskq continue` span whose parent is the context `headers` carry (a finished
/// workflow step's), so that the next step's `taskq send` joins that trace; `None` when they
/// carry none.
pub(crate) fn continuing(headers: &BTreeMap<String, String>) -> Option<tracing::span::EnteredSpan> {
    if !headers.contains_key(TRACEPARENT) {
        return None;
    }
    let span = tracing::info_span!("taskq continue", otel.kind = "internal");
    let _ = span.set_parent(extract(headers));
    Some(span.entered())
}
