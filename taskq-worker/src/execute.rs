//! One message's way through the worker: decode, route, run, then hand the outcome to the
//! settler. Data flows one way: the run loop fetches, [`Executor::execute`] runs, the
//! [`Settler`] settles, the [`Recorder`] reports.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures_util::FutureExt;
use serde_json::value::RawValue;
use taskq_core::{
    __private::{ProgressStore, RunParts},
    error_chain,
    workflow::{Ending, Finished, Flow},
    Clock, DeadReason, DecodeError, Delivery, Envelope, OutboundMessage, RateLimiter,
    ResultBackend, TaskError, TaskResult, TaskState, WorkerId, UNIQUE_KEY_HEADER,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    hooks::{Hooks, On},
    lease::Lease,
    metrics::Event,
    registry::{Registered, Registry},
    report::Recorder,
    revocations::Revocations,
    settle::{Completion, Settler},
    TaskEvent,
};

/// Dead-letters a message that is not run at all (unreadable, or its signature refused) and,
/// when its id is known, ends it as FAILURE so that whoever waits for it learns it ended.
async fn refuse(
    executor: &Executor,
    delivery: &Delivery,
    id: Option<taskq_core::TaskId>,
    reason: DeadReason,
    error: String,
) {
    let record = id.map(|id| {
        TaskResult::new(id, "", TaskState::Failure, executor.clock.now())
            .with_error(format!("dead-lettered as {reason}: {error}"))
            .with_worker(executor.worker.as_str())
    });
    executor
        .settler
        .dead_letter(delivery, reason, error, record)
        .await;
}

/// The arguments `envelope`'s task runs with: opened with the worker's keys when sealed.
/// `None` when they are not sealed: the envelope's own arguments are used, uncopied.
fn open_args(executor: &Executor, envelope: &Envelope) -> Result<Option<Box<RawValue>>, String> {
    let Some(sealed) = taskq_core::Encryption::sealed_text(envelope.args.get()) else {
        return Ok(None);
    };
    let keys = executor
        .settings
        .encryption
        .as_ref()
        .ok_or("the arguments are encrypted and this worker has no encryption keys")?;
    let opened = keys
        .open(
            &sealed,
            &taskq_core::Encryption::associated(envelope.id, &envelope.task),
        )
        .map_err(|err| err.to_string())?;
    RawValue::from_string(opened).map(Some).map_err(|err| {
        format!(
            "the opened arguments are not JSON: {}",
            args_error(&err, true)
        )
    })
}

/// Why arguments did not decode, for results, dead letters and logs. serde quotes the value it
/// rejected (`invalid type: string "4111-...", expected i64`); for sealed arguments that would
/// put decrypted data where the sealed form was promised, so only the kind of error and its
/// place are told.
fn args_error(err: &serde_json::Error, sealed: bool) -> String {
    if !sealed {
        return err.to_string();
    }
    let kind = match err.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "of the wrong shape for the task",
        serde_json::error::Category::Eof => "cut short",
    };
    format!(
        "the decrypted arguments are {kind} (at line {} column {}; details withheld because they are encrypted)",
        err.line(),
        err.column()
    )
}

/// The settings an execution reads.
#[derive(Clone, Debug)]
pub(crate) struct ExecutionSettings {
    /// Largest envelope accepted.
    pub(crate) max_payload_bytes: usize,
    /// Write a STARTED record before each run.
    pub(crate) track_started: bool,
    /// How long results (and progress) are kept.
    pub(crate) result_ttl: Duration,
    /// Hard time limit of tasks that set none.
    pub(crate) default_timeout: Option<Duration>,
    /// Signature checks, when configured.
    pub(crate) signatures: Option<taskq_core::Keyring>,
    /// Keys that open sealed arguments and seal results, when configured.
    pub(crate) encryption: Option<taskq_core::Encryption>,
}

