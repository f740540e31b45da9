//! The link to RabbitMQ: one connection (re-opened when lost), a publisher channel in confirm
//! mode, and the topology (queues, exchanges, bindings) declared once per process.

use std::{collections::HashSet, sync::Arc};

use lapin::{
    options::{
        ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
    Channel, Connection, ConnectionProperties, ExchangeKind,
};
use parking_lot::Mutex;
use taskq_core::{Error, Result};

use crate::{
    delay,
    error::amqp_error,
    names::{self, DELAY_LEVELS},
    publish::{publish_confirmed, Outgoing},
    AmqpConfig,
};

/// The connection, its publisher channel and what was declared.
#[derive(Debug)]
pub(crate) struct Link {
    config: AmqpConfig,
    /// The current connection; replaced when it is found closed.
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// Publishes and waits for confirms; replaced when closed.
    publisher: tokio::sync::Mutex<Option<Channel>>,
    /// taskq queues whose RabbitMQ queues and bindings this process declared.
    declared: Mutex<HashSet<String>>,
    /// Whether the shared exchanges and queues were declared.
    shared_declared: tokio::sync::OnceCell<()>,
    /// Whether the delay chain was declared.
    delays_declared: tokio::sync::OnceCell<()>,
}

impl Link {
    pub(crate) fn new(config: AmqpConfig) -> Self {
        Self {
            config,
            connection: tokio::sync::Mutex::new(None),
            publisher: tokio::sync::Mutex::new(None),
            declared: Mutex::new(HashSet::new()),
            shared_declared: tokio::sync::OnceCell::new(),
            delays_declared: tokio::sync::OnceCell::new(),
        }
    }

    pub(crate) fn config(&self) -> &AmqpConfig {
        &self.config
    }

    /// The open connection, connecting (again) when there is none.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            if connection.status().connected() {
                return Ok(connection.clone());
            }
        }
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("taskq {}", std::process::id()).into());
        let tls = self.config.tls().load().map_err(|reason| {
            self.unreachable(Error::Invalid {
                what: "amqps settings",
                reason,
            })
        })?;
        let builder = lapin::DefaultConnectionBuilder::new()
            .map_err(amqp_error)?
            .with_uri_str(self.config.url().to_owned())
            .with_properties(properties)
            .with_tls_config(tls);
        let connecting = builder.connect();
        let connection = match tokio::time::timeout(self.config.connect_timeout(), connecting).await
        {
            Ok(Ok(connection)) => Arc::new(connection),
            Ok(Err(err)) => return Err(self.unreachable(amqp_error(err))),
            Err(_) => {
                return Err(self.unreachable(Error::Timeout(self.config.connect_timeout())));
            }
        };
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Closes the connection (channels, consumers and exclusive queues with it).
    pub(crate) async fn close(&self) {
        if let Some(connection) = self.connection.lock().await.take() {
            let _ = connection.close(200, "OK".into()).await;
        }
    }

    fn unreachable(&self, cause: Error) -> Error {
        let cause = taskq_core::error_chain(&cause);
        let hint = if cause.contains("ACCESS_REFUSED") || cause.contains("ACCESS-REFUSED") {
            "RabbitMQ refused the login: check the user and password in the URL"
        } else if cause.contains("NOT_ALLOWED") || cause.contains("NOT-ALLOWED") {
            "the user may not use this vhost: check the vhost in the URL and its permissions"
        } else if cause.contains("Connection refused") {
            "is RabbitMQ running there?"
        } else {
            "check the URL, and that RabbitMQ runs there"
        };
        Error::Broker {
            transport: "amqp",
            transient: true,
            source: format!(
                "cannot reach RabbitMQ at {} ({hint}): {cause}",
                self.config.redacted_url(),
            )
            .into(),
        }
    }

    /// A new channel on the current connection.
    pub(crate) async fn channel(&self) -> Result<Channel> {
        let connection = self.connection().await?;
        match connection.create_channel().await {
            Ok(channel) => Ok(channel),
            Err(err) => {
                // A connection that cannot open channels is replaced on the next call.
                self.connection.lock().await.take();
                Err(amqp_error(err))
            }
        }
    }

    /// A passive declaration of queue `name` on a channel of its own (a refusal closes the
    /// channel): the queue when it exists, or the broker's refusal (NOT_FOUND, RESOURCE_LOCKED
    /// for another connection's exclusive queue).
    pub(crate) async fn inspect_queue(&self, name: &str) -> Result<lapin::Result<lapin::Queue>> {
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "OK".into()).await;
        Ok(declared)
    }

    /// The publisher channel (publisher confirms on).
    pub(crate) async fn publisher(&self) -> Result<Channel> {
        let mut slot = self.publisher.lock().await;
        if let Some(channel) = slot.as_ref() {
            if channel.status().connected() {
                return Ok(channel.clone());
            }
        }
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp_error)?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes `messages` on the publisher channel and waits for every confirm (see
    /// [`publish_confirmed`]).
    pub(crate) async fn publish(&self, messages: Vec<Outgoing>) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let channel = self.publisher().await?;
        publish_confirmed(&channel, self.config.max_queue_length(), messages).await
    }

    /// Declares `queue`'s level queues, its dead-letter queue and their bindings, once per
    /// process (declarations are idempotent and durable on the broker).
    pub(crate) async fn ensure_queue(&self, queue: &str) -> Result<()> {
        if self.declared.lock().contains(queue) {
            return Ok(());
        }
        self.ensure_shared().await?;
        self.declare_dead_queue(queue).await?;
        let channel = self.channel().await?;
        let declared = self.declare_queue(&channel, queue).await;
        let _ = channel.close(200, "OK".into()).await;
        declared?;
        self.declared.lock().insert(queue.to_owned());
        self.register(queue).await
    }

    /// Declares `queue`'s dead-letter queue, capped by records and bytes (the oldest go), on a
    /// channel of its own: a queue declared by an older taskq without the caps makes RabbitMQ
    /// refuse the declaration (and close the channel); that queue stays as it is, uncapped,
    /// with a warning, until an operator deletes it.
    async fn declare_dead_queue(&self, queue: &str) -> Result<()> {
        let dead = names::dead_queue(queue);
        let mut arguments = quorum();
        let cap = |n: usize| AMQPValue::LongLongInt(i64::try_from(n).unwrap_or(i64::MAX));
        arguments.insert("x-max-length".into(), cap(self.config.max_dead_letters()));
        arguments.insert(
            "x-max-length-bytes".into(),
            cap(self.config.max_dead_letter_bytes()),
        );
        arguments.insert("x-overflow".into(), string("drop-head"));
        let channel = self.channel().await?;
        let declared = declare_bound(&channel, &dead, arguments, names::DEAD_EXCHANGE, queue).await;
        let _ = channel.close(200, "OK".into()).await;
        match declared {
            Err(err) if is_inequivalent(&err) => {
                tracing::warn!(queue = %dead, "this dead-letter queue was declared without taskq's caps (an older version); it keeps every dead letter until it is deleted and declared again");
                Ok(())
            }
            other => other,
        }
    }

    async fn declare_queue(&self, channel: &Channel, queue: &str) -> Result<()> {
        for (_, level_queue) in names::level_queues_highest_first(queue) {
            let mut arguments = quorum();
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(i64::from(self.config.delivery_limit())),
            );
            arguments.insert(
                "x-dead-letter-exchange".into(),
                string(names::DEAD_EXCHANGE),
            );
            arguments.insert("x-dead-letter-routing-key".into(), string(queue));
            at_least_once_dead_lettering(&mut arguments);
            if let Some(max) = self.config.max_queue_length() {
                // A quorum queue refuses publishes only once it is over its limit, so it holds
                // one more than `x-max-length`.
                let limit = i64::try_from(max.saturating_sub(1)).unwrap_or(i64::MAX);
                arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(limit));
            }
            let binding = names::delivery_binding(&level_queue);
            declare_bound(
                channel,
                &level_queue,
                arguments,
                names::DELIVER_EXCHANGE,
                &binding,
            )
            .await?;
        }
        Ok(())
    }

    /// Adds `queue` to the registry `taskq status` reads (once per process).
    async fn register(&self, queue: &str) -> Result<()> {
        self.publish(vec![Outgoing::to_queue(
            names::REGISTRY_QUEUE,
            queue.as_bytes().to_vec(),
        )])
        .await
    }

    /// The delay chain, once per process, when the first delayed message is published (a
    /// deployment without countdowns never has its 28 queues).
    pub(crate) async fn ensure_delays(&self) -> Result<()> {
        self.delays_declared
            .get_or_try_init(|| async {
                self.ensure_shared().await?;
                let channel = self.channel().await?;
                let declared = declare_delays(&channel).await;
                let _ = channel.close(200, "OK".into()).await;
                declared
            })
            .await
            .map(|_| ())
    }

    /// The exchanges every queue uses and the shared queues, once per process.
    pub(crate) async fn ensure_shared(&self) -> Result<()> {
        self.shared_declared
            .get_or_try_init(|| async {
                let channel = self.channel().await?;
                let declared = declare_shared(&channel).await;
                let _ = channel.close(200, "OK".into()).await;
                declared
            })
            .await
            .map(|_| ())
    }
}

