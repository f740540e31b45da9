//! The scenarios, each run on the in-memory broker, Redis and PostgreSQL (see `on_every_broker!`).

use std::time::Duration;

use serde_json::json;
use taskq_core::{
    workflow::{chain, group, Ending, Finished, Group, Signature, WorkflowKind},
    Client, Envelope, Error, TaskResult, TaskState,
};

use crate::{
    start_worker, start_worker_with,
    tasks::{
        runs, wait_for_runs, Add, Deep, Note, Number, Repeat, Sleep, Square, SquareInput, Sum,
        Tally,
    },
};

const WAIT: Duration = Duration::from_secs(30);

/// Lets a late duplicate show itself before runs are counted.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

pub(crate) async fn typed_chain_of_three(client: Client, broker: &str) {
    let label = format!("{broker}-chain-of-three");
    let worker = start_worker(&client);
    let sent = client
        .send_chain(
            chain(Number {
                label: label.clone(),
                n: 3,
            })
            .then(Add::step(&label, 4))
            .then(SquareInput {
                label: label.clone(),
                n: 0,
            }),
        )
        .await
        .unwrap();
    assert_eq!(sent.wait(WAIT).await.unwrap(), 49);
    settle().await;
    assert_eq!(
        runs(&label),
        [json!(3), json!(3), json!(7)],
        "each step once, in order, fed by its predecessor"
    );
    let record = client
        .workflow(sent.id())
        .await
        .unwrap()
        .expect("the chain's record");
    assert_eq!(record.kind, WorkflowKind::Chain);
    assert_eq!(record.members.len(), 3);
    assert_eq!(*record.members.last().unwrap(), sent.last().id());
    worker.stop().await.unwrap();
}

pub(crate) async fn group_of_a_hundred_with_one_failure(client: Client, broker: &str) {
    let label = format!("{broker}-group-of-a-hundred");
    let worker = start_worker(&client);
    let members = (0..100).map(|n| Square {
        fail_on: Some(42),
        ..Square::of(&label, n)
    });
    let sent = client.send_group(group(members)).await.unwrap();
    let failed_id = sent.members()[42].id();
    match sent.wait(WAIT).await {
        Err(Error::GroupFailed {
            id,
            succeeded,
            failed,
        }) => {
            assert_eq!(id, sent.id());
            assert_eq!(succeeded, 99);
            assert_eq!(failed.len(), 1);
            assert_eq!((failed[0].0, failed[0].1), (failed_id, TaskState::Failure));
            assert!(failed[0].2.contains("refusing 42"), "{}", failed[0].2);
        }
        other => panic!("expected the group to report one failure, got {other:?}"),
    }
    let outcomes = sent.wait_all(WAIT).await;
    for (n, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Ok(square) => assert_eq!(*square, (n * n) as i64),
            Err(err) => assert_eq!(n, 42, "{err}"),
        }
    }
    let states = sent.states().await.unwrap();
    assert_eq!(
        states.iter().filter(|s| **s == TaskState::Success).count(),
        99
    );
    worker.stop().await.unwrap();
}

pub(crate) async fn chord_of_a_thousand_calls_back_once(client: Client, broker: &str) {
    let label = format!("{broker}-chord-members");
    let callback = format!("{broker}-chord-callback");
    let worker = start_worker(&client);
    let sent = client
        .send_chain(group((0..1000).map(|n| Square::of(&label, n))).then(Sum::callback(&callback)))
        .await
        .unwrap();
    let expected: i64 = (0..1000i64).map(|n| n * n).sum();
    assert_eq!(sent.wait(WAIT).await.unwrap(), expected);
    settle().await;
    let calls = runs(&callback);
    assert_eq!(calls.len(), 1, "the callback runs exactly once");
    let seen: Vec<i64> = serde_json::from_value(calls[0].clone()).unwrap();
    assert_eq!(
        seen,
        (0..1000i64).map(|n| n * n).collect::<Vec<_>>(),
        "every output, in member order"
    );
    assert_eq!(runs(&label).len(), 1000);
    let record = client
        .workflow(sent.id())
        .await
        .unwrap()
        .expect("the chord's record");
    assert_eq!(record.kind, WorkflowKind::Chord);
    assert_eq!(record.members.len(), 1000);
    worker.stop().await.unwrap();
}

