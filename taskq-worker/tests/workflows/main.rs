//! Workflows (chain, group, chord, callbacks) end to end on the in-memory broker, on a real
//! redis-server and on a real PostgreSQL server: every scenario runs on each, with a worker
//! running in the same process.

mod scenarios;
mod tasks;

use std::{future::Future, time::Duration};

use taskq_core::Client;
use taskq_testkit::{PostgresServer, RedisServer};
use taskq_worker::{RunningWorker, Worker, WorkerBuilder, WorkerConfig};

/// A worker running every workflow test task, in the background.
pub(crate) fn start_worker(client: &Client) -> RunningWorker {
    start_worker_with(client, |_| {})
}

/// As [`start_worker`], with settings changed by `configure`.
pub(crate) fn start_worker_with(
    client: &Client,
    configure: impl FnOnce(&mut WorkerConfig),
) -> RunningWorker {
    spawn_worker(
        Worker::builder(client.clone())
            .concurrency(32)
            .liveness(Duration::from_millis(200), Duration::from_secs(1))
            .configure(configure),
    )
}

/// A worker running every workflow test task, built from `builder` (for what
/// [`WorkerConfig`] does not hold: keys, signatures).
pub(crate) fn spawn_worker(builder: WorkerBuilder) -> RunningWorker {
    tasks::all_tasks(builder)
        .build()
        .expect("valid worker")
        .start()
}

/// Runs `scenario` with a client on the in-memory broker.
async fn on_memory<F, Fut>(scenario: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    scenario(Client::in_memory()).await;
}

/// Runs `scenario` with a client on a fresh redis-server.
async fn on_redis<F, Fut>(scenario: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    let server = RedisServer::start();
    let client = taskq::connect(&server.url())
        .await
        .expect("connect to the test redis-server");
    scenario(client).await;
}

/// Runs `scenario` with a client on a fresh schema of this binary's PostgreSQL server.
async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = ()>,
{
    static SERVER: std::sync::OnceLock<PostgresServer> = std::sync::OnceLock::new();
    let server = SERVER.get_or_init(PostgresServer::start);
    let client = taskq::connect(&format!("{}&migrate=auto", server.fresh_url()))
        .await
        .expect("connect to the test PostgreSQL server");
    scenario(client).await;
}

/// One test per scenario and broker.
macro_rules! on_every_broker {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::on_memory(|client| super::scenarios::$scenario(client, "memory")).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::on_redis(|client| super::scenarios::$scenario(client, "redis")).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::on_postgres(|client| super::scenarios::$scenario(client, "postgres")).await;
                }
            )*
        }
    };
}

on_every_broker!(
    typed_chain_of_three,
    group_of_a_hundred_with_one_failure,
    chord_of_a_thousand_calls_back_once,
    retried_member_counts_once,
    failed_member_fails_the_chord,
    callbacks_on_success_and_failure,
    chain_through_a_chord_and_group_of_chains,
    revoking_a_workflow_ends_its_pending_steps,
    failed_step_ends_the_rest_of_the_chain,
    continuing_twice_sends_the_next_step_once,
    a_delivered_step_that_already_succeeded_is_not_run_again,
    settled_chord_runs_with_every_outcome,
    a_member_lost_as_poison_fails_the_chord,
    a_failed_member_fails_the_chord_before_the_others_finish,
    a_callback_that_cannot_be_sent_ends_failed,
    a_group_outlives_its_producers_record_ttl,
    an_output_too_deep_to_pass_on_fails_its_step,
);

/// With encryption keys, a group's stored member outputs are sealed like results, and the
/// callback still receives them plain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_outputs_rest_sealed_when_results_are_encrypted() {
    use taskq_core::workflow::group;
    let server = RedisServer::start();
    let keys = taskq_core::Encryption::new("k1", [9; 32]);
    let client = taskq::connect(&server.url())
        .await
        .expect("connect")
        .with_encryption(keys.clone());
    let worker = spawn_worker(Worker::builder(client.clone()).encryption(keys));
    let label = "sealed-members";
    let sent = client
        .send_chain(
            group((1..=5).map(|n| tasks::Square::of(label, n)))
                .then(tasks::Sum::callback("sealed-callback")),
        )
        .await
        .unwrap();
    assert_eq!(sent.wait(Duration::from_secs(30)).await.unwrap(), 55);
    let mut conn = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stored: Vec<String> = ::redis::cmd("HVALS")
        .arg(format!("taskq:workflow:{{{}}}:done", sent.id()))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored.len(), 5);
    for outcome in stored {
        let outcome: serde_json::Value = serde_json::from_str(&outcome).unwrap();
        let output = outcome["output"].as_str().unwrap_or_default();
        assert!(output.starts_with("taskq-enc:v1:k1:"), "{outcome}");
    }
    worker.stop().await.unwrap();
}

