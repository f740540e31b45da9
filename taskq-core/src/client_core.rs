//! [`ClientCore`]: what a [`Client`](crate::Client) is made of (its broker, result backend
//! and settings) and the one way out for everything it sends: every enqueue path (the
//! builder, bulk, workflows) hands this layer planned envelopes, which it seals, signs,
//! size-checks and gives the broker, waiting for room when configured to. The client, the
//! enqueue builder and the workflow engine sit above it; it knows none of them.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::value::RawValue;

use crate::{
    backend::ResultBackend,
    broker::{Broker, KeyedFlow, KeyedOutcome, OutboundMessage},
    clock::Clock,
    encryption::Encryption,
    envelope::{Envelope, DEFAULT_MAX_PAYLOAD_BYTES},
    error::{Error, Result},
    headers::REPLY_TO_HEADER,
    id::TaskId,
    plan::{count_enqueued, plan, CallOptions, Planned, Planning},
    result::TaskResult,
    result_handle::AsyncResult,
    retry::RetryPolicy,
    signing::{Keyring, SigningKey},
    task::TaskOptions,
};

/// A client's broker, backend and settings; shared behind an `Arc` by every clone of the
/// client and by every enqueue in flight.
#[derive(Clone, Debug)]
pub(crate) struct ClientCore {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) backend: Arc<dyn ResultBackend>,
    pub(crate) clock: Clock,
    pub(crate) max_payload_bytes: usize,
    /// How long an enqueue into a full queue waits for room before failing.
    pub(crate) room_wait: Duration,
    /// The key every envelope is signed with, when set.
    pub(crate) signing: Option<SigningKey>,
    /// Keys arguments are sealed and results opened with, when set.
    pub(crate) encryption: Option<Encryption>,
    /// How long the records of workflows this client sends are kept.
    pub(crate) workflow_ttl: Duration,
    /// The keys group members' outcomes must be signed with, when continuing workflows.
    pub(crate) outcome_keys: Option<Keyring>,
    /// Per queue, the partition limit of partitioned invocations that name none.
    pub(crate) partition_limits: Arc<HashMap<String, u32>>,
}

/// Where one guarded or plain enqueue left its invocation.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Placed {
    /// Enqueued under this id.
    Enqueued(TaskId),
    /// A unique enqueue found its key held by this id; nothing was enqueued.
    Duplicate(TaskId),
}

impl ClientCore {
    /// A core on `broker` and `backend` with the default settings.
    pub(crate) fn new(broker: Arc<dyn Broker>, backend: Arc<dyn ResultBackend>) -> Self {
        let clock = broker.clock();
        Self {
            broker,
            backend,
            clock,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            room_wait: Duration::ZERO,
            signing: None,
            encryption: None,
            workflow_ttl: crate::backend::DEFAULT_RESULT_TTL,
            outcome_keys: None,
            partition_limits: Arc::default(),
        }
    }

