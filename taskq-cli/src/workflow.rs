//! `taskq result <id>` and `taskq revoke <id>` for a workflow's id: its members' states.

use serde_json::json;
use taskq_core::{
    workflow::{WorkflowKind, WorkflowRecord},
    Client, TaskId, TaskState,
};

use crate::Failure;

/// Members listed one per line; a larger group is summarized by state.
const LISTED: usize = 20;

/// The workflow's kind, each member's state (a chain's steps in order, a group's members in
/// order) and, for a chord, the states of the steps after the group (its callback first).
pub(crate) async fn show(
    client: &Client,
    record: &WorkflowRecord,
    json: bool,
) -> Result<String, Failure> {
    let then_ids: Vec<TaskId> = record.then.iter().map(|node| node.output_id()).collect();
    let then_states = client.states(&then_ids).await?;
    let then = then_ids.iter().copied().zip(then_states);
    let states = client.states(&record.members).await?;
    let kind = match record.kind {
        WorkflowKind::Chain => "chain",
        WorkflowKind::Group => "group",
        WorkflowKind::Chord => "chord",
        _ => "workflow",
    };
    if json {
        let members: Vec<_> = record
            .members
            .iter()
            .zip(&states)
            .map(|(id, state)| json!({"id": id, "state": state}))
            .collect();
        let then: Vec<_> = then
            .map(|(id, state)| json!({"id": id, "state": state}))
            .collect();
        return Ok(
            json!({"id": record.id, "workflow": kind, "members": members, "then": then})
                .to_string(),
        );
    }
    let what = if record.kind == WorkflowKind::Chain {
        "steps"
    } else {
        "members"
    };
    let mut lines = vec![
        format!("{kind}     {}", record.id),
        format!("created   {}", record.created_at.to_rfc3339()),
        format!("{what:<9} {}", summary(&states)),
    ];
    for (id, state) in record.members.iter().zip(&states).take(LISTED) {
        lines.push(format!("  {id}  {state}"));
    }
    if record.members.len() > LISTED {
        lines.push(format!("  ... {} more", record.members.len() - LISTED));
    }
    for (position, (id, state)) in then.enumerate() {
        let label = if position == 0 { "then" } else { "" };
        lines.push(format!("{label:<9} {id}  {state}"));
    }
    Ok(lines.join("\n"))
}

/// Revokes every task of the workflow and says how many.
pub(crate) async fn revoke(
    client: &Client,
    id: TaskId,
    terminate: bool,
    json: bool,
) -> Result<String, Failure> {
    let count = client.revoke_workflow(id, terminate).await?;
    Ok(if json {
        json!({"revoked": id, "workflow": true, "tasks": count, "terminate": terminate}).to_string()
    } else {
        format!("revoked workflow {id}: {count} tasks (those already finished are unaffected)")
    })
}

/// `3 SUCCESS, 1 FAILURE, 96 PENDING`, in the order states first appear.
fn summary(states: &[TaskState]) -> String {
    let mut counts: Vec<(TaskState, usize)> = Vec::new();
    for state in states {
        match counts.iter_mut().find(|(s, _)| s == state) {
            Some((_, count)) => *count += 1,
            None => counts.push((*state, 1)),
        }
    }
    counts
        .iter()
        .map(|(state, count)| format!("{count} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}
