//! `taskq-traced-producer --broker URL --otlp-endpoint URL`: a producer that exports its spans
//! as an application with OpenTelemetry does (the `tracing-opentelemetry` bridge, OTLP/HTTP).
//! Inside one `request` span it enqueues `demo.fail {times: 1}` (a retry follows) and a chain
//! of two `demo.step`s, waits for both, prints `trace <trace-id> fail <id>` and flushes.

use std::time::Duration;

use clap::Parser;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use taskq_core::workflow::chain;
use taskq_examples::demo::{Fail, Step};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::prelude::*;

#[derive(Parser)]
struct Args {
    /// The broker URL.
    #[arg(long)]
    broker: String,
    /// The collector's base URL (`/v1/traces` is added).
    #[arg(long)]
    otlp_endpoint: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", args.otlp_endpoint))
        .build()?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("traced-producer")))
        .init();

    let client = taskq::connect(&args.broker).await?;
    let request = tracing::info_span!("request");
    let trace = request.context().span().span_context().trace_id();
    let fail = async {
        let fail = client.enqueue(Fail { times: 1 }).await?;
        let step = |n| Step {
            n,
            ms: 1,
            ledger: None,
        };
        let chain = client.send_chain(chain(step(0)).then(step(0))).await?;
        fail.wait(Duration::from_secs(30)).await?;
        chain.wait(Duration::from_secs(30)).await?;
        Ok::<_, taskq::Error>(fail.id())
    }
    .instrument(request)
    .await?;
    println!("trace {trace} fail {fail}");
    provider.shutdown()?;
    Ok(())
}
