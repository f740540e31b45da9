//! Sending a workflow: its ids assigned, its steps' declared options applied and their
//! arguments sealed, its record written, then its first step (or a group's members) enqueued.

use super::{
    flow::chain_output_id,
    plan::{check_supported, invalid, resolve, Context, Plan},
    Node, WorkflowKind, WorkflowRecord,
};
use crate::{client_core::ClientCore, error::Result, id::TaskId};

/// Sends a workflow made of `nodes` run one after another; the root record lists every id
/// under `root`.
pub(crate) async fn send_workflow(
    core: &ClientCore,
    root: TaskId,
    kind: WorkflowKind,
    nodes: Vec<Node>,
) -> Result<WorkflowRecord> {
    let (record, plan) = plan_workflow(core, root, kind, nodes).await?;
    plan.commit(core, false, core.workflow_ttl).await?;
    Ok(record)
}

/// Plans a workflow without writing anything: its root record, and the writes that send it.
pub(crate) async fn plan_workflow(
    core: &ClientCore,
    root: TaskId,
    kind: WorkflowKind,
    mut nodes: Vec<Node>,
) -> Result<(WorkflowRecord, Plan)> {
    check_supported(core)?;
    resolve(core, &mut nodes).await?;
    if let Some(keys) = core.encryption() {
        // Later steps travel in flows and group records: sealed like any task's arguments.
        for node in &mut nodes {
            node.signatures_mut(&mut |signature| signature.seal_args(keys));
        }
    }
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
        created_at: core.clock.now(),
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
    plan.spawn(core, first, None, context)?;
    // A group's root record is the group's own record (it holds the continuation).
    match plan.groups.iter_mut().find(|group| group.id == root) {
        Some(group) => {
            group.all = record.all.clone();
            group.kind = kind;
        }
        None => plan.groups.push(record.clone()),
    }
    Ok((record, plan))
}
