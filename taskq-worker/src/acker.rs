//! The acker: writes the results of finished runs and acknowledges them in batches, so a busy
//! worker spends two round trips per batch instead of two per task.
//!
//! Batches form naturally: the acker takes whatever completions are waiting, flushes them, and
//! repeats; an idle worker therefore acknowledges each task at once, a busy one in bulk.

use std::sync::Arc;

use taskq_core::{Delivery, TaskResult};
use tokio::{
    sync::{mpsc, OwnedSemaphorePermit},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{execute::with_retries, runtime::Runtime};

/// Most completions written and acknowledged in one flush.
const MAX_BATCH: usize = 256;

/// A finished message waiting for its result write and ack.
#[derive(Debug)]
pub(crate) struct Completion {
    delivery: Delivery,
    record: Option<TaskResult>,
    /// Acknowledged before running (at-most-once): only the result is written.
    acked: bool,
    /// Keeps the message counted against the prefetch limit until it is acknowledged.
    _held: OwnedSemaphorePermit,
}

impl Completion {
    pub(crate) fn new(
        delivery: Delivery,
        record: Option<TaskResult>,
        acked: bool,
        held: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            delivery,
            record,
            acked,
            _held: held,
        }
    }
}

/// The executions' side of the acker.
#[derive(Debug)]
pub(crate) struct Acker {
    sender: mpsc::UnboundedSender<Completion>,
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Completion>>>,
    /// Fires once every execution has ended: flush what is left and stop.
    closing: CancellationToken,
}

impl Acker {
    pub(crate) fn new() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            sender,
            receiver: std::sync::Mutex::new(Some(receiver)),
            closing: CancellationToken::new(),
        }
    }

    /// Queues a completion; never blocks (the prefetch limit bounds how many can wait).
    pub(crate) fn complete(&self, completion: Completion) {
        // The receiver lives until `close`, which runs after every execution has ended.
        let _ = self.sender.send(completion);
    }

    /// Starts the flushing task.
    pub(crate) fn start(runtime: &Arc<Runtime>) -> JoinHandle<()> {
        let receiver = runtime
            .acker
            .receiver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let runtime = runtime.clone();
        tokio::spawn(
            async move {
                if let Some(receiver) = receiver {
                    run(&runtime, receiver).await;
                }
            }
            .in_current_span(),
        )
    }

    /// Asks the flushing task to write what is left and stop.
    pub(crate) fn close(&self) {
        self.closing.cancel();
    }
}

async fn run(runtime: &Runtime, mut receiver: mpsc::UnboundedReceiver<Completion>) {
    loop {
        let first = tokio::select! {
            biased;
            completion = receiver.recv() => completion,
            _ = runtime.acker.closing.cancelled() => None,
        };
        let Some(first) = first else {
            break;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(completion) => batch.push(completion),
                Err(_) => break,
            }
        }
        flush(runtime, batch).await;
    }
    // Closing: everything sent before `close` is already in the channel.
    let mut rest = Vec::new();
    while let Ok(completion) = receiver.try_recv() {
        rest.push(completion);
        if rest.len() == MAX_BATCH {
            flush(runtime, std::mem::take(&mut rest)).await;
        }
    }
    if !rest.is_empty() {
        flush(runtime, rest).await;
    }
}

/// Writes the batch's results, then acknowledges it: results always land before the ack.
async fn flush(runtime: &Runtime, batch: Vec<Completion>) {
    let mut records = Vec::new();
    let mut deliveries = Vec::with_capacity(batch.len());
    let mut permits = Vec::with_capacity(batch.len());
    for completion in batch {
        records.extend(completion.record);
        if !completion.acked {
            deliveries.push(completion.delivery);
        }
        permits.push(completion._held);
    }
    if !records.is_empty() {
        let backend = runtime.client.backend();
        let ttl = runtime.config.result_ttl;
        with_retries(runtime, "store results", || {
            backend.store_many(&records, ttl)
        })
        .await;
    }
    if deliveries.is_empty() {
        return;
    }
    let broker = runtime.client.broker();
    let acked = with_retries(runtime, "ack", || broker.ack(&runtime.worker, &deliveries)).await;
    if let Some(acked) = acked {
        if acked < deliveries.len() {
            tracing::warn!(
                fenced = deliveries.len() - acked,
                "messages were recovered by another worker before the ack"
            );
        }
    }
    drop(permits);
}
