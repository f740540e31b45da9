//! The shared server and the fixtures the suites ask for.

use std::sync::{Arc, OnceLock};

use taskq_core::{Broker, ResultBackend};
use taskq_postgres::{PostgresBroker, PostgresConfig, PostgresResultBackend};
use taskq_testkit::PostgresServer;

/// The server of this test binary, started on first use.
pub(crate) fn server() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(PostgresServer::start)
}

/// A configuration on a schema no other test uses, created at connect.
pub(crate) fn config() -> PostgresConfig {
    PostgresConfig::new(&server().fresh_url())
        .expect("a valid url")
        .with_migrations_at_connect()
}

pub(crate) async fn broker_on(config: PostgresConfig) -> (Arc<dyn Broker>, ()) {
    let broker = PostgresBroker::connect(config).await.expect("connect");
    (Arc::new(broker), ())
}

pub(crate) async fn postgres_broker() -> (Arc<dyn Broker>, ()) {
    broker_on(config()).await
}

pub(crate) async fn bounded_postgres_broker() -> (Arc<dyn Broker>, ()) {
    broker_on(config().with_max_queue_length(50)).await
}

pub(crate) async fn capped_postgres_broker() -> (Arc<dyn Broker>, ()) {
    broker_on(
        config()
            .with_max_dead_letters(2)
            .with_max_dead_letter_bytes(taskq_testkit::suite::inspector::CAPPED_DEAD_BYTES),
    )
    .await
}

pub(crate) async fn postgres_backend() -> (Arc<dyn ResultBackend>, ()) {
    let backend = PostgresResultBackend::connect(config())
        .await
        .expect("connect");
    (Arc::new(backend), ())
}
