//! A task that reports its progress, and a caller that shows it while waiting; a worker that
//! serves two queues by weight. Runs on the in-memory broker:
//!
//! `cargo run --example progress`

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskq::prelude::*;

/// Imports `rows` rows, reporting how far it got after each batch.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "reports.import", queue = "bulk")]
struct Import {
    rows: u32,
}

impl Run for Import {
    type Output = u32;
    async fn run(self, ctx: TaskContext) -> Result<u32, TaskError> {
        for done in (0..=self.rows).step_by(250) {
            ctx.set_progress(&serde_json::json!({"done": done, "of": self.rows}))
                .await
                .map_err(|err| TaskError::retryable(format!("progress not recorded: {err}")))?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(self.rows)
    }
}

/// A quick task on the interactive queue.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "users.ping", queue = "interactive")]
struct Ping;

impl Run for Ping {
    type Output = String;
    async fn run(self, _ctx: TaskContext) -> Result<String, TaskError> {
        Ok("pong".into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = Client::in_memory();
    // Two queues by weight: out of every 4 fetches, 3 lead with `interactive`, 1 with `bulk`,
    // so bulk work cannot starve interactive work nor the other way round.
    let worker = Worker::builder(client.clone())
        .register::<Import>()
        .register::<Ping>()
        .queue_weights([("interactive", 3), ("bulk", 1)])
        .build()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone().cancelled_owned()));

    let import = client.enqueue(Import { rows: 1_000 }).await?;
    let ping = client.enqueue(Ping).await?;
    println!("users.ping -> {}", ping.wait(Duration::from_secs(5)).await?);

    // The caller polls the record for progress; `wait` would block until the end instead.
    loop {
        let record = client.result(import.id()).await?;
        match record {
            Some(record) if record.state == TaskState::Success => break,
            Some(record) => {
                if let Some(progress) = record.progress {
                    println!("reports.import {}: {progress}", record.state);
                }
            }
            None => println!("reports.import: waiting to start"),
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    println!(
        "reports.import -> {} rows",
        import.wait(Duration::from_secs(5)).await?
    );
    stop.cancel();
    running.await??;
    Ok(())
}
