//! The demo worker as an installable binary (same as `cargo run --example worker`); the fault
//! tests drive it as a real process.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    taskq_examples::demo::worker_main().await
}
