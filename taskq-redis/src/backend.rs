//! [`RedisResultBackend`]: results as JSON strings with a TTL; waiters woken through pub/sub.
//!
//! Each final write also publishes on the task's channel. One subscriber connection per
//! backend serves every waiter of the process: a waiter registers its id, the subscriber task
//! subscribes to that id's channel, and a message wakes exactly the waiters of that id (once no
//! one waits on an id, its channel is dropped with others in one request, within a second). A
//! waiter re-reads the key once subscribed (so a write that happened before cannot be missed)
//! and every poll interval as a fallback (so a lost connection delays, never strands, it).

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use futures_util::StreamExt;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{mpsc, oneshot, Notify};

use taskq_core::{
    workflow::{GroupStatus, MemberOf, MemberOutcome, WorkflowRecord},
    Error, Result, ResultBackend, TaskId, TaskResult,
};

use crate::{
    conn,
    error::redis_error,
    keys, scripts,
    server::{by_slot, Server},
    RedisConfig,
};

/// The Redis result backend.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> taskq_core::Result<()> {
/// use std::time::Duration;
/// use taskq_core::{ResultBackend, TaskId};
/// use taskq_redis::{RedisConfig, RedisResultBackend};
/// let backend = RedisResultBackend::connect(RedisConfig::new("redis://127.0.0.1:6379")).await?;
/// let outcome = backend.wait(TaskId::new(), Duration::from_secs(1)).await?;
/// assert!(outcome.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct RedisResultBackend {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    conn: crate::conn::Conn,
    server: crate::server::Server,
    poll_interval: Duration,
    /// Replicas a result write waits for, when durable writes are on.
    durable: Option<crate::replicas::DurableWrites>,
    waiters: Arc<Waiters>,
    /// Subscriptions asked of the subscriber task; started on the first wait.
    commands: Mutex<Option<mpsc::UnboundedSender<Subscribe>>>,
}

/// Waiters per task id, shared with the subscriber task.
#[derive(Debug, Default)]
struct Waiters {
    by_id: Mutex<HashMap<TaskId, Waiting>>,
    /// Ids whose last waiter left, still subscribed: the subscriber unsubscribes them in
    /// batches ([`STALE_BATCH`], or every [`STALE_EVERY`]), not one round trip per wait. A
    /// wait's unsubscription came just as the waiter's caller went on (in W3, with its next
    /// enqueue): a request at the moment the round trip was busiest.
    stale: Mutex<Vec<TaskId>>,
}

/// Stale subscriptions the subscriber lets gather before it unsubscribes them in one request.
const STALE_BATCH: usize = 64;

/// How long a stale subscription lives at most (it costs a channel name on the server; an
/// announcement on it, if any came, is dropped).
const STALE_EVERY: Duration = Duration::from_secs(1);

/// The waiters of one id.
#[derive(Debug)]
struct Waiting {
    notify: Arc<Notify>,
    count: usize,
    /// The final record the announcement carried, if it carried one.
    announced: Option<TaskResult>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, HashMap<TaskId, Waiting>> {
        self.by_id.lock()
    }

    /// Wakes the waiters of `id`, handing them `record` when the announcement carried it.
    fn wake(&self, id: &TaskId, record: Option<TaskResult>) {
        if let Some(waiting) = self.lock().get_mut(id) {
            if record.is_some() {
                waiting.announced = record;
            }
            waiting.notify.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for waiting in self.lock().values() {
            waiting.notify.notify_waiters();
        }
    }

    /// The final record announced for `id`, if one was.
    fn announced(&self, id: &TaskId) -> Option<TaskResult> {
        self.lock().get(id).and_then(|w| w.announced.clone())
    }

    /// The channels of stale ids nobody waits on again, taken from the stale list.
    fn take_stale(&self) -> Vec<String> {
        let stale = std::mem::take(&mut *self.stale.lock());
        let registered = self.lock();
        stale
            .into_iter()
            .filter(|id| !registered.contains_key(id))
            .map(|id| keys::result_channel(&id.to_string()))
            .collect()
    }
}

/// A request to the subscriber task: subscribe to `id`'s channel, then fire `done`.
#[derive(Debug)]
struct Subscribe {
    id: TaskId,
    done: oneshot::Sender<()>,
}

/// Unregisters a waiter when its wait ends or is dropped.
struct Registration<'a> {
    backend: &'a RedisResultBackend,
    id: TaskId,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waiters = self.backend.shared.waiters.lock();
        let last = match waiters.get_mut(&self.id) {
            Some(waiting) => {
                waiting.count -= 1;
                waiting.count == 0
            }
            None => false,
        };
        if last {
            waiters.remove(&self.id);
            drop(waiters);
            self.backend.shared.waiters.stale.lock().push(self.id);
        }
    }
}

