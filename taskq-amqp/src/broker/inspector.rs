//! The inspector role on RabbitMQ, without the management plugin: depths from passive
//! declarations, dead letters and the registry read by [`Scan`], worker reports read from a
//! stream.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lapin::{
    message::BasicGetMessage,
    options::QueuePurgeOptions,
    types::{AMQPValue, FieldTable},
};
use taskq_core::{
    history::{last_minutes, minute_start},
    DeadLetter, DeadReason, HeldMessage, Inspector, MinuteCounts, Page, QueueStats, Result,
    ScheduledMessage, TaskId, WorkerInfo,
};

use super::{transport::dead_headers, AmqpBroker};
use crate::{
    error::{amqp_error, is_not_found},
    names,
    publish::Outgoing,
    scan::Scan,
    stream,
};

impl AmqpBroker {
    /// Ready messages in a RabbitMQ queue (0 when it does not exist: nothing was ever sent to
    /// it).
    async fn depth(&self, queue: &str) -> Result<usize> {
        let declared = self.link().inspect_queue(queue).await?;
        Ok(declared.map_or(0, |queue| queue.message_count() as usize))
    }

    /// Every dead letter of `queue`, oldest first, with the scan that holds them. The queue
    /// keeps at most `max_dead_letters`, and no scan reads more: a dead-letter queue declared
    /// uncapped by an older version shows its oldest that many.
    async fn dead_scan(&self, queue: &str) -> Result<(Scan, Vec<DeadLetter>)> {
        let limit = self.link().config().max_dead_letters();
        let scan = Scan::take(self.link(), &names::dead_queue(queue), limit).await?;
        let letters = scan
            .messages
            .iter()
            .map(|message| dead_letter(queue, message))
            .collect();
        Ok((scan, letters))
    }

    /// Removes the dead letters `chosen` picks, first publishing their payloads again when
    /// `requeue`; returns how many.
    async fn settle_dead(
        &self,
        queue: &str,
        requeue: bool,
        chosen: impl Fn(&DeadLetter) -> bool,
    ) -> Result<usize> {
        let (scan, letters) = self.dead_scan(queue).await?;
        let mut settled = 0;
        let outcome = async {
            for (index, letter) in letters.iter().enumerate() {
                if !chosen(letter) {
                    continue;
                }
                if requeue {
                    let again = Outgoing::to_queue(
                        &names::level_queue(queue, letter.priority()),
                        letter.requeue_payload().into_bytes(),
                    )
                    .for_queue(queue);
                    self.link().ensure_queue(queue).await?;
                    self.link().publish(vec![again]).await?;
                }
                scan.remove(index).await?;
                settled += 1;
            }
            Ok::<_, taskq_core::Error>(())
        }
        .await;
        scan.finish().await;
        outcome.map(|()| settled)
    }
}

/// A dead letter read back: published by a worker (reason, error, worker and time in headers)
/// or dead-lettered by RabbitMQ past the delivery limit (an `x-death` header).
fn dead_letter(queue: &str, message: &BasicGetMessage) -> DeadLetter {
    let headers = message
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    let header = |name: &str| text(&headers, name);
    let payload = String::from_utf8_lossy(&message.delivery.data).into_owned();
    let (reason, error, worker, at) = match header(dead_headers::REASON) {
        Some(reason) => (
            reason.parse().unwrap_or(DeadReason::Failed),
            header(dead_headers::ERROR),
            header(dead_headers::WORKER),
            header(dead_headers::AT)
                .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
                .map(|at| at.with_timezone(&Utc)),
        ),
        None => (
            DeadReason::WorkerLost,
            Some(
                "redelivered past the queue's delivery limit (workers lost while running it)"
                    .to_owned(),
            ),
            None,
            death_time(&headers),
        ),
    };
    DeadLetter::new(
        queue,
        payload,
        reason,
        error,
        worker,
        at.unwrap_or_else(Utc::now),
    )
}

fn text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(value) => {
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        }
        AMQPValue::ShortString(value) => Some(value.as_str().to_owned()),
        _ => None,
    }
}

/// When RabbitMQ dead-lettered it: the first `x-death` entry's `time`.
fn death_time(headers: &FieldTable) -> Option<DateTime<Utc>> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    match first.inner().get("time")? {
        AMQPValue::Timestamp(seconds) => DateTime::from_timestamp(i64::try_from(*seconds).ok()?, 0),
        _ => None,
    }
}

#[async_trait]
impl Inspector for AmqpBroker {
    async fn queues(&self) -> Result<Vec<String>> {
        let scan = Scan::take(self.link(), names::REGISTRY_QUEUE, usize::MAX).await?;
        let mut seen = HashSet::new();
        let mut outcome = Ok(());
        for (index, message) in scan.messages.iter().enumerate() {
            let name = String::from_utf8_lossy(&message.delivery.data).into_owned();
            // Each process registers its queues once: the registry keeps one message per name.
            if !seen.insert(name) {
                outcome = scan.remove(index).await;
                if outcome.is_err() {
                    break;
                }
            }
        }
        scan.finish().await;
        outcome?;
        let mut queues: Vec<String> = seen.into_iter().collect();
        queues.sort();
        Ok(queues)
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let mut stats = QueueStats::default();
        for (_, level_queue) in names::level_queues_highest_first(queue) {
            stats.pending += self.depth(&level_queue).await?;
        }
        stats.dead = self.depth(&names::dead_queue(queue)).await?;
        Ok(stats)
    }

