//! The intake of Celery-protocol queues: moves what Python's Celery sends to the worker's
//! Celery queues into taskq's queues of the same names ([`Transport::take_celery`]: one
//! atomic move per message on Redis; confirmed, then acknowledged on RabbitMQ), where the
//! fetch loop takes them like any other message.
//!
//! It polls: Celery's producers do not wake taskq's idle workers, so an empty round waits
//! [`IDLE_POLL`] (on Redis one command per queue per round; Celery's own Redis consumers
//! block on a one-second `BRPOP`. On RabbitMQ the messages are pushed to the intake's
//! consumer and a round that finds none sends nothing).
//!
//! [`Transport::take_celery`]: taskq_core::Transport::take_celery

use std::{sync::Arc, time::Duration};

use taskq_core::Broker;
use tokio_util::sync::CancellationToken;

/// How long an intake round that found nothing waits before the next.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// Most messages moved per queue and round.
const BATCH: usize = 256;

/// Whether the broker can serve Celery queues at all (asked once, at start, so that a worker
/// configured for a broker that cannot refuses to start instead of idling).
pub(crate) async fn check(broker: &dyn Broker, queues: &[String]) -> taskq_core::Result<()> {
    match queues.first() {
        Some(queue) => broker.take_celery(queue, 0).await.map(|_| ()),
        None => Ok(()),
    }
}

/// Moves Celery's messages until `stop` fires.
pub(crate) async fn run(broker: Arc<dyn Broker>, queues: Vec<String>, stop: CancellationToken) {
    if queues.is_empty() {
        return;
    }
    loop {
        let mut moved_full_batch = false;
        for queue in &queues {
            match broker.take_celery(queue, BATCH).await {
                Ok(moved) => moved_full_batch |= moved == BATCH,
                Err(err) => {
                    tracing::warn!(queue, error = %taskq_core::error_chain(&err), "could not take Celery's messages; trying again");
                }
            }
        }
        if moved_full_batch {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}
