//! Messages in Celery's protocol (a Python producer's `send_task`, taken from Kombu's list by
//! the broker): read into a taskq envelope with the registered task's field order, refused with
//! a FAILURE where Celery's client reads it when they cannot run, and put off to their `eta`
//! in the broker's scheduled set instead of being held in memory (Celery holds them, and runs
//! them twice past Kombu's visibility timeout: celery #2599).

use taskq_core::{celery, DeadReason, Delivery, Envelope, OutboundMessage, TaskResult, TaskState};

use super::{executor::Executor, refuse};

/// After a success: sends what the Celery message carries on (the next step of its chain, its
/// callbacks), as a Celery worker would (the output first among their arguments), before the
/// message is settled. At least once: a worker that dies between these sends and its ack sends
/// them again on redelivery, with the same task ids where Celery assigned them. `Ok(false)`
/// when shutdown's grace period ended before a send landed (the message then goes back
/// unchanged); errs with what cannot be read.
pub(super) async fn send_follow_ups(
    executor: &Executor,
    envelope: &Envelope,
    output: &serde_json::value::RawValue,
) -> Result<bool, String> {
    if !envelope.headers.contains_key(celery::CHAIN_HEADER)
        && !envelope.headers.contains_key(celery::CALLBACKS_HEADER)
    {
        return Ok(true);
    }
    let output: serde_json::Value = serde_json::from_str(output.get())
        .map_err(|err| format!("the output does not read back as JSON: {err}"))?;
    for (queue, message) in celery::follow_ups(&envelope.headers, &output)? {
        if !executor.settler.send_celery(&queue, message).await {
            return Ok(false);
        }
    }
    Ok(true)
}

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
    let mut envelope = match celery::envelope_from_celery(
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
                record.reply_to = refusal.reply_to.clone();
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
    // The level the intake put it on (from its priority in Celery's queue): a retry or a
    // put-off keeps it.
    envelope.priority = delivery.priority();
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