    /// What this client brings to the plans it makes now.
    pub(crate) fn planning(&self) -> Planning<'_> {
        Planning {
            now: self.clock.now(),
            encryption: self.encryption(),
            partition_limits: &self.partition_limits,
        }
    }

    /// The keys arguments are sealed and results opened with, if any.
    pub(crate) fn encryption(&self) -> Option<&Encryption> {
        self.encryption.as_ref()
    }

    /// The key outcomes are signed with, and the keys they are checked against.
    pub(crate) fn outcome_signing(&self) -> (Option<&SigningKey>, Option<&Keyring>) {
        (self.signing.as_ref(), self.outcome_keys.as_ref())
    }

    /// A typed handle on `id`'s result.
    pub(crate) fn result_handle<T>(&self, id: TaskId) -> AsyncResult<T> {
        AsyncResult::new(id, self.backend.clone(), self.encryption.clone())
    }

    /// `envelope` as a message: arguments sealed, then signed, as the client is configured.
    pub(crate) fn outbound(&self, envelope: &Envelope) -> Result<OutboundMessage> {
        if envelope.partition.is_some() {
            self.broker.check_partitions()?;
        }
        let reply_to = self
            .backend
            .reply_to()
            .filter(|_| !envelope.headers.contains_key(REPLY_TO_HEADER));
        // With `otel`, every message carries its `taskq send` span's trace context (before
        // signing, so the signature covers it).
        let traced = cfg!(feature = "otel");
        if !traced && self.signing.is_none() && self.encryption.is_none() && reply_to.is_none() {
            return OutboundMessage::from_envelope(envelope, self.max_payload_bytes);
        }
        let mut sent = envelope.clone();
        #[cfg(feature = "otel")]
        crate::trace_context::inject(&mut sent);
        if let Some(reply_to) = reply_to {
            sent.headers
                .insert(REPLY_TO_HEADER.to_owned(), reply_to.to_owned());
        }
        if let Some(keys) = &self.encryption {
            let sealed = keys.seal(
                sent.args.get(),
                &Encryption::associated(sent.id, &sent.task),
            );
            sent.args =
                serde_json::value::to_raw_value(&sealed).map_err(|source| Error::Serialize {
                    what: "sealed arguments",
                    source,
                })?;
        }
        if let Some(key) = &self.signing {
            key.sign(&mut sent);
        }
        OutboundMessage::from_envelope(&sent, self.max_payload_bytes)
    }

    /// Sends `value` with `send`, again while it fails with a full queue, with backoff, for up
    /// to the client's room wait (copies of `value` are made only then).
    async fn waiting_for_room<V, T, F, Fut>(&self, value: V, send: F) -> Result<T>
    where
        V: Clone,
        F: Fn(V) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        if self.room_wait.is_zero() {
            return send(value).await;
        }
        let deadline = tokio::time::Instant::now() + self.room_wait;
        let backoff =
            RetryPolicy::exponential(Duration::from_millis(5), Duration::from_millis(500));
        let mut attempt = 0;
        loop {
            match send(value.clone()).await {
                Err(Error::QueueFull { .. }) if tokio::time::Instant::now() < deadline => {
                    let pause = backoff
                        .delay(attempt)
                        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    /// The options task `name` declared, as published in the broker's catalog.
    pub(crate) async fn declared_options(&self, name: &str) -> Result<Option<TaskOptions>> {
        Ok(self
            .broker
            .task_declaration(name)
            .await?
            .map(|declared| declared.to_options()))
    }

    /// Plans and sends one enqueue per element of `args`, in one broker call; invocations of
    /// a task that declares uniqueness each go through their own guarded enqueue instead.
    pub(crate) async fn send_many(
        &self,
        name: &str,
        args: Vec<Box<RawValue>>,
        declared: Option<&TaskOptions>,
    ) -> Result<Vec<TaskId>> {
        let planning = self.planning();
        let call = CallOptions::default();
        // One task, one set of options: every invocation has the same queue and uniqueness.
        let planned = args
            .into_iter()
            .map(|args| plan(name, args, declared, &call, planning))
            .collect::<Result<Vec<_>>>()?;
        let Some(first) = planned.first() else {
            return Ok(Vec::new());
        };
        if first.unique.is_some() {
            let mut ids = Vec::with_capacity(planned.len());
            for planned in planned {
                ids.push(match self.send_planned(planned).await? {
                    Placed::Enqueued(id) | Placed::Duplicate(id) => id,
                });
            }
            return Ok(ids);
        }
        let queue = first.envelope.queue.clone();
        let messages = planned
            .iter()
            .map(|p| self.outbound(&p.envelope))
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<TaskId> = messages.iter().map(|m| m.id).collect();
        self.waiting_for_room(messages, |messages| self.broker.enqueue(messages))
            .await?;
        count_enqueued(name, &queue, ids.len() as u64);
        Ok(ids)
    }

    /// Sends one planned enqueue: guarded by its uniqueness claim if it has one.
    pub(crate) async fn send_planned(&self, planned: Planned) -> Result<Placed> {
        let Planned {
            envelope,
            unique,
            flow,
        } = planned;
        if let Some(flow) = flow {
            return self.send_keyed(envelope, &flow).await;
        }
        let message = self.outbound(&envelope)?;
        if let Some((key, window)) = unique {
            let claimed = self
                .waiting_for_room(message, |message| {
                    self.broker.enqueue_unique(message, &key, window)
                })
                .await?;
            if let Some(holder) = claimed {
                return Ok(Placed::Duplicate(holder));
            }
        } else {
            self.waiting_for_room(vec![message], |messages| self.broker.enqueue(messages))
                .await?;
        }
        count_enqueued(&envelope.task, &envelope.queue, 1);
        Ok(Placed::Enqueued(envelope.id))
    }

    /// Sends one debounced or throttled enqueue. Replacing a pending invocation's arguments
    /// takes that invocation's id, which only the broker knows: it says so
    /// ([`KeyedOutcome::Resend`]) and the message is sealed and signed again under that id.
    /// A few rounds at most: each resend either lands or finds the invocation gone (it started).
    async fn send_keyed(&self, mut envelope: Envelope, flow: &KeyedFlow) -> Result<Placed> {
        const ROUNDS: usize = 8;
        let mut expect = None;
        for _ in 0..ROUNDS {
            let message = self.outbound(&envelope)?;
            let outcome = self
                .waiting_for_room(message, |message| {
                    self.broker.enqueue_keyed(message, flow, expect)
                })
                .await?;
            match outcome {
                KeyedOutcome::Written(id) => {
                    count_enqueued(&envelope.task, &envelope.queue, 1);
                    return Ok(Placed::Enqueued(id));
                }
                KeyedOutcome::Dropped(id) => return Ok(Placed::Duplicate(id)),
                KeyedOutcome::Resend(id) => {
                    expect = id;
                    envelope.id = id.unwrap_or_else(TaskId::new);
                }
            }
        }
        Err(Error::Invalid {
            what: "keyed enqueue",
            reason: format!(
                "key `{}` changed hands {ROUNDS} times while this call tried to join it",
                flow.key()
            ),
        })
    }

    /// `record` with its result opened when it is sealed and the client has the keys (left
    /// as it is otherwise).
    pub(crate) fn opened(&self, mut record: TaskResult) -> TaskResult {
        let Some(keys) = &self.encryption else {
            return record;
        };
        let Some(sealed) = record
            .result
            .as_deref()
            .and_then(|raw| Encryption::sealed_text(raw.get()))
        else {
            return record;
        };
        if let Ok(opened) = keys.open(&sealed, &Encryption::associated(record.id, &record.task)) {
            if let Ok(raw) = RawValue::from_string(opened) {
                record.result = Some(raw);
            }
        }
        record
    }
}
