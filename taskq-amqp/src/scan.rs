//! Reading a queue without consuming it for good: take every message with `basic.get` on a
//! channel of its own, settle the ones the operation is about, and close the channel, which
//! puts the rest back where they were. Only for queues without a delivery limit (dead letters,
//! the registry, revocations): on a level queue every read would count as a delivery.

use lapin::{
    message::BasicGetMessage,
    options::{BasicAckOptions, BasicGetOptions},
    Channel,
};
use taskq_core::Result;

use crate::{
    error::{amqp_error, is_not_found},
    link::Link,
};

/// Messages taken from one queue and not yet settled.
pub(crate) struct Scan {
    channel: Channel,
    pub(crate) messages: Vec<BasicGetMessage>,
}

impl Scan {
    /// Takes up to `limit` messages of `queue` (all of them with `usize::MAX`), oldest first.
    pub(crate) async fn take(link: &Link, queue: &str, limit: usize) -> Result<Self> {
        let channel = link.channel().await?;
        let mut messages = Vec::new();
        while messages.len() < limit {
            match channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: false })
                .await
            {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                // Never declared: nothing was ever sent to it.
                Err(err) if is_not_found(&err) => break,
                Err(err) => return Err(amqp_error(err)),
            }
        }
        Ok(Self { channel, messages })
    }

    /// Removes message `index` from its queue for good.
    pub(crate) async fn remove(&self, index: usize) -> Result<()> {
        self.messages[index]
            .delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(amqp_error)?;
        Ok(())
    }

    /// Puts back every message not removed.
    pub(crate) async fn finish(self) {
        let _ = self.channel.close(200, "OK".into()).await;
    }
}