pub(crate) async fn retried_member_counts_once(client: Client, broker: &str) {
    let label = format!("{broker}-retried-member");
    let callback = format!("{broker}-retried-callback");
    let worker = start_worker(&client);
    let members = (0..10).map(|n| Square {
        flaky: if n == 3 { 2 } else { 0 },
        ..Square::of(&label, n)
    });
    let sent = client
        .send_chain(group(members).then(Sum::callback(&callback)))
        .await
        .unwrap();
    assert_eq!(
        sent.wait(WAIT).await.unwrap(),
        (0..10).map(|n| n * n).sum::<i64>()
    );
    settle().await;
    let threes = runs(&label).iter().filter(|n| **n == json!(3)).count();
    assert_eq!(threes, 3, "two failed attempts, then success");
    let calls = runs(&callback);
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].as_array().unwrap().len(),
        10,
        "the retried member counted once"
    );
    worker.stop().await.unwrap();
}

pub(crate) async fn failed_member_fails_the_chord(client: Client, broker: &str) {
    let label = format!("{broker}-failing-member");
    let callback = format!("{broker}-failing-callback");
    let worker = start_worker(&client);
    let members = (0..10).map(|n| Square {
        fail_on: Some(5),
        ..Square::of(&label, n)
    });
    let chord = group(members);
    let sent = client
        .send_chain(chord.then(Sum::callback(&callback)))
        .await
        .unwrap();
    let record = client.workflow(sent.id()).await.unwrap().unwrap();
    let failed_member = record.members[5];
    match sent.wait(WAIT).await {
        Err(Error::TaskFailed { state, message, .. }) => {
            assert_eq!(state, TaskState::Failure);
            assert!(
                message.contains(&failed_member.to_string()),
                "names the member: {message}"
            );
            assert!(message.contains("refusing 5"), "{message}");
        }
        other => panic!("expected the chord to fail, got {other:?}"),
    }
    settle().await;
    assert!(runs(&callback).is_empty(), "the callback never runs");
    // The chord's FAILURE is stored before its member is dead-lettered (results land before
    // the settle), so the dead letter may follow a moment later.
    let deadline = tokio::time::Instant::now() + WAIT;
    let dead = loop {
        let dead = client
            .inspector()
            .dead_letters(taskq_core::DEFAULT_QUEUE, taskq_core::Page::first(10))
            .await
            .unwrap();
        if !dead.is_empty() || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.len(), 1, "the failed member is a dead letter");
    worker.stop().await.unwrap();
}

pub(crate) async fn callbacks_on_success_and_failure(client: Client, broker: &str) {
    let label = format!("{broker}-callback-tasks");
    let on_success = format!("{broker}-on-success");
    let on_failure = format!("{broker}-on-failure");
    let worker = start_worker(&client);
    let note = Note::callback;
    let ok = client
        .enqueue(Number {
            label: label.clone(),
            n: 5,
        })
        .on_success(note(&on_success))
        .on_failure(note(&on_failure))
        .await
        .unwrap();
    let failing = client
        .enqueue(Square {
            fail_on: Some(1),
            ..Square::of(&label, 1)
        })
        .on_success(note(&on_success))
        .on_failure(note(&on_failure))
        .await
        .unwrap();
    assert_eq!(ok.wait(WAIT).await.unwrap(), 5);
    assert!(failing.wait(WAIT).await.unwrap_err().is_task_failure());
    wait_for_runs(&[&on_success, &on_failure]).await;
    settle().await;
    assert_eq!(
        runs(&on_success),
        [json!(5)],
        "on_success gets the output, once"
    );
    let failures = runs(&on_failure);
    assert_eq!(
        failures.len(),
        1,
        "on_failure fires once, for the failing task only"
    );
    assert_eq!(failures[0]["id"], json!(failing.id()));
    assert_eq!(failures[0]["state"], json!("FAILURE"));
    assert_eq!(failures[0]["task"], json!("wf.square"));
    assert!(failures[0]["error"]
        .as_str()
        .unwrap()
        .contains("refusing 1"));
    worker.stop().await.unwrap();
}

