//! A worker process with the demo tasks registered.
//!
//! `cargo run --release --example worker -- --broker redis://127.0.0.1:6379 --queues default --concurrency 64`
//!
//! SIGINT/SIGTERM: warm shutdown (finish running tasks within `--shutdown-grace`, requeue the
//! rest); a second signal exits at once.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    taskq_examples::demo::worker_main().await
}
