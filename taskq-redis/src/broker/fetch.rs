//! Fetching on Redis: `fetch.lua` moves ready messages into the worker's processing list;
//! idle workers wait on wake-up tokens (`wake.rs`) and then fetch; a fetch whose reply was lost
//! is reconciled (the messages that reached the processing list are adopted), so nothing is
//! stranded while the worker lives. [`Transport::fetch`](taskq_core::Transport::fetch) in
//! `transport.rs` calls [`RedisBroker::fetch_inner`].

use std::{sync::Arc, time::Duration};

use taskq_core::{Delivery, Error, PayloadFields, Receipt, Result, WorkerId, FETCH_LEASE};

use super::{millis, wake, RedisBroker};
use crate::{error::redis_error, keys::QueueKeys, scripts};

impl RedisBroker {
    pub(super) fn mark_unreconciled(&self, worker: &WorkerId) {
        self.shared.unreconciled.lock().insert(worker.clone());
    }

    /// After a failed fetch: adopts messages that reached `worker`'s processing lists without
    /// their reply reaching us, so nothing is stranded while the worker lives.
    async fn reconcile(&self, worker: &WorkerId, queues: &[String]) -> Result<Vec<Delivery>> {
        let pending = self.shared.unreconciled.lock().contains(worker);
        if !pending {
            return Ok(Vec::new());
        }
        let mut adopted = Vec::new();
        for queue in queues {
            let key = QueueKeys::new(queue).processing(worker.as_str());
            // What we handed out, read before the list: an ack landing in between removes a
            // message from both, and reading the list first would adopt (and run) it again.
            let mut known = self
                .held()
                .get(worker)
                .and_then(|queues| queues.get(queue.as_str()))
                .cloned()
                .unwrap_or_default();
            // Where a test lands an ack between the two reads.
            fail::fail_point!("reconcile-between-reads");
            let listed: Vec<String> = redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            let queue_name: Arc<str> = Arc::from(queue.as_str());
            // The list is newest first; adopt oldest first.
            for payload in listed.into_iter().rev() {
                match known.get_mut(payload.as_str()) {
                    Some(count) if *count > 0 => *count -= 1,
                    _ => {
                        let fields = PayloadFields::read(&payload);
                        // Its fetch's reply is lost: a message holds a slot when it carries
                        // its partition's limit (as recovery judges it).
                        let slot = fields.partition.is_some() && fields.partition_limit.is_some();
                        adopted.push(
                            Delivery::new(
                                queue_name.clone(),
                                fields.priority,
                                Arc::from(payload),
                                slot_receipt(slot),
                            )
                            .with_partition(fields.partition.map(Arc::from)),
                        );
                    }
                }
            }
        }
        if !adopted.is_empty() {
            tracing::warn!(worker = %worker, count = adopted.len(), "adopted messages whose fetch reply was lost");
        }
        self.shared.unreconciled.lock().remove(worker);
        Ok(adopted)
    }

    /// One non-blocking pass over `queues` in order, up to `max` messages (`max == 0` only
    /// registers the worker on the first queue).
    async fn fetch_ready(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
    ) -> Result<Vec<Delivery>> {
        if !self.shared.server.is_cluster() {
            // One server: one script takes from every queue, in order.
            let fetched = self
                .fetch_invocation(queues, worker, max)
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            return fetched_deliveries(worker, queues, fetched);
        }
        // A cluster: each queue's keys share a slot, but different queues' need not.
        let mut out = Vec::new();
        for (index, queue) in queues.iter().enumerate() {
            if out.len() >= max && index > 0 {
                break;
            }
            let queue = std::slice::from_ref(queue);
            let fetched = self
                .fetch_invocation(queue, worker, max - out.len())
                .invoke_async(&mut self.conn())
                .await
                .map_err(redis_error)?;
            out.extend(fetched_deliveries(worker, queue, fetched)?);
        }
        Ok(out)
    }

    /// Drops `worker`'s own blocking connection and drained mark (the worker ended).
    pub(crate) async fn forget_blocking(&self, worker: &WorkerId) {
        self.shared.blocking.lock().await.remove(worker);
        self.shared.drained.lock().remove(worker);
    }