/// A step whose arguments do not open is dead-lettered unrun, and what follows it ends too (its
/// envelope was readable, so its workflow can be trusted): the chain's waiter learns why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecryptable_step_ends_the_rest_of_its_chain() {
    use taskq_core::workflow::chain;
    let client = Client::in_memory().with_encryption(taskq_core::Encryption::new("k1", [1; 32]));
    let worker = spawn_worker(
        Worker::builder(client.clone()).encryption(taskq_core::Encryption::new("k2", [2; 32])),
    );
    let sent = client
        .send_chain(
            chain(tasks::Number {
                label: "undecryptable".into(),
                n: 1,
            })
            .then(tasks::Add::step("undecryptable", 1)),
        )
        .await
        .unwrap();
    match sent.wait(Duration::from_secs(30)).await {
        Err(taskq_core::Error::TaskFailed { message, .. }) => {
            assert!(message.contains("undecryptable"), "{message}")
        }
        other => panic!("expected the chain to fail, got {other:?}"),
    }
    assert!(tasks::runs("undecryptable").is_empty(), "nothing ran");
    worker.stop().await.unwrap();
}

/// A bounded queue with less room than a workflow's next group needs: the members that fit
/// are sent, the rest end FAILURE naming the bound, so the chord fails visibly; and the worker
/// (concurrency 1) keeps draining, so a task enqueued afterwards runs. Before, the worker
/// retried the full queue inside its only settle path for ever and stopped fetching.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_fails_the_workflow_and_the_worker_keeps_draining() {
    use taskq_core::workflow::chain;
    let server = RedisServer::start();
    let url = format!("{}?max_queue_length=5", server.url());
    let client = taskq_redis::client(taskq_redis::RedisConfig::new(url))
        .await
        .expect("connect");
    // One message in hand at a time: a completion waiting in the settle path holds the only
    // permit, so nothing more is fetched until it settles.
    let worker = start_worker_with(&client, |config| {
        config.concurrency = 1;
        config.prefetch = 0;
    });
    let label = "bounded-chord";
    let sent = client
        .send_chain(
            chain(tasks::Number {
                label: label.into(),
                n: 2,
            })
            .then_chord(
                (0..8).map(|i| tasks::Add::step(label, i)),
                tasks::Sum::callback(label),
            ),
        )
        .await
        .unwrap();
    match sent.wait(Duration::from_secs(30)).await {
        Err(taskq_core::Error::TaskFailed { message, .. }) => {
            assert!(message.contains("is full (5 messages)"), "{message}");
        }
        other => panic!("expected the chord to fail on the bound, got {other:?}"),
    }
    // The members that fit fill the queue; it has room again only if the worker drains it.
    let mut later = None;
    for _ in 0..600 {
        let sent = client
            .enqueue(tasks::Number {
                label: "bounded-later".into(),
                n: 7,
            })
            .await;
        match sent {
            Ok(handle) => {
                later = Some(handle);
                break;
            }
            Err(err) if err.is_transient() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(err) => panic!("{err}"),
        }
    }
    let later = later.expect("the queue never had room again: the worker stopped draining");
    assert_eq!(later.wait(Duration::from_secs(30)).await.unwrap(), 7);
    worker.stop().await.unwrap();
}

