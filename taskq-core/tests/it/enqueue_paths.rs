//! One enqueue path, four doors: typed, bulk typed, by name and bulk by name each apply the
//! task's declared options over the defaults and per-call options over the declared ones (beat,
//! the fifth door, is tested in taskq-beat). Declared here: queue `declared`, priority 4,
//! 6 retries, expiry 10 minutes.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskq_core::{
    Client, Envelope, Run, Task, TaskContext, TaskDeclaration, TaskError, WorkerId, DEFAULT_QUEUE,
};

#[derive(Task, Serialize, Deserialize)]
#[task(
    name = "paths.declared",
    queue = "declared",
    priority = 4,
    max_retries = 6,
    expires = "10m"
)]
struct Declared {
    n: u32,
}

impl Run for Declared {
    type Output = u32;
    async fn run(self, _ctx: TaskContext) -> Result<u32, TaskError> {
        Ok(self.n)
    }
}

/// What a worker registering [`Declared`] publishes.
async fn publish_declaration(client: &Client) {
    client
        .broker()
        .publish_tasks(&[TaskDeclaration::new(Declared::NAME, &Declared::options())])
        .await
        .unwrap();
}

async fn fetch_all(client: &Client, queue: &str) -> Vec<Envelope> {
    client
        .broker()
        .fetch(
            &WorkerId::generate(),
            &[queue.to_owned()],
            100,
            Duration::ZERO,
        )
        .await
        .unwrap()
        .iter()
        .map(|delivery| Envelope::decode(delivery.payload(), 1 << 20).unwrap())
        .collect()
}

fn assert_declared(envelope: &Envelope) {
    assert_eq!(envelope.queue, "declared");
    assert_eq!(envelope.priority, 4);
    assert_eq!(envelope.max_retries, Some(6));
    let ttl = envelope.expires.expect("declared expiry") - envelope.created_at;
    assert_eq!(ttl, chrono::Duration::minutes(10));
}

#[tokio::test(start_paused = true)]
async fn typed_enqueue_applies_declared_then_call_options() {
    let client = Client::in_memory();
    client.enqueue(Declared { n: 1 }).await.unwrap();
    assert_declared(&fetch_all(&client, "declared").await[0]);

    client
        .enqueue(Declared { n: 2 })
        .queue("call")
        .priority(9)
        .max_retries(1)
        .expires_in(Duration::from_secs(5))
        .await
        .unwrap();
    let envelope = &fetch_all(&client, "call").await[0];
    assert_eq!((envelope.priority, envelope.max_retries), (9, Some(1)));
    let ttl = envelope.expires.unwrap() - envelope.created_at;
    assert_eq!(ttl, chrono::Duration::seconds(5));
}

#[tokio::test(start_paused = true)]
async fn bulk_typed_enqueue_applies_declared_options() {
    let client = Client::in_memory();
    client
        .enqueue_many((0..3).map(|n| Declared { n }))
        .await
        .unwrap();
    let envelopes = fetch_all(&client, "declared").await;
    assert_eq!(envelopes.len(), 3);
    envelopes.iter().for_each(assert_declared);
}

#[tokio::test(start_paused = true)]
async fn by_name_enqueue_applies_the_published_declaration_then_call_options() {
    let client = Client::in_memory();
    publish_declaration(&client).await;
    let args = serde_json::json!({"n": 1});
    client.enqueue_by_name(Declared::NAME, &args).await.unwrap();
    assert_declared(&fetch_all(&client, "declared").await[0]);

    client
        .enqueue_by_name(Declared::NAME, &args)
        .queue("call")
        .priority(0)
        .max_retries(0)
        .await
        .unwrap();
    let envelope = &fetch_all(&client, "call").await[0];
    assert_eq!((envelope.priority, envelope.max_retries), (0, Some(0)));
}

#[tokio::test(start_paused = true)]
async fn by_name_enqueue_of_an_undeclared_task_leaves_retries_to_the_worker() {
    let client = Client::in_memory();
    client
        .enqueue_by_name("nobody.declared", &serde_json::json!({}))
        .await
        .unwrap();
    let envelope = &fetch_all(&client, DEFAULT_QUEUE).await[0];
    assert_eq!(envelope.priority, 0);
    assert_eq!(
        envelope.max_retries, None,
        "absent means: the worker applies the task's own setting"
    );
    assert_eq!(envelope.expires, None);
}

#[tokio::test(start_paused = true)]
async fn bulk_by_name_enqueue_applies_the_published_declaration() {
    let client = Client::in_memory();
    publish_declaration(&client).await;
    let ids = client
        .enqueue_many_by_name(Declared::NAME, (0..3).map(|n| serde_json::json!({"n": n})))
        .await
        .unwrap();
    let envelopes = fetch_all(&client, "declared").await;
    assert_eq!(
        envelopes.iter().map(|e| e.id).collect::<Vec<_>>(),
        ids,
        "in order"
    );
    envelopes.iter().for_each(assert_declared);
}