pub(crate) async fn chain_through_a_chord_and_group_of_chains(client: Client, broker: &str) {
    let label = format!("{broker}-nested");
    let worker = start_worker(&client);
    // A chain whose middle step is a group: 2 -> [2+0 .. 2+4] -> sum.
    let through_chord = chain(Number {
        label: label.clone(),
        n: 2,
    })
    .then_chord((0..5).map(|i| Add::step(&label, i)), Sum::callback(&label));
    let sent = client.send_chain(through_chord).await.unwrap();
    assert_eq!(sent.wait(WAIT).await.unwrap(), 20);
    // A group whose members are chains: n -> n*n, summed.
    let chains = (1..=3).map(|n| {
        chain(Number {
            label: label.clone(),
            n,
        })
        .then(SquareInput {
            label: label.clone(),
            n: 0,
        })
    });
    let sent = client
        .send_chain(Group::of_chains(chains).then(Sum::callback(&label)))
        .await
        .unwrap();
    assert_eq!(sent.wait(WAIT).await.unwrap(), 1 + 4 + 9);
    let members = client.workflow(sent.id()).await.unwrap().unwrap().members;
    assert_eq!(
        members.len(),
        3,
        "a member chain is represented by its last step"
    );
    for member in members {
        let record = client.result(member).await.unwrap().unwrap();
        assert_eq!(record.task, "wf.square_input");
    }
    worker.stop().await.unwrap();
}

pub(crate) async fn revoking_a_workflow_ends_its_pending_steps(client: Client, broker: &str) {
    let label = format!("{broker}-revoked");
    let worker = start_worker(&client);
    let sent = client
        .send_chain(
            chain(Sleep {
                label: label.clone(),
                ms: 1000,
            })
            .then_ignoring(Number {
                label: label.clone(),
                n: 1,
            })
            .then(Add::step(&label, 1)),
        )
        .await
        .unwrap();
    for _ in 0..200 {
        if !runs(&label).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.revoke_workflow(sent.id(), false).await.unwrap(), 3);
    match sent.wait(WAIT).await {
        Err(Error::TaskFailed { state, .. }) => assert_eq!(state, TaskState::Revoked),
        other => panic!("expected the last step to end REVOKED, got {other:?}"),
    }
    settle().await;
    assert_eq!(
        runs(&label),
        [json!(1000)],
        "only the step already running ran"
    );
    worker.stop().await.unwrap();
}

pub(crate) async fn failed_step_ends_the_rest_of_the_chain(client: Client, broker: &str) {
    let label = format!("{broker}-failed-step");
    let worker = start_worker(&client);
    let first = Square {
        fail_on: Some(1),
        ..Square::of(&label, 1)
    };
    let sent = client
        .send_chain(
            chain(first)
                .then(SquareInput {
                    label: label.clone(),
                    n: 0,
                })
                .then(SquareInput {
                    label: label.clone(),
                    n: 0,
                }),
        )
        .await
        .unwrap();
    let steps = client.workflow(sent.id()).await.unwrap().unwrap().members;
    match sent.wait(WAIT).await {
        Err(Error::TaskFailed { state, message, .. }) => {
            assert_eq!(state, TaskState::Failure);
            assert!(
                message.contains(&steps[0].to_string()),
                "names the failed step: {message}"
            );
        }
        other => panic!("expected the chain to fail, got {other:?}"),
    }
    let middle = client.result(steps[1]).await.unwrap().unwrap();
    assert_eq!(
        middle.state,
        TaskState::Failure,
        "every step after the failure ends"
    );
    settle().await;
    assert_eq!(runs(&label), [json!(1)], "no step after the failed one ran");
    worker.stop().await.unwrap();
}