/// Everything an execution needs, and nothing else.
#[derive(Debug)]
pub(crate) struct Executor {
    pub(crate) registry: Registry,
    pub(crate) settings: ExecutionSettings,
    pub(crate) worker: WorkerId,
    pub(crate) clock: Clock,
    /// Execution slots (concurrency).
    pub(crate) slots: Arc<Semaphore>,
    /// Fires when shutdown starts: unstarted messages go back; tasks see it in their context.
    pub(crate) stopping: CancellationToken,
    /// Fires when the grace period ends: running executions are stopped and requeued.
    pub(crate) hard_stop: CancellationToken,
    pub(crate) revocations: Arc<Revocations>,
    pub(crate) rate_limiter: Arc<dyn RateLimiter>,
    /// Where tasks report progress.
    pub(crate) progress: Arc<dyn ResultBackend>,
    /// The same backend, seen through the one write a task's context makes.
    pub(crate) progress_store: Arc<dyn ProgressStore>,
    pub(crate) settler: Arc<Settler>,
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) hooks: Hooks,
    /// Nothing starts while the lease may have lapsed (a message started then could be
    /// running on another worker too).
    pub(crate) lease: Arc<Lease>,
}

/// A message this worker gives back on shutdown, with its fetch sequence number so that
/// everything given back keeps its original order.
pub(crate) type Leftover = (u64, Delivery);

/// Runs one delivery to a final broker transition, or hands it back as a [`Leftover`] when
/// shutdown stops it first. Never panics, never returns an error.
pub(crate) async fn execute(
    executor: Arc<Executor>,
    seq: u64,
    delivery: Delivery,
    held: OwnedSemaphorePermit,
) -> Option<Leftover> {
    let slot = tokio::select! {
        biased;
        _ = executor.stopping.cancelled() => None,
        slot = executor.slots.clone().acquire_owned() => slot.ok(),
    };
    let Some(_slot) = slot else {
        return Some((seq, delivery));
    };
    if !executor.lease.wait_fresh(&executor.stopping).await {
        return Some((seq, delivery));
    }
    let envelope = match Envelope::decode(delivery.payload(), executor.settings.max_payload_bytes) {
        Ok(envelope) => envelope,
        Err(err) => {
            let reason = match err {
                DecodeError::TooLarge { .. } => DeadReason::Oversized,
                _ => DeadReason::Malformed,
            };
            tracing::error!(queue = delivery.queue(), error = %error_chain(&err), "undecodable message");
            refuse(
                &executor,
                &delivery,
                delivery.id(),
                reason,
                error_chain(&err),
            )
            .await;
            return None;
        }
    };
    if let Some(keyring) = &executor.settings.signatures {
        if let Err(err) = keyring.verify(&envelope, executor.clock.now()) {
            tracing::error!(queue = delivery.queue(), task.id = %envelope.id, task.name = %envelope.task, error = %err, "refused a message whose signature does not hold");
            let delivery = delivery.with_id(envelope.id);
            refuse(
                &executor,
                &delivery,
                Some(envelope.id),
                DeadReason::BadSignature,
                err.to_string(),
            )
            .await;
            return None;
        }
    }
    let flow = match Flow::of(&envelope) {
        Ok(flow) => flow,
        Err(err) => {
            tracing::error!(queue = delivery.queue(), task.id = %envelope.id, task.name = %envelope.task, error = %error_chain(&err), "unreadable workflow");
            let delivery = delivery.with_id(envelope.id);
            refuse(
                &executor,
                &delivery,
                Some(envelope.id),
                DeadReason::Malformed,
                error_chain(&err),
            )
            .await;
            return None;
        }
    };
    let opened = match open_args(&executor, &envelope) {
        Ok(opened) => opened,
        Err(error) => {
            tracing::error!(queue = delivery.queue(), task.id = %envelope.id, task.name = %envelope.task, %error, "cannot open the sealed arguments");
            let delivery = delivery.with_id(envelope.id);
            // The envelope itself is readable (and its signature held, when checked): what
            // follows it in a workflow can be trusted, and ends too, so its waiters end.
            if let Some(flow) = flow {
                let ending = Ending::Ended {
                    state: TaskState::Failure,
                    error: format!("dead-lettered as undecryptable: {error}"),
                };
                let finished = Finished::new(envelope.id, &envelope.task, flow, ending);
                executor.settler.continue_workflows(vec![finished]).await;
            }
            refuse(
                &executor,
                &delivery,
                Some(envelope.id),
                DeadReason::Undecryptable,
                error,
            )
            .await;
            return None;
        }
    };
    // Brokers acknowledge by id too; spare them parsing the payload again.
    let delivery = delivery.with_id(envelope.id);
    let span = tracing::info_span!(
        "task",
        task.id = %envelope.id,
        task.name = %envelope.task,
        queue = %envelope.queue,
        attempt = envelope.attempt,
    );
    let outcome = Execution {
        executor: &executor,
        delivery: &delivery,
        envelope: &envelope,
        args: opened.as_deref().unwrap_or(&envelope.args),
        flow,
        acked: std::sync::atomic::AtomicBool::new(false),
    }
    .run()
    .instrument(span)
    .await;
    match outcome {
        Outcome::Settled => None,
        Outcome::Interrupted => Some((seq, delivery)),
        Outcome::Complete {
            record,
            acked,
            workflow,
        } => {
            executor.settler.complete(Completion::new(
                delivery,
                record,
                acked,
                workflow.map(|w| *w),
                held,
            ));
            None
        }
    }
}

