//! The schema's upkeep: migrations applied once however many processes run them at once, and
//! expired results and workflow records deleted by the sweep rather than left to grow.

use std::time::Duration;

use taskq_core::{workflow::WorkflowRecord, ResultBackend, TaskId, TaskResult, TaskState};
use taskq_postgres::{migrate, sqlx, PostgresConfig, PostgresResultBackend, SCHEMA_VERSION};

use super::support::{config, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_at_once_from_two_places_apply_each_version_once() {
    let config = PostgresConfig::new(&server().fresh_url()).unwrap();
    let pool = sqlx::PgPool::connect(config.url()).await.unwrap();
    let (first, second) = tokio::join!(
        migrate(&pool, config.schema()),
        migrate(&pool, config.schema())
    );
    let mut found = [first.unwrap(), second.unwrap()];
    found.sort();
    assert_eq!(
        found,
        [0, SCHEMA_VERSION],
        "one applied everything, the other nothing"
    );
    let versions: Vec<i32> = sqlx::query_scalar(&format!(
        "SELECT version FROM {}.schema_version ORDER BY version",
        config.schema()
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_expired_results_and_workflow_records() {
    let config = config();
    let schema = config.schema().to_owned();
    let backend = PostgresResultBackend::connect(config.clone())
        .await
        .unwrap();
    let short = Duration::from_millis(50);
    let now = chrono::Utc::now();
    let expiring = TaskResult::new(TaskId::new(), "t", TaskState::Success, now);
    let kept = TaskResult::new(TaskId::new(), "t", TaskState::Success, now);
    backend.store(&expiring, short).await.unwrap();
    backend
        .store(&kept, Duration::from_secs(3600))
        .await
        .unwrap();
    let record: WorkflowRecord = serde_json::from_value(serde_json::json!({
        "id": TaskId::new(), "kind": "group", "members": [], "created_at": now,
    }))
    .unwrap();
    backend.put_workflow(&record, short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    assert_eq!(backend.sweep_expired().await.unwrap(), 2);
    let pool = sqlx::PgPool::connect(config.url()).await.unwrap();
    let count = |table: &'static str| {
        let pool = pool.clone();
        let schema = schema.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {schema}.{table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("results").await,
        1,
        "only the unexpired result is left"
    );
    assert_eq!(count("workflows").await, 0);
    assert_eq!(backend.get(kept.id).await.unwrap().unwrap().id, kept.id);
}

/// The broker's LISTEN connection killed on the server: it is opened again, and an idle fetch
/// still wakes for new work long before its poll (a minute here) would find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_is_opened_again_and_idle_fetches_still_wake() {
    use std::sync::Arc;
    use taskq_core::Broker;
    use taskq_testkit::suite::{message, queue, waiting_fetch, woken};
    let config = config().with_poll_interval(Duration::from_secs(60));
    let schema = config.schema().to_owned();
    let broker: Arc<dyn Broker> = Arc::new(
        taskq_postgres::PostgresBroker::connect(config)
            .await
            .unwrap(),
    );
    let admin = sqlx::PgPool::connect(&server().url()).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE query LIKE 'LISTEN%' AND query LIKE $1",
    )
    .bind(format!("%{schema}_ready%"))
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(killed, vec![true], "the broker's one LISTEN connection");

    let q = queue();
    let fetch = waiting_fetch(&broker, std::slice::from_ref(&q), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = message(&q, 0);
    let id = sent.id;
    broker.enqueue(vec![sent]).await.unwrap();
    let got = woken(fetch).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id(), Some(id));
}
