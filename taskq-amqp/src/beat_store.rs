//! [`AmqpBeatStore`]: beat replicas coordinated by RabbitMQ alone. The leader is the active
//! consumer of a single-active-consumer queue, and what it leads with (the last fired slot of
//! every entry) travels in the one message it holds: the token.

use std::{collections::BTreeMap, sync::Arc, time::Duration};
use tokio_util::task::AbortOnDropHandle;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
    Acker, Channel, Consumer,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use taskq_core::{BeatStatus, BeatStore, Error, Result};
use tokio::time::Instant;

use crate::{error::amqp_error, link::Link, names, publish::Outgoing, stream, AmqpConfig};

/// How long a replica that just started consuming waits for the token before answering.
const FIRST_TOKEN_WAIT: Duration = Duration::from_secs(2);

/// The token's body: the state a leader hands to the next.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Token {
    /// The last fired slot of every entry.
    fires: BTreeMap<String, DateTime<Utc>>,
    /// Set on the barrier a replica publishes when it first receives the token: every token
    /// the previous leader published is ahead of it in the queue, so once the barrier comes
    /// back, the state of all of them is merged and the replica may lead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    barrier: Option<u64>,
}

/// Beat coordination through RabbitMQ alone.
///
/// - **Leader**: every replica consumes `taskq.beat.leader`, a quorum queue with
///   `x-single-active-consumer`; RabbitMQ delivers to one consumer at a time, and the replica
///   holding the token (unacknowledged) leads. When its connection or channel goes, RabbitMQ
///   gives the token to the next consumer: no lock expiry to wait for.
/// - **Barrier**: a replica handed the token leads only once a barrier token it publishes
///   then comes back: the tokens the previous leader published before it went are ahead of
///   the barrier in the queue, so their state is merged first (without it a new leader could
///   fire a slot the previous one fired moments before).
/// - **State**: the token carries the last fired slot of every entry. A leader that changes
///   it publishes a new token (confirmed) and acks the old one when the new one arrives, so
///   the next leader starts from the newest; tokens that meet are merged (latest slot wins).
/// - **Fires**: the leader claims a slot by publishing the token that records it *before* it
///   enqueues the fire ([`BeatStore::claim_fire`]): a leader that dies in between loses that
///   one fire rather than letting its successor fire the slot again (at most once per slot,
///   where Redis's uniqueness key gives exactly once).
/// - The token is replaced well within RabbitMQ's `consumer_timeout`, which would otherwise
///   close the leader's channel.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use taskq_amqp::{AmqpBeatStore, AmqpConfig};
/// let store = AmqpBeatStore::connect(AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f")).await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AmqpBeatStore {
    link: Arc<Link>,
    held: Arc<Mutex<Option<Held>>>,
    session: tokio::sync::Mutex<Option<Session>>,
}

/// The token this replica holds, and the state it leads with.
#[derive(Debug)]
struct Held {
    acker: Acker,
    since: Instant,
    token: Token,
    /// The channel's serial: a token of a closed session is not held any more.
    session: u64,
    /// The barrier this session waits for before it leads (see [`Token::barrier`]); `None`
    /// once it came back.
    awaiting: Option<u64>,
}

/// This replica's consumer of the leader queue.
#[derive(Debug)]
struct Session {
    channel: Channel,
    serial: u64,
    /// Ends with the session.
    task: AbortOnDropHandle<()>,
}

impl AmqpBeatStore {
    /// Connects to the node `config` names.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] naming the (redacted) URL when RabbitMQ cannot be reached.
    pub async fn connect(config: AmqpConfig) -> Result<Self> {
        let link = Arc::new(Link::new(config));
        let channel = link.channel().await?;
        let declared = crate::link::declare_stream(&channel, names::BEAT_STATUS_STREAM, "1h").await;
        let _ = channel.close(200, "OK".into()).await;
        declared?;
        Ok(Self {
            link,
            held: Arc::new(Mutex::new(None)),
            session: tokio::sync::Mutex::new(None),
        })
    }

    /// Closes the connection: the token, if this replica held it, goes to the next replica at
    /// once. Later calls reconnect.
    pub async fn close(&self) {
        self.session.lock().await.take();
        self.held.lock().take();
        self.link.close().await;
    }

    /// Whether this replica holds the token on a live session.
    fn leads(&self, session: &Option<Session>) -> bool {
        let Some(session) = session else {
            return false;
        };
        session.channel.status().connected()
            && self
                .held
                .lock()
                .as_ref()
                .is_some_and(|held| held.session == session.serial && held.awaiting.is_none())
    }

