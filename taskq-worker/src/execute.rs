//! One message's way through the worker: decode, route, run, record, acknowledge.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures_util::FutureExt;
use serde_json::value::RawValue;
use taskq_core::{
    error_chain, DeadReason, DecodeError, Delivery, Envelope, OutboundMessage, TaskContext,
    TaskError, TaskResult, TaskState, UNIQUE_KEY_HEADER,
};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::{
    acker::Completion, hooks::On, maintenance::broker_backoff, metrics::Event,
    registry::Registered, runtime::Runtime, TaskEvent,
};

/// A message this worker gives back on shutdown, with its fetch sequence number so that
/// everything given back keeps its original order.
pub(crate) type Leftover = (u64, Delivery);

/// Runs one delivery to a final broker transition, or hands it back as a [`Leftover`] when
/// shutdown stops it first. Never panics, never returns an error.
pub(crate) async fn execute(
    runtime: Arc<Runtime>,
    seq: u64,
    delivery: Delivery,
    held: OwnedSemaphorePermit,
) -> Option<Leftover> {
    let slot = tokio::select! {
        biased;
        _ = runtime.stopping.cancelled() => None,
        slot = runtime.slots.clone().acquire_owned() => slot.ok(),
    };
    let Some(_slot) = slot else {
        return Some((seq, delivery));
    };
    let envelope = match Envelope::decode(delivery.payload(), runtime.config.max_payload_bytes) {
        Ok(envelope) => envelope,
        Err(err) => {
            let reason = match err {
                DecodeError::TooLarge { .. } => DeadReason::Oversized,
                _ => DeadReason::Malformed,
            };
            tracing::error!(queue = delivery.queue(), error = %error_chain(&err), "undecodable message");
            dead_letter(&runtime, &delivery, reason, error_chain(&err)).await;
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
        runtime: &runtime,
        delivery: &delivery,
        envelope: &envelope,
        acked: std::sync::atomic::AtomicBool::new(false),
    }
    .run()
    .instrument(span)
    .await;
    match outcome {
        Outcome::Settled => None,
        Outcome::Interrupted => Some((seq, delivery)),
        Outcome::Complete { record, acked } => {
            runtime
                .acker
                .complete(Completion::new(delivery, record, acked, held));
            None
        }
    }
}

/// Where a message stands when its execution ends.
enum Outcome {
    /// Retried or dead-lettered already.
    Settled,
    /// Shutdown stopped it; it goes back to the queue unchanged.
    Interrupted,
    /// Finished (success, expiry, revocation): store this record, if any, then acknowledge
    /// unless `acked` already (at-most-once tasks).
    Complete {
        record: Option<TaskResult>,
        acked: bool,
    },
}

/// The state of one decoded message's execution.
struct Execution<'a> {
    runtime: &'a Runtime,
    delivery: &'a Delivery,
    envelope: &'a Envelope,
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
    async fn run(self) -> Outcome {
        let runtime = self.runtime;
        let Some(task) = runtime.registry.get(&self.envelope.task).cloned() else {
            let error = format!(
                "no task named `{}` is registered on this worker",
                self.envelope.task
            );
            tracing::error!("{error}");
            self.release_unique().await;
            dead_letter(runtime, self.delivery, DeadReason::UnknownTask, error).await;
            return Outcome::Settled;
        };
        let now = runtime.client.clock().now();
        if runtime.revocations.is_revoked(&self.envelope.id) {
            tracing::info!("revoked before it ran");
            runtime.record(Event::Revoked, self.envelope);
            let record = self.record(&task, TaskState::Revoked).with_error("revoked");
            return self.finish(&task, record).await;
        }
        if self.envelope.is_expired(now) {
            tracing::info!("expired before it could run");
            runtime.record(Event::Expired, self.envelope);
            let record = self
                .record(&task, TaskState::Expired)
                .with_error("expired before it could run");
            return self.finish(&task, record).await;
        }
        if let Some(limit) = task.options.rate_limit() {
            let broker = runtime.client.broker();
            let admitted = broker
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
            let broker = runtime.client.broker();
            let acked = with_retries(runtime, "ack", || {
                broker.ack(&runtime.worker, std::slice::from_ref(self.delivery))
            })
            .await;
            if acked != Some(1) {
                tracing::warn!("at-most-once task no longer held; not running it");
                return Outcome::Settled;
            }
            self.acked.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if runtime.config.track_started && !task.options.ignore_result() {
            let record = self.record(&task, TaskState::Started).with_started_at(now);
            if let Err(err) = runtime
                .client
                .backend()
                .store(&record, runtime.config.result_ttl)
                .await
            {
                tracing::warn!(error = %err, "failed to record STARTED");
            }
        }
        runtime.record(Event::Started, self.envelope);
        runtime.record_queue_wait(self.envelope, now);
        let started = tokio::time::Instant::now();
        let attempt = self.attempt(&task).await;
        runtime.record_run_time(self.envelope, started.elapsed());
        match attempt {
            Attempt::Succeeded(output) => {
                tracing::debug!("succeeded");
                runtime.record(Event::Succeeded, self.envelope);
                self.hook(On::Success, None, None);
                let record = self.record(&task, TaskState::Success).with_result(output);
                return self.finish(&task, record).await;
            }
            Attempt::Failed(error) => self.fail(&task, error).await,
            Attempt::Rejected(error) => {
                tracing::error!(%error, "message rejected");
                runtime.record(Event::Failed, self.envelope);
                let record = self.record(&task, TaskState::Failure).with_error(&error);
                self.store(&task, &record).await;
                self.hook(On::Failure, Some(&error), None);
                self.release_unique().await;
                if !self.acked.load(std::sync::atomic::Ordering::Relaxed) {
                    self.hook(On::DeadLetter, Some(&error), Some(DeadReason::Malformed));
                    dead_letter(runtime, self.delivery, DeadReason::Malformed, error).await;
                }
            }
            Attempt::Interrupted if self.acked.load(std::sync::atomic::Ordering::Relaxed) => {
                tracing::warn!("at-most-once task stopped by shutdown; it will not run again");
            }
            Attempt::Interrupted => return Outcome::Interrupted,
            Attempt::Revoked => {
                tracing::info!("revoked and stopped while running");
                runtime.record(Event::Revoked, self.envelope);
                let record = self
                    .record(&task, TaskState::Revoked)
                    .with_error("revoked while running");
                return self.finish(&task, record).await;
            }
        }
        Outcome::Settled
    }

    /// Runs the handler once, under the hard time limit, catching panics.
    async fn attempt(&self, task: &Registered) -> Attempt {
        let runtime = self.runtime;
        let max_retries = self.max_retries(task);
        let tokens = runtime.revocations.start(self.envelope.id);
        let mut ctx = TaskContext::new(self.envelope, max_retries, runtime.stopping.clone())
            .with_worker(runtime.worker.as_str())
            .with_run_cancellation(tokens.soft.clone());
        if !task.options.ignore_result() {
            ctx = ctx.with_progress(runtime.client.backend().clone(), runtime.config.result_ttl);
        }
        let running = match task.start(&self.envelope.args, ctx) {
            Ok(running) => running,
            Err(err) => {
                runtime.revocations.finish(&self.envelope.id);
                return Attempt::Rejected(format!(
                    "invalid arguments for `{}`: {err}",
                    self.envelope.task
                ));
            }
        };
        let limit = task.options.timeout().or(runtime.config.default_timeout);
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
                _ = runtime.hard_stop.cancelled() => break Attempt::Interrupted,
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
        runtime.revocations.finish(&self.envelope.id);
        // A run told to stop by a revocation ends REVOKED, however it returned.
        let told_to_stop =
            tokens.soft.is_cancelled() && runtime.revocations.is_revoked(&self.envelope.id);
        match attempt {
            Attempt::Succeeded(_) | Attempt::Failed(_) if told_to_stop => Attempt::Revoked,
            other => other,
        }
    }

    /// Schedules the next attempt, or records FAILURE and dead-letters the message.
    async fn fail(&self, task: &Registered, error: TaskError) {
        let runtime = self.runtime;
        let max_retries = self.max_retries(task);
        let attempts = self.envelope.attempt + 1;
        let may_retry = !self.acked.load(std::sync::atomic::Ordering::Relaxed);
        if may_retry && error.is_retryable() && self.envelope.attempt < max_retries {
            let delay = error
                .retry_delay()
                .unwrap_or_else(|| task.options.retry_policy().delay(self.envelope.attempt));
            tracing::warn!(error = %error, ?delay, attempts, max_retries, "attempt failed; retrying");
            runtime.record(Event::Retried, self.envelope);
            self.hook(On::Retry, Some(error.message()), None);
            let mut next = self.envelope.clone();
            next.attempt = attempts;
            next.eta = Some(
                runtime.client.clock().now()
                    + chrono::Duration::from_std(delay).unwrap_or_default(),
            );
            next.last_error = Some(error.message().to_owned());
            let record = self
                .record(task, TaskState::Retry)
                .with_error(error.message());
            self.store(task, &record).await;
            let message = match OutboundMessage::from_envelope(&next, usize::MAX) {
                Ok(message) => message,
                Err(err) => {
                    dead_letter(
                        runtime,
                        self.delivery,
                        DeadReason::Failed,
                        error_chain(&err),
                    )
                    .await;
                    return;
                }
            };
            let moved = with_retries(runtime, "retry", || {
                runtime
                    .client
                    .broker()
                    .retry(&runtime.worker, self.delivery, message.clone())
            })
            .await;
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
        runtime.record(Event::Failed, self.envelope);
        let record = self
            .record(task, TaskState::Failure)
            .with_error(error.message());
        self.store(task, &record).await;
        self.hook(On::Failure, Some(error.message()), None);
        self.release_unique().await;
        if self.acked.load(std::sync::atomic::Ordering::Relaxed) {
            return; // at-most-once: the message is gone already
        }
        self.hook(On::DeadLetter, Some(error.message()), Some(reason));
        dead_letter(runtime, self.delivery, reason, error.message().to_owned()).await;
    }

    /// Puts the message back into the scheduled set, due after `wait`, without spending an
    /// attempt (rate limiting).
    async fn postpone(&self, wait: Duration) {
        let runtime = self.runtime;
        let mut next = self.envelope.clone();
        next.eta = Some(
            runtime.client.clock().now() + chrono::Duration::from_std(wait).unwrap_or_default(),
        );
        let Ok(message) = OutboundMessage::from_envelope(&next, usize::MAX) else {
            return;
        };
        with_retries(runtime, "postpone", || {
            runtime
                .client
                .broker()
                .retry(&runtime.worker, self.delivery, message.clone())
        })
        .await;
    }

    /// Calls the user's hooks for `on`.
    fn hook(&self, on: On, error: Option<&str>, reason: Option<DeadReason>) {
        self.runtime.hooks.fire(
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
        let released = self
            .runtime
            .client
            .broker()
            .release_unique(&self.envelope.queue, key, self.envelope.id)
            .await;
        if let Err(err) = released {
            tracing::warn!(error = %err, "could not release the uniqueness key; it expires by itself");
        }
    }

    /// Hands the final record to the acker, which writes results before acknowledging.
    async fn finish(&self, task: &Registered, record: TaskResult) -> Outcome {
        self.release_unique().await;
        Outcome::Complete {
            record: (!task.options.ignore_result()).then_some(record),
            acked: self.acked.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    async fn store(&self, task: &Registered, record: &TaskResult) {
        if task.options.ignore_result() {
            return;
        }
        let backend = self.runtime.client.backend();
        let ttl = self.runtime.config.result_ttl;
        with_retries(self.runtime, "store result", || backend.store(record, ttl)).await;
    }

    fn record(&self, _task: &Registered, state: TaskState) -> TaskResult {
        let now = self.runtime.client.clock().now();
        let attempts = match state {
            TaskState::Expired => self.envelope.attempt,
            _ => self.envelope.attempt + 1,
        };
        TaskResult::new(self.envelope.id, &self.envelope.task, state, now)
            .with_attempts(attempts)
            .with_worker(self.runtime.worker.as_str())
    }

    fn max_retries(&self, task: &Registered) -> u32 {
        self.envelope
            .max_retries
            .unwrap_or_else(|| task.options.max_retries())
    }
}

async fn dead_letter(runtime: &Runtime, delivery: &Delivery, reason: DeadReason, error: String) {
    let moved = with_retries(runtime, "dead-letter", || {
        runtime
            .client
            .broker()
            .dead_letter(&runtime.worker, delivery, reason, Some(error.clone()))
    })
    .await;
    if moved == Some(true) {
        runtime.record_dead_letter(delivery.queue(), reason);
    }
}

/// Calls a broker operation until it succeeds, backing off between failures, so that an
/// outage of the broker delays a message's final transition instead of stranding it.
///
/// Gives up only when shutdown's grace period is over: the message then stays in this worker's
/// processing set, where deregistration or the reaper of another worker returns it.
pub(crate) async fn with_retries<T, F, Fut>(runtime: &Runtime, what: &str, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = taskq_core::Result<T>>,
{
    let mut failures = 0;
    loop {
        match op().await {
            Ok(value) => return Some(value),
            Err(err) => {
                failures += 1;
                let delay = broker_backoff(failures);
                tracing::warn!(error = %error_chain(&err), ?delay, failures, "{what} failed; retrying");
                tokio::select! {
                    _ = runtime.hard_stop.cancelled() => {
                        tracing::error!("{what} abandoned at shutdown; the message will be recovered");
                        return None;
                    }
                    _ = tokio::time::sleep(delay) => {}
                }
            }
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

fn humanize(duration: Duration) -> String {
    format!("{:?}", duration)
}
