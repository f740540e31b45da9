//! Settings that can lose committed tasks are named, as on Redis (no AOF, eviction).

use taskq_core::Transport;
use taskq_postgres::{sqlx, PostgresBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_synchronous_commit_is_warned_of() {
    // A server of its own: the setting is server-wide.
    let server = taskq_testkit::PostgresServer::start();
    let config = taskq_postgres::PostgresConfig::new(&server.fresh_url())
        .unwrap()
        .with_migrations_at_connect();
    let broker = PostgresBroker::connect(config).await.unwrap();
    assert!(broker.durability_warnings().await.unwrap().is_empty());

    sqlx::query("ALTER SYSTEM SET synchronous_commit = off")
        .execute(broker.pool())
        .await
        .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(broker.pool())
        .await
        .unwrap();
    // A new connection reads the reloaded setting.
    let fresh = PostgresBroker::connect(broker.config().clone())
        .await
        .unwrap();
    let warnings = fresh.durability_warnings().await.unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("synchronous_commit=off"),
        "{warnings:?}"
    );
}
