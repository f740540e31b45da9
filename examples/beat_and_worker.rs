//! A beat and a worker in one process on the in-memory broker: the beat fires `demo.add` every
//! second, the worker runs it, and we wait for each fire's result by its deterministic id.
//!
//! `cargo run --example beat_and_worker`
//!
//! In production run them as separate processes against Redis:
//! `taskq-beat --broker redis://… --schedule examples/beat.toml` and
//! `cargo run --example worker -- --broker redis://…`.

use std::{sync::Arc, time::Duration};

use taskq_beat::{fire_id, Beat, Entry, Every, MemoryBeatStore, Schedule};
use taskq_core::Client;
use taskq_worker::Worker;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = Client::in_memory();
    let every_second = Every::new(Duration::from_secs(1))?;
    let entry = Entry::new("add-every-second", "demo.add", every_second)
        .with_args(serde_json::json!({"a": 40, "b": 2}));
    let beat = Beat::new(
        client.clone(),
        Arc::new(MemoryBeatStore::new()),
        vec![entry],
    )?;
    let worker = taskq_examples::demo::register(Worker::builder(client.clone())).build()?;

    let stop = CancellationToken::new();
    let beat = tokio::spawn(beat.run(stop.clone().cancelled_owned()));
    let worker = tokio::spawn(worker.run(stop.clone().cancelled_owned()));

    // Fires have ids derived from (entry, slot), so we know what to wait for in advance.
    let mut slot = every_second
        .next_after(client.clock().now())
        .ok_or("schedule ended")?;
    for _ in 0..3 {
        let id = fire_id("add-every-second", slot);
        let sum: i64 = client
            .result_handle(id)
            .wait(Duration::from_secs(5))
            .await?;
        println!(
            "slot {}: demo.add -> {sum} (task {id})",
            slot.format("%H:%M:%S")
        );
        slot = every_second.next_after(slot).ok_or("schedule ended")?;
    }

    stop.cancel();
    let beat_report = beat.await??;
    let worker_report = worker.await??;
    println!(
        "beat fired {} tasks; the worker ran {}",
        beat_report.fired, worker_report.succeeded
    );
    Ok(())
}
