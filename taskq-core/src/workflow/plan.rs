//! Turning workflow nodes into writes ([`Plan`]): the envelopes of the steps to send, the
//! records of the groups they start, and the final records of steps that will never run; and
//! writing a plan, a worker's messages enqueued once per id (a claim atomic with the enqueue),
//! so that continuing the same message twice sends nothing twice.

use std::time::Duration;

use futures_util::future::try_join_all;
use serde_json::Value;

use super::{
    flow::{chain_output_id, MemberOf},
    Flow, Node, Signature, WorkflowKind, WorkflowRecord,
};
use crate::{
    broker::OutboundMessage,
    client_core::ClientCore,
    envelope::{Envelope, DEFAULT_QUEUE},
    error::{Error, Result},
    id::TaskId,
    result::{TaskResult, TaskState},
    task::TaskOptions,
};

/// The claim guarding the one enqueue of a workflow message, per id.
fn once_key(id: TaskId) -> String {
    format!("taskq.flow:{id}")
}

/// Where a node runs: its workflow, what follows it, which group it reports to.
#[derive(Clone, Debug, Default)]
pub(super) struct Context {
    pub(super) root: Option<TaskId>,
    pub(super) then: Vec<Node>,
    pub(super) member_of: Option<MemberOf>,
}

/// What one round of continuing writes: group records first, then messages, then the records
/// of steps that will never run.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(super) groups: Vec<WorkflowRecord>,
    pub(super) messages: Vec<PlannedStep>,
    pub(super) records: Vec<TaskResult>,
}

/// One step's message, with what its workflow needs to end it if it cannot be sent.
#[derive(Debug)]
pub(super) struct PlannedStep {
    pub(super) message: OutboundMessage,
    pub(super) task: String,
    pub(super) flow: Flow,
}

/// The final record of a step that will never run: FAILURE unless it ended otherwise.
pub(super) fn ended_record(
    core: &ClientCore,
    id: TaskId,
    state: TaskState,
    error: String,
) -> TaskResult {
    let state = if state.is_ready() && state != TaskState::Success {
        state
    } else {
        TaskState::Failure
    };
    TaskResult::new(id, "", state, core.clock.now()).with_error(error)
}

impl Plan {
    /// This plan as writes for a writer the client does not own, with `handle` to give back.
    pub(crate) fn prepared<H>(self, core: &ClientCore, handle: H) -> super::PreparedWorkflow<H> {
        super::PreparedWorkflow {
            records: self.groups,
            messages: self.messages.into_iter().map(|step| step.message).collect(),
            ended: self.records,
            ttl: core.workflow_ttl,
            broker: core.broker.clone(),
            backend: core.backend.clone(),
            handle,
        }
    }

    /// Plans `node` with `input` (its predecessor's output) in `context`.
    pub(super) fn spawn(
        &mut self,
        core: &ClientCore,
        node: &Node,
        input: Option<&Value>,
        context: Context,
    ) -> Result<()> {
        match node {
            Node::Task(signature) => {
                let flow = Flow {
                    root: context.root,
                    then: context.then,
                    member_of: context.member_of,
                    on_success: signature.on_success.clone(),
                    on_failure: signature.on_failure.clone(),
                };
                let envelope = envelope_of(core, signature, input, &flow)?;
                self.messages.push(PlannedStep {
                    message: core.outbound(&envelope)?,
                    task: signature.task.clone(),
                    flow,
                });
            }
            Node::Group(group) => {
                let of = u32::try_from(group.members.len())
                    .map_err(|_| invalid("a group has at most 2^32 - 1 members"))?;
                if of == 0 {
                    return Err(invalid("a group needs at least one member"));
                }
                self.groups.push(WorkflowRecord {
                    id: group.id,
                    kind: if context.then.is_empty() {
                        WorkflowKind::Group
                    } else {
                        WorkflowKind::Chord
                    },
                    members: group
                        .members
                        .iter()
                        .filter_map(|member| chain_output_id(member))
                        .collect(),
                    all: Vec::new(),
                    then: context.then,
                    member_of: context.member_of,
                    root: context.root,
                    created_at: core.clock.now(),
                    settled: group.settled,
                });
                for (index, member) in group.members.iter().enumerate() {
                    let Some((first, rest)) = member.split_first() else {
                        return Err(invalid("a group member needs at least one step"));
                    };
                    let member_context = Context {
                        root: context.root,
                        then: rest.to_vec(),
                        member_of: Some(MemberOf {
                            group: group.id,
                            index: index as u32,
                            of,
                        }),
                    };
                    self.spawn(core, first, input, member_context)?;
                }
            }
        }
        Ok(())
    }