impl RedisResultBackend {
    /// Writes the final records of Celery-protocol invocations where Celery's Redis result
    /// backend keeps them (`celery-task-meta-<id>`, for as long as taskq keeps its own) and
    /// announces each on the channel of the same name, as Celery does: Python's
    /// `AsyncResult(id).get()` then reads it unchanged. Nothing for other records.
    async fn store_celery_meta(&self, results: &[TaskResult], ttl_ms: u64) -> Result<()> {
        let mut pipe = redis::pipe();
        let mut any = false;
        for result in results.iter().filter(|r| r.celery) {
            let Some(meta) = taskq_core::celery::meta_record(result) else {
                continue;
            };
            let key = taskq_core::celery::meta_key(&result.id);
            pipe.cmd("SET")
                .arg(&key)
                .arg(&meta)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
            pipe.cmd("PUBLISH").arg(&key).arg(&meta).ignore();
            any = true;
        }
        if !any {
            return Ok(());
        }
        // One pipeline; on a cluster each command goes to its key's master.
        let _: () = pipe
            .query_async(&mut self.shared.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok(())
    }

    /// Connects to the server in `config`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a bad URL, [`Error::Broker`] when the server cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let server = Server::of(&config)?;
        let conn = server
            .connect(config.response_timeout())
            .await
            .map_err(|err| crate::error::unreachable(config.url(), err))?;
        Ok(Self {
            shared: Arc::new(Shared {
                conn,
                server,
                poll_interval: config.result_poll_interval(),
                durable: crate::replicas::DurableWrites::new(
                    config.durable(),
                    config.response_timeout(),
                ),
                waiters: Arc::new(Waiters::default()),
                commands: Mutex::new(None),
            }),
        })
    }

    /// Runs the store script once for records of one slot (`(key, record, state, channel)`
    /// each), loading the script first when the server does not know it (first use, or after
    /// a restart).
    async fn store_group(
        &self,
        group: &[(String, String, &'static str, String)],
        ttl_ms: u64,
    ) -> Result<()> {
        let mut invocation = scripts::STORE_RESULT.prepare_invoke();
        invocation.arg(ttl_ms);
        for (key, record, state, channel) in group {
            invocation.key(key).arg(record).arg(*state).arg(channel);
        }
        let mut conn = self.shared.conn.clone();
        invocation
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(redis_error)?;
        conn.replicate(self.shared.durable.as_ref(), &group[0].0)
            .await
    }

    fn send(&self, request: Subscribe) {
        let mut commands = self.shared.commands.lock();
        let alive = commands.as_ref().is_some_and(|tx| !tx.is_closed());
        if !alive {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(subscriber(
                self.shared.server.clone(),
                Arc::downgrade(&self.shared.waiters),
                rx,
            ));
            *commands = Some(tx);
        }
        if let Some(tx) = commands.as_ref() {
            let _ = tx.send(request);
        }
    }

    /// Registers a waiter for `id`; the returned receiver fires once the channel is subscribed.
    fn register(
        &self,
        id: TaskId,
    ) -> (Arc<Notify>, Registration<'_>, Option<oneshot::Receiver<()>>) {
        let mut waiters = self.shared.waiters.lock();
        let entry = waiters.entry(id).or_insert_with(|| Waiting {
            notify: Arc::new(Notify::new()),
            count: 0,
            announced: None,
        });
        entry.count += 1;
        let notify = entry.notify.clone();
        let first = entry.count == 1;
        drop(waiters);
        let subscribed = first.then(|| {
            let (tx, rx) = oneshot::channel();
            self.send(Subscribe { id, done: tx });
            rx
        });
        (notify, Registration { backend: self, id }, subscribed)
    }

    fn decode(raw: Option<String>) -> Result<Option<TaskResult>> {
        raw.map(|raw| {
            serde_json::from_str(&raw).map_err(|source| Error::Deserialize {
                what: "task result",
                source,
            })
        })
        .transpose()
    }
}

#[async_trait]
impl ResultBackend for RedisResultBackend {
    async fn store(&self, result: &TaskResult, ttl: Duration) -> Result<()> {
        self.store_many(std::slice::from_ref(result), ttl).await
    }

    async fn store_many(&self, results: &[TaskResult], ttl: Duration) -> Result<()> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut records = Vec::with_capacity(results.len());
        for result in results {
            let id = result.id.to_string();
            let json = serde_json::to_string(result).map_err(|source| Error::Serialize {
                what: "task result",
                source,
            })?;
            records.push((
                keys::result(&id),
                json,
                result.state.as_str(),
                keys::result_channel(&id),
            ));
        }
        // One script call per slot (one for the whole batch on a single server).
        let groups = by_slot(self.shared.server.is_cluster(), records, |(key, ..)| key);
        futures_util::future::try_join_all(
            groups.iter().map(|group| self.store_group(group, ttl_ms)),
        )
        .await?;
        self.store_celery_meta(results, ttl_ms).await
    }

    async fn celery_result(&self, id: TaskId) -> Result<Option<String>> {
        redis::cmd("GET")
            .arg(taskq_core::celery::meta_key(&id))
            .query_async(&mut self.shared.conn.clone())
            .await
            .map_err(redis_error)
    }

    async fn get(&self, id: TaskId) -> Result<Option<TaskResult>> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(keys::result(&id.to_string()))
            .query_async(&mut self.shared.conn.clone())
            .await
            .map_err(redis_error)?;
        Self::decode(raw)
    }

