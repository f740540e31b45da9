//! Background duties of every worker: heartbeat, reaping lost workers, promoting due messages,
//! publishing the worker's info, refreshing revocations.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use taskq_core::{
    workflow::{Ending, Finished, Flow},
    Broker, Client, Envelope, Membership, PassesDue, TaskId, TaskResult, TaskState, WorkerId,
    WorkerInfo,
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{lease::Lease, report::Recorder, revocations::Revocations, turns::Turns};

/// Scheduled messages promoted per round; more wait for the next round.
const PROMOTE_BATCH: usize = 1000;

/// Rounds between two passes over every queue of the worker, made on its turn ([`Turns`]):
/// reaping, promotion and the orphan sweep, whatever the broker's index of due passes says
/// ([`taskq_core::Transport::passes_due`]). The index is written by every path that
/// schedules a message or shortens a lease; this pass writes it again for anything it missed
/// (messages scheduled by producers of an older version, data from before it existed), which
/// then waits at most this long. A minute at the default heartbeat: about 20 commands per
/// minute for a lone worker of three queues.
const FULL_PASS_EVERY: u64 = 60;

/// Rounds between two publications of the worker's info: operators read it, nothing decides by
/// it, and an idle worker should cost under one broker command per second (issue 31). It is kept
/// for [`INFO_KEPT_FOR`] publications, so a worker that missed one or two is still listed.
const INFO_EVERY: u64 = 10;

/// Publications of the worker's info its record outlives.
const INFO_KEPT_FOR: u32 = 3;

/// Rounds between two measurements of the clock skew and refreshes of the revoked set: a
/// clock drifts by milliseconds an hour, and revocations arrive on the control channel at once
/// (the refresh only catches those sent while it was down).
const CLOCK_EVERY: u64 = 30;

/// Rounds between two passes that forget idle queues (an hour at the default heartbeat): the
/// registry only grows by queue names, so this can be rare.
const FORGET_EVERY: u64 = 720;

/// A queue nobody registered for this long, empty and without workers, leaves the registry.
const QUEUES_FORGOTTEN_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// What the background duties need.
#[derive(Debug)]
pub(crate) struct Maintenance {
    pub(crate) broker: Arc<dyn Broker>,
    /// Where the final results of poison messages go, and their workflows continue.
    pub(crate) client: Client,
    pub(crate) worker: WorkerId,
    /// What the worker publishes about itself (queues, concurrency, host, start).
    pub(crate) info: WorkerInfo,
    pub(crate) heartbeat_interval: Duration,
    /// How long results are kept.
    pub(crate) result_ttl: Duration,
    pub(crate) liveness_ttl: Duration,
    pub(crate) max_redeliveries: u32,
    /// The keys a message's signature must hold under before its content drives anything
    /// (the workflow a poison message ends), as on the fetch path.
    pub(crate) signatures: Option<taskq_core::Keyring>,
    /// Execution slots, to report how many are in use.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) revocations: Arc<Revocations>,
    pub(crate) recorder: Arc<Recorder>,
    /// Fired when a heartbeat learns the lease is gone: the run loop stops this incarnation.
    pub(crate) lease_lost: CancellationToken,
    /// This worker's view of its lease, renewed by every successful heartbeat.
    pub(crate) lease: Arc<Lease>,
    /// When this worker reaps and promotes for its fleet.
    pub(crate) turns: Turns,
    /// The host's clock skew against the broker's as last measured, ms.
    pub(crate) clock_skew_ms: parking_lot::Mutex<Option<i64>>,
}