/// How long the workers stream keeps reports (`x-max-age`): well beyond what a reader looks
/// back ([`crate::broker::WORKER_INFO_WINDOW`]).
const WORKER_INFO_KEPT: &str = "15m";

/// How long the revocations stream keeps revocations (`x-max-age`): beyond the longest a
/// client revokes for (a day).
const REVOCATIONS_KEPT: &str = "7D";

async fn declare_shared(channel: &Channel) -> Result<()> {
    declare_exchange(channel, names::DEAD_EXCHANGE, ExchangeKind::Direct).await?;
    declare_exchange(channel, names::DELIVER_EXCHANGE, ExchangeKind::Topic).await?;
    declare_exchange(channel, names::CONTROL_EXCHANGE, ExchangeKind::Fanout).await?;
    declare_stream(channel, names::WORKERS_STREAM, WORKER_INFO_KEPT).await?;
    declare_stream(channel, names::REVOCATIONS_STREAM, REVOCATIONS_KEPT).await?;
    channel
        .queue_declare(
            names::REGISTRY_QUEUE.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error)?;
    Ok(())
}

/// The delay chain: 28 levels, each an exchange and a queue whose messages wait 2^k seconds.
async fn declare_delays(channel: &Channel) -> Result<()> {
    for k in 0..DELAY_LEVELS {
        let level = names::delay_level(k);
        declare_exchange(channel, &level, ExchangeKind::Topic).await?;
        let mut arguments = quorum();
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(1000i64 << k));
        arguments.insert(
            "x-dead-letter-exchange".into(),
            string(&delay::next_exchange(k)),
        );
        at_least_once_dead_lettering(&mut arguments);
        declare_bound(
            channel,
            &level,
            arguments,
            &level,
            &delay::level_binding(k, true),
        )
        .await?;
    }
    // Bit clear: on to the next level down (declared above).
    for k in 0..DELAY_LEVELS {
        channel
            .exchange_bind(
                delay::next_exchange(k).as_str().into(),
                names::delay_level(k).as_str().into(),
                delay::level_binding(k, false).into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error)?;
    }
    Ok(())
}

