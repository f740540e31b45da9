//! Revocations on RabbitMQ: appended to a stream (`taskq.revocations`) that every worker
//! follows from its start, so that each sees every revocation however many read at once; a
//! worker keeps the set in memory and reads only what was appended since.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};
use tokio_util::task::AbortOnDropHandle;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
    Consumer,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use taskq_core::{Error, Result, TaskId};
use tokio::sync::oneshot;

use crate::{error::amqp_error, link::Link, names, publish::Outgoing, stream};

/// One revocation as it is stored.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Revocation {
    pub(crate) id: TaskId,
    pub(crate) until: DateTime<Utc>,
}

/// The revocations stream followed since its start: every revocation seen so far.
#[derive(Debug)]
pub(crate) struct Follower {
    revoked: Arc<Mutex<HashMap<TaskId, DateTime<Utc>>>>,
    /// False once the consumer ended (connection lost): the next read starts a new follower.
    following: Arc<AtomicBool>,
    /// The consumer, held only so that it ends with the follower.
    _consumer: AbortOnDropHandle<()>,
}

impl Follower {
    /// Follows the stream from its start and returns once it has read everything published
    /// before this call (up to a marker it appends).
    pub(crate) async fn start(link: &Link) -> Result<Self> {
        let marker = stream::append_marker(link, names::REVOCATIONS_STREAM).await?;
        let channel = link.channel().await?;
        channel
            .basic_qos(1000, BasicQosOptions::default())
            .await
            .map_err(amqp_error)?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-stream-offset".into(),
            AMQPValue::LongString("first".into()),
        );
        let consumer = channel
            .basic_consume(
                names::REVOCATIONS_STREAM.into(),
                "".into(),
                BasicConsumeOptions::default(),
                arguments,
            )
            .await
            .map_err(amqp_error)?;
        let revoked = Arc::new(Mutex::new(HashMap::new()));
        let following = Arc::new(AtomicBool::new(true));
        let (caught_up, caught_up_rx) = oneshot::channel();
        let task = tokio::spawn(follow(
            channel,
            consumer,
            marker,
            caught_up,
            revoked.clone(),
            following.clone(),
        ));
        let follower = Self {
            revoked,
            following,
            _consumer: AbortOnDropHandle::new(task),
        };
        match tokio::time::timeout(stream::READ_TIMEOUT, caught_up_rx).await {
            Ok(Ok(())) => Ok(follower),
            Ok(Err(_)) => Err(Error::Broker {
                transport: "amqp",
                transient: true,
                source: "the revocations stream closed while being read".into(),
            }),
            Err(_) => Err(Error::Timeout(stream::READ_TIMEOUT)),
        }
    }

    /// Whether it still follows the stream.
    pub(crate) fn following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    /// Ids revoked until after `now`; forgets the others.
    pub(crate) fn revoked_at(&self, now: DateTime<Utc>) -> Vec<TaskId> {
        let mut revoked = self.revoked.lock();
        revoked.retain(|_, until| *until > now);
        revoked.keys().copied().collect()
    }
}

async fn follow(
    channel: lapin::Channel,
    mut consumer: Consumer,
    marker: String,
    caught_up: oneshot::Sender<()>,
    revoked: Arc<Mutex<HashMap<TaskId, DateTime<Utc>>>>,
    following: Arc<AtomicBool>,
) {
    let mut caught_up = Some(caught_up);
    while let Some(Ok(delivery)) = consumer.next().await {
        // Acks are the stream's credit: without them it stops after the prefetch.
        if delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .is_err()
        {
            break;
        }
        if stream::marker_of(&delivery).is_some_and(|seen| seen == marker) {
            if let Some(caught_up) = caught_up.take() {
                let _ = caught_up.send(());
            }
            continue;
        }
        if let Some(revocation) = revocation_of(&delivery) {
            revoked.lock().insert(revocation.id, revocation.until);
        }
    }
    following.store(false, Ordering::Release);
    drop(channel);
}

fn revocation_of(delivery: &Delivery) -> Option<Revocation> {
    if stream::marker_of(delivery).is_some() {
        return None;
    }
    serde_json::from_slice(&delivery.data).ok()
}

/// The message appending `revocation` to the stream.
pub(crate) fn append(revocation: &Revocation) -> Outgoing {
    let body = serde_json::to_vec(revocation).expect("a revocation serializes");
    Outgoing::to_queue(names::REVOCATIONS_STREAM, body)
}