#[tokio::test(start_paused = true)]
async fn the_last_of_countdown_and_eta_wins() {
    let client = Client::in_memory();
    let now = client.clock().now();
    let at = now + chrono::Duration::hours(1);
    let eta_last = client
        .enqueue(Declared { n: 1 })
        .countdown(Duration::from_secs(5))
        .eta(at)
        .id(taskq_core::TaskId::new());
    let countdown_last = client
        .enqueue(Declared { n: 2 })
        .eta(at)
        .countdown(Duration::from_secs(5));
    let eta_last = eta_last.await.unwrap().id();
    let countdown_last = countdown_last.await.unwrap().id();
    // After six seconds only the countdown is due.
    tokio::time::sleep(Duration::from_secs(6)).await;
    client
        .broker()
        .promote_scheduled(&["declared".to_owned()], 10)
        .await
        .unwrap();
    let due: Vec<_> = fetch_all(&client, "declared")
        .await
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(due, vec![countdown_last]);
    assert_ne!(due[0], eta_last);
    assert_eq!(
        client
            .inspector()
            .stats("declared")
            .await
            .unwrap()
            .scheduled,
        1
    );
}

#[tokio::test(start_paused = true)]
async fn names_that_would_break_keys_are_refused_on_every_path() {
    let client = Client::in_memory();
    for queue in ["", "}x", "a{b}", "two words", "line\nbreak"] {
        let err = client
            .enqueue(Declared { n: 1 })
            .queue(queue)
            .await
            .unwrap_err();
        assert!(
            matches!(err, taskq_core::Error::Invalid { what: "queue", .. }),
            "{queue:?}: {err:?}"
        );
    }
    let err = client
        .enqueue_by_name("bad name", &serde_json::json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            taskq_core::Error::Invalid {
                what: "task name",
                ..
            }
        ),
        "{err:?}"
    );
    let err = client
        .enqueue_many_by_name("", [serde_json::json!({})])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            taskq_core::Error::Invalid {
                what: "task name",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        client.inspector().queues().await.unwrap().is_empty(),
        "nothing was enqueued"
    );
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "paths.unique", unique_for = "1h")]
struct OncePerArgs {
    n: u32,
}

impl Run for OncePerArgs {
    type Output = ();
    async fn run(self, _ctx: TaskContext) -> Result<(), TaskError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn bulk_enqueue_of_a_task_declaring_uniqueness_claims_each_key() {
    let client = Client::in_memory();
    let handles = client
        .enqueue_many([
            OncePerArgs { n: 1 },
            OncePerArgs { n: 1 },
            OncePerArgs { n: 2 },
        ])
        .await
        .unwrap();
    assert_eq!(
        handles[0].id(),
        handles[1].id(),
        "the duplicate gets the holder's id"
    );
    assert_ne!(handles[0].id(), handles[2].id());
    assert_eq!(
        client
            .inspector()
            .stats(DEFAULT_QUEUE)
            .await
            .unwrap()
            .pending,
        2
    );
}

/// A by-name callback (and a by-name workflow step) takes the options its task declares, as a
/// by-name enqueue does; a typed one keeps its own.
#[tokio::test]
async fn by_name_callbacks_and_steps_take_the_declared_options() {
    use taskq_core::workflow::{Chain, Signature};
    let client = Client::in_memory();
    let declared = taskq_core::TaskOptions::new()
        .with_queue("notify")
        .with_priority(6);
    client
        .broker()
        .publish_tasks(&[TaskDeclaration::new("reports.notify", &declared)])
        .await
        .unwrap();
    let notify = || Signature::by_name("reports.notify", serde_json::json!({})).input("report");
    client
        .enqueue_by_name("reports.build", &serde_json::json!({}))
        .on_success(notify())
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let held = client
        .broker()
        .fetch(&worker, &["default".to_owned()], 1, Duration::ZERO)
        .await
        .unwrap();
    let envelope = Envelope::decode(held[0].payload(), usize::MAX).unwrap();
    let flow = taskq_core::workflow::Flow::of(&envelope).unwrap().unwrap();
    assert_eq!(flow.on_success[0].queue.as_deref(), Some("notify"));
    assert_eq!(flow.on_success[0].priority, Some(6));

    let sent = client
        .send_chain(Chain::<()>::of_signatures([notify()]))
        .await
        .unwrap();
    assert_eq!(client.inspector().stats("notify").await.unwrap().pending, 1);
    drop(sent);
}
