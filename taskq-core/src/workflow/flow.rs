//! What travels with a workflow's messages ([`Flow`], in the envelope's `flow` field) and what
//! the result backend keeps per group ([`WorkflowRecord`], [`MemberOutcome`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Signature;
use crate::{
    envelope::Envelope,
    error::{Error, Result},
    id::TaskId,
    result::TaskState,
};

/// One step of a workflow still to run: a task call, or a group of chains run in parallel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Node {
    /// One task call.
    Task(Signature),
    /// Chains run in parallel; the step after it (if any) receives their outputs in order.
    Group(GroupNode),
}

/// A group: parallel member chains under one id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GroupNode {
    /// The group's id (the chord's id when a step follows it).
    pub id: TaskId,
    /// Each member is a chain of one or more nodes.
    pub members: Vec<Vec<Node>>,
    /// What follows runs once every member ended, whatever their outcome, with a
    /// [`Settled`] per member (Sidekiq's batch "complete" rather than "success").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settled: bool,
}

impl Node {
    /// Every task id in this node, nested groups included, in order.
    pub fn task_ids(&self, into: &mut Vec<TaskId>) {
        match self {
            Node::Task(signature) => into.push(signature.id),
            Node::Group(group) => {
                for member in &group.members {
                    for node in member {
                        node.task_ids(into);
                    }
                }
            }
        }
    }

    /// The id whose result is this node's output: the task's, or the group's.
    pub fn output_id(&self) -> TaskId {
        match self {
            Node::Task(signature) => signature.id,
            Node::Group(group) => group.id,
        }
    }

    pub(crate) fn signatures_mut(&mut self, visit: &mut dyn FnMut(&mut Signature)) {
        match self {
            Node::Task(signature) => visit(signature),
            Node::Group(group) => {
                for node in group.members.iter_mut().flatten() {
                    node.signatures_mut(visit);
                }
            }
        }
    }
}

/// A chain's id of its output: the last node's.
pub(crate) fn chain_output_id(chain: &[Node]) -> Option<TaskId> {
    chain.last().map(Node::output_id)
}

/// Membership in a group: which group, and which member (its position).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberOf {
    /// The group's id.
    pub group: TaskId,
    /// The member's position, from 0.
    pub index: u32,
    /// How many members the group has.
    pub of: u32,
}

/// What a message of a workflow carries: the rest of its chain, the group it reports to, and
/// its callbacks. It travels in the envelope, so no coordinator process exists and a worker
/// crash between steps loses nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Flow {
    /// The workflow this message belongs to.
    pub root: Option<TaskId>,
    /// What runs after this task succeeds, in order; the first receives its output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<Node>,
    /// The group this chain is a member of; its last step reports there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_of: Option<MemberOf>,
    /// Sent with this task's output when it succeeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_success: Vec<Signature>,
    /// Sent with a [`Failed`] when it ends without success.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<Signature>,
}

impl Flow {
    /// The workflow `envelope` belongs to, if any (read from its `flow` field).
    ///
    /// # Errors
    ///
    /// [`Error::Deserialize`] when the `flow` field is not a workflow.
    pub fn of(envelope: &Envelope) -> Result<Option<Self>> {
        envelope
            .flow
            .as_deref()
            .map(|raw| serde_json::from_str(raw.get()))
            .transpose()
            .map_err(|source| Error::Deserialize {
                what: "workflow",
                source,
            })
    }

    /// True when nothing follows the task: no envelope field is needed.
    pub fn is_empty(&self) -> bool {
        self.then.is_empty()
            && self.member_of.is_none()
            && self.on_success.is_empty()
            && self.on_failure.is_empty()
    }

    /// True when a step follows: a repeated run of this task could then run after its
    /// successor started, so a worker skips a run whose SUCCESS is already stored.
    pub fn has_successor(&self) -> bool {
        !self.then.is_empty() || !self.on_success.is_empty()
    }
}

/// The input of an `on_failure` callback: which task ended how.
///
/// ```
/// use taskq_core::{workflow::Failed, TaskId, TaskState};
/// let failed = Failed { id: TaskId::new(), task: "t".into(), state: TaskState::Failure, error: "boom".into() };
/// assert_eq!(serde_json::to_value(&failed)?["state"], "FAILURE");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    /// The task that ended.
    pub id: TaskId,
    /// Its name.
    pub task: String,
    /// FAILURE, REVOKED or EXPIRED.
    pub state: TaskState,
    /// Why.
    pub error: String,
}

/// What kind of workflow a [`WorkflowRecord`] describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WorkflowKind {
    /// Steps one after another.
    Chain,
    /// Members in parallel.
    Group,
    /// A group and the step that receives its outputs.
    Chord,
}

/// What the result backend keeps about a workflow (under its root id) or a group inside one
/// (under the group id): its members, and for a group what follows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkflowRecord {
    /// The workflow's or group's id.
    pub id: TaskId,
    /// Chain, group or chord.
    pub kind: WorkflowKind,
    /// The ids whose results make up the outputs: a chain's steps, a group's members (each
    /// member chain's last id), in order.
    pub members: Vec<TaskId>,
    /// Every task id in the workflow (a root record), for revocation; empty for inner groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<TaskId>,
    /// A group's continuation: what runs when every member succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<Node>,
    /// The group this group is itself a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_of: Option<MemberOf>,
    /// The root workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<TaskId>,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// A group whose next step runs whatever its members' outcomes (see [`GroupNode::settled`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settled: bool,
}

/// One member's outcome, as the callback of [`Group::then_settled`](super::Group::then_settled)
/// receives it: `{"ok": output}` or `{"failed": {id, task, state, error}}`.
///
/// ```
/// use taskq_core::workflow::Settled;
/// let ok: Settled<i64> = serde_json::from_str(r#"{"ok":4}"#)?;
/// assert_eq!(ok.ok(), Some(4));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled<O> {
    /// The member succeeded with this output.
    Ok(O),
    /// The member ended FAILURE, REVOKED or EXPIRED.
    Failed(Failed),
}

impl<O> Settled<O> {
    /// The output, if the member succeeded.
    pub fn ok(self) -> Option<O> {
        match self {
            Settled::Ok(output) => Some(output),
            Settled::Failed(_) => None,
        }
    }
}

/// How one member of a group ended, as recorded for the group (first report wins).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MemberOutcome {
    /// The member's last task id.
    pub id: TaskId,
    /// Its task name.
    #[serde(default)]
    pub task: String,
    /// SUCCESS, or the final state it ended in.
    pub state: TaskState,
    /// The output on SUCCESS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// Why it failed, otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `<key id>:<hex>` by the reporting worker's signing key, when it has one: a chord's
    /// callback takes its input from these records, so a worker that requires signatures
    /// refuses outcomes without a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

impl MemberOutcome {
    /// The bytes its signature covers: the group and everything but the signature.
    pub(crate) fn signed_bytes(&self, group: crate::id::TaskId) -> Vec<u8> {
        serde_json::to_vec(&(
            group.to_string(),
            self.id.to_string(),
            &self.task,
            self.state,
            &self.output,
            &self.error,
        ))
        .expect("plain values serialize")
    }
}

/// What recording a member's outcome found.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum GroupStatus {
    /// Members are still running (or the group is unknown: expired, never sent).
    Waiting,
    /// This report was the group's first failure: the group's record, to fail what follows,
    /// and the failed member.
    Failed(Box<WorkflowRecord>, Box<MemberOutcome>),
    /// Every member has reported: the group's record and the outcomes, in member order.
    Complete(Box<WorkflowRecord>, Vec<MemberOutcome>),
}