    /// `fetch.lua` for up to `max` messages of `queues`, taken in that order (on a cluster,
    /// one queue: their keys may live in different slots).
    fn fetch_invocation(
        &self,
        queues: &[String],
        worker: &WorkerId,
        max: usize,
    ) -> redis::ScriptInvocation<'static> {
        let mut invocation = scripts::FETCH.prepare_invoke();
        for queue in queues {
            let keys = QueueKeys::new(queue);
            for key in keys.pending_descending() {
                invocation.key(key);
            }
            invocation
                .key(keys.processing(worker.as_str()))
                .key(keys.workers())
                .key(keys.holders());
        }
        let now = millis(self.now());
        let leases = self.lease_terms(worker);
        invocation
            .arg(max)
            .arg(worker.as_str())
            .arg(match leases {
                Some(_) => 0,
                None => now + FETCH_LEASE.as_millis() as i64,
            })
            .arg(queues.len());
        for queue in queues {
            invocation.arg(QueueKeys::new(queue).prefix());
        }
        let (parked_above, ttl) = leases.map_or((0, 0), |(ttl, parked_for)| {
            // A parked lease is set again when half of its time is left; a short one never
            // reaches beyond its ttl. A quarter tells them apart with minutes to spare.
            (now + parked_for / 4, ttl)
        });
        invocation.arg(self.due_index()).arg(parked_above).arg(ttl);
        invocation
    }

    /// An idle worker's wait and fetch in one round trip, on one server: the fetch script (of
    /// every queue of the worker) follows the wake-up pop (of every queue's token) in the
    /// pipeline of the worker's own blocking connection, so Redis runs it the moment the pop
    /// returns, and the reply carries both. `Ok(None)` on a cluster, where the queues' wake
    /// lists may live in different slots; else whether a token arrived and what was fetched.
    ///
    /// A worker that drops the call (shutting down) leaves the pipeline to run: its fetch
    /// finds the worker's lease gone once it has deregistered and moves nothing; before its
    /// first heartbeat it may move messages, which the orphan sweep returns.
    pub(super) async fn wait_then_fetch(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Option<(bool, Vec<Delivery>)>> {
        if self.shared.server.is_cluster() {
            return Ok(None);
        }
        let config = &self.shared.config;
        let mut conn = {
            let mut blocking = self.shared.blocking.lock().await;
            match blocking.get(worker) {
                Some(conn) => conn.clone(),
                None => {
                    let conn = self
                        .shared
                        .server
                        .connect(config.block_timeout() + config.response_timeout())
                        .await?;
                    blocking.insert(worker.clone(), conn.clone());
                    conn
                }
            }
        };
        let mut pipe = redis::pipe();
        let pop = pipe.cmd("BLPOP");
        for queue in queues {
            pop.arg(QueueKeys::new(queue).wake());
        }
        pop.arg(wait.min(config.block_timeout()).as_secs_f64());
        pipe.invoke_script(&self.fetch_invocation(queues, worker, max));
        type Reply = (Option<(String, String)>, Fetched);
        match pipe.query_async::<Reply>(&mut conn).await {
            Ok((token, fetched)) => Ok(Some((
                token.is_some(),
                fetched_deliveries(worker, queues, fetched)?,
            ))),
            // The pop ran but the server did not know the script (first use, or a restart):
            // fetch the usual way, which loads it.
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                Ok(Some((true, self.fetch_ready(worker, queues, max).await?)))
            }
            Err(err) => Err(redis_error(err)),
        }
    }

    /// Waits up to `wait` for a wake-up token of any of `queues`; true when one arrived
    /// (messages became ready somewhere).
    ///
    /// One `BLPOP` (one per slot on a cluster) watches every queue and priority level at once,
    /// and wakes exactly one idle worker per token, so an idle fleet neither polls nor
    /// stampedes.
    async fn wait_for_wake(&self, queues: &[String], wait: Duration) -> Result<bool> {
        let config = &self.shared.config;
        let keys = queues.iter().map(|q| QueueKeys::new(q).wake()).collect();
        self.shared
            .wakers
            .wait(
                &self.shared.server,
                config.block_timeout() + config.response_timeout(),
                keys,
                wait.min(config.block_timeout()),
            )
            .await
    }

    /// Passes a wake-up on to another idle worker (this one took a full batch; more may wait).
    async fn pass_wake(&self, queue: &str) -> Result<()> {
        wake::push_back(&mut self.conn(), &QueueKeys::new(queue).wake()).await
    }

    pub(super) async fn fetch_inner(
        &self,
        worker: &WorkerId,
        queues: &[String],
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        // Nothing is recorded as handed out until the whole call succeeds: if a later step
        // fails, the caller gets an error and the next fetch adopts what the server moved.
        let mut out = self.reconcile(worker, queues).await?;
        // The last fetch took everything ready: whatever became ready since left a wake-up
        // token, so a waiting fetch goes straight to its pop (whose pipeline fetches), without
        // a script run and a round trip that would find nothing (in W3, that run also kept
        // Redis busy just as the next enqueue arrived).
        let drained_before = self.shared.drained.lock().remove(worker);
        // Whether this call's last fetch took less than it asked for.
        let mut drained = false;
        let straight_to_the_pop = drained_before && !wait.is_zero();
        if out.len() < max && !straight_to_the_pop {
            let wanted = max - out.len();
            let ready = self.fetch_ready(worker, queues, wanted).await?;
            drained = ready.len() < wanted;
            out.extend(ready);
        }
        // A token may be stale (passed on by a worker that took a full batch, then the rest
        // was taken by others): wait again until something is fetched or the time is up.
        let deadline = tokio::time::Instant::now() + wait;
        while out.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let ready = match self.wait_then_fetch(worker, queues, max, left).await? {
                Some((woke, ready)) => {
                    if !woke && ready.is_empty() {
                        drained = true;
                        break;
                    }
                    ready
                }
                None => {
                    if !self.wait_for_wake(queues, left).await? {
                        break;
                    }
                    self.fetch_ready(worker, queues, max).await?
                }
            };
            drained = ready.len() < max;
            if ready.len() == max {
                if let Some(first) = ready.first() {
                    self.pass_wake(first.queue()).await?;
                }
            }
            out.extend(ready);
        }
        if drained {
            self.shared.drained.lock().insert(worker.clone());
        }
        self.hold(worker, &out);
        self.unpark(worker, &out);
        Ok(out)
    }
}