    /// Starts consuming the leader queue unless a live session does; true when it started one.
    async fn ensure_session(&self, session: &mut Option<Session>) -> Result<bool> {
        if session
            .as_ref()
            .is_some_and(|s| s.channel.status().connected() && !s.task.is_finished())
        {
            return Ok(false);
        }
        *session = None;
        self.held.lock().take();
        let channel = self.link.channel().await?;
        let consumer = consume(&channel).await?;
        // A token to find: the first replica ever seeds it; later seeds merge into the held
        // one and are acked (the state only grows, so an empty seed changes nothing).
        self.link
            .publish(vec![token_message(&Token::default())])
            .await?;
        let serial = next_serial();
        let task = tokio::spawn(receive(
            consumer,
            self.held.clone(),
            serial,
            self.link.clone(),
            recycle_every(self.link.config()),
        ));
        *session = Some(Session {
            channel,
            serial,
            task: AbortOnDropHandle::new(task),
        });
        Ok(true)
    }

    /// Publishes the held token's state as a new token (it replaces the held one on arrival).
    async fn republish(&self) -> Result<()> {
        let message = {
            let held = self.held.lock();
            let Some(held) = held.as_ref() else {
                return Err(not_leading());
            };
            token_message(&held.token)
        };
        self.link.publish(vec![message]).await
    }
}

