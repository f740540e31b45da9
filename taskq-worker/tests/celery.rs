//! Python's Celery (pinned from PyPI, in a fresh virtual environment) against a taskq worker
//! serving Celery's queue on a real redis-server: `send_task` in Python, the task run by the
//! worker, the result read back by `AsyncResult.get()`. Needs python3 with venv and pip
//! (`.ci/run` checks); fails loudly without.

use taskq_testkit::{
    celery::{
        assert_ran, python_worker_answers, run_script, Add, CeleryWorker, Flaky, Refuse, CHAINS,
        PRODUCER,
    },
    RedisServer,
};
use taskq_worker::Worker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_celery_sends_and_reads_results_from_a_taskq_worker() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let worker = Worker::builder(client.clone())
        .register::<Add>()
        .register::<Refuse>()
        .register::<Flaky>()
        .celery_queues(["celery"])
        .build()
        .unwrap()
        .start();
    let url = server.url();
    let run = run_script("producer", PRODUCER, &[&url, &url]).await;
    worker.stop().await.unwrap();
    assert_ran(&run, "the Celery producer");
}

/// A broker that cannot serve Celery's queues makes the worker refuse to start, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_without_celerys_transport_refuses_celery_queues() {
    let client = taskq_core::Client::in_memory();
    let worker = Worker::builder(client)
        .register::<Add>()
        .celery_queues(["celery"])
        .build()
        .unwrap();
    let refused = worker
        .run(std::future::pending::<()>())
        .await
        .expect_err("no Celery queues on the memory broker");
    let refused = taskq_core::error_chain(&refused);
    assert!(refused.contains("Celery-protocol queues"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_taskq_client_sends_to_a_python_celery_worker_and_reads_its_results() {
    let server = RedisServer::start();
    let _worker = CeleryWorker::start(&server.url(), &server.url(), "celery");
    let client = taskq::connect(&server.url()).await.unwrap();
    python_worker_answers(&client).await;
}

/// Celery chains sent from Python across both kinds of worker: a first step on Python and a
/// second on taskq (the Python worker sends it), and one that starts on taskq, goes through
/// Python and ends on taskq (the taskq worker sends the next step, its output first among the
/// arguments, as a Celery worker does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn celery_chains_run_across_python_and_taskq_workers() {
    let server = RedisServer::start();
    let _python_worker = CeleryWorker::start(&server.url(), &server.url(), "py");
    let client = taskq::connect(&server.url()).await.unwrap();
    let worker = Worker::builder(client.clone())
        .register::<Add>()
        .celery_queues(["celery"])
        .build()
        .unwrap()
        .start();
    let url = server.url();
    let run = run_script("chain", CHAINS, &[&url, &url]).await;
    worker.stop().await.unwrap();
    assert_ran(&run, "the chains");
}

/// A script runs from a directory holding nothing but itself: Python puts that directory first
/// on its import path, and a stray `bisect.py` in the shared temporary directory once replaced
/// the standard library's inside Celery. Also: the directory is gone after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_script_imports_nothing_from_the_shared_temporary_directory() {
    const WHERE: &str = "\
import os, sys, tempfile
first = sys.path[0]
alone = os.listdir(first) == [os.path.basename(sys.argv[0])]
shared = os.path.realpath(first) == os.path.realpath(tempfile.gettempdir())
print(first)
print('ok' if alone and not shared else 'shared')
";
    let run = run_script("where", WHERE, &[]).await;
    assert_ran(&run, "the import path script");
    let first = String::from_utf8_lossy(&run.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !std::path::Path::new(&first).exists(),
        "{first} was left behind"
    );
}
