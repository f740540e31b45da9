//! One decoded message's execution: the checks before a run (revoked, expired, already done,
//! rate limited), the attempt under its time limits with panics caught, and the [`Disposition`]
//! handed to the settler. How a failed or finished execution ends is in `ending.rs`.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures_util::FutureExt;
use serde_json::value::RawValue;
use taskq_core::{
    __private::RunParts,
    workflow::{Finished, Flow},
    DeadReason, Delivery, Envelope, TaskError, TaskResult, TaskState,
};

use super::{args::args_error, executor::Executor};
use crate::{hooks::On, metrics::Event, registry::Registered};

/// Where a message stands when its execution ends.
// Returned once per execution and consumed at once: boxing the record would cost an
// allocation per task for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Disposition {
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
        /// How the run ended, for the queue's record of recent outcomes (none when it did
        /// not run: a success stored before).
        ended: Option<Box<taskq_core::Outcome>>,
    },
}

/// The state of one decoded message's execution.
pub(super) struct Execution<'a> {
    pub(super) executor: &'a Executor,
    pub(super) delivery: &'a Delivery,
    pub(super) envelope: &'a Envelope,
    /// The arguments the task runs with: the envelope's, opened when they were sealed (the
    /// envelope keeps them sealed, so that retries stay sealed and signed).
    pub(super) args: &'a RawValue,
    /// The workflow the message belongs to.
    pub(super) flow: Option<Flow>,
    /// Set once an at-most-once task was acknowledged before running.
    pub(super) acked: std::sync::atomic::AtomicBool,
    /// How long the message waited before it started, µs ([`NOT_MEASURED`] until then).
    pub(super) waited_us: AtomicU64,
    /// How long the attempt ran, µs ([`NOT_MEASURED`] until it ended).
    pub(super) ran_us: AtomicU64,
}

/// A duration not measured (yet).
pub(super) const NOT_MEASURED: u64 = u64::MAX;

/// How one attempt ended.
pub(super) enum Attempt {
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
    pub(super) fn sealed(&self, output: Box<RawValue>) -> Box<RawValue> {
        let Some(keys) = &self.executor.settings.encryption else {
            return output;
        };
        let sealed = keys.seal(
            output.get(),
            &taskq_core::Encryption::associated(self.envelope.id, &self.envelope.task),
        );
        serde_json::value::to_raw_value(&sealed).unwrap_or(output)
    }

