//! How an execution ends: a retry scheduled or a dead letter, the final record, the
//! uniqueness key released, and the workflow's view of the ending.

use std::time::Duration;

use serde_json::value::RawValue;
use taskq_core::{
    error_chain,
    workflow::{Ending, Finished},
    DeadReason, OutboundMessage, TaskError, TaskResult, TaskState, UNIQUE_KEY_HEADER,
};

use super::execution::{Disposition, Execution, NOT_MEASURED};
use crate::{hooks::On, metrics::Event, registry::Registered, TaskEvent};

impl Execution<'_> {
    /// Schedules the next attempt, or records FAILURE and dead-letters the message.
    pub(super) async fn fail(&self, task: &Registered, error: TaskError) {
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
            next.earlier_errors = self.envelope.errors_so_far();
            let overflow = next
                .earlier_errors
                .len()
                .saturating_sub(taskq_core::EARLIER_ERRORS_KEPT);
            next.earlier_errors.drain(..overflow);
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
                    let failed = self.ending_as(TaskState::Failure, Some(&error));
                    executor
                        .settler
                        .dead_letter(&failed, DeadReason::Failed, error, None)
                        .await;
                    return;
                }
            };
            let retrying = self.ending_as(TaskState::Retry, Some(error.message()));
            let moved = executor.settler.reschedule(&retrying, message).await;
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
        let failed = self.ending_as(TaskState::Failure, Some(error.message()));
        executor
            .settler
            .dead_letter(&failed, reason, error.message().to_owned(), None)
            .await;
    }

    /// Puts the message back into the scheduled set, due after `wait`, without spending an
    /// attempt (rate limiting).
    pub(super) async fn postpone(&self, wait: Duration) {
        let executor = self.executor;
        let mut next = self.envelope.clone();
        next.eta =
            Some(executor.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default());
        let Ok(message) = OutboundMessage::from_envelope(&next, usize::MAX) else {
            return;
        };
        executor.settler.reschedule(self.delivery, message).await;
    }

    /// How this run ended, for the queue's record of recent outcomes and its counters.
    pub(super) fn outcome(&self, state: TaskState, error: Option<&str>) -> taskq_core::Outcome {
        let envelope = self.envelope;
        let mut outcome = taskq_core::Outcome::new(
            envelope.id,
            &envelope.task,
            state,
            self.executor.clock.now(),
        )
        .with_attempt(envelope.attempt)
        .with_worker(self.executor.worker.as_str());
        let measured = |cell: &std::sync::atomic::AtomicU64| match cell
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            NOT_MEASURED => None,
            us => Some(Duration::from_micros(us)),
        };
        if let Some(ran) = measured(&self.ran_us) {
            outcome = outcome.with_runtime(ran);
        }
        if let Some(waited) = measured(&self.waited_us) {
            outcome = outcome.with_wait(waited);
        }
        match error {
            Some(error) => outcome.with_error(error),
            None => outcome,
        }
    }

    /// The delivery carrying how this run ended, for the call that settles it.
    pub(super) fn ending_as(&self, state: TaskState, error: Option<&str>) -> taskq_core::Delivery {
        self.delivery
            .clone()
            .with_outcome(self.outcome(state, error))
    }

    /// Calls the user's hooks for `on`.
    pub(super) fn hook(&self, on: On, error: Option<&str>, reason: Option<DeadReason>) {
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
    pub(super) async fn release_unique(&self) {
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
    pub(super) async fn finish(
        &self,
        task: &Registered,
        record: TaskResult,
        ending: Option<Ending>,
    ) -> Disposition {
        self.release_unique().await;
        let ending = ending.unwrap_or_else(|| Ending::Ended {
            state: record.state,
            error: record.error.clone().unwrap_or_default(),
        });
        let ended = self.outcome(record.state, record.error.as_deref());
        Disposition::Complete {
            ended: Some(Box::new(ended)),
            workflow: self.finished(ending).map(Box::new),
            record: (!task.options.ignore_result()).then_some(record),
            acked: self.acked.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The workflow's view of this message ending as `ending`, if it belongs to one.
    pub(super) fn finished(&self, ending: Ending) -> Option<Finished> {
        let flow = self.flow.clone()?;
        Some(
            Finished::new(self.envelope.id, &self.envelope.task, flow, ending)
                .with_trace(&self.envelope.headers),
        )
    }

    /// The ending of a success with `output`, when a workflow needs it (parsed only then).
    pub(super) fn succeeded(&self, output: &RawValue) -> Option<Ending> {
        self.flow.as_ref()?;
        serde_json::from_str(output.get())
            .ok()
            .map(Ending::Succeeded)
    }

    /// Ends what follows this message in its workflow (it ended without success), before the
    /// message is settled.
    pub(super) async fn end_workflow(&self, state: TaskState, error: &str) {
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

    /// A message whose SUCCESS is already stored is not run again when running it twice would
    /// do harm the broker cannot prevent:
    /// - a workflow step redelivered after its worker died between the result write and the
    ///   ack: running it could put it after its successor, so its workflow is continued from
    ///   the stored output instead (idempotent);
    /// - a copy of an outbox row that a relay sent twice to a broker without uniqueness keys
    ///   ([`taskq_core::RELAYED_HEADER`]): it is acknowledged without running.
    ///
    /// Not for workflow steps where signatures are required: nothing authenticates a stored
    /// record, and its output would become the next step's input, which the worker's client
    /// then signs. The step runs again instead (its successor is still sent once per id).
    pub(super) async fn already_succeeded(&self) -> Option<Disposition> {
        let continues_workflow = self.flow.as_ref().is_some_and(|flow| flow.has_successor());
        let relayed = self
            .envelope
            .headers
            .contains_key(taskq_core::RELAYED_HEADER);
        if !(continues_workflow || relayed) {
            return None; // the common case: nothing to look up
        }
        let executor = self.executor;
        let signatures_required = executor
            .settings
            .signatures
            .as_ref()
            .is_some_and(taskq_core::Keyring::is_required);
        if continues_workflow && signatures_required {
            return None;
        }
        let stored = match executor.progress.get(self.envelope.id).await {
            Ok(stored) => stored?,
            Err(err) => {
                tracing::warn!(error = %err, "could not check for an earlier success; running it");
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
        if relayed {
            tracing::info!("succeeded before (an outbox row relayed twice): not running it again");
        } else {
            tracing::info!(
                "succeeded before (redelivered): continuing its workflow without running it again"
            );
        }
        Some(Disposition::Complete {
            record: None,
            acked: false,
            ended: None,
            workflow: self.finished(Ending::Succeeded(output)).map(Box::new),
        })
    }

    /// A stored output as plain JSON, opened with the worker's keys when sealed.
    pub(super) fn plain_output(&self, raw: &RawValue) -> Option<serde_json::Value> {
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

    pub(super) async fn store(&self, task: &Registered, record: &TaskResult) {
        if task.options.ignore_result() {
            return;
        }
        self.executor.settler.store(record).await;
    }

    pub(super) fn record(&self, _task: &Registered, state: TaskState) -> TaskResult {
        self.record_without_task(state)
    }

    /// A record of this execution for a message whose task is not registered here.
    pub(super) fn record_without_task(&self, state: TaskState) -> TaskResult {
        let now = self.executor.clock.now();
        let attempts = match state {
            TaskState::Expired => self.envelope.attempt,
            _ => self.envelope.attempt + 1,
        };
        TaskResult::new(self.envelope.id, &self.envelope.task, state, now)
            .with_attempts(attempts)
            .with_earlier_errors(self.envelope.errors_so_far())
            .with_worker(self.executor.worker.as_str())
            .replying_as(&self.envelope.headers)
    }

    pub(super) fn max_retries(&self, task: &Registered) -> u32 {
        self.envelope
            .max_retries
            .unwrap_or_else(|| task.options.max_retries())
    }
}