/// Where a message stands when its execution ends.
// Returned once per execution and consumed at once: boxing the record would cost an
// allocation per task for nothing.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    /// Retried or dead-lettered already.
    Settled,
    /// Shutdown stopped it; it goes back to the queue unchanged.
    Interrupted,
    /// Finished (success, expiry, revocation): store this record, if any, continue the
    /// workflow, if any, then acknowledge unless `acked` already (at-most-once tasks).
    Complete {
        record: Option<TaskResult>,
        acked: bool,
        workflow: Option<Box<Finished>>,
    },
}

/// The state of one decoded message's execution.
struct Execution<'a> {
    executor: &'a Executor,
    delivery: &'a Delivery,
    envelope: &'a Envelope,
    /// The arguments the task runs with: the envelope's, opened when they were sealed (the
    /// envelope keeps them sealed, so that retries stay sealed and signed).
    args: &'a RawValue,
    /// The workflow the message belongs to.
    flow: Option<Flow>,
    /// Set once an at-most-once task was acknowledged before running.
    acked: std::sync::atomic::AtomicBool,
}

/// How one attempt ended.
enum Attempt {
    Succeeded(Box<RawValue>),
    Failed(TaskError),
    /// The arguments do not decode into the task's type: no attempt can ever succeed.
    Rejected(String),
    /// Shutdown's grace period ended first; the message goes back unchanged.
    Interrupted,
    /// Revoked with `terminate` while running: the run was dropped.
    Revoked,
}

