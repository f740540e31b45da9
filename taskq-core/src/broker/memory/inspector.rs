//! The memory broker's operator queries ([`Inspector`]).

use chrono::{DateTime, Utc};

use async_trait::async_trait;

use super::{MemoryBroker, Message};
use crate::{
    broker::{
        last_minutes, minute_start, rank_partitions, DeadLetter, HeldMessage, Inspector,
        MinuteCounts, Outcome, OutcomeFilter, Page, PartitionStats, PayloadFields, QueueStats,
        ScheduledMessage, TaskNumbers, WorkerInfo,
    },
    error::Result,
    id::TaskId,
};

#[async_trait]
impl Inspector for MemoryBroker {
    async fn workers(&self) -> Result<Vec<WorkerInfo>> {
        let now = self.shared.clock.now();
        let mut state = self.lock();
        state.infos.retain(|_, (_, until)| *until > now);
        let mut infos: Vec<_> = state.infos.values().map(|(info, _)| info.clone()).collect();
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(infos)
    }

    async fn pending(&self, queue: &str, page: Page) -> Result<Vec<String>> {
        let state = self.lock();
        let Some(q) = state.queues.get(queue) else {
            return Ok(Vec::new());
        };
        Ok(q.ready_in_order()
            .skip(page.offset)
            .take(page.limit)
            .map(|message| message.payload.to_string())
            .collect())
    }

    async fn held(&self, queue: &str, limit: usize) -> Result<Vec<HeldMessage>> {
        let state = self.lock();
        let mut held: Vec<(u64, HeldMessage)> = state
            .workers
            .iter()
            .flat_map(|(worker, held)| {
                held.processing
                    .iter()
                    .filter(|(_, (name, _))| &**name == queue)
                    .map(move |(tag, (_, message))| {
                        (*tag, HeldMessage::new(worker.as_str(), &*message.payload))
                    })
            })
            .collect();
        held.sort_by_key(|(tag, _)| *tag);
        Ok(held.into_iter().take(limit).map(|(_, m)| m).collect())
    }

    async fn scheduled(&self, queue: &str, page: Page) -> Result<Vec<ScheduledMessage>> {
        let state = self.lock();
        let Some(q) = state.queues.get(queue) else {
            return Ok(Vec::new());
        };
        Ok(q.scheduled
            .iter()
            .skip(page.offset)
            .take(page.limit)
            .map(|((due, _), message)| ScheduledMessage::new(*due, &*message.payload))
            .collect())
    }

