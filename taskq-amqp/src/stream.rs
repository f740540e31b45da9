//! Reading a RabbitMQ stream (`x-queue-type: stream`) from a point in time to its end, without
//! taking anything from anyone: a stream is a log that every reader reads in full, so readers
//! running at the same time each see every record (a `basic.get` scan of a classic queue hides
//! the messages one reader holds from the others).
//!
//! A stream has no "end" a consumer is told about, so a reader first appends a marker of its
//! own and reads until it meets it: everything published before the read started is seen.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
    Channel,
};
use taskq_core::{Error, Result};

use crate::{error::amqp_error, link::Link, publish::Outgoing};

/// The header of a reader's end marker.
const MARKER_HEADER: &str = "taskq-read-marker";

/// How long a reader waits for its own marker before giving up with what it read.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Every record of stream `name` published since `since` (a little earlier too: RabbitMQ
/// starts at the chunk holding that time) or since the stream's start, up to this call.
/// Markers are left out.
pub(crate) async fn read(
    link: &Link,
    name: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Delivery>> {
    let marker = append_marker(link, name).await?;
    let channel = link.channel().await?;
    let read = read_to_marker(&channel, name, since, &marker).await;
    let _ = channel.close(200, "OK".into()).await;
    read
}

/// Appends a marker of this reader's to stream `name` and returns it: reading until it is met
/// reads everything published before.
pub(crate) async fn append_marker(link: &Link, name: &str) -> Result<String> {
    let marker = uuid::Uuid::new_v4().simple().to_string();
    link.publish(vec![
        Outgoing::to_queue(name, Vec::new()).with_header(MARKER_HEADER, &marker)
    ])
    .await?;
    Ok(marker)
}

async fn read_to_marker(
    channel: &Channel,
    name: &str,
    since: Option<DateTime<Utc>>,
    marker: &str,
) -> Result<Vec<Delivery>> {
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .map_err(amqp_error)?;
    let offset = match since {
        Some(at) => AMQPValue::Timestamp(u64::try_from(at.timestamp()).unwrap_or(0)),
        None => AMQPValue::LongString("first".into()),
    };
    let mut arguments = FieldTable::default();
    arguments.insert("x-stream-offset".into(), offset);
    let mut consumer = channel
        .basic_consume(
            name.into(),
            "".into(),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await
        .map_err(amqp_error)?;
    let mut records = Vec::new();
    let reading = async {
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery.map_err(amqp_error)?;
            // Acks are the stream's credit: without them it stops after the prefetch.
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(amqp_error)?;
            match marker_of(&delivery) {
                Some(seen) if seen == marker => return Ok(()),
                Some(_) => {}
                None => records.push(delivery),
            }
        }
        Err(Error::Broker {
            transport: "amqp",
            transient: true,
            source: format!("the stream `{name}` closed while being read").into(),
        })
    };
    match tokio::time::timeout(READ_TIMEOUT, reading).await {
        Ok(Ok(())) => Ok(records),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(Error::Timeout(READ_TIMEOUT)),
    }
}

pub(crate) fn marker_of(delivery: &Delivery) -> Option<String> {
    header(delivery, MARKER_HEADER)
}

/// A string header of `delivery`, if it has one.
pub(crate) fn header(delivery: &Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(text.to_string()),
        _ => None,
    }
}
