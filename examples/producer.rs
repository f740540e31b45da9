//! Enqueue N invocations of a task by name.
//!
//! `cargo run --release --example producer -- --broker redis://127.0.0.1:6379 --task demo.add --args '{"a":1,"b":2}' --count 1000 --ids-out ids.txt`

#[tokio::main]
async fn main() -> std::process::ExitCode {
    taskq_examples::producer::producer_main().await
}
