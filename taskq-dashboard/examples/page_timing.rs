//! Times every dashboard page against a Redis holding a million ready messages and ten
//! thousand dead letters (whose outcomes fill a queue's record of recent outcomes) (the figures in `docs/dashboard.md`).
//!
//! ```text
//! redis-server --port 6390 --save "" --appendonly no --daemonize yes
//! cargo run --release -p taskq-dashboard --example page_timing -- redis://127.0.0.1:6390
//! ```
//!
//! Fills queues `timing` and `timing-dead` (purged first), serves the dashboard on a free
//! loopback port, requests each page 20 times and prints the median and slowest time.

use std::time::{Duration, Instant};

use taskq_core::{DeadReason, Envelope, OutboundMessage, Outcome, TaskState, WorkerId};
use taskq_dashboard::Dashboard;

const PENDING: usize = 1_000_000;
const DEAD: usize = 10_000;
const ROUNDS: usize = 20;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "redis://127.0.0.1:6390".into());
    let client = taskq_redis::client(taskq_redis::RedisConfig::new(url)).await?;
    let broker = client.broker().clone();
    let inspector = client.inspector();
    for queue in ["timing", "timing-dead"] {
        inspector.purge_queue(queue).await?;
        inspector.purge_dead(queue, None).await?;
    }
    let filled = Instant::now();
    let now = client.clock().now();
    let args =
        serde_json::json!({"customer": 42, "items": [1, 2, 3], "note": "a typical small payload"});
    for start in (0..PENDING).step_by(10_000) {
        let batch = (start..(start + 10_000).min(PENDING))
            .map(|i| {
                let mut envelope = Envelope::new("orders.ship", &args, "timing", now)?;
                envelope.priority = (i % 10) as u8;
                OutboundMessage::from_envelope(&envelope, 1 << 20)
            })
            .collect::<Result<Vec<_>, _>>()?;
        broker.enqueue(batch).await?;
    }
    let doomed = (0..DEAD)
        .map(|_| {
            OutboundMessage::from_envelope(
                &Envelope::new("orders.ship", &args, "timing-dead", now)?,
                1 << 20,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    broker.enqueue(doomed).await?;
    let reaper = WorkerId::generate();
    let mut some_id = None;
    loop {
        let held = broker
            .fetch(&reaper, &["timing-dead".to_owned()], 500, Duration::ZERO)
            .await?;
        if held.is_empty() {
            break;
        }
        some_id = some_id.or(held[0].id());
        // Each with its outcome, as a worker reports it: the record of recent outcomes of
        // `timing-dead` fills up (10,000, its cap) and the per-task counters with it.
        let settled: Vec<_> = held
            .iter()
            .map(|delivery| {
                let id = delivery.id().unwrap_or_default();
                let outcome = Outcome::new(id, "orders.ship", TaskState::Failure, now)
                    .with_runtime(Duration::from_millis(12))
                    .with_wait(Duration::from_millis(3))
                    .with_worker(reaper.as_str())
                    .with_error("carrier refused the parcel");
                delivery.clone().with_outcome(outcome)
            })
            .collect();
        let letters = settled.iter().map(|delivery| {
            broker.dead_letter(
                &reaper,
                delivery,
                DeadReason::Failed,
                Some("carrier refused the parcel".into()),
            )
        });
        futures_util::future::try_join_all(letters).await?;
    }
    println!(
        "filled {PENDING} ready messages and {DEAD} dead letters in {:.1?}",
        filled.elapsed()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, Dashboard::new(client).router()).await;
    });
    let http = reqwest::Client::new();
    let letter = some_id.map(|id| id.to_string()).unwrap_or_default();
    let pages = [
        "/".to_owned(),
        "/queues/timing".to_owned(),
        format!("/queues/timing?offset={}", PENDING / 2),
        "/dead?queue=timing-dead".to_owned(),
        format!("/dead?queue=timing-dead&offset={}", DEAD - 50),
        "/dead?queue=timing-dead&reason=failed&task=orders.ship".to_owned(),
        format!("/dead/timing-dead/{letter}"),
        "/workers".to_owned(),
        "/tasks".to_owned(),
        "/history".to_owned(),
        "/history?task=orders.pack&state=FAILURE".to_owned(),
        "/numbers".to_owned(),
    ];
    println!(
        "{:<52} {:>9} {:>9} {:>9}",
        "page", "p50 ms", "max ms", "bytes"
    );
    for page in pages {
        let mut times = Vec::with_capacity(ROUNDS);
        let mut bytes = 0;
        for _ in 0..ROUNDS {
            let started = Instant::now();
            let response = http.get(format!("http://{address}{page}")).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            times.push(started.elapsed());
            bytes = body.len();
            if !status.is_success() {
                return Err(format!("{page} answered {status}").into());
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{page:<52} {:>9.1} {:>9.1} {bytes:>9}",
            ms(times[ROUNDS / 2]),
            ms(times[ROUNDS - 1])
        );
    }
    Ok(())
}