/// With encryption, nothing of any argument is readable in Redis: not the first step's (as
/// before), nor a later step's or a callback's inside the `flow` of the messages that carry
/// them, nor a chord callback's inside its group's record, nor a digest of the arguments in
/// a default uniqueness key (a UUIDv5 of them could be confirmed by guessing). Checked while
/// everything waits in the queue and again after it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_rest_sealed_when_arguments_are_encrypted() {
    use taskq_core::workflow::{chain, group};
    let server = RedisServer::start();
    let keys = taskq_core::Encryption::new("k1", [5; 32]);
    let client = taskq::connect(&server.url())
        .await
        .expect("connect")
        .with_encryption(keys.clone());
    let secret = "4111-1111-1111-1111";
    let note = |where_: &str| tasks::Note::callback(&format!("{where_} {secret}"));
    let chained = client
        .send_chain(
            chain(tasks::Number {
                label: "sealed-chain".into(),
                n: 3,
            })
            .then_signature(note("step")),
        )
        .await
        .unwrap();
    let called_back = client
        .enqueue(tasks::Number {
            label: "sealed-callback".into(),
            n: 4,
        })
        .on_success(note("callback"))
        .await
        .unwrap();
    let chord = client
        .send_chain(
            group((1..=3).map(|n| tasks::Number {
                label: "sealed-chord".into(),
                n,
            }))
            .then_signature(note("chord")),
        )
        .await
        .unwrap();
    let unique_args = serde_json::json!({ "label": secret, "n": 5 });
    client
        .enqueue_by_name("wf.number", &unique_args)
        .unique_for(Duration::from_secs(600))
        .await
        .unwrap();
    let guessable = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        serde_json::to_string(&unique_args).unwrap().as_bytes(),
    )
    .to_string();

    let queued = server.dump().await;
    assert!(
        queued.contains("taskq:workflow:"),
        "the dump sees group records"
    );
    assert!(!queued.contains(secret), "readable while queued:\n{queued}");
    assert!(
        !queued.contains(&guessable),
        "a plain digest of arguments is in a key"
    );

    let worker = spawn_worker(Worker::builder(client.clone()).encryption(keys));
    chained.wait(Duration::from_secs(30)).await.unwrap();
    chord.wait(Duration::from_secs(30)).await.unwrap();
    called_back.wait(Duration::from_secs(30)).await.unwrap();
    for label in ["step", "callback", "chord"].map(|w| format!("{w} {secret}")) {
        tasks::wait_for_runs(&[&label]).await;
        assert_eq!(tasks::runs(&label).len(), 1, "{label} ran once, opened");
    }
    let after = server.dump().await;
    assert!(!after.contains(secret), "readable after the run:\n{after}");
    worker.stop().await.unwrap();
}

/// Where signatures are required, a stored SUCCESS (which nothing authenticates: anyone who
/// can write to the backend could have put it there) does not feed the next step: the step
/// runs again and its own output goes on. Otherwise the worker's client would sign and send a
/// step whose input came from an attacker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_success_is_not_trusted_where_signatures_are_required() {
    use taskq_core::{workflow::chain, Keyring, SigningKey, TaskResult, TaskState};
    let server = RedisServer::start();
    let key = SigningKey::new("k1", vec![4; 32]);
    let client = taskq::connect(&server.url())
        .await
        .expect("connect")
        .with_signing_key(key.clone());
    let label = "unsigned-success";
    let sent = client
        .send_chain(
            chain(tasks::Number {
                label: label.into(),
                n: 3,
            })
            .then(tasks::Add::step(label, 1)),
        )
        .await
        .unwrap();
    let first = client.workflow(sent.id()).await.unwrap().unwrap().members[0];
    let planted = TaskResult::new(first, "wf.number", TaskState::Success, chrono::Utc::now())
        .with_result(serde_json::value::to_raw_value(&999).unwrap());
    client
        .backend()
        .store(&planted, Duration::from_secs(60))
        .await
        .unwrap();
    let worker = spawn_worker(
        Worker::builder(client.clone()).verify_signatures(Keyring::new(vec![key]).required()),
    );
    assert_eq!(
        sent.wait(Duration::from_secs(30)).await.unwrap(),
        4,
        "the next step got the step's own output, not the planted one"
    );
    worker.stop().await.unwrap();
}

/// Where signatures are required, a chord's callback is not fed a member outcome that no
/// worker with a key reported: an outcome planted in the group's record (first report wins)
/// before the member ran fails the chord instead of becoming the callback's input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_member_outcome_is_refused_where_signatures_are_required() {
    use taskq_core::{workflow::group, Keyring, SigningKey};
    let server = RedisServer::start();
    let key = SigningKey::new("k1", vec![6; 32]);
    let client = taskq::connect(&server.url())
        .await
        .expect("connect")
        .with_signing_key(key.clone());
    let label = "planted-outcome";
    let sent = client
        .send_chain(
            group((1..=3).map(|n| tasks::Number {
                label: label.into(),
                n,
            }))
            .then(tasks::Sum::callback(label)),
        )
        .await
        .unwrap();
    let first = client.workflow(sent.id()).await.unwrap().unwrap().members[0];
    let planted = serde_json::json!({
        "id": first, "task": "wf.number", "state": "SUCCESS", "output": 1000
    });
    let mut conn = ::redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = ::redis::cmd("HSET")
        .arg(format!("taskq:workflow:{{{}}}:done", sent.id()))
        .arg(0)
        .arg(planted.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let worker = spawn_worker(
        Worker::builder(client.clone()).verify_signatures(Keyring::new(vec![key]).required()),
    );
    match sent.wait(Duration::from_secs(30)).await {
        Err(taskq_core::Error::TaskFailed { message, .. }) => {
            assert!(message.contains("recorded outcome is refused"), "{message}");
        }
        other => panic!("expected the chord to fail, got {other:?}"),
    }
    worker.stop().await.unwrap();
}
