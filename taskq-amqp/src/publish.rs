//! Publishing with publisher confirms: a call returns only once RabbitMQ has taken every
//! message (written to its queue's quorum, or refused).

use lapin::{
    options::BasicPublishOptions,
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel,
};
use taskq_core::{Error, Result};

use crate::error::amqp_error;

/// One message to publish.
#[derive(Debug)]
pub(crate) struct Outgoing {
    exchange: String,
    routing_key: String,
    body: Vec<u8>,
    headers: FieldTable,
    message_id: Option<String>,
    expiration_ms: Option<u64>,
    /// Properties Celery's messages and replies carry (see [`crate::celery`]).
    celery: Option<CeleryProperties>,
    /// The taskq queue named when a bounded queue refuses it.
    queue: Option<String>,
    /// Whether a message no queue takes is an error (everything but broadcasts).
    mandatory: bool,
}

impl Outgoing {
    /// Straight to a RabbitMQ queue through the default exchange.
    pub(crate) fn to_queue(queue: &str, body: Vec<u8>) -> Self {
        Self::to_exchange("", queue, body)
    }

    /// Through `exchange` with `routing_key`.
    pub(crate) fn to_exchange(exchange: &str, routing_key: &str, body: Vec<u8>) -> Self {
        Self {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            body,
            headers: FieldTable::default(),
            message_id: None,
            expiration_ms: None,
            celery: None,
            queue: None,
            mandatory: true,
        }
    }

    /// The task id, as the AMQP message id.
    pub(crate) fn with_message_id(mut self, id: String) -> Self {
        self.message_id = Some(id);
        self
    }

    /// Whether it goes through the delay chain.
    pub(crate) fn is_delayed(&self) -> bool {
        self.exchange.starts_with("taskq.delay.")
    }

    /// Names the taskq queue a refusal is reported for.
    pub(crate) fn for_queue(mut self, queue: &str) -> Self {
        self.queue = Some(queue.to_owned());
        self
    }

    /// A broadcast: fine when nobody listens.
    pub(crate) fn unrouted_is_fine(mut self) -> Self {
        self.mandatory = false;
        self
    }

    /// A string header.
    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .insert(name.into(), AMQPValue::LongString(value.into()));
        self
    }

    /// Expires unread after `ms` (per-message TTL).
    pub(crate) fn expiring_after(mut self, ms: u64) -> Self {
        self.expiration_ms = Some(ms.max(1));
        self
    }

    /// Celery's properties (and `headers`, replacing any set before).
    pub(crate) fn with_celery_properties(
        mut self,
        headers: FieldTable,
        properties: CeleryProperties,
    ) -> Self {
        self.headers = headers;
        self.celery = Some(properties);
        self
    }

    fn properties(&self) -> BasicProperties {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(self.headers.clone());
        if let Some(celery) = &self.celery {
            properties = properties
                .with_content_encoding("utf-8".into())
                .with_correlation_id(celery.correlation_id.as_str().into());
            if let Some(reply_to) = &celery.reply_to {
                properties = properties.with_reply_to(reply_to.as_str().into());
            }
            if let Some(priority) = celery.priority {
                properties = properties.with_priority(priority);
            }
        }
        if let Some(id) = &self.message_id {
            properties = properties.with_message_id(id.as_str().into());
        }
        if let Some(ms) = self.expiration_ms {
            properties = properties.with_expiration(ms.to_string().into());
        }
        properties
    }
}

/// The properties of a Celery message or reply: the task id as the correlation id (Celery's
/// `rpc://` client matches replies by it), the producer's reply queue, the priority.
#[derive(Clone, Debug, Default)]
pub(crate) struct CeleryProperties {
    pub(crate) correlation_id: String,
    pub(crate) reply_to: Option<String>,
    pub(crate) priority: Option<u8>,
}

/// Publishes `messages` (mandatory, persistent) and waits for every confirm. A refusal
/// (`basic.nack`: a bounded queue full, a node out of resources) or an unroutable message
/// fails the call; messages confirmed before it stay published (at least once: a caller's
/// retry may publish them twice).
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    max_queue_length: Option<usize>,
    messages: Vec<Outgoing>,
) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let mut confirms = Vec::with_capacity(messages.len());
    for message in &messages {
        let confirm = channel
            .basic_publish(
                message.exchange.as_str().into(),
                message.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: message.mandatory,
                    ..BasicPublishOptions::default()
                },
                &message.body,
                message.properties(),
            )
            .await
            .map_err(amqp_error)?;
        confirms.push(confirm);
    }
    let mut failure = None;
    for (confirm, message) in confirms.into_iter().zip(&messages) {
        let confirmation = confirm.await.map_err(amqp_error)?;
        if failure.is_some() {
            continue;
        }
        if confirmation.is_nack() {
            failure = Some(match (&message.queue, max_queue_length) {
                (Some(queue), Some(capacity)) => Error::QueueFull {
                    queue: queue.clone(),
                    capacity,
                },
                _ => crate::error::refused(&format!(
                    "RabbitMQ refused a message for `{}`",
                    message.routing_key
                )),
            });
        } else if confirmation.take_message().is_some() {
            failure = Some(crate::error::refused(&format!(
                "no queue is bound for `{}` on exchange `{}`",
                message.routing_key, message.exchange
            )));
        }
    }
    failure.map_or(Ok(()), Err)
}
