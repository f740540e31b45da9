//! Quickstart: typed tasks on the in-memory broker, an in-process worker, typed results.
//!
//! Run it with `cargo run -p taskq-quickstart --example quickstart`. Nothing else needs to be
//! installed, and nothing of Redis or TLS is compiled: this package takes `taskq` without
//! default features (and `-p` keeps cargo from adding the other members' features).

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use taskq::prelude::*;

/// Adds two numbers.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "math.add")]
struct Add {
    a: i64,
    b: i64,
}

impl Run for Add {
    type Output = i64;

    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.a + self.b)
    }
}

/// Pretends to send an email; the first attempt fails to show retries.
#[derive(Task, Serialize, Deserialize)]
#[task(
    name = "emails.send",
    queue = "emails",
    max_retries = 3,
    timeout = "5s"
)]
struct SendEmail {
    to: String,
    subject: String,
}

/// Attempts made by `SendEmail`, to fail exactly the first one.
static EMAIL_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// What `SendEmail` returns.
#[derive(Debug, Serialize, Deserialize)]
struct Receipt {
    message_id: String,
    attempts: u32,
}

impl Run for SendEmail {
    type Output = Receipt;

    async fn run(self, ctx: TaskContext) -> Result<Receipt, TaskError> {
        let attempt = EMAIL_ATTEMPTS.fetch_add(1, Ordering::SeqCst) + 1;
        println!(
            "  emails.send to={} subject={:?} attempt={} of {}",
            self.to,
            self.subject,
            ctx.attempt() + 1,
            ctx.max_retries() + 1
        );
        if attempt == 1 {
            // A transient failure: retried after a short delay.
            return Err(TaskError::retry_after(
                Duration::from_millis(200),
                "smtp server busy",
            ));
        }
        Ok(Receipt {
            message_id: format!("<{}@example.com>", ctx.id()),
            attempts: ctx.attempt() + 1,
        })
    }
}

#[tokio::main]
async fn main() -> taskq::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        // Colours only for a terminal: output redirected to a file stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let client = Client::in_memory();
    let worker = Worker::builder(client.clone())
        .register::<Add>()
        .register::<SendEmail>()
        .queues(["default", "emails"])
        .concurrency(8)
        .build()?;
    println!("worker {} consuming {:?}", worker.id(), worker.queues());
    // In the background until `stop()`: a warm shutdown (unstarted messages go back, running
    // ones finish). A worker binary runs `worker.run(shutdown_signal)` in place instead.
    let running = worker.start();

    let sums = client
        .enqueue_many((1..=5).map(|i| Add { a: i, b: i * 10 }))
        .await?;
    let email = client
        .enqueue(SendEmail {
            to: "ada@example.com".into(),
            subject: "Welcome".into(),
        })
        .await?;
    let later = client
        .enqueue(Add { a: 40, b: 2 })
        .countdown(Duration::from_millis(300))
        .priority(9)
        .await?;

    for handle in &sums {
        let sum = handle.wait(Duration::from_secs(5)).await?;
        println!("math.add {} -> {sum}", handle.id());
    }
    let receipt = email.wait(Duration::from_secs(5)).await?;
    println!("emails.send -> {receipt:?}");
    println!(
        "math.add (countdown 300ms) -> {}",
        later.wait(Duration::from_secs(5)).await?
    );

    let report = running.stop().await?;
    println!(
        "worker report: {} succeeded, {} retried, {} failed",
        report.succeeded, report.retried, report.failed
    );
    Ok(())
}