impl Execution<'_> {
    /// `output` sealed with the worker's keys when it has them (the task's result then sits
    /// encrypted in the backend, like its arguments in the broker).
    fn sealed(&self, output: Box<RawValue>) -> Box<RawValue> {
        let Some(keys) = &self.executor.settings.encryption else {
            return output;
        };
        let sealed = keys.seal(
            output.get(),
            &taskq_core::Encryption::associated(self.envelope.id, &self.envelope.task),
        );
        serde_json::value::to_raw_value(&sealed).unwrap_or(output)
    }

    async fn run(self) -> Outcome {
        let executor = self.executor;
        if let Some(done) = self.already_succeeded().await {
            return done;
        }
        let Some(task) = executor.registry.get(&self.envelope.task).cloned() else {
            let error = format!(
                "no task named `{}` is registered on this worker",
                self.envelope.task
            );
            tracing::error!("{error}");
            self.release_unique().await;
            let record = self
                .record_without_task(TaskState::Failure)
                .with_error(format!("dead-lettered as unknown_task: {error}"));
            executor.settler.store(&record).await;
            self.end_workflow(TaskState::Failure, &error).await;
            executor
                .settler
                .dead_letter(self.delivery, DeadReason::UnknownTask, error, None)
                .await;
            return Outcome::Settled;
        };
        let now = executor.clock.now();
        if executor.revocations.is_revoked(&self.envelope.id) {
            tracing::info!("revoked before it ran");
            executor.recorder.record(Event::Revoked, self.envelope);
            let record = self.record(&task, TaskState::Revoked).with_error("revoked");
            return self.finish(&task, record, None).await;
        }
        if self.envelope.is_expired(now) {
            tracing::info!("expired before it could run");
            executor.recorder.record(Event::Expired, self.envelope);
            let record = self
                .record(&task, TaskState::Expired)
                .with_error("expired before it could run");
            return self.finish(&task, record, None).await;
        }
        if let Some(limit) = task.options.rate_limit() {
            let admitted = executor
                .rate_limiter
                .rate_limit(&self.envelope.queue, &self.envelope.task, limit)
                .await;
            let wait = match admitted {
                Ok(None) => None,
                Ok(Some(wait)) => Some(wait),
                Err(err) => {
                    tracing::warn!(error = %err, "rate limiter unavailable; postponing");
                    Some(Duration::from_secs(1))
                }
            };
            if let Some(wait) = wait {
                tracing::debug!(?wait, "rate limited; postponed");
                self.postpone(wait).await;
                return Outcome::Settled;
            }
        }
        if task.options.at_most_once() {
            if !executor.settler.ack_now(self.delivery).await {
                tracing::warn!("at-most-once task no longer held; not running it");
                return Outcome::Settled;
            }
            self.acked.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if executor.settings.track_started && !task.options.ignore_result() {
            let record = self.record(&task, TaskState::Started).with_started_at(now);
            if let Err(err) = executor
                .progress
                .store(&record, executor.settings.result_ttl)
                .await
            {
                tracing::warn!(error = %err, "failed to record STARTED");
            }
        }
        executor.recorder.record(Event::Started, self.envelope);
        executor.recorder.queue_wait(self.envelope, now);
        let started = tokio::time::Instant::now();
        let attempt = self.attempt(&task).await;
        executor.recorder.run_time(self.envelope, started.elapsed());
        match attempt {
            Attempt::Succeeded(output) => {
                let ending = self.succeeded(&output);
                if self.flow.is_some() && ending.is_none() {
                    // Its workflow cannot take it: fail it here, so that its record and
                    // what follows agree (not a SUCCESS followed by `on_failure`).
                    let error = TaskError::permanent(
                        "the output cannot be passed on in its workflow: it does not read back as JSON (nested deeper than 128 levels)",
                    );
                    self.fail(&task, error).await;
                    return Outcome::Settled;
                }
                tracing::debug!("succeeded");
                executor.recorder.record(Event::Succeeded, self.envelope);
                self.hook(On::Success, None, None);
                let record = self
                    .record(&task, TaskState::Success)
                    .with_result(self.sealed(output));
                return self.finish(&task, record, ending).await;
            }
            Attempt::Failed(error) => self.fail(&task, error).await,
            Attempt::Rejected(error) => {
                tracing::error!(%error, "message rejected");
                executor.recorder.record(Event::Failed, self.envelope);
                let record = self.record(&task, TaskState::Failure).with_error(&error);
                self.store(&task, &record).await;
                self.end_workflow(TaskState::Failure, &error).await;
                self.hook(On::Failure, Some(&error), None);
                self.release_unique().await;
                if !self.acked.load(std::sync::atomic::Ordering::Relaxed) {
                    self.hook(On::DeadLetter, Some(&error), Some(DeadReason::Malformed));
                    executor
                        .settler
                        .dead_letter(self.delivery, DeadReason::Malformed, error, None)
                        .await;
                }
            }
            Attempt::Interrupted if self.acked.load(std::sync::atomic::Ordering::Relaxed) => {
                tracing::warn!("at-most-once task stopped by shutdown; it will not run again");
                executor.recorder.record(Event::Failed, self.envelope);
                let record = self
                    .record(&task, TaskState::Failure)
                    .with_error("stopped by shutdown; an at-most-once task does not run again");
                self.store(&task, &record).await;
                self.end_workflow(TaskState::Failure, "stopped by shutdown")
                    .await;
            }
            Attempt::Interrupted => return Outcome::Interrupted,
            Attempt::Revoked => {
                tracing::info!("revoked and stopped while running");
                executor.recorder.record(Event::Revoked, self.envelope);
                let record = self
                    .record(&task, TaskState::Revoked)
                    .with_error("revoked while running");
                return self.finish(&task, record, None).await;
            }
        }
        Outcome::Settled
    }

    /// Runs the handler once, under the hard time limit, catching panics.
    async fn attempt(&self, task: &Registered) -> Attempt {
        let executor = self.executor;
        let max_retries = self.max_retries(task);
        let tokens = executor.revocations.start(self.envelope.id);
        let ctx = RunParts {
            envelope: self.envelope,
            max_retries,
            shutdown: executor.stopping.clone(),
            run: Some(tokens.soft.clone()),
            worker: Some(Arc::from(executor.worker.as_str())),
            progress: (!task.options.ignore_result()).then(|| {
                (
                    executor.progress_store.clone(),
                    executor.settings.result_ttl,
                )
            }),
        }
        .into_context();
        let running = match task.start(self.args, ctx) {
            Ok(running) => running,
            Err(err) => {
                executor.revocations.finish(&self.envelope.id);
                let sealed = taskq_core::Encryption::sealed_text(self.envelope.args.get());
                return Attempt::Rejected(format!(
                    "invalid arguments for `{}`: {}",
                    self.envelope.task,
                    args_error(&err, sealed.is_some())
                ));
            }
        };
        let limit = task.options.timeout().or(executor.settings.default_timeout);
        let guarded = AssertUnwindSafe(running).catch_unwind();
        let outcome = async {
            match limit {
                Some(limit) => tokio::time::timeout(limit, guarded)
                    .await
                    .map_err(|_| limit),
                None => Ok(guarded.await),
            }
        };
        tokio::pin!(outcome);
        // The soft limit only signals the task; the hard limit above drops it.
        let soft_limit = async {
            match task.options.soft_timeout() {
                Some(soft) => tokio::time::sleep(soft).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(soft_limit);
        let mut soft_armed = true;
        let attempt = loop {
            tokio::select! {
                biased;
                _ = tokens.kill.cancelled() => break Attempt::Revoked,
                _ = executor.hard_stop.cancelled() => break Attempt::Interrupted,
                outcome = &mut outcome => break match outcome {
                    Ok(Ok(Ok(output))) => Attempt::Succeeded(output),
                    Ok(Ok(Err(error))) => Attempt::Failed(error),
                    Ok(Err(panic)) => Attempt::Failed(TaskError::retryable(format!(
                        "task panicked: {}",
                        panic_message(&*panic)
                    ))),
                    Err(limit) => Attempt::Failed(TaskError::retryable(format!(
                        "time limit of {} exceeded",
                        humanize(limit)
                    ))),
                },
                _ = &mut soft_limit, if soft_armed => {
                    tracing::warn!("soft time limit reached; signalling the task");
                    soft_armed = false;
                    tokens.soft.cancel();
                }
            }
        };
        executor.revocations.finish(&self.envelope.id);
        // A run told to stop by a revocation ends REVOKED, however it returned.
        let told_to_stop =
            tokens.soft.is_cancelled() && executor.revocations.is_revoked(&self.envelope.id);
        match attempt {
            Attempt::Succeeded(_) | Attempt::Failed(_) if told_to_stop => Attempt::Revoked,
            other => other,
        }
    }

    /// Schedules the next attempt, or records FAILURE and dead-letters the message.
    async fn fail(&self, task: &Registered, error: TaskError) {
        let executor = self.executor;
        let max_retries = self.max_retries(task);
        let attempts = self.envelope.attempt + 1;
        let may_retry = !self.acked.load(std::sync::atomic::Ordering::Relaxed);
        if may_retry && error.is_retryable() && self.envelope.attempt < max_retries {
            let delay = error
                .retry_delay()
                .unwrap_or_else(|| task.options.retry_policy().delay(self.envelope.attempt));
            tracing::warn!(error = %error, ?delay, attempts, max_retries, "attempt failed; retrying");
            executor.recorder.record(Event::Retried, self.envelope);
            self.hook(On::Retry, Some(error.message()), None);
            let mut next = self.envelope.clone();
            next.attempt = attempts;
            next.eta =
                Some(executor.clock.now() + chrono::Duration::from_std(delay).unwrap_or_default());
            next.last_error = Some(error.message().to_owned());
            let record = self
                .record(task, TaskState::Retry)
                .with_error(error.message());
            self.store(task, &record).await;
            let message = match OutboundMessage::from_envelope(&next, usize::MAX) {
                Ok(message) => message,
                Err(err) => {
                    let error = error_chain(&err);
                    let record = self
                        .record(task, TaskState::Failure)
                        .with_error(format!("dead-lettered as failed: {error}"));
                    executor.settler.store(&record).await;
                    self.end_workflow(TaskState::Failure, &error).await;
                    executor
                        .settler
                        .dead_letter(self.delivery, DeadReason::Failed, error, None)
                        .await;
                    return;
                }
            };
            let moved = executor.settler.reschedule(self.delivery, message).await;
            if moved == Some(false) {
                tracing::warn!("message was recovered by another worker; retry not scheduled");
            }
            return;
        }
        let reason = if error.is_retryable() {
            DeadReason::RetriesExhausted
        } else {
            DeadReason::Failed
        };
        tracing::error!(error = %error, attempts, %reason, "task failed");
        executor.recorder.record(Event::Failed, self.envelope);
        let record = self
            .record(task, TaskState::Failure)
            .with_error(error.message());
        self.store(task, &record).await;
        self.end_workflow(TaskState::Failure, error.message()).await;
        self.hook(On::Failure, Some(error.message()), None);
        self.release_unique().await;
        if self.acked.load(std::sync::atomic::Ordering::Relaxed) {
            return; // at-most-once: the message is gone already
        }
        self.hook(On::DeadLetter, Some(error.message()), Some(reason));
        executor
            .settler
            .dead_letter(self.delivery, reason, error.message().to_owned(), None)
            .await;
    }

    /// Puts the message back into the scheduled set, due after `wait`, without spending an
    /// attempt (rate limiting).
    async fn postpone(&self, wait: Duration) {
        let executor = self.executor;
        let mut next = self.envelope.clone();
        next.eta =
            Some(executor.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default());
        let Ok(message) = OutboundMessage::from_envelope(&next, usize::MAX) else {
            return;
        };
        executor.settler.reschedule(self.delivery, message).await;
    }

    /// Calls the user's hooks for `on`.
    fn hook(&self, on: On, error: Option<&str>, reason: Option<DeadReason>) {
        self.executor.hooks.fire(
            on,
            &TaskEvent {
                id: Some(self.envelope.id),
                task: &self.envelope.task,
                queue: &self.envelope.queue,
                attempt: self.envelope.attempt,
                error,
                reason,
            },
        );
    }

    /// Lets the next enqueue with this task's uniqueness key through (it finished).
    async fn release_unique(&self) {
        let Some(key) = self.envelope.headers.get(UNIQUE_KEY_HEADER) else {
            return;
        };
        self.executor
            .settler
            .release_unique(&self.envelope.queue, key, self.envelope.id)
            .await;
    }

    /// Hands the final record to the acker, which writes results, then continues the
    /// workflow, then acknowledges. `ending` is the success's plain output, when it succeeded.
    async fn finish(
        &self,
        task: &Registered,
        record: TaskResult,
        ending: Option<Ending>,
    ) -> Outcome {
        self.release_unique().await;
        let ending = ending.unwrap_or_else(|| Ending::Ended {
            state: record.state,
            error: record.error.clone().unwrap_or_default(),
        });
        Outcome::Complete {
            workflow: self.finished(ending).map(Box::new),
            record: (!task.options.ignore_result()).then_some(record),
            acked: self.acked.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The workflow's view of this message ending as `ending`, if it belongs to one.
    fn finished(&self, ending: Ending) -> Option<Finished> {
        let flow = self.flow.clone()?;
        Some(Finished::new(
            self.envelope.id,
            &self.envelope.task,
            flow,
            ending,
        ))
    }

    /// The ending of a success with `output`, when a workflow needs it (parsed only then).
    fn succeeded(&self, output: &RawValue) -> Option<Ending> {
        self.flow.as_ref()?;
        serde_json::from_str(output.get())
            .ok()
            .map(Ending::Succeeded)
    }

    /// Ends what follows this message in its workflow (it ended without success), before the
    /// message is settled.
    async fn end_workflow(&self, state: TaskState, error: &str) {
        let ending = Ending::Ended {
            state,
            error: error.to_owned(),
        };
        if let Some(finished) = self.finished(ending) {
            self.executor
                .settler
                .continue_workflows(vec![finished])
                .await;
        }
    }

    /// A workflow step whose SUCCESS is already stored (a redelivery after its worker died
    /// between the result write and the ack) is not run again: running it could put it after
    /// its successor. Its workflow is continued from the stored output instead (idempotent).
    ///
    /// Not where signatures are required: nothing authenticates a stored record, and its
    /// output would become the next step's input, which the worker's client then signs. The
    /// step runs again instead (its successor is still sent once per id).
    async fn already_succeeded(&self) -> Option<Outcome> {
        self.flow.as_ref().filter(|flow| flow.has_successor())?;
        let executor = self.executor;
        if executor
            .settings
            .signatures
            .as_ref()
            .is_some_and(taskq_core::Keyring::is_required)
        {
            return None;
        }
        let stored = match executor.progress.get(self.envelope.id).await {
            Ok(stored) => stored?,
            Err(err) => {
                tracing::warn!(error = %err, "could not check for an earlier success; running the step");
                return None;
            }
        };
        if stored.state != TaskState::Success {
            return None;
        }
        let output = stored
            .result
            .as_deref()
            .map_or(Some(serde_json::Value::Null), |raw| self.plain_output(raw))?;
        tracing::info!(
            "succeeded before (redelivered): continuing its workflow without running it again"
        );
        Some(Outcome::Complete {
            record: None,
            acked: false,
            workflow: self.finished(Ending::Succeeded(output)).map(Box::new),
        })
    }

    /// A stored output as plain JSON, opened with the worker's keys when sealed.
    fn plain_output(&self, raw: &RawValue) -> Option<serde_json::Value> {
        let text = match taskq_core::Encryption::sealed_text(raw.get()) {
            Some(sealed) => self
                .executor
                .settings
                .encryption
                .as_ref()?
                .open(
                    &sealed,
                    &taskq_core::Encryption::associated(self.envelope.id, &self.envelope.task),
                )
                .ok()?,
            None => raw.get().to_owned(),
        };
        serde_json::from_str(&text).ok()
    }

    async fn store(&self, task: &Registered, record: &TaskResult) {
        if task.options.ignore_result() {
            return;
        }
        self.executor.settler.store(record).await;
    }

    fn record(&self, _task: &Registered, state: TaskState) -> TaskResult {
        self.record_without_task(state)
    }

    /// A record of this execution for a message whose task is not registered here.
    fn record_without_task(&self, state: TaskState) -> TaskResult {
        let now = self.executor.clock.now();
        let attempts = match state {
            TaskState::Expired => self.envelope.attempt,
            _ => self.envelope.attempt + 1,
        };
        TaskResult::new(self.envelope.id, &self.envelope.task, state, now)
            .with_attempts(attempts)
            .with_worker(self.executor.worker.as_str())
            .replying_as(&self.envelope.headers)
    }

    fn max_retries(&self, task: &Registered) -> u32 {
        self.envelope
            .max_retries
            .unwrap_or_else(|| task.options.max_retries())
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

fn humanize(duration: Duration) -> String {
    format!("{:?}", duration)
}