impl Maintenance {
    /// Runs one round at once, then every heartbeat interval, until `stop` fires (the round
    /// at start, which passes over every queue, was made by the caller).
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut rounds = 0u64;
        loop {
            let full = rounds > 0 && rounds.is_multiple_of(FULL_PASS_EVERY);
            self.round(full).await;
            rounds += 1;
            self.slow_round(rounds).await;
            if rounds.is_multiple_of(FORGET_EVERY) {
                if let Err(err) = self.broker.forget_idle_queues(QUEUES_FORGOTTEN_AFTER).await {
                    tracing::warn!(error = %err, "forgetting idle queues failed");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.heartbeat_interval) => {}
            }
        }
    }

    /// One heartbeat; on the worker's turn ([`Turns`]), the reaper passes (for brokers with a
    /// [`Membership`] role) and promotion passes due on its queues
    /// ([`taskq_core::Transport::passes_due`]), or when `full` both passes over every queue and
    /// the orphan sweep. Failures are logged, not fatal.
    pub(crate) async fn round(&self, full: bool) {
        let membership = self.broker.membership();
        if let Some(membership) = membership {
            if !self.heartbeat(membership).await {
                return;
            }
        }
        if !self.turns.mine() {
            return;
        }
        let queues = &self.info.queues;
        let passes = if full {
            PassesDue::all(queues)
        } else {
            match self.broker.passes_due(queues).await {
                Ok(passes) => passes,
                Err(err) => {
                    tracing::warn!(error = %err, "reading the passes due failed");
                    return;
                }
            }
        };
        if let Some(membership) = membership {
            if !passes.reap.is_empty() {
                self.reap(membership, &passes.reap).await;
            }
            if self.turns.count_due() {
                self.count_peers(membership).await;
            }
        }
        if !passes.promote.is_empty() {
            if let Err(err) = self
                .broker
                .promote_scheduled(&passes.promote, PROMOTE_BATCH)
                .await
            {
                tracing::warn!(error = %err, "promoting scheduled messages failed");
            }
        }
        if full {
            self.sweep_orphans().await;
        }
    }

    /// Renews the worker's lease; false when it learned the lease is gone (the incarnation
    /// ends).
    async fn heartbeat(&self, membership: &dyn Membership) -> bool {
        let sent = tokio::time::Instant::now();
        match membership
            .heartbeat(&self.worker, &self.info.queues, self.liveness_ttl)
            .await
        {
            Ok(()) => self.lease.renewed(sent),
            Err(taskq_core::Error::LeaseLost { .. }) => {
                self.lease_lost.cancel();
                return false;
            }
            // A failing heartbeat is not a lost lease: the worker keeps working, and the
            // reaper of another worker decides if it is gone.
            Err(err) => tracing::warn!(error = %err, "heartbeat failed"),
        }
        true
    }

    /// Recovers the messages of workers whose leases on `queues` ended.
    async fn reap(&self, membership: &dyn Membership, queues: &[String]) {
        match membership
            .recover_lost_workers(queues, self.max_redeliveries)
            .await
        {
            Ok(report) if !report.workers.is_empty() => {
                self.recorder
                    .recovered(report.requeued + report.dead_lettered);
                let now = self.broker.clock().now();
                if let Err(err) = membership.record_lost(&report.workers, now).await {
                    tracing::debug!(error = %err, "could not note the lost workers for operators");
                }
                tracing::warn!(
                    workers = ?report.workers,
                    requeued = report.requeued,
                    dead_lettered = report.dead_lettered,
                    "recovered messages of lost workers"
                );
                self.end_poisoned(&report.poisoned).await;
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "reaper pass failed"),
        }
    }

    /// Counts the peers sharing one of the worker's queues, each in turn, to space the next
    /// turns by the least shared.
    async fn count_peers(&self, membership: &dyn Membership) {
        let queues = &self.info.queues;
        let index = self.turns.next_to_count(queues.len());
        let Some(queue) = queues.get(index) else {
            return;
        };
        match membership.peers(std::slice::from_ref(queue)).await {
            Ok(Some(peers)) => self.turns.counted_on(index, queues.len(), peers),
            Ok(None) => {}
            Err(err) => tracing::debug!(error = %err, "could not count the peers"),
        }
    }

    /// Gives the messages dead-lettered as poison a final FAILURE, so their waiters end, and
    /// ends what follows them in their workflows.
    async fn end_poisoned(&self, poisoned: &[(TaskId, String)]) {
        if poisoned.is_empty() {
            return;
        }
        let now = self.broker.clock().now();
        let error = format!(
            "dead-lettered as worker_lost: recovered from lost workers more than {} times",
            self.max_redeliveries
        );
        let mut records = Vec::with_capacity(poisoned.len());
        let mut finished = Vec::new();
        for (id, payload) in poisoned {
            let envelope = Envelope::decode(payload, usize::MAX).ok();
            let task = envelope.as_ref().map_or("", |e| e.task.as_str());
            let mut record = TaskResult::new(*id, task, TaskState::Failure, now)
                .with_error(&error)
                .with_worker(self.worker.as_str());
            if let Some(envelope) = &envelope {
                record = record.replying_as(&envelope.headers);
            }
            records.push(record);
            let trusted = envelope.as_ref().filter(|e| self.holds_signature(e));
            if let Some(flow) = trusted.and_then(|e| Flow::of(e).ok().flatten()) {
                let ending = Ending::Ended {
                    state: TaskState::Failure,
                    error: error.clone(),
                };
                finished.push(Finished::new(*id, task, flow, ending));
            }
        }
        let results = self.client.backend();
        if let Err(err) = results.store_many(&records, self.result_ttl).await {
            tracing::warn!(error = %err, "could not record the failure of poison messages");
        }
        if !finished.is_empty() {
            if let Err(err) = self
                .client
                .advance_workflows(finished, self.result_ttl)
                .await
            {
                tracing::warn!(error = %err, "could not end the workflows of poison messages");
            }
        }
    }

    /// Whether `envelope`'s content may drive an action: its signature holds, or this worker
    /// does not verify signatures. A poison message is dead-lettered and given its FAILURE
    /// either way (so its waiters end), but the workflow it names (callbacks with their
    /// arguments, later steps) continues only from a message a producer with a key sent: the
    /// worker's client signs what it sends on, so continuing an unsigned flow would launder it.
    fn holds_signature(&self, envelope: &Envelope) -> bool {
        let Some(keyring) = &self.signatures else {
            return true;
        };
        match keyring.verify(envelope, self.broker.clock().now()) {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(task.id = %envelope.id, task.name = %envelope.task, error = %err, "a poison message's signature does not hold; its workflow is not continued");
                false
            }
        }
    }

    /// The duties of round `round` that are not every round's: publishing the worker's info
    /// (every [`INFO_EVERY`]), measuring the clock against the broker's and refreshing the
    /// revoked set (every [`CLOCK_EVERY`]). Round 0 (at start) does all.
    pub(crate) async fn slow_round(&self, round: u64) {
        if round.is_multiple_of(CLOCK_EVERY) {
            *self.clock_skew_ms.lock() = self.measure_clock().await;
            match self.broker.revoked().await {
                Ok(ids) => self.revocations.refresh(ids),
                Err(err) => tracing::warn!(error = %err, "reading revocations failed"),
            }
        }
        if round.is_multiple_of(INFO_EVERY) {
            self.publish_info().await;
        }
    }

    /// Returns processing lists no lease covers.
    async fn sweep_orphans(&self) {
        let Some(membership) = self.broker.membership() else {
            return;
        };
        // Twice the lease: a list is orphaned only when no lease could still cover it.
        let grace = self.liveness_ttl * 2;
        match membership
            .sweep_orphans(&self.info.queues, grace, self.max_redeliveries)
            .await
        {
            Ok(report) => {
                self.recorder
                    .recovered(report.requeued + report.dead_lettered);
                self.end_poisoned(&report.poisoned).await;
            }
            Err(err) => tracing::warn!(error = %err, "orphan sweep failed"),
        }
    }

    /// Publishes what operators see of this worker, kept for [`INFO_KEPT_FOR`] publications.
    async fn publish_info(&self) {
        let mut info = self.info.clone();
        info.clock_skew_ms = *self.clock_skew_ms.lock();
        info.in_flight = info.concurrency - self.slots.available_permits().min(info.concurrency);
        self.recorder.in_flight(info.in_flight);
        info.last_heartbeat = self.broker.clock().now();
        let kept =
            (self.heartbeat_interval * INFO_EVERY as u32 * INFO_KEPT_FOR).max(self.liveness_ttl);
        if let Err(err) = self.broker.publish_worker_info(&info, kept).await {
            tracing::warn!(error = %err, "publishing worker info failed");
        }
    }
}

