//! The demo producer enqueues by name with what the task declares: `demo.fail` declares 10
//! retries, so an invocation that fails 4 times (more than the default 3) still succeeds.

use std::time::Duration;

use clap::Parser;
use taskq_examples::producer::{produce, ProducerCli};
use taskq_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_enqueues_by_name_with_the_declared_options() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let worker = taskq_examples::demo::register(taskq::Worker::builder(client.clone()))
        .liveness(Duration::from_millis(200), Duration::from_secs(2))
        .build()
        .unwrap();
    let running = worker.start();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client
        .broker()
        .task_declaration("demo.fail")
        .await
        .unwrap()
        .is_none()
    {
        assert!(std::time::Instant::now() < deadline, "never declared");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids = std::env::temp_dir().join(format!("taskq-producer-{}", taskq::TaskId::new()));
    let cli = ProducerCli::parse_from([
        "producer",
        "--broker",
        &server.url(),
        "--task",
        "demo.fail",
        "--args",
        r#"{"times": 4}"#,
        "--ids-out",
        ids.to_str().unwrap(),
    ]);
    assert_eq!(produce(&cli).await.unwrap(), 1);
    let id: taskq::TaskId = std::fs::read_to_string(&ids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let attempt: u32 = client
        .result_handle(id)
        .wait(Duration::from_secs(90))
        .await
        .unwrap();
    assert_eq!(attempt, 4, "ran a fifth time: the declared retries applied");
    running.stop().await.unwrap();
    let _ = std::fs::remove_file(ids);
}
