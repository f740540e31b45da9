//! `--otlp-endpoint` (features `cli` and `otel`): the worker binary exports its spans over
//! OTLP/HTTP to a collector, through the `tracing-opentelemetry` bridge, with the service name
//! from `OTEL_SERVICE_NAME` (default `taskq-worker`). Spans go in batches on the SDK's own
//! thread; [`flush`] sends what is left at shutdown.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};

/// The provider, kept for the flush at shutdown.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The tracing layer exporting to the collector at `endpoint` (its base URL, as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` gives it; `/v1/traces` is added).
pub(crate) fn layer<S>(
    endpoint: &str,
) -> Result<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>, BoxError>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let traces = if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces)
        .build()?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "taskq-worker".to_owned());
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let tracer = provider.tracer("taskq");
    let _ = PROVIDER.set(provider);
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Sends the spans still batched; called when the worker stops.
pub(crate) fn flush() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(err) = provider.shutdown() {
            eprintln!("taskq worker: could not send the last spans: {err}");
        }
    }
}

/// [`crate::cli::init_logging`] with the OTLP layer beside the log lines.
pub(crate) fn init_logging(
    format: crate::log_format::LogFormat,
    endpoint: &str,
) -> Result<(), BoxError> {
    use tracing_subscriber::{prelude::*, Layer, Registry};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // RUST_LOG filters the log lines only: spans go to the collector at info whatever it says.
    let lines: Box<dyn Layer<Registry> + Send + Sync> = match format {
        crate::log_format::LogFormat::Text => lines.with_filter(filter).boxed(),
        crate::log_format::LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter)
            .boxed(),
    };
    let registry = tracing_subscriber::registry().with(lines);
    let spans = layer(endpoint)?.with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    registry.with(spans).try_init()?;
    Ok(())
}
