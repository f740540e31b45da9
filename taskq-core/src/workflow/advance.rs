//! Continuing a workflow when one of its messages ends: the next step, a group report, and
//! what a group's last report or first failure sets off. For worker runtimes, through
//! [`Client::advance_workflows`](crate::Client::advance_workflows); idempotent, so a redelivered message continues it again
//! without sending anything twice.

use std::{collections::VecDeque, time::Duration};

use serde_json::Value;

use super::{
    finished::{Ending, Finished},
    flow::MemberOf,
    plan::{ended_record, Context, Plan},
    Failed, GroupStatus, MemberOutcome, Node,
};
use crate::{
    client_core::ClientCore, encryption::Encryption, error::error_chain, error::Result, id::TaskId,
    result::TaskState,
};

/// Something that ended, and the context its workflow continues from.
#[derive(Debug)]
struct Continuation {
    context: Context,
    /// The task (or group) that ended, and its name for error messages.
    origin: (TaskId, String),
    ending: Ending,
    /// The finished message's trace context: what follows is sent under it.
    trace: Trace,
}

/// Continues the workflows of `finished` messages (see [`Client::advance_workflows`]).
///
/// [`Client::advance_workflows`]: crate::Client::advance_workflows
pub(crate) async fn advance(
    core: &ClientCore,
    finished: Vec<Finished>,
    ttl: Duration,
) -> Result<()> {
    let mut finished = finished;
    // Steps that could not be sent (a full queue) end as FAILURE and continue as such;
    // each round sends only what follows the last, so this ends.
    while !finished.is_empty() {
        finished = advance_once(core, finished, ttl).await?;
    }
    Ok(())
}

/// One round of [`advance`]; returns the steps it could not send.
async fn advance_once(
    core: &ClientCore,
    finished: Vec<Finished>,
    ttl: Duration,
) -> Result<Vec<Finished>> {
    let mut work = VecDeque::new();
    let mut plan = Plan::default();
    let mut not_sent = Vec::new();
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
                if let Err(err) =
                    plan.spawn(core, &Node::Task(callback.clone()), Some(&input), context)
                {
                    // It will never run: its record says so, so that its waiter ends.
                    tracing::error!(callback = %callback.task, task.id = %callback.id, error = %err, "callback not sent");
                    plan.records.push(ended_record(
                        core,
                        callback.id,
                        TaskState::Failure,
                        format!("callback not sent: {}", error_chain(&err)),
                    ));
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
            trace: finished.trace,
        });
    }
    loop {
        let mut reports = Reports::default();
        while let Some(next) = work.pop_front() {
            continue_one(core, &mut plan, &mut reports, &mut work, next);
        }
        not_sent.extend(std::mem::take(&mut plan).commit(core, true, ttl).await?);
        if reports.outcomes.is_empty() {
            return Ok(not_sent);
        }
        let statuses = core.backend.report_members(&reports.outcomes, ttl).await?;
        for (status, trace) in statuses.into_iter().zip(reports.traces) {
            let status = authenticated(core, status);
            work.extend(group_continuation(status, trace).map(|c| opened_outputs(core, c)));
        }
    }
}

/// Group members' reports of one round, each with the trace context of the member that sent
/// it: the member whose report completes its group is the one whose trace the group's next
/// step (a chord's callback) joins.
#[derive(Default)]
struct Reports {
    outcomes: Vec<(MemberOf, MemberOutcome)>,
    traces: Vec<Trace>,
}

impl Reports {
    fn push(&mut self, report: (MemberOf, MemberOutcome), trace: Trace) {
        self.outcomes.push(report);
        self.traces.push(trace);
    }
}

/// A message's trace context headers (`traceparent`, `tracestate`); empty without one.
type Trace = std::collections::BTreeMap<String, String>;

/// Plans what follows one ending: the next step, a group report, or the end of what
/// follows.
fn continue_one(
    core: &ClientCore,
    plan: &mut Plan,
    reports: &mut Reports,
    work: &mut VecDeque<Continuation>,
    next: Continuation,
) {
    let Continuation {
        context,
        origin,
        ending,
        trace,
    } = next;
    // With `otel`, the next step's `taskq send` span joins the finished step's trace.
    #[cfg(feature = "otel")]
    let _continuing = crate::trace_context::continuing(&trace);
    match ending {
        Ending::Succeeded(output) => {
            if let Some((first, rest)) = context.then.split_first() {
                let step = Context {
                    root: context.root,
                    then: rest.to_vec(),
                    member_of: context.member_of,
                };
                if let Err(err) = plan.spawn(core, first, Some(&output), step.clone()) {
                    let id = first.output_id();
                    plan.records.push(ended_record(
                        core,
                        id,
                        TaskState::Failure,
                        format!("not sent: {err}"),
                    ));
                    work.push_back(Continuation {
                        context: step,
                        origin: (id, "step".into()),
                        ending: Ending::Ended {
                            state: TaskState::Failure,
                            error: error_chain(&err),
                        },
                        trace: Trace::new(),
                    });
                }
            } else if let Some(member_of) = context.member_of {
                let output = sealed_output(core, output, member_of);
                reports.push(
                    report(core, member_of, origin, TaskState::Success, Ok(output)),
                    trace,
                );
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
                plan.records
                    .push(ended_record(core, id, state, why.clone()));
            }
            if let Some(member_of) = context.member_of {
                reports.push(report(core, member_of, origin, state, Err(error)), trace);
            }
        }
    }
}

