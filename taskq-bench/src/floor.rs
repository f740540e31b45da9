//! The `floor` workload: the least any Redis queue with a result must do per round trip, so
//! that W3 can be judged against this machine in this run rather than against a number from
//! another day. A producer `LPUSH`es a message, a consumer blocked in `BLPOP` takes it and
//! `LPUSH`es a reply, the producer's `BLPOP` takes the reply: four commands, two blocking
//! wake-ups, with redis-rs on the same runtime as taskq. Nothing is decoded, stored or
//! acknowledged, so no queue can do less.

use std::time::{Duration, Instant};

use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, AsyncTypedCommands};
use taskq_core::TaskId;

use crate::Row;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection whose blocking pops never time out on the client side.
async fn blocking_connection(client: &redis::Client) -> Result<MultiplexedConnection, BoxError> {
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// `round_trips` sequential message-and-reply round trips through the Redis at `url`; p50 and
/// p99 in the row, as W3 reports them.
pub(crate) async fn redis_floor(url: &str, round_trips: usize) -> Result<Row, BoxError> {
    if !url.starts_with("redis://") {
        return Err("the floor workload needs a single Redis server (redis://)".into());
    }
    let client = redis::Client::open(url)?;
    let jobs = format!("bench-floor-{}:jobs", TaskId::new());
    let replies = format!("{jobs}:replies");
    let mut consumer = blocking_connection(&client).await?;
    let consumer_task = {
        let (jobs, replies) = (jobs.clone(), replies.clone());
        tokio::spawn(async move {
            loop {
                let Ok(Some([_, message])) = consumer.blpop(&jobs, 0.0).await else {
                    return;
                };
                if message == "stop" || consumer.lpush(&replies, &message).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut producer = blocking_connection(&client).await?;
    let mut latencies = Vec::with_capacity(round_trips);
    for n in 0..round_trips + 20 {
        let started = Instant::now();
        producer.lpush(&jobs, n.to_string()).await?;
        producer.blpop(&replies, 0.0).await?;
        if n >= 20 {
            latencies.push(started.elapsed()); // the first 20 warm up
        }
    }
    producer.lpush(&jobs, "stop").await?;
    let _ = consumer_task.await;
    let _: usize = producer.del(&[&jobs, &replies]).await?;
    Ok(round_trip_row(latencies))
}

/// A floor's row from its round trips' latencies: their count, their sum as the time, p50 and
/// p99, as W3 reports them.
pub(crate) fn round_trip_row(mut latencies: Vec<Duration>) -> Row {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    let total: Duration = latencies.iter().sum();
    Row {
        tasks: latencies.len(),
        seconds: total.as_secs_f64(),
        tasks_per_second: latencies.len() as f64 / total.as_secs_f64(),
        p50_ms: Some(at(0.50)),
        p99_ms: Some(at(0.99)),
        ..Row::default()
    }
}
