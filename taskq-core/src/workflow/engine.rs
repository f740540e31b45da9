//! How workflows move: sending one (a client), and continuing one when a member finishes (a
//! worker). Both turn nodes into messages the same way ([`Plan`]); a worker's messages are
//! enqueued once per id (guarded by a claim atomic with the enqueue), so a member that is
//! redelivered, retried or run twice continues its workflow once.

use std::{collections::VecDeque, time::Duration};

use futures_util::future::try_join_all;
use serde_json::Value;

use super::{
    flow::{chain_output_id, MemberOf},
    Failed, Flow, GroupStatus, MemberOutcome, Node, Signature, WorkflowKind, WorkflowRecord,
};
use crate::{
    Client, Envelope, Error, OutboundMessage, Result, TaskId, TaskResult, TaskState, DEFAULT_QUEUE,
};

/// The claim guarding the one enqueue of a workflow message, per id.
fn once_key(id: TaskId) -> String {
    format!("taskq.flow:{id}")
}

/// How a workflow member ended, as its worker saw it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Ending {
    /// It succeeded with this output (plain JSON, not sealed).
    Succeeded(Value),
    /// It ended in a final state other than SUCCESS.
    Ended {
        /// FAILURE, REVOKED or EXPIRED.
        state: TaskState,
        /// Why.
        error: String,
    },
}

/// One finished message whose workflow continues: what a worker hands to
/// [`Client::advance_workflows`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Finished {
    /// The finished task.
    pub id: TaskId,
    /// Its name.
    pub task: String,
    /// What its envelope carried.
    pub flow: Flow,
    /// How it ended.
    pub ending: Ending,
}

impl Finished {
    /// A finished message.
    pub fn new(id: TaskId, task: impl Into<String>, flow: Flow, ending: Ending) -> Self {
        Self {
            id,
            task: task.into(),
            flow,
            ending,
        }
    }
}

/// Where a node runs: its workflow, what follows it, which group it reports to.
#[derive(Clone, Debug, Default)]
struct Context {
    root: Option<TaskId>,
    then: Vec<Node>,
    member_of: Option<MemberOf>,
}

/// Something that ended, and the context its workflow continues from.
#[derive(Debug)]
struct Continuation {
    context: Context,
    /// The task (or group) that ended, and its name for error messages.
    origin: (TaskId, String),
    ending: Ending,
}

/// What one round of continuing writes: group records first, then messages, then the records
/// of steps that will never run.
#[derive(Debug, Default)]
struct Plan {
    groups: Vec<WorkflowRecord>,
    messages: Vec<OutboundMessage>,
    records: Vec<TaskResult>,
}

impl Client {
    /// Sends a workflow made of `nodes` run one after another; the root record lists every id
    /// under `root`.
    pub(crate) async fn send_workflow(
        &self,
        root: TaskId,
        kind: WorkflowKind,
        mut nodes: Vec<Node>,
    ) -> Result<WorkflowRecord> {
        self.resolve(&mut nodes).await?;
        let mut all = Vec::new();
        for node in &nodes {
            node.task_ids(&mut all);
        }
        let members = match (kind, nodes.first()) {
            (WorkflowKind::Chain, _) => nodes.iter().map(Node::output_id).collect(),
            (_, Some(Node::Group(group))) => group
                .members
                .iter()
                .filter_map(|member| chain_output_id(member))
                .collect(),
            _ => Vec::new(),
        };
        let record = WorkflowRecord {
            id: root,
            kind,
            members,
            all,
            then: Vec::new(),
            member_of: None,
            root: Some(root),
            created_at: self.clock().now(),
            settled: false,
        };
        let Some((first, rest)) = nodes.split_first() else {
            return Err(invalid("a workflow needs at least one step"));
        };
        let mut plan = Plan::default();
        let context = Context {
            root: Some(root),
            then: rest.to_vec(),
            member_of: None,
        };
        self.spawn(&mut plan, first, None, context)?;
        // A group's root record is the group's own record (it holds the continuation).
        match plan.groups.iter_mut().find(|group| group.id == root) {
            Some(group) => {
                group.all = record.all.clone();
                group.kind = kind;
            }
            None => plan.groups.push(record.clone()),
        }
        self.commit(plan, false, crate::DEFAULT_RESULT_TTL).await?;
        Ok(record)
    }

