//! The RabbitMQ floors: what plain lapin clients do on the same node in the same run, so that
//! taskq on `amqp://` is judged against this machine today. The enqueue floors publish
//! persistent messages with publisher confirms into a quorum queue (W1, W1c, W1bulk's shape);
//! the round-trip floor adds a consumer that takes each message, hands its result over
//! in-process and acknowledges it (W3's shape, with `results=memory`).

use std::time::Instant;

use futures_util::StreamExt;
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use taskq_core::TaskId;

use crate::Row;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the floor publishes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Publishing {
    /// One message at a time, each confirmed before the next (W1's shape).
    OneAtATime,
    /// 64 publishers at once, each awaiting its confirm (W1c's).
    Concurrent,
    /// Batches of 1,000 published, then every confirm awaited (W1bulk's).
    Bulk,
}

/// `n` confirmed publishes into a fresh quorum queue on the node at `url`.
pub(crate) async fn amqp_floor(
    url: &str,
    n: usize,
    publishing: Publishing,
) -> Result<Row, BoxError> {
    let connection = connect(url).await?;
    let channel = confirming_channel(&connection).await?;
    let queue = quorum_queue(&channel).await?;
    let body = vec![b'x'; 300]; // about a taskq envelope's size
    let started = Instant::now();
    match publishing {
        Publishing::OneAtATime => {
            for _ in 0..n {
                publish(&channel, &queue, &body).await?.await?;
            }
        }
        Publishing::Concurrent => {
            let mut publishers = tokio::task::JoinSet::new();
            for p in 0..64 {
                let (channel, queue, body) = (channel.clone(), queue.clone(), body.clone());
                let count = n / 64 + usize::from(p < n % 64);
                publishers.spawn(async move {
                    for _ in 0..count {
                        publish(&channel, &queue, &body).await?.await?;
                    }
                    Ok::<_, lapin::Error>(())
                });
            }
            while let Some(done) = publishers.join_next().await {
                done??;
            }
        }
        Publishing::Bulk => {
            let mut left = n;
            while left > 0 {
                let batch = left.min(1_000);
                let mut confirms = Vec::with_capacity(batch);
                for _ in 0..batch {
                    confirms.push(publish(&channel, &queue, &body).await?);
                }
                for confirm in confirms {
                    confirm.await?;
                }
                left -= batch;
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(Row {
        tasks: n,
        seconds,
        tasks_per_second: n as f64 / seconds,
        ..Row::default()
    })
}

/// The W3 floor: `round_trips` sequential round trips. The producer publishes a persistent
/// message with a confirm into a quorum queue (what taskq's enqueue promises) and awaits the
/// confirm; a consumer on its own channel takes the message, hands the producer its "result"
/// over an in-process channel (as W3 with `results=memory` gets its result) and acknowledges
/// the message. The producer's round trip ends when it has both the confirm and the result.
/// p50 and p99 in the row, as W3 reports them.
///
/// The result goes in-process because that is the least a result can cost: a reply through
/// RabbitMQ itself (direct reply-to) measured 0.5 ms more per round trip here.
pub(crate) async fn amqp_w3_floor(url: &str, round_trips: usize) -> Result<Row, BoxError> {
    let connection = connect(url).await?;
    let producer = confirming_channel(&connection).await?;
    let queue = quorum_queue(&producer).await?;
    let consumer_channel = connection.create_channel().await?;
    let mut requests = consumer_channel
        .basic_consume(
            queue.as_str().into(),
            "floor-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let (results, mut result) = tokio::sync::mpsc::unbounded_channel::<()>();
    let consumer = tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let request = request?;
            if results.send(()).is_err() {
                break;
            }
            request.ack(BasicAckOptions::default()).await?;
        }
        Ok::<(), BoxError>(())
    });
    let body = vec![b'x'; 300]; // about a taskq envelope's size
    let mut latencies = Vec::with_capacity(round_trips);
    for n in 0..round_trips + 20 {
        let started = Instant::now();
        publish(&producer, &queue, &body).await?.await?;
        if result.recv().await.is_none() {
            consumer.await??;
            return Err("the floor's consumer ended".into());
        }
        if n >= 20 {
            latencies.push(started.elapsed()); // the first 20 warm up
        }
    }
    drop(result);
    producer
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "done".into()).await;
    consumer.abort();
    Ok(crate::floor::round_trip_row(latencies))
}

/// A connection to the node at `url` (taskq's own query options stripped).
async fn connect(url: &str) -> Result<Connection, BoxError> {
    let base = url.split('?').next().unwrap_or(url).to_owned();
    Ok(lapin::DefaultConnectionBuilder::new()?
        .with_uri_str(base)
        .with_properties(ConnectionProperties::default())
        .connect()
        .await?)
}

/// A channel in confirm mode: every publish is confirmed once the queue has it.
async fn confirming_channel(connection: &Connection) -> Result<Channel, BoxError> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// A fresh durable quorum queue, as taskq's queues are; its name.
async fn quorum_queue(channel: &Channel) -> Result<String, BoxError> {
    let queue = format!("bench-floor-{}", TaskId::new());
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            arguments,
        )
        .await?;
    Ok(queue)
}

async fn publish(
    channel: &Channel,
    queue: &str,
    body: &[u8],
) -> Result<lapin::PublisherConfirm, lapin::Error> {
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
}
