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
    error_chain, workflow::Finished, Broker, Client, DeadReason, Delivery, OutboundMessage,
    ResultBackend, TaskId, TaskResult, WorkerId,
};
use tokio::{
    sync::{mpsc, Mutex, OwnedSemaphorePermit},
    task::{JoinHandle, JoinSet},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    broker_call::{call_with, insist, Abandoned, Patience},
    report::Recorder,
};

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
    /// Keeps the message counted against the prefetch limit until it is acknowledged (dropped
    /// with the completion, never read).
    _held: OwnedSemaphorePermit,
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
            _held: held,
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
                    Self::run_acker(&settler, receiver).await;
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

    /// Sends the next step of a Celery chain to Celery's list for `queue`, insisting through
    /// outages; false when it gave up.
    pub(crate) async fn send_celery(&self, queue: &str, message: String) -> bool {
        let broker = &self.broker;
        insist(
            "send the next step of a Celery chain",
            &self.hard_stop,
            || broker.send_celery(queue, message.clone()),
        )
        .await
        .is_some()
    }

    /// Lets the next enqueue with `key` through: task `id` holding it finished.
    pub(crate) async fn release_unique(&self, queue: &str, key: &str, id: TaskId) {
        if let Err(err) = self.broker.release_unique(queue, key, id).await {
            tracing::warn!(error = %err, "could not release the uniqueness key; it expires by itself");
        }
    }

    async fn run_acker(this: &Arc<Self>, mut receiver: mpsc::UnboundedReceiver<Completion>) {
        let mut apart = JoinSet::new();
        loop {
            let first = tokio::select! {
                biased;
                completion = receiver.recv() => completion,
                _ = this.closing.cancelled() => None,
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
            this.flush(batch, &mut apart).await;
            while apart.try_join_next().is_some() {}
        }
        // Closing: everything sent before `close` is already in the channel.
        let mut rest = Vec::new();
        while let Ok(completion) = receiver.try_recv() {
            rest.push(completion);
            if rest.len() == MAX_BATCH {
                this.flush(std::mem::take(&mut rest), &mut apart).await;
            }
        }
        if !rest.is_empty() {
            this.flush(rest, &mut apart).await;
        }
        while apart.join_next().await.is_some() {}
    }

    /// Writes the batch's results, continues its workflows, then acknowledges it: results
    /// always land before the ack.
    ///
    /// A batch is tried once as a whole; the acker itself never waits out an outage. When that
    /// try fails with an error that may pass (a broker outage, or one cluster shard that cannot
    /// take a write now: a master whose replica stalled under durable writes), each message is
    /// settled on its own, in its own task in `apart`, insisting: the messages whose writes
    /// land are acknowledged at once and the acker goes on with the next batch, so one shard's
    /// stall holds only the messages that write there (and their permits), never the whole
    /// worker.
    ///
    /// A batch refused for good (an error no retry fixes) is settled again message by
    /// message, so that one message that cannot be settled (a continuation its broker refuses,
    /// a record its backend refuses) holds only itself; that one is dead-lettered with the
    /// reason, in sight of operators, instead of sitting unacknowledged in this worker's hands
    /// for as long as it lives. At shutdown, what is not settled is left for recovery.
    async fn flush(self: &Arc<Self>, mut batch: Vec<Completion>, apart: &mut JoinSet<()>) {
        match self.settle(&mut batch, Patience::Once).await {
            Ok(()) | Err(Abandoned::Stopped) => {}
            Err(Abandoned::Unavailable(err)) => {
                tracing::warn!(
                    messages = batch.len(),
                    error = %error_chain(&err),
                    "a batch could not be settled at once; settling its messages each on its own, insisting"
                );
                for completion in batch {
                    let this = self.clone();
                    apart.spawn(
                        async move {
                            let mut completion = completion;
                            this.settle_alone(&mut completion).await;
                        }
                        .in_current_span(),
                    );
                }
                return;
            }
            Err(Abandoned::Refused(err)) => {
                if batch.len() > 1 {
                    tracing::warn!(
                        messages = batch.len(),
                        error = %error_chain(&err),
                        "a batch could not be settled; settling its messages one by one"
                    );
                }
                for completion in &mut batch {
                    self.settle_alone(completion).await;
                }
            }
        }
        // The permits go with the batch: its messages stop counting against the prefetch limit.
        drop(batch);
    }

    /// Settles one message, insisting; dead-letters it when that is refused for good.
    async fn settle_alone(&self, completion: &mut Completion) {
        if let Err(Abandoned::Refused(err)) = self
            .settle(std::slice::from_mut(completion), Patience::Insist)
            .await
        {
            self.unsettled(completion, &err).await;
        }
    }

    /// One settle of `batch`: results, workflows, ack. What it did not finish stays in the
    /// completions (results not stored, workflows not continued), so that it can run again.
    async fn settle(&self, batch: &mut [Completion], patience: Patience) -> Result<(), Abandoned> {
        let stop = &self.hard_stop;
        let (records, owners) = take_each(batch, |c| &mut c.record);
        if !records.is_empty() {
            let (backend, ttl) = (&self.backend, self.result_ttl);
            let stored = call_with("store results", stop, patience, || {
                backend.store_many(&records, ttl)
            })
            .await;
            if let Err(why) = stored {
                put_back(batch, records, owners, |c| &mut c.record);
                return Err(why);
            }
        }
        let (finished, owners) = take_each(batch, |c| &mut c.workflow);
        if !finished.is_empty() {
            let (client, ttl) = (&self.client, self.result_ttl);
            let continued = call_with("continue workflows", stop, patience, || {
                client.advance_workflows(finished.clone(), ttl)
            })
            .await;
            if let Err(why) = continued {
                put_back(batch, finished, owners, |c| &mut c.workflow);
                return Err(why);
            }
        }
        let deliveries: Vec<Delivery> = batch
            .iter()
            .filter(|c| !c.acked)
            .map(|c| c.delivery.clone())
            .collect();
        if !deliveries.is_empty() {
            let acked = call_with("ack", stop, patience, || {
                self.broker.ack(&self.worker, &deliveries)
            })
            .await?;
            if acked < deliveries.len() {
                tracing::warn!(
                    fenced = deliveries.len() - acked,
                    "messages were recovered by another worker before the ack"
                );
            }
        }
        Ok(())
    }

    /// A message that cannot be settled, for a reason no retry fixes: dead-lettered with it.
    /// Its result, if it was stored, stays; requeued after the cause is fixed, a workflow step
    /// whose success is stored continues without running again.
    async fn unsettled(&self, completion: &Completion, err: &taskq_core::Error) {
        let error = format!("not settled: {}", error_chain(err));
        let (queue, id) = (completion.delivery.queue(), completion.delivery.id());
        if completion.acked {
            // Acknowledged before it ran (at-most-once): nothing left to hand anyone.
            tracing::error!(queue, task.id = ?id, %error, "a finished at-most-once message could not be settled");
            return;
        }
        tracing::error!(queue, task.id = ?id, %error, "dead-lettering a message that cannot be settled");
        self.dead_letter(&completion.delivery, DeadReason::Failed, error, None)
            .await;
    }
}

/// Takes the field `of` picks out of every completion that has it, with the position it came
/// from, so that a step refused for good can [`put_back`] what it did not finish.
fn take_each<T>(
    batch: &mut [Completion],
    of: impl Fn(&mut Completion) -> &mut Option<T>,
) -> (Vec<T>, Vec<usize>) {
    batch
        .iter_mut()
        .enumerate()
        .filter_map(|(index, completion)| of(completion).take().map(|value| (value, index)))
        .unzip()
}

/// Undoes [`take_each`].
fn put_back<T>(
    batch: &mut [Completion],
    values: Vec<T>,
    owners: Vec<usize>,
    of: impl Fn(&mut Completion) -> &mut Option<T>,
) {
    for (value, index) in values.into_iter().zip(owners) {
        *of(&mut batch[index]) = Some(value);
    }
}
