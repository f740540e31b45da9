//! Least privilege on a real redis-server: a worker, a producer and a read-only operator each
//! run under the ACL rules `taskq_redis::acl` publishes; what each needs works, and what the
//! producer and the operator must not do is refused.

use std::time::Duration;

use taskq_core::{Client, Page, WorkerId};
use taskq_redis::{acl, RedisConfig};
use taskq_testkit::RedisServer;

use crate::support::{all_tasks, builder, start_worker, Reject, Stats};

async fn client_as(server: &RedisServer, user: &str) -> Client {
    taskq_redis::client(RedisConfig::new(server.url_as(user, "pw")))
        .await
        .unwrap_or_else(|err| panic!("{user} connects: {err}"))
}

fn refused<T: std::fmt::Debug>(what: &str, result: taskq_core::Result<T>) {
    let err = result.expect_err(what);
    let text = taskq_core::error_chain(&err);
    let lower = text.to_lowercase();
    assert!(
        ["noperm", "no permissions", "can't run this command"]
            .iter()
            .any(|refusal| lower.contains(refusal)),
        "{what}: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_can_do_its_job_and_no_more() {
    let server = RedisServer::start();
    server.add_user("worker", "pw", acl::WORKER);
    server.add_user("producer", "pw", acl::PRODUCER);
    server.add_user("operator", "pw", acl::OPERATOR_READ_ONLY);

    let worker_client = client_as(&server, "worker").await;
    let worker = start_worker(all_tasks(builder(&worker_client)));
    let producer = client_as(&server, "producer").await;
    let operator = client_as(&server, "operator").await;

    // The producer enqueues (typed, by name, unique) and waits for results.
    let stats = producer.enqueue(Stats { values: vec![4.0] }).await.unwrap();
    assert_eq!(stats.wait(Duration::from_secs(10)).await.unwrap().count, 1);
    let rejected = producer.enqueue(Reject).await.unwrap();
    assert!(rejected.wait(Duration::from_secs(10)).await.is_err());
    producer
        .enqueue(Stats { values: vec![1.0] })
        .unique_for(Duration::from_secs(60))
        .await
        .unwrap();
    let by_name = producer
        .enqueue_by_name("test.stats", &serde_json::json!({ "values": [2.0] }))
        .await
        .unwrap();
    by_name.wait(Duration::from_secs(10)).await.unwrap();

    // ... and nothing else.
    let queue = taskq_core::DEFAULT_QUEUE.to_owned();
    refused(
        "a producer fetches",
        producer
            .broker()
            .fetch(
                &WorkerId::generate(),
                std::slice::from_ref(&queue),
                1,
                Duration::ZERO,
            )
            .await,
    );
    refused(
        "a producer reads dead letters",
        producer.broker().dead_letters(&queue, Page::first(5)).await,
    );
    refused(
        "a producer purges",
        producer.broker().purge_queue(&queue).await,
    );

    // The read-only operator sees everything...
    let inspector = operator.inspector();
    assert!(inspector.queues().await.unwrap().contains(&queue));
    let counts = inspector.stats(&queue).await.unwrap();
    assert_eq!(counts.dead, 1, "{counts:?}");
    assert_eq!(inspector.workers().await.unwrap().len(), 1);
    let dead = inspector
        .dead_letters(&queue, Page::first(5))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let id = dead[0].id.unwrap();
    assert!(inspector
        .find_dead_letter(&queue, id)
        .await
        .unwrap()
        .is_some());
    assert!(operator.backend().get(stats.id()).await.unwrap().is_some());
    // ... and changes nothing.
    refused(
        "an operator requeues",
        inspector.requeue_dead(&queue, None).await,
    );
    refused(
        "an operator purges dead letters",
        inspector.purge_dead(&queue, None).await,
    );
    refused(
        "an operator purges a queue",
        inspector.purge_queue(&queue).await,
    );
    refused(
        "an operator revokes",
        operator
            .broker()
            .revoke(id, false, Duration::from_secs(60))
            .await,
    );
    refused(
        "an operator enqueues",
        operator.enqueue(Stats { values: vec![] }).await.map(|_| ()),
    );

    let report = worker.stop().await.unwrap();
    assert_eq!((report.succeeded, report.dead_lettered), (3, 1));
}