    async fn put_workflow(&self, record: &WorkflowRecord, ttl: Duration) -> Result<()> {
        let json = serde_json::to_string(record).map_err(|source| Error::Serialize {
            what: "workflow record",
            source,
        })?;
        let key = keys::workflow(&record.id.to_string());
        let mut conn = self.shared.conn.clone();
        redis::cmd("SET")
            .arg(&key)
            .arg(json)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_error)?;
        conn.replicate(self.shared.durable.as_ref(), &key).await
    }

    async fn workflow(&self, id: TaskId) -> Result<Option<WorkflowRecord>> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(keys::workflow(&id.to_string()))
            .query_async(&mut self.shared.conn.clone())
            .await
            .map_err(redis_error)?;
        raw.map(|raw| decode_json(&raw, "workflow record"))
            .transpose()
    }

    async fn report_members(
        &self,
        reports: &[(MemberOf, MemberOutcome)],
        ttl: Duration,
    ) -> Result<Vec<GroupStatus>> {
        // One script call per group, for all of its members in this batch.
        let mut by_group: Vec<(MemberOf, Vec<&(MemberOf, MemberOutcome)>)> = Vec::new();
        for report in reports {
            match by_group.iter_mut().find(|(m, _)| m.group == report.0.group) {
                Some((_, members)) => members.push(report),
                None => by_group.push((report.0, vec![report])),
            }
        }
        let calls = by_group.into_iter().map(|(group, members)| async move {
            let id = group.group.to_string();
            let mut invocation = scripts::REPORT_MEMBERS.prepare_invoke();
            invocation
                .key(keys::workflow(&id))
                .key(keys::workflow_done(&id))
                .key(keys::workflow_failed(&id))
                .arg(millis(ttl))
                .arg(group.of);
            for (member, outcome) in members {
                let json = serde_json::to_string(outcome).map_err(|source| Error::Serialize {
                    what: "member outcome",
                    source,
                })?;
                let failed = outcome.state != taskq_core::TaskState::Success;
                invocation
                    .arg(member.index)
                    .arg(json)
                    .arg(if failed { "1" } else { "0" });
            }
            let reply: redis::Value = invocation
                .invoke_async(&mut self.shared.conn.clone())
                .await
                .map_err(redis_error)?;
            group_status(reply)
        });
        futures_util::future::try_join_all(calls).await
    }

    async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Option<TaskResult>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (notify, _registration, subscribed) = self.register(id);
        if let Some(subscribed) = subscribed {
            // Without a subscription the fallback poll still finds the result.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + self.shared.poll_interval),
                subscribed,
            )
            .await;
        }
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let current = match self.shared.waiters.announced(&id) {
                Some(announced) => Some(announced),
                None => self.get(id).await?,
            };
            let now = tokio::time::Instant::now();
            if current.as_ref().is_some_and(|r| r.state.is_ready()) || now >= deadline {
                return Ok(current);
            }
            let poll_at = (now + self.shared.poll_interval).min(deadline);
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(poll_at) => {}
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn decode_json<T: serde::de::DeserializeOwned>(raw: &str, what: &'static str) -> Result<T> {
    serde_json::from_str(raw).map_err(|source| Error::Deserialize { what, source })
}

