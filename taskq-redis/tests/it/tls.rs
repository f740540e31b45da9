//! TLS for real: `redis-server` with certificates generated in the test (rcgen).

use std::time::Duration;

use taskq_core::{Transport, WorkerId};
use taskq_redis::{RedisBroker, RedisConfig};
use taskq_testkit::{suite::message, RedisServer, TlsFiles};

fn tls_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "taskq-redis-{}-tls-{name}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// Enqueue and fetch one message through `url`.
async fn round_trip(url: String) -> taskq_core::Result<()> {
    let broker = RedisBroker::connect(RedisConfig::new(url)).await?;
    let q = format!("tls-{}", uuid::Uuid::new_v4());
    broker.enqueue(vec![message(&q, 0)]).await?;
    let got = broker
        .fetch(&WorkerId::generate(), &[q], 1, Duration::ZERO)
        .await?;
    assert_eq!(got.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_verifies_the_server_against_the_given_authority() {
    let files = TlsFiles::generate(&tls_dir("ca"));
    let server = RedisServer::start_tls(&files, "no");
    round_trip(format!("{}?tls_ca={}", server.url(), files.ca.display()))
        .await
        .expect("a server certificate from the given CA is accepted");

    // The same server checked against another authority, or against the public roots.
    let other = TlsFiles::generate(&tls_dir("other"));
    for url in [
        format!("{}?tls_ca={}", server.url(), other.ca.display()),
        server.url(),
    ] {
        let err = round_trip(url.clone())
            .await
            .expect_err("an unknown issuer is refused");
        let text = format!("{err}: {:?}", std::error::Error::source(&err));
        eprintln!("{url} -> {text}");
        assert!(
            text.contains("certificate") || text.contains("UnknownIssuer"),
            "{url}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate() {
    let files = TlsFiles::generate(&tls_dir("mutual"));
    let server = RedisServer::start_tls(&files, "yes");
    let base = format!("{}?tls_ca={}", server.url(), files.ca.display());
    round_trip(base.clone())
        .await
        .expect_err("a server asking for client certificates refuses a client without one");
    round_trip(format!(
        "{base}&tls_cert={}&tls_key={}",
        files.client_cert.display(),
        files.client_key.display()
    ))
    .await
    .expect("the client certificate is presented");
}