    async fn dead_letters(&self, queue: &str, page: Page) -> Result<Vec<DeadLetter>> {
        let (scan, mut letters) = self.dead_scan(queue).await?;
        scan.finish().await;
        letters.reverse();
        Ok(letters
            .into_iter()
            .skip(page.offset)
            .take(page.limit)
            .collect())
    }

    async fn find_dead_letter(&self, queue: &str, id: TaskId) -> Result<Option<DeadLetter>> {
        let (scan, letters) = self.dead_scan(queue).await?;
        scan.finish().await;
        Ok(letters
            .into_iter()
            .rev()
            .find(|letter| letter.id == Some(id)))
    }

    async fn requeue_dead(&self, queue: &str, ids: Option<&[TaskId]>) -> Result<usize> {
        self.settle_dead(queue, true, |letter| {
            ids.is_none_or(|ids| letter.id.is_some_and(|id| ids.contains(&id)))
        })
        .await
    }

    async fn purge_dead(&self, queue: &str, older_than: Option<DateTime<Utc>>) -> Result<usize> {
        match older_than {
            None => self.purge(&names::dead_queue(queue)).await,
            Some(cutoff) => {
                self.settle_dead(queue, false, |letter| letter.at < cutoff)
                    .await
            }
        }
    }

    async fn purge_queue(&self, queue: &str) -> Result<usize> {
        let mut purged = 0;
        for (_, level_queue) in names::level_queues_highest_first(queue) {
            purged += self.purge(&level_queue).await?;
        }
        Ok(purged)
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.link().ensure_shared().await?;
        let now = self.shared.clock.now();
        let reports = stream::read(
            self.link(),
            names::WORKERS_STREAM,
            Some(now - super::WORKER_INFO_WINDOW),
        )
        .await?;
        Ok(latest_live_reports(&reports, now))
    }

    async fn pending(&self, _queue: &str, _page: Page) -> Result<Vec<String>> {
        Err(taskq_core::Error::Invalid {
            what: "pending listing",
            reason: "RabbitMQ cannot show ready messages without delivering them, and every \
                     delivery counts toward the poison cap"
                .to_owned(),
        })
    }

    async fn held(&self, _queue: &str, _limit: usize) -> Result<Vec<HeldMessage>> {
        Err(taskq_core::Error::Invalid {
            what: "held listing",
            reason: "RabbitMQ does not show unacknowledged deliveries without its management \
                     plugin; tasks that record STARTED (track_started) show in their results"
                .to_owned(),
        })
    }

    fn lists_pending(&self) -> bool {
        false
    }

    fn sees_held(&self) -> bool {
        false
    }

    async fn scheduled(&self, _queue: &str, _page: Page) -> Result<Vec<ScheduledMessage>> {
        // Delayed messages wait in the shared delay chain, not per queue.
        Ok(Vec::new())
    }

    async fn settle_scheduled(
        &self,
        _queue: &str,
        _id: TaskId,
        _due: DateTime<Utc>,
        _run_now: bool,
    ) -> Result<bool> {
        Ok(false)
    }

    async fn delete_dead(&self, queue: &str, ids: &[TaskId]) -> Result<usize> {
        self.settle_dead(queue, false, |letter| {
            letter.id.is_some_and(|id| ids.contains(&id))
        })
        .await
    }

    async fn history(&self, _queue: &str, minutes: usize) -> Result<Vec<MinuteCounts>> {
        Ok(last_minutes(self.shared.clock.now(), minutes)
            .into_iter()
            .map(|minute| MinuteCounts::new(minute_start(minute), 0, 0))
            .collect())
    }
}

impl AmqpBroker {
    async fn purge(&self, queue: &str) -> Result<usize> {
        let channel = self.link().channel().await?;
        let purged = channel
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await;
        let _ = channel.close(200, "OK".into()).await;
        match purged {
            Ok(count) => Ok(count as usize),
            Err(err) if is_not_found(&err) => Ok(0),
            Err(err) => Err(amqp_error(err)),
        }
    }
}

/// Each worker's latest report among `reports` (oldest first), if it still holds at `now`.
fn latest_live_reports(
    reports: &[lapin::message::Delivery],
    now: DateTime<Utc>,
) -> Vec<WorkerInfo> {
    let mut latest: HashMap<String, (WorkerInfo, DateTime<Utc>)> = HashMap::new();
    for report in reports {
        let until = stream::header(report, super::UNTIL_HEADER)
            .and_then(|until| until.parse::<DateTime<Utc>>().ok());
        let (Ok(info), Some(until)) = (serde_json::from_slice::<WorkerInfo>(&report.data), until)
        else {
            continue;
        };
        latest.insert(info.id.clone(), (info, until));
    }
    let mut live: Vec<WorkerInfo> = latest
        .into_values()
        .filter(|(_, until)| *until > now)
        .map(|(info, _)| info)
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    live
}