    /// Continues the workflows of finished messages: sends the next steps (once per id, however
    /// often this runs for the same message), records group members' outcomes, sends a
    /// group's next step when its last member reports, and ends what will never run (with the
    /// failure that stopped it) so that no waiter hangs. For worker runtimes.
    ///
    /// Idempotent: a worker calls it after storing the results and before acknowledging, and
    /// a redelivered message calls it again.
    ///
    /// # Errors
    ///
    /// The broker's or backend's error; calling again later is safe.
    pub async fn advance_workflows(&self, finished: Vec<Finished>, ttl: Duration) -> Result<()> {
        let mut work = VecDeque::new();
        let mut plan = Plan::default();
        for finished in finished {
            let flow = finished.flow;
            let callbacks = match &finished.ending {
                Ending::Succeeded(output) => Some((flow.on_success, output.clone())),
                Ending::Ended { state, error } => serde_json::to_value(Failed {
                    id: finished.id,
                    task: finished.task.clone(),
                    state: *state,
                    error: error.clone(),
                })
                .ok()
                .map(|failed| (flow.on_failure, failed)),
            };
            if let Some((callbacks, input)) = callbacks {
                for callback in &callbacks {
                    let context = Context {
                        root: flow.root,
                        ..Context::default()
                    };
                    if let Err(err) = self.spawn(
                        &mut plan,
                        &Node::Task(callback.clone()),
                        Some(&input),
                        context,
                    ) {
                        tracing::error!(callback = %callback.task, error = %err, "callback not sent");
                    }
                }
            }
            work.push_back(Continuation {
                context: Context {
                    root: flow.root,
                    then: flow.then,
                    member_of: flow.member_of,
                },
                origin: (finished.id, finished.task),
                ending: finished.ending,
            });
        }
        loop {
            let mut reports = Vec::new();
            while let Some(next) = work.pop_front() {
                self.continue_one(&mut plan, &mut reports, &mut work, next);
            }
            self.commit(std::mem::take(&mut plan), true, ttl).await?;
            if reports.is_empty() {
                return Ok(());
            }
            let statuses = self.backend().report_members(&reports, ttl).await?;
            for status in statuses {
                work.extend(group_continuation(status));
            }
        }
    }

    /// Plans what follows one ending: the next step, a group report, or the end of what
    /// follows.
    fn continue_one(
        &self,
        plan: &mut Plan,
        reports: &mut Vec<(MemberOf, MemberOutcome)>,
        work: &mut VecDeque<Continuation>,
        next: Continuation,
    ) {
        let Continuation {
            context,
            origin,
            ending,
        } = next;
        match ending {
            Ending::Succeeded(output) => {
                if let Some((first, rest)) = context.then.split_first() {
                    let step = Context {
                        root: context.root,
                        then: rest.to_vec(),
                        member_of: context.member_of,
                    };
                    if let Err(err) = self.spawn(plan, first, Some(&output), step.clone()) {
                        let id = first.output_id();
                        plan.records.push(self.ended_record(
                            id,
                            TaskState::Failure,
                            format!("not sent: {err}"),
                        ));
                        work.push_back(Continuation {
                            context: step,
                            origin: (id, "step".into()),
                            ending: Ending::Ended {
                                state: TaskState::Failure,
                                error: crate::error_chain(&err),
                            },
                        });
                    }
                } else if let Some(member_of) = context.member_of {
                    reports.push((
                        member_of,
                        MemberOutcome {
                            id: origin.0,
                            task: origin.1,
                            state: TaskState::Success,
                            output: Some(output),
                            error: None,
                        },
                    ));
                }
            }
            Ending::Ended { state, error } => {
                let why = format!(
                    "not run: {} ({}) ended {state}: {error}",
                    origin.1, origin.0
                );
                let mut never_run = Vec::new();
                for node in &context.then {
                    node.task_ids(&mut never_run);
                }
                for id in never_run {
                    plan.records.push(self.ended_record(id, state, why.clone()));
                }
                if let Some(member_of) = context.member_of {
                    reports.push((
                        member_of,
                        MemberOutcome {
                            id: origin.0,
                            task: origin.1,
                            state,
                            output: None,
                            error: Some(error),
                        },
                    ));
                }
            }
        }
    }

    fn ended_record(&self, id: TaskId, state: TaskState, error: String) -> TaskResult {
        let state = if state.is_ready() && state != TaskState::Success {
            state
        } else {
            TaskState::Failure
        };
        TaskResult::new(id, "", state, self.clock().now()).with_error(error)
    }