impl Maintenance {
    /// The host's clock skew against the broker's, ms; warns when it is over
    /// [`SKEW_WARNING`] (decisions use the broker's clock anyway, but the host's logs and any
    /// code reading the host clock are off by that much).
    async fn measure_clock(&self) -> Option<i64> {
        match self.broker.measure_clock().await {
            Ok(skew) => {
                let skew_ms = skew?.num_milliseconds();
                if skew_ms.unsigned_abs() > SKEW_WARNING.as_millis() as u64 {
                    tracing::warn!(skew_ms, "this host's clock is off from the broker's; fix its time sync (decisions use the broker's clock)");
                }
                Some(skew_ms)
            }
            Err(err) => {
                tracing::warn!(error = %err, "measuring the clock skew failed");
                None
            }
        }
    }
}

/// Skew above which a worker warns about its host's clock.
const SKEW_WARNING: Duration = Duration::from_secs(1);

/// What worker `id` publishes about itself.
pub(crate) fn worker_info(
    id: &WorkerId,
    queues: &[String],
    concurrency: usize,
    started_at: DateTime<Utc>,
) -> WorkerInfo {
    WorkerInfo::new(
        id.as_str(),
        &taskq_core::local_hostname(),
        queues.to_vec(),
        concurrency,
        started_at,
    )
}
