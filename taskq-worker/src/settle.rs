//! Settling: every broker transition that ends a message's stay with this worker, and the
//! result writes that must land before them.
//!
//! Finished runs go through the acker, which writes their results and acknowledges them in
//! batches, so a busy worker spends two round trips per batch instead of two per task. Batches
//! form naturally: the acker takes whatever completions are waiting, flushes them, and
//! repeats; an idle worker therefore acknowledges each task at once, a busy one in bulk.
//! Retries, dead letters and requeues are single calls. Every call insists through broker
//! outages (see [`insist`]) until shutdown's grace period ends.

use std::{sync::Arc, time::Duration};

use taskq_core::{
    workflow::Finished, Broker, Client, DeadReason, Delivery, OutboundMessage, ResultBackend,
    TaskId, TaskResult, WorkerId,
};
use tokio::{
    sync::{mpsc, Mutex, OwnedSemaphorePermit},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{broker_call::insist, report::Recorder};

/// Most completions written and acknowledged in one flush.
const MAX_BATCH: usize = 256;

/// A finished message waiting for its result write, its workflow's next step, and its ack.
#[derive(Debug)]
pub(crate) struct Completion {
    delivery: Delivery,
    record: Option<TaskResult>,
    /// Acknowledged before running (at-most-once): only the result is written.
    acked: bool,
    /// The workflow it belongs to, continued after the result write and before the ack.
    workflow: Option<Finished>,
    /// Keeps the message counted against the prefetch limit until it is acknowledged.
    held: OwnedSemaphorePermit,
}

impl Completion {
    pub(crate) fn new(
        delivery: Delivery,
        record: Option<TaskResult>,
        acked: bool,
        workflow: Option<Finished>,
        held: OwnedSemaphorePermit,
    ) -> Self {
        Self {
            delivery,
            record,
            acked,
            workflow,
            held,
        }
    }
}

/// What settling needs: the broker and backend, whose messages, how long results live, and
/// when to stop insisting.
#[derive(Debug)]
pub(crate) struct Settler {
    /// Sends workflows' next steps (signed and sealed as the worker's client is configured).
    client: Client,
    broker: Arc<dyn Broker>,
    backend: Arc<dyn ResultBackend>,
    worker: WorkerId,
    result_ttl: Duration,
    /// Fires when shutdown's grace period ends: calls still failing give up.
    hard_stop: CancellationToken,
    recorder: Arc<Recorder>,
    sender: mpsc::UnboundedSender<Completion>,
    receiver: Mutex<Option<mpsc::UnboundedReceiver<Completion>>>,
    /// Fires once every execution has ended: the acker flushes what is left and stops.
    closing: CancellationToken,
}

impl Settler {
    pub(crate) fn new(
        client: Client,
        worker: WorkerId,
        result_ttl: Duration,
        hard_stop: CancellationToken,
        recorder: Arc<Recorder>,
    ) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        Self {
            broker: client.broker().clone(),
            backend: client.backend().clone(),
            client,
            worker,
            result_ttl,
            hard_stop,
            recorder,
            sender,
            receiver: Mutex::new(Some(receiver)),
            closing: CancellationToken::new(),
        }
    }

    /// Queues a completion for the acker; never blocks (the prefetch limit bounds how many
    /// can wait).
    pub(crate) fn complete(&self, completion: Completion) {
        // The receiver lives until `close`, which runs after every execution has ended.
        let _ = self.sender.send(completion);
    }

    /// Starts the acker.
    pub(crate) fn start_acker(self: &Arc<Self>) -> JoinHandle<()> {
        let settler = self.clone();
        tokio::spawn(
            async move {
                let receiver = settler.receiver.lock().await.take();
                if let Some(receiver) = receiver {
                    settler.run_acker(receiver).await;
                }
            }
            .in_current_span(),
        )
    }

    /// Asks the acker to write what is left and stop.
    pub(crate) fn close(&self) {
        self.closing.cancel();
    }

    /// Writes one record (RETRY, FAILURE, STARTED), insisting through outages.
    pub(crate) async fn store(&self, record: &TaskResult) {
        let (backend, ttl) = (&self.backend, self.result_ttl);
        insist("store result", &self.hard_stop, || {
            backend.store(record, ttl)
        })
        .await;
    }

    /// Acknowledges one message before it runs (at-most-once); true when it was still held.
    pub(crate) async fn ack_now(&self, delivery: &Delivery) -> bool {
        let acked = insist("ack", &self.hard_stop, || {
            self.broker
                .ack(&self.worker, std::slice::from_ref(delivery))
        })
        .await;
        acked == Some(1)
    }

    /// Replaces a held message by `next` in the scheduled set (a retry, or a postponement);
    /// `Some(false)` when another worker holds it now, `None` when the call gave up.
    pub(crate) async fn reschedule(
        &self,
        delivery: &Delivery,
        next: OutboundMessage,
    ) -> Option<bool> {
        insist("retry", &self.hard_stop, || {
            self.broker.retry(&self.worker, delivery, next.clone())
        })
        .await
    }

    /// Moves a held message to dead letters and counts it. `final_record`, when given, is
    /// written first, so that whoever waits for the task learns it ended (callers that stored
    /// the FAILURE themselves pass `None`).
    pub(crate) async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: DeadReason,
        error: String,
        final_record: Option<TaskResult>,
    ) {
        if let Some(record) = final_record {
            self.store(&record).await;
        }
        let moved = insist("dead-letter", &self.hard_stop, || {
            self.broker
                .dead_letter(&self.worker, delivery, reason, Some(error.clone()))
        })
        .await;
        if moved == Some(true) {
            self.recorder.dead_lettered(delivery.queue(), reason);
        }
    }

    /// Puts messages back at the head of their queues unchanged, in the given order.
    pub(crate) async fn requeue(&self, deliveries: &[Delivery]) {
        if deliveries.is_empty() {
            return;
        }
        match self.broker.requeue(&self.worker, deliveries).await {
            Ok(requeued) => self.recorder.requeued(requeued),
            // Deregistration, or else another worker's reaper, returns them.
            Err(err) => tracing::warn!(error = %err, "requeue on shutdown failed"),
        }
    }

    /// Continues the workflows of `finished` messages (idempotent), insisting through outages;
    /// false when it gave up (the caller then leaves the messages for recovery).
    pub(crate) async fn continue_workflows(&self, finished: Vec<Finished>) -> bool {
        if finished.is_empty() {
            return true;
        }
        let (client, ttl) = (&self.client, self.result_ttl);
        let done = insist("continue workflows", &self.hard_stop, || {
            client.advance_workflows(finished.clone(), ttl)
        })
        .await;
        done.is_some()
    }

    /// Lets the next enqueue with `key` through: task `id` holding it finished.
    pub(crate) async fn release_unique(&self, queue: &str, key: &str, id: TaskId) {
        if let Err(err) = self.broker.release_unique(queue, key, id).await {
            tracing::warn!(error = %err, "could not release the uniqueness key; it expires by itself");
        }
    }

    async fn run_acker(&self, mut receiver: mpsc::UnboundedReceiver<Completion>) {
        loop {
            let first = tokio::select! {
                biased;
                completion = receiver.recv() => completion,
                _ = self.closing.cancelled() => None,
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
            self.flush(batch).await;
        }
        // Closing: everything sent before `close` is already in the channel.
        let mut rest = Vec::new();
        while let Ok(completion) = receiver.try_recv() {
            rest.push(completion);
            if rest.len() == MAX_BATCH {
                self.flush(std::mem::take(&mut rest)).await;
            }
        }
        if !rest.is_empty() {
            self.flush(rest).await;
        }
    }

    /// Writes the batch's results, then acknowledges it: results always land before the ack,
    /// and a batch whose result write was abandoned is not acknowledged at all (recovery runs
    /// it again rather than lose its result).
    async fn flush(&self, batch: Vec<Completion>) {
        let mut records = Vec::new();
        let mut finished = Vec::new();
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut permits = Vec::with_capacity(batch.len());
        for completion in batch {
            records.extend(completion.record);
            finished.extend(completion.workflow);
            if !completion.acked {
                deliveries.push(completion.delivery);
            }
            permits.push(completion.held);
        }
        if !records.is_empty() {
            let (backend, ttl) = (&self.backend, self.result_ttl);
            let stored = insist("store results", &self.hard_stop, || {
                backend.store_many(&records, ttl)
            })
            .await;
            if stored.is_none() {
                tracing::error!(
                    messages = deliveries.len(),
                    "results not written; leaving the messages unacknowledged for recovery"
                );
                return;
            }
        }
        if !self.continue_workflows(finished).await {
            tracing::error!(
                messages = deliveries.len(),
                "workflows not continued; leaving the messages unacknowledged for recovery"
            );
            return;
        }
        if !deliveries.is_empty() {
            let acked = insist("ack", &self.hard_stop, || {
                self.broker.ack(&self.worker, &deliveries)
            })
            .await;
            if let Some(acked) = acked.filter(|acked| *acked < deliveries.len()) {
                tracing::warn!(
                    fenced = deliveries.len() - acked,
                    "messages were recovered by another worker before the ack"
                );
            }
        }
        drop(permits);
    }
}
