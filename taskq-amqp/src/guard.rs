//! The long-run guard: RabbitMQ closes a consumer's channel when it holds a delivery longer
//! than the node's `consumer_timeout` (30 minutes by default, one setting for the whole node in
//! 3.10), and the message runs again elsewhere while the first run goes on. taskq never lets a
//! delivery get that old:
//!
//! 1. at half the timeout, the worker takes a **lease** (an exclusive queue
//!    `taskq.lease.<id>`, which RabbitMQ deletes when the worker's connection ends), publishes
//!    a **guard copy** of the message into the delay chain (due in half the timeout), and acks
//!    the original;
//! 2. when the run ends, the worker declares a **done marker** (`taskq.done.<id>`, expiring a
//!    timeout after its last use) and drops the lease;
//! 3. whichever worker receives the guard copy asks: lease held → the run goes on, the copy
//!    goes round again; done marker → dropped; neither → the worker that held it is gone, and
//!    the copy runs as the message.
//!
//! So a run longer than the timeout runs once, and one whose worker died still runs again.

use std::time::Duration;

use lapin::{
    options::{QueueDeclareOptions, QueueDeleteOptions},
    types::{AMQPValue, FieldTable},
};
use taskq_core::{Result, TaskId};

use crate::{
    delay,
    error::{amqp_error, is_not_found},
    link::Link,
    publish::Outgoing,
};

/// Marks a guard copy.
pub(crate) const HEADER: &str = "x-taskq-guard";

fn lease_queue(id: TaskId) -> String {
    format!("taskq.lease.{id}")
}

fn done_queue(id: TaskId) -> String {
    format!("taskq.done.{id}")
}

/// What became of a guarded run, as a guard copy's receiver finds it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its worker still holds the lease.
    Running,
    /// It ended (the done marker is there).
    Finished,
    /// Neither: its worker is gone; the copy runs.
    Orphaned,
}

/// Takes the lease of `id` on this process's connection.
pub(crate) async fn take_lease(link: &Link, id: TaskId) -> Result<()> {
    let channel = link.channel().await?;
    let declared = channel
        .queue_declare(
            lease_queue(id).as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(amqp_error);
    let _ = channel.close(200, "OK".into()).await;
    declared.map(|_| ())
}

/// Publishes the guard copy of `payload` (task `id`) to `level_queue`, due in `after`.
pub(crate) async fn send_copy(
    link: &Link,
    level_queue: &str,
    id: TaskId,
    payload: &str,
    after: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    link.ensure_delays().await?;
    let due = now + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::seconds(1));
    let body = payload.as_bytes().to_vec();
    let copy = match delay::route(level_queue, due, now) {
        Some((exchange, key)) => Outgoing::to_exchange(&exchange, &key, body),
        None => Outgoing::to_queue(level_queue, body),
    }
    .with_message_id(id.to_string())
    .with_header(HEADER, "1");
    link.publish(vec![copy]).await
}

/// Ends a guarded run: the done marker when it `finished` (settled for good), then the lease.
pub(crate) async fn release(
    link: &Link,
    id: TaskId,
    finished: bool,
    keep_marker: Duration,
) -> Result<()> {
    let channel = link.channel().await?;
    let outcome = async {
        if finished {
            let mut arguments = FieldTable::default();
            arguments.insert(
                "x-expires".into(),
                AMQPValue::LongLongInt(i64::try_from(keep_marker.as_millis()).unwrap_or(i64::MAX)),
            );
            channel
                .queue_declare(
                    done_queue(id).as_str().into(),
                    QueueDeclareOptions::durable(),
                    arguments,
                )
                .await
                .map_err(amqp_error)?;
        }
        channel
            .queue_delete(
                lease_queue(id).as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .map_err(amqp_error)?;
        Ok(())
    }
    .await;
    let _ = channel.close(200, "OK".into()).await;
    outcome
}

/// What became of the run a guard copy of `id` stands for.
pub(crate) async fn verdict(link: &Link, id: TaskId) -> Result<Verdict> {
    if exists(link, &lease_queue(id)).await? {
        return Ok(Verdict::Running);
    }
    if exists(link, &done_queue(id)).await? {
        return Ok(Verdict::Finished);
    }
    Ok(Verdict::Orphaned)
}

/// Whether queue `name` exists: a passive declaration answers, or is refused with NOT_FOUND
/// (none) or RESOURCE_LOCKED (an exclusive queue of another live connection: it exists).
async fn exists(link: &Link, name: &str) -> Result<bool> {
    match link.inspect_queue(name).await? {
        Ok(_) => Ok(true),
        Err(err) if is_not_found(&err) => Ok(false),
        Err(err) if err.to_string().contains("RESOURCE_LOCKED") => Ok(true),
        Err(err) => Err(amqp_error(err)),
    }
}