/// A member's output as its group stores it: sealed when the client has encryption keys
/// (outputs then rest encrypted in the backend, like results), bound to the group and the
/// member's position.
fn sealed_output(core: &ClientCore, output: Value, member_of: MemberOf) -> Value {
    let Some(keys) = core.encryption() else {
        return output;
    };
    let sealed = keys.seal(
        &output.to_string(),
        &member_binding(member_of.group, member_of.index),
    );
    Value::String(sealed)
}

/// A group's outputs opened, where they were sealed (see [`sealed_output`]); an
/// output that does not open stays as it is, and the next step fails on it visibly.
fn opened_outputs(core: &ClientCore, mut continuation: Continuation) -> Continuation {
    let Some(keys) = core.encryption() else {
        return continuation;
    };
    let group = continuation.origin.0;
    let Ending::Succeeded(Value::Array(outputs)) = &mut continuation.ending else {
        return continuation;
    };
    for (index, output) in outputs.iter_mut().enumerate() {
        // A settled group's outputs sit inside {"ok": ...}.
        let slot = match output.get_mut("ok") {
            Some(inner) => inner,
            None => output,
        };
        let Value::String(text) = slot else { continue };
        if Encryption::sealed_text(&Value::String(text.clone()).to_string()).is_none() {
            continue;
        }
        if let Ok(opened) = keys.open(text, &member_binding(group, index as u32)) {
            if let Ok(value) = serde_json::from_str(&opened) {
                *slot = value;
            }
        }
    }
    continuation
}

/// What a group's member `origin` reports to its group: ended in `state` with its (sealed)
/// output or its error, signed.
fn report(
    core: &ClientCore,
    member_of: MemberOf,
    origin: (TaskId, String),
    state: TaskState,
    result: std::result::Result<Value, String>,
) -> (MemberOf, MemberOutcome) {
    let (output, error) = match result {
        Ok(output) => (Some(output), None),
        Err(error) => (None, Some(error)),
    };
    let outcome = MemberOutcome {
        id: origin.0,
        task: origin.1,
        state,
        output,
        error,
        sig: None,
    };
    (member_of, signed_outcome(core, member_of, outcome))
}

/// `outcome` signed with the client's signing key, when it has one.
fn signed_outcome(
    core: &ClientCore,
    member_of: MemberOf,
    mut outcome: MemberOutcome,
) -> MemberOutcome {
    if let (Some(key), _) = core.outcome_signing() {
        outcome.sig = Some(key.sign_bytes(&outcome.signed_bytes(member_of.group)));
    }
    outcome
}

/// `status` with every outcome whose signature does not hold (where signatures are
/// required) turned into a failure saying so: the callback never receives an input that
/// no worker with a key reported.
fn authenticated(core: &ClientCore, status: GroupStatus) -> GroupStatus {
    let (_, Some(keyring)) = core.outcome_signing() else {
        return status;
    };
    if !keyring.is_required() {
        return status;
    }
    let now = core.clock.now();
    // The outcome as the callback may see it, and whether its signature was refused.
    let check = |group: TaskId, outcome: MemberOutcome| -> (MemberOutcome, bool) {
        let held = keyring.verify_bytes(&outcome.signed_bytes(group), outcome.sig.as_deref(), now);
        match held {
            Ok(()) => (outcome, false),
            Err(err) => {
                tracing::error!(group = %group, member = %outcome.id, error = %err, "a group member's recorded outcome is not signed by an accepted key; failing the group");
                let refused = MemberOutcome {
                    state: TaskState::Failure,
                    output: None,
                    error: Some(format!("its recorded outcome is refused: {err}")),
                    sig: None,
                    ..outcome
                };
                (refused, true)
            }
        }
    };
    match status {
        GroupStatus::Complete(record, outcomes) => {
            let mut first_refused = None;
            let mut checked = Vec::with_capacity(outcomes.len());
            for outcome in outcomes {
                let (outcome, refused) = check(record.id, outcome);
                if refused && first_refused.is_none() {
                    first_refused = Some(outcome.clone());
                }
                checked.push(outcome);
            }
            match first_refused {
                // A settled group's callback sees every outcome, the refused as failures.
                Some(refused) if !record.settled => GroupStatus::Failed(record, Box::new(refused)),
                _ => GroupStatus::Complete(record, checked),
            }
        }
        GroupStatus::Failed(record, failed) => {
            let (failed, _) = check(record.id, *failed);
            GroupStatus::Failed(record, Box::new(failed))
        }
        other => other,
    }
}

/// The associated data a member's sealed output is bound to.
fn member_binding(group: TaskId, index: u32) -> Vec<u8> {
    format!("{group}\nmember {index}").into_bytes()
}

/// What follows a group report: nothing yet, its failure, or its next step with every output,
/// sent in the trace of the member whose report (`trace`) decided it.
fn group_continuation(status: GroupStatus, trace: Trace) -> Option<Continuation> {
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
            trace,
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
        trace,
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
