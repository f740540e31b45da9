//! Writes the screenshots in `docs/img/` (overview, workers, dead letters, history, numbers) from a sample
//! deployment in this process: an in-memory broker, a worker, some finished, failed and waiting
//! tasks, and the dashboard on a free loopback port, photographed by headless Chromium.
//!
//! ```text
//! cargo run -p taskq-dashboard --example screenshots -- docs/img
//! ```

use std::{process::Command, time::Duration};

use serde::{Deserialize, Serialize};
use taskq_core::{Client, Run, Task, TaskContext, TaskError};
use taskq_dashboard::Dashboard;
use taskq_worker::Worker;

/// Resizes an image; fails on widths over 4000.
#[derive(Task, Serialize, Deserialize)]
#[task(name = "images.resize", queue = "images", max_retries = 0)]
struct Resize {
    id: u32,
    width: u32,
}

impl Run for Resize {
    type Output = String;
    async fn run(self, _ctx: TaskContext) -> Result<String, TaskError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if self.width > 4000 {
            return Err(TaskError::permanent(format!(
                "width {} is over the 4000 px limit",
                self.width
            )));
        }
        Ok(format!("images/{}-{}.webp", self.id, self.width))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "docs/img".into());
    std::fs::create_dir_all(&out)?;
    let client = Client::in_memory();
    let worker = Worker::builder(client.clone())
        .register::<Resize>()
        .queues(["images"])
        .concurrency(8)
        .build()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    let mut handles = Vec::new();
    for id in 0..240 {
        let width = if id % 23 == 0 { 6000 } else { 320 + id * 10 };
        handles.push(client.enqueue(Resize { id, width }).await?);
    }
    for handle in &handles {
        let _ = handle.wait(Duration::from_secs(30)).await;
    }
    for id in 0..35 {
        client
            .enqueue(Resize { id, width: 640 })
            .queue("images-bulk")
            .priority((id % 10) as u8)
            .await?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, Dashboard::new(client).router()).await;
    });
    for (page, file) in [
        ("/", "overview.png"),
        ("/workers", "workers.png"),
        ("/dead?queue=images", "dead-letters.png"),
        ("/history", "history.png"),
        ("/numbers", "numbers.png"),
    ] {
        let path = format!("{out}/{file}");
        let status = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--window-size=1280,860",
                "--timeout=3000",
                &format!("--screenshot={path}"),
                &format!("http://{address}{page}"),
            ])
            .status()?;
        if !status.success() {
            return Err(format!("chromium failed on {page}").into());
        }
        println!("wrote {path}");
    }
    stop.cancel();
    running.await??;
    Ok(())
}
