//! Encryption at rest: sealed arguments and results, opened only by holders of the keys.

use std::time::Duration;

use chrono::Utc;
use taskq_core::{Client, DeadReason, Encryption, Envelope, Keyring, OutboundMessage, SigningKey};
use taskq_testkit::RedisServer;

use crate::support::{
    all_tasks, builder, dead_letters_of_default_queue, start_worker, Flaky, Record,
};

fn keys() -> Encryption {
    Encryption::new("k1", [7; 32])
}

/// Arguments and results sit encrypted in a real Redis: the label (argument and result) is
/// nowhere in its keys, the task name is; a client with the keys reads the typed result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_and_results_are_encrypted_at_rest_in_redis() {
    let server = RedisServer::start();
    let plain = taskq::connect(&server.url()).await.unwrap();
    let client = plain.clone().with_encryption(keys());
    let secret = "card-4111-1111-1111-1111";
    let handle = client
        .enqueue(Record {
            label: secret.into(),
            ms: 0,
        })
        .await
        .unwrap();
    let queued = server.dump().await;
    assert!(queued.contains("test.record"), "metadata stays readable");
    assert!(!queued.contains(secret), "arguments are sealed: {queued}");

    let worker = start_worker(all_tasks(builder(&plain)).encryption(keys()));
    assert_eq!(handle.wait(Duration::from_secs(10)).await.unwrap(), secret);
    // The untyped record (what `taskq result` prints) is opened for a client with the keys.
    let record = client.result(handle.id()).await.unwrap().unwrap();
    assert_eq!(
        record.result.unwrap().get(),
        serde_json::to_string(secret).unwrap()
    );
    worker.stop().await.unwrap();
    let stored = server.dump().await;
    assert!(stored.contains("SUCCESS"));
    assert!(!stored.contains(secret), "results are sealed: {stored}");

    // Without the keys, a reader learns the state but not the result.
    let err = plain
        .result_handle::<String>(handle.id())
        .wait(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("encrypted"), "{err}");
}

/// A worker without the keys, or with other keys, and sealed arguments that were changed or
/// moved to another task: each is dead-lettered `undecryptable` and never run.
#[tokio::test(start_paused = true)]
async fn sealed_arguments_that_do_not_open_are_dead_lettered_unrun() {
    let client = Client::in_memory();
    let mut ran = crate::support::log("enc-");
    let worker = start_worker(all_tasks(builder(&client)).encryption(keys()));
    let seal = |envelope: &mut Envelope, keys: &Encryption| {
        let sealed = keys.seal(
            envelope.args.get(),
            &Encryption::associated(envelope.id, &envelope.task),
        );
        envelope.args = serde_json::value::to_raw_value(&sealed).unwrap();
    };
    let envelope = |label: &str| {
        Envelope::new(
            "test.record",
            &serde_json::json!({ "label": label, "ms": 0 }),
            taskq_core::DEFAULT_QUEUE,
            Utc::now(),
        )
        .unwrap()
    };
    let mut other_key = envelope("enc-other-key");
    seal(&mut other_key, &Encryption::new("k2", [9; 32]));
    let mut tampered = envelope("enc-tampered");
    seal(&mut tampered, &keys());
    let text: String = serde_json::from_str(tampered.args.get()).unwrap();
    // One base64 character changed (to another: the ciphertext is random, and may hold an A).
    let at = text.len() - 3;
    let other = if &text[at..at + 1] == "A" { "B" } else { "A" };
    let flipped = format!("{}{other}{}", &text[..at], &text[at + 1..]);
    tampered.args = serde_json::value::to_raw_value(&flipped).unwrap();
    let mut moved = envelope("enc-moved");
    let donor = envelope("enc-donor");
    let mut sealed_for_donor = donor.clone();
    seal(&mut sealed_for_donor, &keys());
    moved.args = sealed_for_donor.args.clone();
    let mut good = envelope("enc-good");
    seal(&mut good, &keys());
    for envelope in [&other_key, &tampered, &moved, &good] {
        let message = OutboundMessage::from_envelope(envelope, 1 << 20).unwrap();
        client.broker().enqueue(vec![message]).await.unwrap();
    }
    assert_eq!(ran.recv().await.as_deref(), Some("enc-good"));
    let dead = dead_letters_of_default_queue(&client, 3).await;
    assert!(
        dead.iter().all(|d| d.reason == DeadReason::Undecryptable),
        "{dead:?}"
    );
    let report = worker.stop().await.unwrap();
    assert_eq!((report.succeeded, report.dead_lettered), (1, 3));
    assert!(ran.try_recv().is_err(), "nothing that did not open ran");

    // A worker with no keys refuses sealed arguments too.
    let client = Client::in_memory();
    let worker = start_worker(all_tasks(builder(&client)));
    let mut sealed = envelope("enc-no-keys");
    seal(&mut sealed, &keys());
    let message = OutboundMessage::from_envelope(&sealed, 1 << 20).unwrap();
    client.broker().enqueue(vec![message]).await.unwrap();
    let err = client
        .result_handle::<String>(sealed.id)
        .wait(Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("undecryptable"), "{err}");
    worker.stop().await.unwrap();
}