/// Declares stream `name`, keeping records for `max_age` (RabbitMQ's syntax: `10m`, `7D`);
/// small segments so that retention drops old records soon after they age out.
pub(crate) async fn declare_stream(channel: &Channel, name: &str, max_age: &str) -> Result<()> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("stream".into()),
    );
    arguments.insert("x-max-age".into(), AMQPValue::LongString(max_age.into()));
    arguments.insert(
        "x-stream-max-segment-size-bytes".into(),
        AMQPValue::LongLongInt(1_000_000),
    );
    channel
        .queue_declare(name.into(), QueueDeclareOptions::durable(), arguments)
        .await
        .map_err(amqp_error)?;
    Ok(())
}

/// Declares a queue that lives only as long as this connection (exclusive, auto-delete):
/// named `name`, or by the server when `name` is empty.
pub(crate) async fn declare_private(channel: &Channel, name: &str) -> Result<lapin::Queue> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error)
}

/// Consumes `queue` without acknowledgements: for notifications, which nobody redelivers.
pub(crate) async fn consume_without_acks(
    channel: &Channel,
    queue: &str,
    tag: &str,
) -> Result<lapin::Consumer> {
    channel
        .basic_consume(
            queue.into(),
            tag.into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..lapin::options::BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error)
}

/// Declares durable exchange `name` of `kind`.
pub(crate) async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<()> {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error)
}

/// Declares durable queue `name` with `arguments` and binds it to `exchange` with `binding`.
async fn declare_bound(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
    exchange: &str,
    binding: &str,
) -> Result<()> {
    channel
        .queue_declare(name.into(), QueueDeclareOptions::durable(), arguments)
        .await
        .map_err(amqp_error)?;
    channel
        .queue_bind(
            name.into(),
            exchange.into(),
            binding.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error)?;
    Ok(())
}

/// True when RabbitMQ refused a declaration because the queue exists with other arguments.
pub(crate) fn is_inequivalent(err: &Error) -> bool {
    taskq_core::error_chain(err).contains("PRECONDITION_FAILED")
}

/// Arguments of a quorum queue.
fn quorum() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), string("quorum"));
    arguments
}

/// Dead-lettering that waits for the target to confirm (quorum queues, RabbitMQ 3.10+): a
/// message in flight between two queues survives a node crash. It requires `reject-publish`.
fn at_least_once_dead_lettering(arguments: &mut FieldTable) {
    arguments.insert("x-dead-letter-strategy".into(), string("at-least-once"));
    arguments.insert("x-overflow".into(), string("reject-publish"));
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}
