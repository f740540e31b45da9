//! Demo tasks and process entry points shared by the examples, the `taskq-demo-worker` binary
//! and the fault tests that drive real worker processes.

pub mod demo;
pub mod producer;

/// Sets up `tracing` output honouring `RUST_LOG` (default `info`).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}
