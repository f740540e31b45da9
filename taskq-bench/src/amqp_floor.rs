//! The RabbitMQ enqueue floors: a plain lapin publisher with publisher confirms, persistent
//! messages into a quorum queue of the same node, in the same run, so that taskq's enqueue
//! (W1, W1c, W1bulk on `amqp://`) is judged against what any confirmed publish costs here.

use std::time::Instant;

use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, ConnectionProperties,
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
    let base = url.split('?').next().unwrap_or(url).to_owned();
    let connection = lapin::DefaultConnectionBuilder::new()?
        .with_uri_str(base)
        .with_properties(ConnectionProperties::default())
        .connect()
        .await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
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