    async fn settle_scheduled(
        &self,
        queue: &str,
        id: TaskId,
        due: DateTime<Utc>,
        run_now: bool,
    ) -> Result<bool> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(false);
        };
        let key = q
            .scheduled
            .range((due, 0)..=(due, u64::MAX))
            .find(|(_, message)| message.id == id)
            .map(|(key, _)| *key);
        let Some(message) = key.and_then(|key| q.scheduled.remove(&key)) else {
            return Ok(false);
        };
        if run_now {
            q.push_back(message);
            drop(state);
            self.shared.ready.notify_waiters();
        }
        Ok(true)
    }

    async fn delete_dead(&self, queue: &str, ids: &[TaskId]) -> Result<usize> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(0);
        };
        Ok(q.dead
            .take(|letter| letter.id.is_some_and(|id| ids.contains(&id)))
            .len())
    }

    async fn history(&self, queue: &str, minutes: usize) -> Result<Vec<MinuteCounts>> {
        let now = self.shared.clock.now();
        let state = self.lock();
        let history = state.queues.get(queue).map(|q| &q.history);
        Ok(last_minutes(now, minutes)
            .into_iter()
            .map(|minute| {
                let (processed, failed) = history
                    .and_then(|h| h.get(&minute))
                    .map_or((0, 0), |m| (m.processed, m.failed));
                MinuteCounts::new(minute_start(minute), processed, failed)
            })
            .collect())
    }

    fn keeps_outcomes(&self) -> bool {
        true
    }

    async fn recent_outcomes(
        &self,
        queue: &str,
        filter: &OutcomeFilter,
        limit: usize,
    ) -> Result<Vec<Outcome>> {
        let state = self.lock();
        let Some(queue) = state.queues.get(queue) else {
            return Ok(Vec::new());
        };
        Ok(queue
            .outcomes
            .iter()
            .filter(|outcome| outcome.matches(filter))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn task_numbers(&self, queue: &str, minutes: usize) -> Result<Vec<TaskNumbers>> {
        let now = self.shared.clock.now();
        let state = self.lock();
        let Some(history) = state.queues.get(queue).map(|q| &q.history) else {
            return Ok(Vec::new());
        };
        let fields = last_minutes(now, minutes)
            .into_iter()
            .filter_map(|minute| history.get(&minute))
            .flat_map(|minute| minute.tally.iter().map(|(f, c)| (f.clone(), *c)));
        Ok(TaskNumbers::from_fields(fields))
    }

    async fn partitions(&self, queue: &str, limit: usize) -> Result<Vec<PartitionStats>> {
        let state = self.lock();
        let busy = state
            .queues
            .get(queue)
            .map(|q| q.ready.partition_stats())
            .unwrap_or_default();
        Ok(rank_partitions(busy, limit))
    }

    async fn lost_workers(&self) -> Result<Vec<crate::broker::LostWorker>> {
        Ok(self.lock().lost.iter().cloned().collect())
    }

    async fn queues(&self) -> Result<Vec<String>> {
        let mut queues: Vec<String> = self.lock().queues.keys().cloned().collect();
        queues.sort();
        Ok(queues)
    }

    async fn requeue_dead(&self, queue: &str, ids: Option<&[TaskId]>) -> Result<usize> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(0);
        };
        let chosen = q
            .dead
            .take(|letter| ids.is_none_or(|ids| letter.id.is_some_and(|id| ids.contains(&id))));
        let moved = chosen.len();
        for letter in chosen {
            let payload = letter.requeue_payload();
            let id = letter.id.unwrap_or_default();
            q.push_back(Message::from_payload(id, letter.priority(), payload));
        }
        drop(state);
        if moved > 0 {
            self.shared.ready.notify_waiters();
        }
        Ok(moved)
    }

    async fn purge_dead(&self, queue: &str, older_than: Option<DateTime<Utc>>) -> Result<usize> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(0);
        };
        Ok(q.dead
            .take(|letter| older_than.is_none_or(|cutoff| letter.at < cutoff))
            .len())
    }

    async fn purge_queue(&self, queue: &str) -> Result<usize> {
        let mut state = self.lock();
        let Some(q) = state.queues.get_mut(queue) else {
            return Ok(0);
        };
        let purged = q.ready.clear() + q.scheduled.len();
        q.scheduled.clear();
        Ok(purged)
    }

    fn pauses_queues(&self) -> bool {
        true
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<()> {
        self.lock()
            .queues
            .entry(queue.to_owned())
            .or_default()
            .paused = paused;
        if !paused {
            self.shared.ready.notify_waiters();
        }
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let state = self.lock();
        let processing = state
            .workers
            .values()
            .flat_map(|w| w.processing.values())
            .filter(|(q, _)| &**q == queue)
            .count();
        Ok(state.queues.get(queue).map_or(
            QueueStats {
                processing,
                ..QueueStats::default()
            },
            |q| QueueStats {
                pending: q.pending(),
                scheduled: q.scheduled.len(),
                processing,
                dead: q.dead.len(),
                dead_dropped: q.dead.dropped(),
                oldest_pending: q
                    .ready
                    .fronts()
                    .filter_map(|m| PayloadFields::read(&m.payload).created_at)
                    .min(),
                paused: q.paused,
            },
        ))
    }

    async fn dead_letters(&self, queue: &str, page: Page) -> Result<Vec<DeadLetter>> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .map(|q| {
                q.dead
                    .iter()
                    .skip(page.offset)
                    .take(page.limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn find_dead_letter(&self, queue: &str, id: TaskId) -> Result<Option<DeadLetter>> {
        let state = self.lock();
        Ok(state
            .queues
            .get(queue)
            .and_then(|q| q.dead.iter().find(|letter| letter.id == Some(id)).cloned()))
    }
}
