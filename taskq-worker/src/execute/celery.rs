//! Messages in Celery's protocol (a Python producer's `send_task`, taken from Kombu's list by
//! the broker): read into a taskq envelope with the registered task's field order, refused with
//! a FAILURE where Celery's client reads it when they cannot run, and put off to their `eta`
//! in the broker's scheduled set instead of being held in memory (Celery holds them, and runs
//! them twice past Kombu's visibility timeout: celery #2599).

use taskq_core::{celery, DeadReason, Delivery, Envelope, OutboundMessage, TaskResult, TaskState};

use super::{executor::Executor, refuse};

/// The envelope a Celery message becomes, or `None` when it was settled here (refused, or put
/// off to its `eta`).
pub(super) async fn read(executor: &Executor, delivery: &Delivery) -> Option<Envelope> {
    let now = executor.clock.now();
    let shape = |name: &str| {
        executor
            .registry
            .get(name)
            .and_then(|task| task.options.arguments().cloned())
    };
    let envelope = match celery::envelope_from_celery(
        delivery.payload(),
        delivery.queue(),
        now,
        shape,
    ) {
        Ok(envelope) => envelope,
        Err(refusal) => {
            tracing::error!(queue = delivery.queue(), task.id = ?refusal.id, task.name = ?refusal.task, reason = %refusal, "refused a Celery message");
            if let Some(id) = refusal.id {
                // Where Celery's client waits for it: it fails there with the reason.
                let mut record = TaskResult::new(
                    id,
                    refusal.task.clone().unwrap_or_default(),
                    TaskState::Failure,
                    now,
                )
                .with_error(format!("refused by taskq: {}", refusal.reason))
                .with_worker(executor.worker.as_str());
                record.celery = true;
                executor.settler.store(&record).await;
            }
            let delivery = match refusal.id {
                Some(id) => delivery.clone().with_id(id),
                None => delivery.clone(),
            };
            refuse(
                executor,
                &delivery,
                refusal.id,
                DeadReason::Malformed,
                refusal.reason,
            )
            .await;
            return None;
        }
    };
    if envelope.eta.is_some_and(|eta| eta > now) {
        // Into the scheduled set as a taskq envelope (still marked Celery's), due at its eta.
        let delivery = delivery.clone().with_id(envelope.id);
        match OutboundMessage::from_envelope(&envelope, usize::MAX) {
            Ok(later) => {
                executor.settler.reschedule(&delivery, later).await;
            }
            Err(err) => {
                let error = taskq_core::error_chain(&err);
                refuse(
                    executor,
                    &delivery,
                    Some(envelope.id),
                    DeadReason::Malformed,
                    error,
                )
                .await;
            }
        }
        return None;
    }
    Some(envelope)
}
