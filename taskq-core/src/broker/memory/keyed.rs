//! Debounce and throttle on the memory broker: one [`FlowState`] per queue and key, decided
//! and written under the broker's lock (so racing producers see one another), with the same
//! outcomes as Redis's `enqueue_keyed.lua`.

use chrono::{DateTime, Utc};

use super::{Message, QueueState, State};
use crate::{
    broker::{KeyedFlow, KeyedOutcome, OutboundMessage},
    error::{Error, Result},
    id::TaskId,
};

/// One key's state.
#[derive(Debug, Clone)]
pub(super) struct FlowState {
    /// The invocation the key holds: the pending one, or the one of the current window.
    id: TaskId,
    /// Where that invocation waits in the scheduled set, while it does.
    pending: Option<(DateTime<Utc>, u64)>,
    /// Debounce: the first call of the burst.
    first: DateTime<Utc>,
    /// Throttle: the window `id` holds, `[start, until)`; debounce: `until` is the due time.
    start: DateTime<Utc>,
    until: DateTime<Utc>,
}

impl State {
    /// [`crate::Transport::enqueue_keyed`] under the lock.
    pub(super) fn enqueue_keyed(
        &mut self,
        out: OutboundMessage,
        flow: &KeyedFlow,
        expect: Option<TaskId>,
        now: DateTime<Utc>,
        capacity: usize,
    ) -> Result<KeyedOutcome> {
        let seq = self.next_tag;
        self.next_tag += 1;
        let queue = self.queues.entry(out.queue.clone()).or_default();
        if queue.pending() + queue.scheduled.len() >= capacity {
            return Err(Error::QueueFull {
                queue: out.queue,
                capacity,
            });
        }
        queue.forget_idle_flows(now);
        let held = queue.flows.get(flow.key()).cloned();
        let alive = held.as_ref().and_then(|state| {
            state
                .pending
                .filter(|at| queue.scheduled.get(at).is_some_and(|m| m.id == state.id))
        });
        let window = to_chrono(flow.window());
        let key = flow.key().to_owned();
        match flow {
            KeyedFlow::Debounce { max_wait, .. } => match (held, alive) {
                (Some(state), Some(at)) => {
                    if expect != Some(state.id) {
                        return Ok(KeyedOutcome::Resend(Some(state.id)));
                    }
                    queue.scheduled.remove(&at);
                    let mut due = now + window;
                    if let Some(bound) = max_wait {
                        due = due.min(state.first + to_chrono(*bound));
                    }
                    queue
                        .scheduled
                        .insert((due, seq), Message::from_outbound(out));
                    let pending = Some((due, seq));
                    let until = due;
                    queue.flows.insert(
                        key,
                        FlowState {
                            pending,
                            until,
                            ..state
                        },
                    );
                    Ok(KeyedOutcome::Written(state.id))
                }
                _ if expect.is_some() => Ok(KeyedOutcome::Resend(None)),
                _ => {
                    let mut due = now + window;
                    if let Some(bound) = max_wait {
                        due = due.min(now + to_chrono(*bound));
                    }
                    let id = out.id;
                    queue
                        .scheduled
                        .insert((due, seq), Message::from_outbound(out));
                    let state = FlowState {
                        id,
                        pending: Some((due, seq)),
                        first: now,
                        start: now,
                        until: due,
                    };
                    queue.flows.insert(key, state);
                    Ok(KeyedOutcome::Written(id))
                }
            },
            KeyedFlow::Throttle { keep_last, .. } => match held {
                Some(state) if now < state.until => {
                    if !keep_last {
                        return Ok(KeyedOutcome::Dropped(state.id));
                    }
                    if let (true, Some(at)) = (now < state.start, alive) {
                        // The next window's run is still waiting: it takes these arguments.
                        if expect != Some(state.id) {
                            return Ok(KeyedOutcome::Resend(Some(state.id)));
                        }
                        queue.scheduled.remove(&at);
                        queue
                            .scheduled
                            .insert((at.0, seq), Message::from_outbound(out));
                        let pending = Some((at.0, seq));
                        queue.flows.insert(key, FlowState { pending, ..state });
                        return Ok(KeyedOutcome::Written(state.id));
                    }
                    if expect.is_some() {
                        return Ok(KeyedOutcome::Resend(None));
                    }
                    // Kept for the window's end, where its run holds the next window.
                    let (id, start) = (out.id, state.until);
                    queue
                        .scheduled
                        .insert((start, seq), Message::from_outbound(out));
                    let state = FlowState {
                        id,
                        pending: Some((start, seq)),
                        first: now,
                        start,
                        until: start + window,
                    };
                    queue.flows.insert(key, state);
                    Ok(KeyedOutcome::Written(id))
                }
                _ if expect.is_some() => Ok(KeyedOutcome::Resend(None)),
                _ => {
                    let id = out.id;
                    queue.push_back(Message::from_outbound(out));
                    let state = FlowState {
                        id,
                        pending: None,
                        first: now,
                        start: now,
                        until: now + window,
                    };
                    queue.flows.insert(key, state);
                    Ok(KeyedOutcome::Written(id))
                }
            },
        }
    }
}

impl QueueState {
    /// Drops the state of keys whose invocation left the scheduled set and whose window
    /// ended, now and then (when the map has doubled), so idle keys cost nothing for ever.
    fn forget_idle_flows(&mut self, now: DateTime<Utc>) {
        if self.flows.len() < 1024 || !self.flows.len().is_power_of_two() {
            return;
        }
        let scheduled = &self.scheduled;
        self.flows.retain(|_, state| {
            state.until > now || state.pending.is_some_and(|at| scheduled.contains_key(&at))
        });
    }
}

fn to_chrono(duration: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}
