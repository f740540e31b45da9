//! Revocation and ping over the control channel, on the memory broker and on Redis.

use std::time::Duration;

use futures_util::StreamExt;
use taskq_core::{Client, ControlMessage, TaskState};
use taskq_testkit::RedisServer;

use crate::support::{all_tasks, assert_ended_in, builder, log, start_worker, Record};

async fn revoke_queued_and_running(client: Client) {
    let prefix = format!("revoke-{}", taskq_core::TaskId::new());
    let mut rx = log(&prefix);
    let worker = start_worker(all_tasks(builder(&client)));
    // Queued: revoked before it is due, so it never runs.
    let later = client
        .enqueue(Record {
            label: format!("{prefix}-later"),
            ms: 0,
        })
        .countdown(Duration::from_secs(2))
        .await
        .unwrap();
    client.revoke(later.id(), false).await.unwrap();
    assert_ended_in(
        later.wait(Duration::from_secs(10)).await,
        TaskState::Revoked,
    );

    // RunningWorker: revoked with terminate, the run is stopped.
    let long = client
        .enqueue(Record {
            label: format!("{prefix}-long"),
            ms: 600_000,
        })
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap(), format!("{prefix}-long"));
    client.revoke(long.id(), true).await.unwrap();
    assert_ended_in(long.wait(Duration::from_secs(10)).await, TaskState::Revoked);
    assert!(rx.try_recv().is_err(), "the queued one never ran");
    assert_eq!(worker.stop().await.unwrap().revoked, 2);
}

#[tokio::test(start_paused = true)]
async fn revoke_on_memory() {
    revoke_queued_and_running(Client::in_memory()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_on_redis() {
    let server = RedisServer::start();
    revoke_queued_and_running(taskq::connect(&server.url()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_answer_pings_and_publish_their_info_on_redis() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let worker = all_tasks(builder(&client)).concurrency(7).build().unwrap();
    let id = worker.id().to_string();
    let running = worker.start();
    let mut infos = Vec::new();
    for _ in 0..50 {
        infos = client.broker().workers().await.unwrap();
        if !infos.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(infos.len(), 1);
    assert_eq!(
        (infos[0].id.as_str(), infos[0].concurrency),
        (id.as_str(), 7)
    );
    assert_eq!(infos[0].pid, std::process::id());

    let mut control = client.broker().subscribe_control().await.unwrap();
    // The worker subscribes right after start; give it a moment on a fresh server.
    let mut answered = None;
    for attempt in 0..20 {
        let nonce = format!("n{attempt}");
        client
            .broker()
            .broadcast(&ControlMessage::Ping {
                nonce: nonce.clone(),
            })
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, control.next()).await {
            if let ControlMessage::Pong {
                nonce: n, worker, ..
            } = message
            {
                if n == nonce {
                    answered = Some(worker);
                }
            }
        }
        if answered.is_some() {
            break;
        }
    }
    assert_eq!(answered.as_deref(), Some(id.as_str()));
    running.stop().await.unwrap();
}
