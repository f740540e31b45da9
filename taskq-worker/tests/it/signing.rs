//! Signed messages: a worker that verifies runs what a key it accepts signed (retries included)
//! and dead-letters everything else as `bad_signature` without running it.

use std::time::Duration;

use chrono::Utc;
use taskq_core::{Client, DeadReason, Envelope, Keyring, OutboundMessage, SigningKey, TaskState};

use crate::support::{
    all_tasks, builder, dead_letters_of_default_queue, log, start_worker, Flaky, Stats,
};

fn key(id: &str, byte: u8) -> SigningKey {
    SigningKey::new(id, vec![byte; 32])
}

/// An envelope of `Record` with `label`, as a producer would send it to the default queue.
fn record_envelope(label: &str) -> Envelope {
    Envelope::new(
        "test.record",
        &serde_json::json!({ "label": label, "ms": 0 }),
        taskq_core::DEFAULT_QUEUE,
        Utc::now(),
    )
    .unwrap()
}

async fn send(client: &Client, envelope: &Envelope) {
    let message = OutboundMessage::from_envelope(envelope, 1 << 20).unwrap();
    client.broker().enqueue(vec![message]).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn signed_tasks_run_and_their_retries_keep_the_signature() {
    let plain = Client::in_memory();
    let client = plain.clone().with_signing_key(key("k1", 1));
    let keyring = Keyring::new(vec![key("k1", 1)]).required();
    let worker = start_worker(all_tasks(builder(&plain)).verify_signatures(keyring));
    let stats = client.enqueue(Stats { values: vec![2.0] }).await.unwrap();
    assert_eq!(stats.wait(Duration::from_secs(5)).await.unwrap().count, 1);
    let flaky = client.enqueue(Flaky { fail_times: 1 }).await.unwrap();
    assert_eq!(flaky.wait(Duration::from_secs(60)).await.unwrap(), 1);
    let report = worker.stop().await.unwrap();
    assert_eq!((report.succeeded, report.dead_lettered), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn unsigned_tampered_unknown_and_retired_keys_are_dead_lettered_unrun() {
    let client = Client::in_memory();
    let mut ran = log("sig-");
    let (current, old, stranger) = (key("current", 1), key("old", 2), key("stranger", 3));
    let keyring = Keyring::new(vec![
        current.clone(),
        old.clone()
            .retired_after(Utc::now() - chrono::Duration::hours(1)),
    ])
    .required();
    let worker = start_worker(all_tasks(builder(&client)).verify_signatures(keyring));

    let unsigned = record_envelope("sig-unsigned");
    let mut tampered = record_envelope("sig-tampered");
    current.sign(&mut tampered);
    tampered.args =
        serde_json::value::to_raw_value(&serde_json::json!({ "label": "sig-evil", "ms": 0 }))
            .unwrap();
    let mut unknown = record_envelope("sig-unknown");
    stranger.sign(&mut unknown);
    let mut retired = record_envelope("sig-retired");
    old.sign(&mut retired);
    let mut good = record_envelope("sig-good");
    current.sign(&mut good);
    for envelope in [&unsigned, &tampered, &unknown, &retired, &good] {
        send(&client, envelope).await;
    }

    let dead = dead_letters_of_default_queue(&client, 4).await;
    assert!(
        dead.iter().all(|d| d.reason == DeadReason::BadSignature),
        "{dead:?}"
    );
    let mut refused: Vec<_> = dead.iter().filter_map(|d| d.id).collect();
    refused.sort();
    let mut expected = vec![unsigned.id, tampered.id, unknown.id, retired.id];
    expected.sort();
    assert_eq!(refused, expected);
    let errors: Vec<&str> = dead.iter().filter_map(|d| d.error.as_deref()).collect();
    for needle in ["not signed", "does not match", "`stranger`", "retired"] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{needle}: {errors:?}"
        );
    }
    // Whoever waits for a refused task learns it ended.
    let ended = client.backend().get(tampered.id).await.unwrap().unwrap();
    assert_eq!(ended.state, TaskState::Failure);

    assert_eq!(ran.recv().await.as_deref(), Some("sig-good"));
    let report = worker.stop().await.unwrap();
    assert_eq!((report.succeeded, report.dead_lettered), (1, 4));
    assert!(ran.try_recv().is_err(), "nothing refused ran");
}

#[tokio::test(start_paused = true)]
async fn a_keyring_not_yet_required_runs_unsigned_messages_but_not_bad_ones() {
    let client = Client::in_memory();
    let mut ran = log("opt-");
    let keyring = Keyring::new(vec![key("k1", 1)]);
    let worker = start_worker(all_tasks(builder(&client)).verify_signatures(keyring));
    send(&client, &record_envelope("opt-unsigned")).await;
    let mut wrong = record_envelope("opt-wrong");
    key("k1", 9).sign(&mut wrong);
    send(&client, &wrong).await;
    assert_eq!(ran.recv().await.as_deref(), Some("opt-unsigned"));
    let report = worker.stop().await.unwrap();
    assert_eq!((report.succeeded, report.dead_lettered), (1, 1));
    assert!(ran.try_recv().is_err());
}

/// The reaper acts on a message's content too: a poison message's workflow (here an
/// `on_failure` callback with an attacker's arguments) must not run unless its signature
/// holds, or the worker's client would sign and send what nobody with a key sent. Unsigned, in
/// a lost worker's processing list, at the redelivery cap, against a worker that requires
/// signatures, on a real Redis: it ends FAILURE (its waiter sees it) and its callback never
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_does_not_continue_the_workflow_of_an_unsigned_poison_message() {
    let server = taskq_testkit::RedisServer::start();
    let plain = taskq::connect(&server.url()).await.unwrap();
    let mut ran = log("reaped-");
    let callback = taskq_core::workflow::Signature::by_name(
        "test.record",
        serde_json::json!({ "label": "reaped-callback", "ms": 0 }),
    );
    let callback_id = callback.id;
    let handle = plain
        .enqueue_by_name(
            "test.record",
            &serde_json::json!({ "label": "reaped-poison", "ms": 0 }),
        )
        .on_failure(callback)
        .await
        .unwrap();
    crate::support::vanished_worker_holding(&plain, 1).await;

    let signing = key("k1", 1);
    let worker = start_worker(
        all_tasks(builder(&plain.clone().with_signing_key(signing.clone())))
            .verify_signatures(Keyring::new(vec![signing]).required())
            .configure(|config| config.max_redeliveries = 0),
    );
    crate::support::assert_ended_in(
        handle.wait(Duration::from_secs(30)).await,
        TaskState::Failure,
    );
    // The callback would be sent right after that record is written; give it time to run.
    tokio::time::sleep(Duration::from_secs(2)).await;
    worker.stop().await.unwrap();
    assert!(ran.try_recv().is_err(), "the attacker's callback ran");
    let callback = plain.backend().get(callback_id).await.unwrap();
    assert!(callback.is_none(), "the callback was sent: {callback:?}");
}