/// `fetch.lua`'s reply: payloads, their levels and their queues (1-based), the lost flag, each
/// payload's partition ('' for none), and whether it holds a slot of its partition's limit (both
/// lists empty when no message came from a partition).
type Fetched = (Vec<String>, Vec<u8>, Vec<usize>, i64, Vec<String>, Vec<u8>);

/// The deliveries in `fetch.lua`'s reply for `queues`.
fn fetched_deliveries(
    worker: &WorkerId,
    queues: &[String],
    (payloads, levels, from, lost, partitions, slots): Fetched,
) -> Result<Vec<Delivery>> {
    if lost == 1 {
        return Err(Error::LeaseLost {
            worker: worker.to_string(),
        });
    }
    let names: Vec<Arc<str>> = queues.iter().map(|q| Arc::from(q.as_str())).collect();
    // Without partitioned messages the reply leaves both lists empty.
    let partitions = partitions
        .into_iter()
        .chain(std::iter::repeat(String::new()));
    let slots = slots.into_iter().chain(std::iter::repeat(0));
    payloads
        .into_iter()
        .zip(levels)
        .zip(from)
        .zip(partitions)
        .zip(slots)
        .map(|((((payload, level), queue), partition), slot)| {
            let queue = names
                .get(queue.wrapping_sub(1))
                .ok_or_else(|| Error::Broker {
                    transport: "redis",
                    transient: false,
                    source: format!("fetch.lua named queue {queue} of {}", names.len()).into(),
                })?;
            let partition = (!partition.is_empty()).then(|| Arc::from(partition));
            Ok(Delivery::new(
                queue.clone(),
                level,
                Arc::from(payload),
                slot_receipt(slot == 1),
            )
            .with_partition(partition))
        })
        .collect()
}

/// A Redis delivery's receipt: 1 when it holds a slot of its partition's limit, which its
/// settle must release (see [`held_slot`]); 0 otherwise.
fn slot_receipt(holds_slot: bool) -> Receipt {
    Receipt::new(u64::from(holds_slot))
}

/// The partition whose slot `delivery` holds, for the settle scripts ('' for none).
pub(super) fn held_slot(delivery: &Delivery) -> &str {
    match delivery.receipt().raw() {
        1 => delivery.partition().unwrap_or_default(),
        _ => "",
    }
}