/// A worker killed after continuing a workflow but before acknowledging the message makes the
/// next delivery continue it again: the next step (and a chord's callback) is still sent once.
pub(crate) async fn continuing_twice_sends_the_next_step_once(client: Client, broker: &str) {
    let label = format!("{broker}-continued-twice");
    let ttl = Duration::from_secs(60);
    client
        .send_chain(
            chain(Number {
                label: label.clone(),
                n: 3,
            })
            .then(Add::step(&label, 1)),
        )
        .await
        .unwrap();
    let first = take_pending(&client, 1).await.remove(0);
    let flow = taskq_core::workflow::Flow::of(&first)
        .unwrap()
        .expect("a chain step carries its flow");
    let finished = Finished::new(first.id, &first.task, flow, Ending::Succeeded(json!(3)));
    for _ in 0..2 {
        client
            .advance_workflows(vec![finished.clone()], ttl)
            .await
            .unwrap();
    }
    let next = take_pending(&client, 1).await;
    assert_eq!(next[0].task, "wf.add", "the second step is enqueued once");
    assert_eq!(
        next[0].args.get(),
        r#"{"add":1,"label":"#.to_owned() + &format!("{label:?}") + r#","n":3}"#
    );

    // The same for a chord whose members report twice.
    let chord = client
        .send_chain(group((0..2).map(|n| Square::of(&label, n))).then(Sum::callback(&label)))
        .await
        .unwrap();
    let members = take_pending(&client, 2).await;
    let finished: Vec<Finished> = members
        .iter()
        .map(|member| {
            let n: i64 = serde_json::from_str::<serde_json::Value>(member.args.get()).unwrap()["n"]
                .as_i64()
                .unwrap();
            let flow = taskq_core::workflow::Flow::of(member).unwrap().unwrap();
            Finished::new(
                member.id,
                &member.task,
                flow,
                Ending::Succeeded(json!(n * n)),
            )
        })
        .collect();
    for _ in 0..2 {
        client
            .advance_workflows(finished.clone(), ttl)
            .await
            .unwrap();
    }
    let callback = take_pending(&client, 1).await.remove(0);
    assert_eq!(callback.task, "wf.sum", "the callback is enqueued once");
    assert_eq!(callback.id, chord.last().id());
}

/// A chain step whose SUCCESS is already stored (its worker died between the result write and
/// the ack) is not run again when it is delivered: its workflow continues from the stored
/// output.
pub(crate) async fn a_delivered_step_that_already_succeeded_is_not_run_again(
    client: Client,
    broker: &str,
) {
    let label = format!("{broker}-already-succeeded");
    let sent = client
        .send_chain(
            chain(Number {
                label: label.clone(),
                n: 3,
            })
            .then(Add::step(&label, 1)),
        )
        .await
        .unwrap();
    let first = client.workflow(sent.id()).await.unwrap().unwrap().members[0];
    let stored = TaskResult::new(first, "wf.number", TaskState::Success, chrono::Utc::now())
        .with_result(serde_json::value::to_raw_value(&3).unwrap());
    client
        .backend()
        .store(&stored, Duration::from_secs(60))
        .await
        .unwrap();
    let worker = start_worker(&client);
    assert_eq!(sent.wait(WAIT).await.unwrap(), 4);
    settle().await;
    assert_eq!(runs(&label), [json!(3)], "only the second step ran");
    worker.stop().await.unwrap();
}