    /// Plans `node` with `input` (its predecessor's output) in `context`.
    fn spawn(
        &self,
        plan: &mut Plan,
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
                let envelope = self.envelope_of(signature, input, &flow)?;
                plan.messages.push(self.outbound(&envelope)?);
            }
            Node::Group(group) => {
                let of = u32::try_from(group.members.len())
                    .map_err(|_| invalid("a group has at most 2^32 - 1 members"))?;
                if of == 0 {
                    return Err(invalid("a group needs at least one member"));
                }
                plan.groups.push(WorkflowRecord {
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
                    created_at: self.clock().now(),
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
                    self.spawn(plan, first, input, member_context)?;
                }
            }
        }
        Ok(())
    }

    /// The envelope of one step.
    fn envelope_of(
        &self,
        signature: &Signature,
        input: Option<&Value>,
        flow: &Flow,
    ) -> Result<Envelope> {
        let args = signature.args_with(input)?;
        let queue = signature.queue.as_deref().unwrap_or(DEFAULT_QUEUE);
        let mut envelope = Envelope::new(&signature.task, &args, queue, self.clock().now())?;
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

    /// Writes a plan: group records, then the messages (each once per id when `once`), then
    /// the records of what will never run.
    async fn commit(&self, plan: Plan, once: bool, ttl: Duration) -> Result<()> {
        let Plan {
            groups,
            messages,
            records,
        } = plan;
        for group in &groups {
            self.backend().put_workflow(group, ttl).await?;
        }
        if once {
            try_join_all(messages.into_iter().map(|message| {
                let key = once_key(message.id);
                async move {
                    self.broker().enqueue_unique(message, &key, ttl).await?;
                    Ok::<_, Error>(())
                }
            }))
            .await?;
        } else if !messages.is_empty() {
            self.broker().enqueue(messages).await?;
        }
        if !records.is_empty() {
            self.backend().store_many(&records, ttl).await?;
        }
        Ok(())
    }

    /// Applies the declared options of by-name steps (looked up once per name).
    async fn resolve(&self, nodes: &mut [Node]) -> Result<()> {
        let mut names = Vec::new();
        for node in nodes.iter_mut() {
            node.signatures_mut(&mut |signature| collect_unresolved(signature, &mut names));
        }
        names.sort();
        names.dedup();
        let mut declared = std::collections::HashMap::new();
        for name in names {
            if let Some(options) = self.declared_options(&name).await? {
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
    declared: &std::collections::HashMap<String, crate::TaskOptions>,
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

/// What follows a group report: nothing yet, its failure, or its next step with every output.
fn group_continuation(status: GroupStatus) -> Option<Continuation> {
    let (record, outcomes) = match status {
        GroupStatus::Waiting => return None,
        // A settled group waits for every member, failed or not.
        GroupStatus::Failed(record, _) if record.settled => return None,
        GroupStatus::Failed(record, failed) => (record, vec![*failed]),
        GroupStatus::Complete(record, outcomes) => (record, outcomes),
    };
    let context = Context {
        root: record.root,
        then: record.then,
        member_of: record.member_of,
    };
    let origin = (record.id, "group".to_owned());
    let failure = |outcome: &MemberOutcome| Ending::Ended {
        state: TaskState::Failure,
        error: format!(
            "member {} ({}) ended {}: {}",
            outcome.task,
            outcome.id,
            outcome.state,
            outcome.error.as_deref().unwrap_or("")
        ),
    };
    if record.settled {
        let settled = outcomes.into_iter().map(settled_value).collect();
        return Some(Continuation {
            context,
            origin,
            ending: Ending::Succeeded(Value::Array(settled)),
        });
    }
    let ending = match outcomes.iter().find(|o| o.state != TaskState::Success) {
        Some(failed) => failure(failed),
        None => Ending::Succeeded(Value::Array(
            outcomes
                .into_iter()
                .map(|o| o.output.unwrap_or(Value::Null))
                .collect(),
        )),
    };
    Some(Continuation {
        context,
        origin,
        ending,
    })
}

/// A member's outcome as a settled group's callback receives it (see [`super::Settled`]).
fn settled_value(outcome: MemberOutcome) -> Value {
    if outcome.state == TaskState::Success {
        return serde_json::json!({ "ok": outcome.output.unwrap_or(Value::Null) });
    }
    let failed = Failed {
        id: outcome.id,
        task: outcome.task,
        state: outcome.state,
        error: outcome.error.unwrap_or_default(),
    };
    serde_json::json!({ "failed": failed })
}

fn invalid(reason: &str) -> Error {
    Error::Invalid {
        what: "workflow",
        reason: reason.to_owned(),
    }
}
