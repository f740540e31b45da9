//! One message's way through the worker: decode, route, run, then hand the outcome to the
//! settler. Data flows one way: the run loop fetches, `execute` runs, the `Settler`
//! settles, the `Recorder` reports. This file decodes and dispatches; `execution.rs` runs
//! one attempt, `ending.rs` ends it (retry, dead letter, final record, workflow).

mod args;
mod celery;
mod ending;
mod execution;
mod executor;
mod panics;

use std::sync::Arc;

use taskq_core::{
    error_chain,
    workflow::{Ending, Finished, Flow},
    DeadReason, DecodeError, Delivery, Envelope, TaskResult, TaskState,
};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use args::open_args;
use execution::{Disposition, Execution, NOT_MEASURED};
pub(crate) use executor::{ExecutionSettings, Executor};
pub(crate) use panics::note_locations as note_panic_locations;

use crate::settle::Completion;

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
        Err(_) if taskq_core::celery::is_celery_message(delivery.payload()) => {
            match celery::read(&executor, &delivery).await {
                Some(envelope) => envelope,
                None => return None,
            }
        }
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
    let opened = match open_args(executor.settings.encryption.as_ref(), &envelope) {
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
    #[cfg(not(feature = "otel"))]
    let span = tracing::info_span!(
        "task",
        task.id = %envelope.id,
        task.name = %envelope.task,
        queue = %envelope.queue,
        attempt = envelope.attempt,
    );
    // With `otel`, the span carries OpenTelemetry's messaging conventions and joins the
    // producer's trace (its parent is the `taskq send` span the envelope names).
    #[cfg(feature = "otel")]
    let span = {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let span = tracing::info_span!(
            "task",
            task.id = %envelope.id,
            task.name = %envelope.task,
            queue = %envelope.queue,
            attempt = envelope.attempt,
            otel.name = %format_args!("{} process", envelope.task),
            otel.kind = "consumer",
            messaging.system = "taskq",
            messaging.operation.type = "process",
            messaging.destination.name = %envelope.queue,
            messaging.message.id = %envelope.id,
            messaging.taskq.retry_count = envelope.attempt,
        );
        let _ = span.set_parent(taskq_core::trace_context::extract(&envelope.headers));
        span
    };
    let outcome = Execution {
        executor: &executor,
        delivery: &delivery,
        envelope: &envelope,
        args: opened.as_deref().unwrap_or(&envelope.args),
        flow,
        acked: std::sync::atomic::AtomicBool::new(false),
        waited_us: NOT_MEASURED.into(),
        ran_us: NOT_MEASURED.into(),
    }
    .run()
    .instrument(span)
    .await;
    match outcome {
        Disposition::Settled => None,
        Disposition::Interrupted => Some((seq, delivery)),
        Disposition::Complete {
            record,
            acked,
            workflow,
            ended,
        } => {
            let delivery = match ended {
                Some(ended) => delivery.with_outcome(*ended),
                None => delivery,
            };
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