/// Takes the default queue's pending messages (asserting how many) as a worker would.
async fn take_pending(client: &Client, count: usize) -> Vec<Envelope> {
    let taker = taskq_core::WorkerId::generate();
    let queues = [taskq_core::DEFAULT_QUEUE.to_owned()];
    let held = client
        .broker()
        .fetch(&taker, &queues, 100, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(held.len(), count, "pending messages");
    client.broker().ack(&taker, &held).await.unwrap();
    held.iter()
        .map(|delivery| Envelope::decode(delivery.payload(), usize::MAX).unwrap())
        .collect()
}

/// A settled chord calls back once every member ended, failed ones included, with each
/// outcome in member order.
pub(crate) async fn settled_chord_runs_with_every_outcome(client: Client, broker: &str) {
    let label = format!("{broker}-settled-members");
    let callback = format!("{broker}-settled-callback");
    let worker = start_worker(&client);
    let members = (0..6).map(|n| Square {
        fail_on: Some(2),
        ..Square::of(&label, n)
    });
    let sent = client
        .send_chain(group(members).then_settled(Tally {
            label: callback.clone(),
            outcomes: Vec::new(),
        }))
        .await
        .unwrap();
    assert_eq!(sent.wait(WAIT).await.unwrap(), (5, 1));
    settle().await;
    let calls = runs(&callback);
    assert_eq!(calls.len(), 1);
    let outcomes = calls[0].as_array().unwrap();
    assert_eq!(outcomes[3], json!({"ok": 9}));
    assert_eq!(outcomes[2]["failed"]["task"], json!("wf.square"));
    assert_eq!(outcomes[2]["failed"]["state"], json!("FAILURE"));
    assert_eq!(outcomes[2]["failed"]["error"], json!("refusing 2"));
    worker.stop().await.unwrap();
}

/// A member its workers kept dying on (dead-lettered as `worker_lost` by a reaper) fails its
/// chord like any failure: the callback never runs and ends naming it.
pub(crate) async fn a_member_lost_as_poison_fails_the_chord(client: Client, broker: &str) {
    let label = format!("{broker}-poisoned-member");
    let callback = format!("{broker}-poisoned-callback");
    let sent = client
        .send_chain(group((0..3).map(|n| Square::of(&label, n))).then(Sum::callback(&callback)))
        .await
        .unwrap();
    // A worker that took one member and vanished.
    let lost = taskq_core::WorkerId::generate();
    let queues = [taskq_core::DEFAULT_QUEUE.to_owned()];
    let membership = client.broker().membership().unwrap();
    membership
        .heartbeat(&lost, &queues, Duration::from_millis(200))
        .await
        .unwrap();
    let held = client
        .broker()
        .fetch(&lost, &queues, 1, Duration::ZERO)
        .await
        .unwrap();
    let poisoned = Envelope::decode(held[0].payload(), usize::MAX).unwrap().id;
    // A reaper that allows no redelivery dead-letters it as worker_lost at once.
    let worker = start_worker_with(&client, |config| config.max_redeliveries = 0);
    match sent.wait(WAIT).await {
        Err(Error::TaskFailed { state, message, .. }) => {
            assert_eq!(state, TaskState::Failure);
            assert!(message.contains(&poisoned.to_string()), "{message}");
            assert!(message.contains("worker_lost"), "{message}");
        }
        other => panic!("expected the chord to fail, got {other:?}"),
    }
    settle().await;
    assert!(runs(&callback).is_empty(), "the callback never runs");
    assert_eq!(runs(&label).len(), 2, "the other members ran");
    worker.stop().await.unwrap();
}

/// A member that fails ends its chord at once: the callback's waiter learns it while the
/// other members are still running.
pub(crate) async fn a_failed_member_fails_the_chord_before_the_others_finish(
    client: Client,
    broker: &str,
) {
    let label = format!("{broker}-fail-fast");
    let worker = start_worker(&client);
    let slow = Signature::by_name("wf.sleep", json!({"label": label, "ms": 3000}));
    let failing = Signature::by_name("wf.square", json!({"label": label, "n": 7, "fail_on": 7}));
    let callback = Signature::by_name("wf.sum", json!({"label": label})).input("values");
    let slow_id = slow.id;
    let sent = client
        .send_chain(
            Group::<serde_json::Value>::of_signatures([slow, failing]).then_signature(callback),
        )
        .await
        .unwrap();
    match sent.wait(WAIT).await {
        Err(Error::TaskFailed { message, .. }) => {
            assert!(message.contains("refusing 7"), "{message}")
        }
        other => panic!("expected the chord to fail, got {other:?}"),
    }
    let slow_state = client.result(slow_id).await.unwrap().map(|r| r.state);
    assert!(
        !slow_state.is_some_and(|state| state.is_ready()),
        "the chord failed only after the slow member finished ({slow_state:?})"
    );
    worker.stop().await.unwrap();
}

/// A callback whose envelope cannot be built (the task's output makes it larger than the
/// payload limit) never runs: it ends FAILURE saying why, so that its waiter ends instead of
/// waiting for ever.
pub(crate) async fn a_callback_that_cannot_be_sent_ends_failed(client: Client, broker: &str) {
    let client = client.with_max_payload_bytes(4_096);
    let label = format!("{broker}-unsendable-callback");
    let worker = start_worker(&client);
    let callback = Note::callback(&label);
    let callback_id = callback.id;
    let big = client
        .enqueue(Repeat {
            label: label.clone(),
            n: 10_000,
        })
        .on_success(callback)
        .await
        .unwrap();
    assert_eq!(big.wait(WAIT).await.unwrap().len(), 10_000);
    let ended = client
        .result_handle::<()>(callback_id)
        .wait(WAIT)
        .await
        .unwrap_err();
    match ended {
        Error::TaskFailed { state, message, .. } => {
            assert_eq!(state, TaskState::Failure);
            assert!(message.contains("callback not sent"), "{message}");
            assert!(message.contains("exceeds the limit"), "{message}");
        }
        other => panic!("expected the callback to end failed, got {other:?}"),
    }
    assert_eq!(runs(&label).len(), 1, "only the task ran");
    worker.stop().await.unwrap();
}

/// A group whose producer keeps its record for less time than the group takes: each member's
/// report extends the record to the worker's result TTL, so the chord still calls back. Before,
/// the record expired with the producer's TTL and every later report answered "waiting".
pub(crate) async fn a_group_outlives_its_producers_record_ttl(client: Client, broker: &str) {
    let label = format!("{broker}-outlived-ttl");
    let worker = start_worker(&client);
    let producer = client.with_workflow_ttl(Duration::from_secs(2));
    let members = [0, 0, 3_000].map(|ms| Sleep {
        label: label.clone(),
        ms,
    });
    let sent = producer
        .send_chain(group(members).then_signature(Signature::step(&Sum::callback(&label)).unwrap()))
        .await
        .unwrap();
    assert_eq!(sent.wait(WAIT).await.unwrap(), json!(3_000));
    worker.stop().await.unwrap();
}

/// A step whose output nests deeper than JSON is read back (128 levels) cannot pass it on: it
/// ends FAILURE saying so and its `on_failure` runs, instead of a SUCCESS followed by
/// `on_failure`.
pub(crate) async fn an_output_too_deep_to_pass_on_fails_its_step(client: Client, broker: &str) {
    let label = format!("{broker}-too-deep");
    let on_success = format!("{broker}-too-deep-success");
    let on_failure = format!("{broker}-too-deep-failure");
    let worker = start_worker(&client);
    let note = Note::callback;
    let deep = client
        .enqueue(Deep {
            label: label.clone(),
            depth: 200,
        })
        .on_success(note(&on_success))
        .on_failure(note(&on_failure))
        .await
        .unwrap();
    match deep.wait(WAIT).await {
        Err(Error::TaskFailed { state, message, .. }) => {
            assert_eq!(state, TaskState::Failure);
            assert!(message.contains("cannot be passed on"), "{message}");
        }
        other => panic!("expected the step to fail, got {other:?}"),
    }
    wait_for_runs(&[&on_failure]).await;
    settle().await;
    assert_eq!(runs(&on_failure).len(), 1);
    assert!(runs(&on_success).is_empty());
    worker.stop().await.unwrap();
}