/// Sealed and signed together, required signatures: retries stay sealed and keep the
/// producer's signature.
#[tokio::test(start_paused = true)]
async fn sealed_and_signed_tasks_retry_and_succeed() {
    let plain = Client::in_memory();
    let signing = SigningKey::new("s1", vec![3; 32]);
    let client = plain
        .clone()
        .with_encryption(keys())
        .with_signing_key(signing.clone());
    let worker = start_worker(
        all_tasks(builder(&plain))
            .encryption(keys())
            .verify_signatures(Keyring::new(vec![signing]).required()),
    );
    let flaky = client.enqueue(Flaky { fail_times: 1 }).await.unwrap();
    assert_eq!(flaky.wait(Duration::from_secs(60)).await.unwrap(), 1);
    let report = worker.stop().await.unwrap();
    assert_eq!(
        (report.succeeded, report.retried, report.dead_lettered),
        (1, 1, 0)
    );
}

/// Sealed arguments of the wrong shape for their task: the error taskq writes into the result
/// record and the dead letter names the problem without quoting the decrypted value (serde's
/// own message would: `invalid type: string "4111-...", expected u64`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_about_sealed_arguments_do_not_quote_them() {
    let server = RedisServer::start();
    let plain = taskq::connect(&server.url()).await.unwrap();
    let client = plain.clone().with_encryption(keys());
    let worker = start_worker(all_tasks(builder(&client)).encryption(keys()));
    let card = "4111-1111-1111-1111";
    let handle = client
        .enqueue_by_name(
            "test.record",
            &serde_json::json!({"label": "x", "ms": card}),
        )
        .await
        .unwrap();
    let err = client
        .result_handle::<String>(handle.id())
        .wait(Duration::from_secs(20))
        .await
        .unwrap_err();
    let said = err.to_string();
    assert!(
        said.contains("invalid arguments for `test.record`"),
        "{said}"
    );
    assert!(said.contains("wrong shape"), "{said}");
    assert!(
        !said.contains("4111"),
        "the result quotes sealed data: {said}"
    );
    let dead = dead_letters_of_default_queue(&client, 1).await;
    let dead_error = dead[0].error.clone().unwrap_or_default();
    assert!(dead_error.contains("withheld"), "{dead_error}");
    assert!(
        !dead_error.contains("4111"),
        "the dead letter quotes sealed data: {dead_error}"
    );
    worker.stop().await.unwrap();

    // Plain arguments keep serde's whole message: it helps and reveals nothing new.
    let worker = start_worker(all_tasks(builder(&plain)));
    let handle = plain
        .enqueue_by_name(
            "test.record",
            &serde_json::json!({"label": "x", "ms": "soon"}),
        )
        .await
        .unwrap();
    let err = plain
        .result_handle::<String>(handle.id())
        .wait(Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"soon\""), "{err}");
    worker.stop().await.unwrap();
}