/// Reads `report_members.lua`'s reply.
fn group_status(reply: redis::Value) -> Result<GroupStatus> {
    let unexpected = || Error::Broker {
        transport: "redis",
        transient: false,
        source: "unexpected reply from report_members.lua".into(),
    };
    let (code, rest): (i64, Vec<redis::Value>) = match reply {
        redis::Value::Array(mut items) if !items.is_empty() => {
            let code = redis::from_redis_value(items.remove(0)).map_err(|_| unexpected())?;
            (code, items)
        }
        _ => return Err(unexpected()),
    };
    let text = |value: redis::Value| -> Result<String> {
        redis::from_redis_value(value).map_err(|_| unexpected())
    };
    let mut rest = rest.into_iter();
    match code {
        0 => Ok(GroupStatus::Waiting),
        1 => {
            let record = decode_json(
                &text(rest.next().ok_or_else(unexpected)?)?,
                "workflow record",
            )?;
            let failed = decode_json(
                &text(rest.next().ok_or_else(unexpected)?)?,
                "member outcome",
            )?;
            Ok(GroupStatus::Failed(Box::new(record), Box::new(failed)))
        }
        2 => {
            let record = decode_json(
                &text(rest.next().ok_or_else(unexpected)?)?,
                "workflow record",
            )?;
            let flat: Vec<String> = redis::from_redis_value(rest.next().ok_or_else(unexpected)?)
                .map_err(|_| unexpected())?;
            let mut outcomes = flat
                .chunks_exact(2)
                .map(|pair| {
                    let index: u32 = pair[0].parse().map_err(|_| unexpected())?;
                    Ok((
                        index,
                        decode_json::<MemberOutcome>(&pair[1], "member outcome")?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            outcomes.sort_by_key(|(index, _)| *index);
            Ok(GroupStatus::Complete(
                Box::new(record),
                outcomes.into_iter().map(|(_, outcome)| outcome).collect(),
            ))
        }
        _ => Err(unexpected()),
    }
}

/// Owns the pub/sub connection: applies (un)subscribe requests and wakes waiters on messages.
/// Reconnects with backoff, resubscribing every registered id; ends when the backend is gone.
async fn subscriber(
    server: crate::server::Server,
    waiters: std::sync::Weak<Waiters>,
    mut commands: mpsc::UnboundedReceiver<Subscribe>,
) {
    let mut failures = 0u32;
    loop {
        let pubsub = match server.pubsub().await {
            Ok(pubsub) => pubsub,
            Err(err) => {
                failures += 1;
                tracing::warn!(error = %err, "result subscriber cannot connect; retrying");
                tokio::time::sleep(conn::reconnect_backoff().delay(failures)).await;
                continue;
            }
        };
        failures = 0;
        let (mut sink, mut stream) = pubsub.split();
        let Some(registered) = waiters.upgrade() else {
            return;
        };
        let channels: Vec<String> = registered
            .lock()
            .keys()
            .map(|id| keys::result_channel(&id.to_string()))
            .collect();
        drop(registered);
        if !channels.is_empty() && sink.subscribe(channels).await.is_err() {
            continue;
        }
        // A write may have happened while we were disconnected: let every waiter re-read.
        // (Ids still on the stale list are unsubscribed as usual: harmless where the new
        // connection never subscribed them, needed where it did just before they went stale.)
        if let Some(registered) = waiters.upgrade() {
            registered.wake_all();
        }
        let mut tidy = tokio::time::interval(STALE_EVERY);
        tidy.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => return,
                    Some(Subscribe { id, done }) => {
                        if sink.subscribe(keys::result_channel(&id.to_string())).await.is_err() {
                            break;
                        }
                        let _ = done.send(());
                        let Some(registered) = waiters.upgrade() else { return };
                        let gathered = registered.stale.lock().len() >= STALE_BATCH;
                        if gathered && unsubscribe_stale(&mut sink, &registered).await.is_err() {
                            break;
                        }
                    }
                },
                _ = tidy.tick() => {
                    let Some(registered) = waiters.upgrade() else { return };
                    if unsubscribe_stale(&mut sink, &registered).await.is_err() {
                        break;
                    }
                }
                message = stream.next() => match message {
                    None => break,
                    Some(message) => {
                        let Some(registered) = waiters.upgrade() else { return };
                        let id = message
                            .get_channel_name()
                            .rsplit(':')
                            .next()
                            .and_then(|id| id.parse::<TaskId>().ok());
                        if let Some(id) = id {
                            // The record itself, or '1' for a large one (read by GET).
                            let record = serde_json::from_slice::<TaskResult>(message.get_payload_bytes())
                                .ok()
                                .filter(|record| record.id == id && record.state.is_ready());
                            registered.wake(&id, record);
                        }
                    }
                },
            }
        }
        tracing::warn!("result subscriber lost its connection; reconnecting");
    }
}

/// Unsubscribes the stale channels nobody waits on again, in one request.
async fn unsubscribe_stale(
    sink: &mut redis::aio::PubSubSink,
    waiters: &Waiters,
) -> redis::RedisResult<()> {
    let channels = waiters.take_stale();
    if channels.is_empty() {
        return Ok(());
    }
    sink.unsubscribe(channels).await
}
