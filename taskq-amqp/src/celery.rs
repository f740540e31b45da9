//! Celery's queues on RabbitMQ, in Celery's default topology (a durable classic queue per
//! name, bound to a direct exchange of the same name, `celery` by default):
//!
//! - **Intake**: what a Python producer sends there is moved into taskq's queue of the same
//!   name (its level queue by the message's priority), in Kombu's JSON layout, which taskq's
//!   worker reads ([`taskq_core::celery`]). A consumer with a prefetch receives them
//!   unacknowledged; each take publishes what arrived with confirms, then acknowledges it: a
//!   crash in between leaves the messages in Celery's queue, which RabbitMQ hands out again
//!   (at least once; the copy already moved runs under the same task id).
//! - **Sending** for Python workers: the message published to Celery's queue as Celery's
//!   producer publishes it (body, protocol 2 headers, correlation id, reply queue).
//! - **Replies** (Celery's `rpc://` result backend): see [`crate::replies`].
//!
//! Once in taskq's queue a Celery message is a taskq delivery like any other: its lease and
//! guard keep a long task from being redelivered past RabbitMQ's `consumer_timeout`
//! (celery #6760).

use std::collections::{hash_map::Entry, HashMap, HashSet};

use futures_util::{FutureExt, StreamExt};
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, ExchangeKind,
};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use taskq_core::{celery::CeleryParts, Error, Result};

use crate::{
    error::amqp_error,
    link::Link,
    names,
    publish::{CeleryProperties, Outgoing},
};

/// How many of Celery's messages RabbitMQ pushes to an intake ahead of its takes.
const INTAKE_PREFETCH: u16 = 1000;

/// Celery's queues as this process uses them: an intake per queue it serves, and the queues
/// it made sure of.
#[derive(Debug, Default)]
pub(crate) struct Celery {
    /// Per Celery queue served: its consumer, opened (again) on the first take after a loss.
    intakes: tokio::sync::Mutex<HashMap<String, Intake>>,
    /// Celery queues known to exist.
    declared: Mutex<HashSet<String>>,
}

/// A consumer of one Celery queue on a channel of its own (its delivery tags, its acks):
/// RabbitMQ pushes up to [`INTAKE_PREFETCH`] messages, held unacknowledged until a take moves
/// them (a lost connection hands them out again).
struct Intake {
    channel: Channel,
    consumer: lapin::Consumer,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake").finish_non_exhaustive()
    }
}

impl Intake {
    async fn open(link: &Link, queue: &str) -> Result<Self> {
        let channel = link.channel().await?;
        channel
            .basic_qos(INTAKE_PREFETCH, BasicQosOptions::default())
            .await
            .map_err(amqp_error)?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                format!("taskq-celery-intake/{queue}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error)?;
        Ok(Self { channel, consumer })
    }

    /// What RabbitMQ pushed so far, up to `max`, without waiting; `Err` when the consumer
    /// ended (its channel or connection closed).
    fn received(&mut self, max: usize) -> Result<Vec<lapin::message::Delivery>> {
        let mut received = Vec::new();
        while received.len() < max {
            match self.consumer.next().now_or_never() {
                None => break,
                Some(Some(Ok(delivery))) => received.push(delivery),
                Some(Some(Err(err))) => return Err(amqp_error(err)),
                Some(None) => {
                    return Err(crate::error::refused(
                        "the Celery intake's consumer ended (its channel closed)",
                    ))
                }
            }
        }
        Ok(received)
    }
}

impl Celery {
    /// Moves up to `max` messages from Celery's queue `queue` into taskq's queue `queue`;
    /// how many moved. With `max` 0 it only declares both queues (a worker's start-up check).
    pub(crate) async fn take(&self, link: &Link, queue: &str, max: usize) -> Result<usize> {
        self.ensure_queue(link, queue).await?;
        link.ensure_queue(queue).await?;
        if max == 0 {
            return Ok(0);
        }
        let mut intakes = self.intakes.lock().await;
        let intake = match intakes.entry(queue.to_owned()) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(slot) => slot.insert(Intake::open(link, queue).await?),
        };
        let received = match intake.received(max) {
            Ok(received) => received,
            Err(err) => {
                // Opened again on the next take; what it held goes back to Celery's queue.
                intakes.remove(queue);
                return Err(err);
            }
        };
        let Some(last_tag) = received.last().map(|d| d.delivery_tag) else {
            return Ok(0);
        };
        let count = received.len();
        let moved = received
            .into_iter()
            .map(|d| into_taskq_queue(queue, d.data, &d.properties))
            .collect();
        if let Err(err) = link.publish(moved).await {
            // Back to Celery's queue, all of them: a later take moves them again.
            let _ = intake
                .channel
                .basic_nack(
                    last_tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await;
            return Err(err);
        }
        if let Err(err) = intake
            .channel
            .basic_ack(last_tag, BasicAckOptions { multiple: true })
            .await
        {
            // Published, not acknowledged: RabbitMQ hands them out again (at least once).
            intakes.remove(queue);
            return Err(amqp_error(err));
        }
        Ok(count)
    }