    pub(super) async fn run(self) -> Disposition {
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
                .dead_letter(
                    &self.ending_as(TaskState::Failure, Some(&error)),
                    DeadReason::UnknownTask,
                    error,
                    None,
                )
                .await;
            return Disposition::Settled;
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
        // The task's own limit, then its partition's: each is one GCRA key.
        let partition_key = self.envelope.partition.as_deref().map(partition_rate_key);
        let limits = [
            task.options
                .rate_limit()
                .map(|l| (self.envelope.task.as_str(), l)),
            task.options
                .partition_rate_limit()
                .zip(partition_key.as_deref())
                .map(|(l, key)| (key, l)),
        ];
        for (key, limit) in limits.into_iter().flatten() {
            let admitted = executor
                .rate_limiter
                .rate_limit(&self.envelope.queue, key, limit)
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
                return Disposition::Settled;
            }
        }
        if task.options.at_most_once() {
            if !executor.settler.ack_now(self.delivery).await {
                tracing::warn!("at-most-once task no longer held; not running it");
                return Disposition::Settled;
            }
            self.acked.store(true, Ordering::Relaxed);
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
        self.waited_us
            .store(micros(self.envelope.queue_wait(now)), Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        let attempt = self.attempt(&task).await;
        let ran = started.elapsed();
        executor.recorder.run_time(self.envelope, ran);
        self.ran_us.store(micros(ran), Ordering::Relaxed);
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
                    return Disposition::Settled;
                }
                match super::celery::send_follow_ups(executor, self.envelope, &output).await {
                    Ok(true) => {}
                    // Shutdown ended first: it goes back unchanged and runs again.
                    Ok(false) => return Disposition::Interrupted,
                    Err(error) => {
                        self.fail(&task, TaskError::permanent(error)).await;
                        return Disposition::Settled;
                    }
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
                if !self.acked.load(Ordering::Relaxed) {
                    self.hook(On::DeadLetter, Some(&error), Some(DeadReason::Malformed));
                    executor
                        .settler
                        .dead_letter(
                            &self.ending_as(TaskState::Failure, Some(&error)),
                            DeadReason::Malformed,
                            error,
                            None,
                        )
                        .await;
                }
            }
            Attempt::Interrupted if self.acked.load(Ordering::Relaxed) => {
                tracing::warn!("at-most-once task stopped by shutdown; it will not run again");
                executor.recorder.record(Event::Failed, self.envelope);
                let record = self
                    .record(&task, TaskState::Failure)
                    .with_error("stopped by shutdown; an at-most-once task does not run again");
                self.store(&task, &record).await;
                self.end_workflow(TaskState::Failure, "stopped by shutdown")
                    .await;
            }
            Attempt::Interrupted => return Disposition::Interrupted,
            Attempt::Revoked => {
                tracing::info!("revoked and stopped while running");
                executor.recorder.record(Event::Revoked, self.envelope);
                let record = self
                    .record(&task, TaskState::Revoked)
                    .with_error("revoked while running");
                return self.finish(&task, record, None).await;
            }
        }
        Disposition::Settled
    }

    /// Runs the handler once, under the hard time limit, catching panics.
    pub(super) async fn attempt(&self, task: &Registered) -> Attempt {
        let executor = self.executor;
        let max_retries = self.max_retries(task);
        let tokens = executor.revocations.start(self.envelope.id);
        let ctx = RunParts {
            envelope: self.envelope,
            max_retries,
            shutdown: executor.stopping.clone(),
            run: Some(tokens.soft.clone()),
            reason: Some(tokens.reason.clone()),
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
                    Ok(Err(panic)) => Attempt::Failed(TaskError::retryable(
                        match super::panics::take_location() {
                            Some(at) => format!("task panicked at {at}: {}", panic_message(&*panic)),
                            None => format!("task panicked: {}", panic_message(&*panic)),
                        },
                    )),
                    Err(limit) => Attempt::Failed(TaskError::retryable(format!(
                        "time limit of {} exceeded",
                        humanize(limit)
                    ))),
                },
                _ = &mut soft_limit, if soft_armed => {
                    tracing::warn!("soft time limit reached; signalling the task");
                    soft_armed = false;
                    tokens.signal(taskq_core::CancelReason::SoftTimeLimit);
                }
            }
        };
        executor.revocations.finish(&self.envelope.id);
        // A run told to stop by a revocation ends REVOKED, however it returned.
        let told_to_stop =
            tokens.soft.is_cancelled() && executor.revocations.is_revoked(&self.envelope.id);
        // A run that shutdown told to stop and that did not succeed goes back to the queue
        // unchanged, as one the grace period ended: stopping when asked is not a failure, and
        // the attempt is not counted.
        let shutting_down = executor.stopping.is_cancelled();
        match attempt {
            Attempt::Succeeded(_) | Attempt::Failed(_) if told_to_stop => Attempt::Revoked,
            Attempt::Failed(_) if shutting_down => Attempt::Interrupted,
            other => other,
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}

/// A duration in whole µs, below [`NOT_MEASURED`].
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).map_or(NOT_MEASURED - 1, |us| us.min(NOT_MEASURED - 1))
}

fn humanize(duration: Duration) -> String {
    format!("{:?}", duration)
}

/// The rate limiter's key of a partition: `{partition}` cannot start a task name (names have
/// no braces), so a partition's limit never shares state with a task's.
fn partition_rate_key(partition: &str) -> String {
    format!("{{partition}}{partition}")
}