fn next_serial() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A new token is published at least this often, well within `consumer_timeout`.
fn recycle_every(config: &AmqpConfig) -> Duration {
    (config.consumer_timeout() / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

fn not_leading() -> Error {
    Error::Invalid {
        what: "beat store",
        reason: "this beat does not hold the leader token".to_owned(),
    }
}

fn token_message(token: &Token) -> Outgoing {
    let body = serde_json::to_vec(token).expect("a token serializes");
    Outgoing::to_queue(names::BEAT_LEADER_QUEUE, body)
}

async fn consume(channel: &Channel) -> Result<Consumer> {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    channel
        .queue_declare(
            names::BEAT_LEADER_QUEUE.into(),
            lapin::options::QueueDeclareOptions::durable(),
            arguments,
        )
        .await
        .map_err(amqp_error)?;
    channel
        .basic_qos(16, BasicQosOptions::default())
        .await
        .map_err(amqp_error)?;
    channel
        .basic_consume(
            names::BEAT_LEADER_QUEUE.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error)
}

/// Takes the tokens RabbitMQ delivers (only to the active consumer), keeps the newest with the
/// merged state, and replaces it with a fresh copy before `consumer_timeout` would.
async fn receive(
    mut consumer: Consumer,
    held: Arc<Mutex<Option<Held>>>,
    session: u64,
    link: Arc<Link>,
    recycle_every: Duration,
) {
    let mut tick = tokio::time::interval(recycle_every / 2);
    loop {
        tokio::select! {
            delivery = consumer.next() => {
                let Some(Ok(delivery)) = delivery else { break };
                if let Some(barrier) = take(&held, session, delivery).await {
                    let message = token_message(&Token { barrier: Some(barrier), ..Token::default() });
                    if let Err(err) = link.publish(vec![message]).await {
                        tracing::warn!(error = %err, "could not publish the beat token's barrier; leading without it");
                        if let Some(h) = held.lock().as_mut().filter(|h| h.session == session) {
                            h.awaiting = None;
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let stale = held
                    .lock()
                    .as_ref()
                    .filter(|h| h.session == session && h.since.elapsed() >= recycle_every)
                    .map(|h| token_message(&h.token));
                if let Some(message) = stale {
                    if let Err(err) = link.publish(vec![message]).await {
                        tracing::warn!(error = %err, "could not replace the beat leader token");
                    }
                }
            }
        }
    }
    held.lock().take_if(|h| h.session == session);
}

/// Merges a delivered token into the held one; returns the barrier to publish when this is the
/// session's first token.
async fn take(held: &Mutex<Option<Held>>, session: u64, delivery: Delivery) -> Option<u64> {
    let token: Token = serde_json::from_slice(&delivery.data).unwrap_or_else(|err| {
        tracing::warn!(error = %err, "an unreadable beat token was replaced by an empty one");
        Token::default()
    });
    let (replaced, barrier) = {
        let mut held = held.lock();
        let mut token = token;
        let arrived = token.barrier.take();
        let previous = held.take().filter(|h| h.session == session);
        // The first token of a session sends a barrier and waits for it; later ones carry the
        // wait on until their own barrier arrives.
        let (awaiting, barrier) = match &previous {
            None => {
                // Random: replicas in other processes count their serials from 1 too.
                let barrier = uuid::Uuid::new_v4().as_u64_pair().0;
                (Some(barrier), Some(barrier))
            }
            Some(previous) => (previous.awaiting.filter(|b| Some(*b) != arrived), None),
        };
        if let Some(previous) = &previous {
            for (entry, slot) in &previous.token.fires {
                let kept = token.fires.entry(entry.clone()).or_insert(*slot);
                *kept = (*kept).max(*slot);
            }
        }
        *held = Some(Held {
            acker: delivery.acker,
            since: Instant::now(),
            token,
            session,
            awaiting,
        });
        (previous, barrier)
    };
    if let Some(previous) = replaced {
        let _ = previous.acker.ack(BasicAckOptions::default()).await;
    }
    barrier
}

#[async_trait]
impl BeatStore for AmqpBeatStore {
    async fn try_acquire(&self, _owner: &str, _ttl: Duration) -> Result<bool> {
        let mut session = self.session.lock().await;
        if self.ensure_session(&mut session).await? {
            let deadline = Instant::now() + FIRST_TOKEN_WAIT;
            while !self.leads(&session) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(self.leads(&session))
    }

    async fn extend(&self, _owner: &str, _ttl: Duration) -> Result<bool> {
        Ok(self.leads(&*self.session.lock().await))
    }

    async fn release(&self, _owner: &str) -> Result<()> {
        // Closing the channel hands the token to the next consumer.
        if let Some(session) = self.session.lock().await.take() {
            let _ = session.channel.close(200, "OK".into()).await;
        }
        self.held.lock().take();
        Ok(())
    }

    async fn last_fire(&self, entry: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(self
            .held
            .lock()
            .as_ref()
            .and_then(|held| held.token.fires.get(entry).copied()))
    }

    async fn set_last_fire(&self, entry: &str, slot: DateTime<Utc>) -> Result<()> {
        let changed = {
            let mut held = self.held.lock();
            let Some(held) = held.as_mut() else {
                return Err(not_leading());
            };
            match held.token.fires.get(entry) {
                Some(last) if *last >= slot => false,
                _ => {
                    held.token.fires.insert(entry.to_owned(), slot);
                    true
                }
            }
        };
        if changed {
            self.republish().await?;
        }
        Ok(())
    }

    fn claims_fires(&self) -> bool {
        true
    }

    async fn claim_fire(&self, entry: &str, slot: DateTime<Utc>) -> Result<bool> {
        {
            let mut held = self.held.lock();
            let Some(held) = held.as_mut() else {
                return Err(not_leading());
            };
            if held
                .token
                .fires
                .get(entry)
                .is_some_and(|last| *last >= slot)
            {
                return Ok(false);
            }
            held.token.fires.insert(entry.to_owned(), slot);
        }
        self.republish().await?;
        // The claim holds only if this replica still leads once it is recorded: a leader
        // whose channel closed meanwhile has handed the token (and the slot) to another.
        if self.leads(&*self.session.lock().await) {
            Ok(true)
        } else {
            Err(not_leading())
        }
    }

    async fn publish_status(&self, status: &BeatStatus, ttl: Duration) -> Result<()> {
        let body = serde_json::to_vec(status).map_err(|source| Error::Serialize {
            what: "beat status",
            source,
        })?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.link
            .publish(vec![Outgoing::to_queue(names::BEAT_STATUS_STREAM, body)
                .with_header(STATUS_TTL_HEADER, &ttl_ms.to_string())])
            .await
    }

    async fn status(&self) -> Result<Option<BeatStatus>> {
        let now = Utc::now();
        let published = stream::read(
            &self.link,
            names::BEAT_STATUS_STREAM,
            Some(now - chrono::Duration::minutes(2)),
        )
        .await?;
        Ok(published.iter().rev().find_map(|message| {
            let status: BeatStatus = serde_json::from_slice(&message.data).ok()?;
            let ttl_ms: i64 = stream::header(message, STATUS_TTL_HEADER)?.parse().ok()?;
            (status.published_at + chrono::Duration::milliseconds(ttl_ms) > now).then_some(status)
        }))
    }
}

/// The header carrying a beat status's time to live, in milliseconds.
const STATUS_TTL_HEADER: &str = "taskq-ttl-ms";
