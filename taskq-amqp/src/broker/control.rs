//! The control channel on RabbitMQ: broadcasts through a fanout exchange (each subscriber
//! binds a queue of its own), revocations appended to a stream every worker follows, so that a
//! worker that was not listening still honours them, and worker reports in a stream.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::{options::QueueBindOptions, types::FieldTable};
use taskq_core::{
    ControlChannel, ControlMessage, ControlStream, Error, Result, TaskId, WorkerInfo,
};

use super::{
    revocations::{self, Follower, Revocation},
    AmqpBroker, UNTIL_HEADER,
};
use crate::{error::amqp_error, link, names, publish::Outgoing};

#[async_trait]
impl ControlChannel for AmqpBroker {
    async fn broadcast(&self, message: &ControlMessage) -> Result<()> {
        let body = serde_json::to_vec(message).map_err(|source| Error::Serialize {
            what: "control message",
            source,
        })?;
        self.link().ensure_shared().await?;
        self.link()
            .publish(vec![Outgoing::to_exchange(
                names::CONTROL_EXCHANGE,
                "",
                body,
            )
            .unrouted_is_fine()])
            .await
    }

    async fn subscribe_control(&self) -> Result<ControlStream> {
        self.link().ensure_shared().await?;
        let channel = self.link().channel().await?;
        let queue = link::declare_private(&channel, "").await?;
        channel
            .queue_bind(
                queue.name().clone(),
                names::CONTROL_EXCHANGE.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp_error)?;
        let consumer = link::consume_without_acks(&channel, queue.name().as_str(), "").await?;
        // The stream owns the channel: dropping it closes the subscription.
        let messages = consumer.filter_map(move |delivery| {
            let _subscription = &channel;
            let message = delivery
                .ok()
                .and_then(|delivery| serde_json::from_slice::<ControlMessage>(&delivery.data).ok());
            async move { message }
        });
        Ok(messages.boxed())
    }

    async fn revoke(&self, id: TaskId, terminate: bool, ttl: Duration) -> Result<()> {
        self.link().ensure_shared().await?;
        let until = self.shared.clock.now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        self.link()
            .publish(vec![revocations::append(&Revocation { id, until })])
            .await?;
        self.broadcast(&ControlMessage::Revoke { id, terminate })
            .await
    }

    async fn publish_worker_info(&self, info: &WorkerInfo, ttl: Duration) -> Result<()> {
        let body = serde_json::to_vec(info).map_err(|source| Error::Serialize {
            what: "worker info",
            source,
        })?;
        let until = self.shared.clock.now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        self.link().ensure_shared().await?;
        self.link()
            .publish(vec![Outgoing::to_queue(names::WORKERS_STREAM, body)
                .with_header(UNTIL_HEADER, &until.to_rfc3339())])
            .await
    }

    async fn revoked(&self) -> Result<Vec<TaskId>> {
        self.link().ensure_shared().await?;
        let mut follower = self.shared.revocations.lock().await;
        if !follower.as_ref().is_some_and(Follower::following) {
            *follower = Some(Follower::start(self.link()).await?);
        }
        let now = self.shared.clock.now();
        Ok(follower
            .as_ref()
            .map(|f| f.revoked_at(now))
            .unwrap_or_default())
    }
}