    /// Publishes `message` (Kombu's JSON layout, [`taskq_core::celery::message`]) to Celery's
    /// queue `queue`, as Celery's producer would, with a confirm.
    pub(crate) async fn send(&self, link: &Link, queue: &str, message: &str) -> Result<()> {
        let parts = CeleryParts::from_kombu(message).map_err(|reason| Error::Invalid {
            what: "Celery message",
            reason,
        })?;
        self.ensure_queue(link, queue).await?;
        let id = parts.task_id().unwrap_or_default().to_owned();
        let outgoing = Outgoing::to_queue(queue, parts.body).with_celery_properties(
            table(&parts.headers),
            CeleryProperties {
                correlation_id: id,
                reply_to: parts.reply_to,
                priority: parts.priority,
            },
        );
        link.publish(vec![outgoing]).await
    }

    /// Makes sure Celery's queue `queue` exists, declaring it as Celery does (a durable
    /// classic queue, with a direct exchange of the same name bound to it by its name); one
    /// that exists with other arguments is used as it is (a quorum queue an operator chose
    /// stays one).
    async fn ensure_queue(&self, link: &Link, queue: &str) -> Result<()> {
        if self.declared.lock().contains(queue) {
            return Ok(());
        }
        // On a channel of its own: RabbitMQ closes the channel that a refused declaration
        // was made on.
        let channel = link.channel().await?;
        let declared = declare_as_celery_does(&channel, queue).await;
        let _ = channel.close(200, "OK".into()).await;
        match declared {
            Ok(()) => {}
            Err(err) if crate::link::is_inequivalent(&err) => {}
            Err(err) => return Err(err),
        }
        self.declared.lock().insert(queue.to_owned());
        Ok(())
    }
}

/// Celery's declaration of queue `name`: the queue, its direct exchange, the binding.
async fn declare_as_celery_does(channel: &Channel, name: &str) -> Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error)?;
    crate::link::declare_exchange(channel, name, ExchangeKind::Direct).await?;
    channel
        .queue_bind(
            name.into(),
            name.into(),
            name.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error)
}

/// A Celery message taken from `queue`, as the message for taskq's queue of that name: Kombu's
/// JSON layout, on the level of its priority, with its task id as the message id (the guard
/// reads it).
fn into_taskq_queue(queue: &str, body: Vec<u8>, properties: &BasicProperties) -> Outgoing {
    let headers = properties
        .headers()
        .as_ref()
        .map(json_of_table)
        .unwrap_or_default();
    let content_type = properties
        .content_type()
        .as_ref()
        .map_or_else(|| "application/octet-stream".to_owned(), |t| t.to_string());
    let mut parts = CeleryParts::new(body, content_type, headers);
    parts.content_encoding = properties
        .content_encoding()
        .as_ref()
        .map(|e| e.to_string());
    parts.correlation_id = properties.correlation_id().as_ref().map(|c| c.to_string());
    parts.reply_to = properties
        .reply_to()
        .as_ref()
        .map(|r| r.to_string())
        .filter(|r| !r.is_empty());
    parts.priority = *properties.priority();
    let id = parts.task_id().map(str::to_owned);
    let level = parts.priority.unwrap_or(0);
    let mut outgoing = Outgoing::to_queue(
        &names::level_queue(queue, level),
        parts.to_kombu(queue).into_bytes(),
    )
    .for_queue(queue);
    if let Some(id) = id {
        outgoing = outgoing.with_message_id(id);
    }
    outgoing
}

/// JSON headers as an AMQP table (Celery's headers hold nulls, numbers, lists, booleans).
fn table(headers: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(name.as_str().into(), amqp_of_json(value));
    }
    table
}

fn amqp_of_json(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => n.as_i64().map_or_else(
            || AMQPValue::Double(n.as_f64().unwrap_or_default()),
            AMQPValue::LongLongInt,
        ),
        Value::String(text) => AMQPValue::LongString(text.as_str().into()),
        Value::Array(items) => {
            AMQPValue::FieldArray(items.iter().map(amqp_of_json).collect::<Vec<_>>().into())
        }
        Value::Object(map) => AMQPValue::FieldTable(table(map)),
    }
}

/// An AMQP table as JSON (as Kombu reads headers: strings, numbers, lists, nested tables).
fn json_of_table(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(name, value)| (name.to_string(), json_of_amqp(value)))
        .collect()
}

fn json_of_amqp(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Timestamp(n) => Value::from(*n),
        AMQPValue::Float(n) => Value::from(*n),
        AMQPValue::Double(n) => Value::from(*n),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(text) => Value::from(text.as_str()),
        AMQPValue::LongString(text) => Value::from(String::from_utf8_lossy(text.as_bytes())),
        AMQPValue::ByteArray(bytes) => Value::from(String::from_utf8_lossy(bytes.as_slice())),
        AMQPValue::FieldArray(items) => items.as_slice().iter().map(json_of_amqp).collect(),
        AMQPValue::FieldTable(table) => Value::Object(json_of_table(table)),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celerys_headers_survive_the_trip_through_an_amqp_table() {
        let headers = serde_json::json!({
            "task": "tasks.add", "id": "0b7f1c36-32a6-4f3c-9a53-2fb0b28c3e4e", "eta": null,
            "retries": 2, "timelimit": [null, 30.5], "ignore_result": false,
            "stamps": {"a": ["b"]},
        });
        let headers = headers.as_object().unwrap();
        assert_eq!(&json_of_table(&table(headers)), headers);
    }
}