    /// Writes a plan: group records, then the messages (each once per id when `once`), then
    /// the records of what will never run.
    /// Writes `plan`. With `once` (a worker continuing a workflow), each message is enqueued
    /// once per id, and a step refused because its queue is full is not retried here: it
    /// comes back as a FAILURE naming the bound, for the caller to end what follows it. A
    /// worker retrying it in place would hold its own settling, and so the drain that would
    /// make room, for ever.
    pub(super) async fn commit(
        self,
        core: &ClientCore,
        once: bool,
        ttl: Duration,
    ) -> Result<Vec<super::Finished>> {
        let Plan {
            groups,
            messages,
            mut records,
        } = self;
        for group in &groups {
            core.backend.put_workflow(group, ttl).await?;
        }
        let mut not_sent = Vec::new();
        if once {
            let sent = try_join_all(messages.into_iter().map(|step| {
                let key = once_key(step.message.id);
                async move {
                    let id = step.message.id;
                    match core.broker.enqueue_unique(step.message, &key, ttl).await {
                        Ok(_) => Ok(None),
                        Err(err @ Error::QueueFull { .. }) => {
                            Ok(Some((id, step.task, step.flow, err)))
                        }
                        Err(err) => Err(err),
                    }
                }
            }))
            .await?;
            for (id, task, flow, err) in sent.into_iter().flatten() {
                let error = format!("not sent: {err}");
                records.push(ended_record(core, id, TaskState::Failure, error.clone()));
                let ending = super::Ending::Ended {
                    state: TaskState::Failure,
                    error,
                };
                not_sent.push(super::Finished::new(id, task, flow, ending));
            }
        } else if !messages.is_empty() {
            core.broker
                .enqueue(messages.into_iter().map(|step| step.message).collect())
                .await?;
        }
        if !records.is_empty() {
            core.backend.store_many(&records, ttl).await?;
        }
        Ok(not_sent)
    }
}

/// The envelope of one step.
fn envelope_of(
    core: &ClientCore,
    signature: &Signature,
    input: Option<&Value>,
    flow: &Flow,
) -> Result<Envelope> {
    // Sealed in the flow; the envelope's arguments are sealed again as it is sent.
    let opened = signature.opened(core.encryption())?;
    let signature = opened.as_ref().unwrap_or(signature);
    let args = signature.args_with(input)?;
    let queue = signature.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
    let mut envelope = Envelope::new(&signature.task, &args, queue, core.clock.now())?;
    envelope.id = signature.id;
    envelope.priority = signature.priority.unwrap_or(0);
    envelope.max_retries = signature.max_retries;
    envelope.headers = signature.headers.clone();
    if !flow.is_empty() {
        envelope.flow =
            Some(
                serde_json::value::to_raw_value(flow).map_err(|source| Error::Serialize {
                    what: "workflow",
                    source,
                })?,
            );
    }
    Ok(envelope)
}

/// Refuses a workflow (steps after the first, callbacks) on a broker that cannot send its
/// later steps once each (see [`crate::Transport::supports_unique`]).
pub(crate) fn check_supported(core: &ClientCore) -> Result<()> {
    if core.broker.supports_unique() {
        return Ok(());
    }
    Err(invalid(
        "this broker cannot send a workflow's later steps once each (it has no uniqueness \
             keys, as RabbitMQ): chains, groups, chords and callbacks need the Redis broker",
    ))
}

/// Applies the declared options of by-name callbacks (see [`resolve`]).
pub(crate) async fn resolve_callbacks(
    core: &ClientCore,
    callbacks: &mut Vec<Signature>,
) -> Result<()> {
    if callbacks.iter().all(|callback| callback.resolved) {
        return Ok(());
    }
    let mut nodes: Vec<Node> = callbacks.drain(..).map(Node::Task).collect();
    resolve(core, &mut nodes).await?;
    callbacks.extend(nodes.into_iter().filter_map(|node| match node {
        Node::Task(signature) => Some(signature),
        Node::Group(_) => None,
    }));
    Ok(())
}

/// Applies the declared options of by-name steps (looked up once per name), then checks
/// every step.
pub(crate) async fn resolve(core: &ClientCore, nodes: &mut [Node]) -> Result<()> {
    let mut names = Vec::new();
    for node in nodes.iter_mut() {
        node.signatures_mut(&mut |signature| collect_unresolved(signature, &mut names));
    }
    names.sort();
    names.dedup();
    let mut declared = std::collections::HashMap::new();
    for name in names {
        if let Some(options) = core.declared_options(&name).await? {
            declared.insert(name, options);
        }
    }
    let mut error = None;
    for node in nodes.iter_mut() {
        node.signatures_mut(&mut |signature| {
            apply_declared(signature, &declared);
            if let Err(err) = signature.validate() {
                error.get_or_insert(err);
            }
        });
    }
    error.map_or(Ok(()), Err)
}

fn collect_unresolved(signature: &Signature, names: &mut Vec<String>) {
    if !signature.resolved {
        names.push(signature.task.clone());
    }
    for callback in signature.on_success.iter().chain(&signature.on_failure) {
        collect_unresolved(callback, names);
    }
}

fn apply_declared(
    signature: &mut Signature,
    declared: &std::collections::HashMap<String, TaskOptions>,
) {
    if !signature.resolved {
        if let Some(options) = declared.get(&signature.task) {
            signature
                .queue
                .get_or_insert_with(|| options.queue().to_owned());
            signature.priority.get_or_insert(options.priority());
            signature.max_retries.get_or_insert(options.max_retries());
        }
        signature.resolved = true;
    }
    for callback in signature
        .on_success
        .iter_mut()
        .chain(signature.on_failure.iter_mut())
    {
        apply_declared(callback, declared);
    }
}

pub(super) fn invalid(reason: &str) -> Error {
    Error::Invalid {
        what: "workflow",
        reason: reason.to_owned(),
    }
}
