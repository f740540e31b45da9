//! `amqps://` on a node of its own with a TLS listener that requires client certificates:
//! tasks go through with the authority and a client certificate named in the URL; without
//! either, connecting fails with an error that names the node.

use std::time::Duration;

use taskq_amqp::{AmqpBroker, AmqpConfig};
use taskq_core::{Envelope, Inspector, OutboundMessage, Transport, WorkerId};
use taskq_testkit::{RabbitNode, TlsFiles};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_mutual_tls_carries_tasks_and_refuses_what_it_cannot_trust() {
    let dir = std::env::temp_dir().join(format!("taskq-amqps-{}", std::process::id()));
    let files = TlsFiles::generate(&dir);
    let tls_port = taskq_testkit::free_port();
    let node = RabbitNode::start(&[
        &format!("listeners.ssl.default = {tls_port}"),
        &format!("ssl_options.cacertfile = {}", files.ca.display()),
        &format!("ssl_options.certfile = {}", files.server_cert.display()),
        &format!("ssl_options.keyfile = {}", files.server_key.display()),
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true",
    ]);
    let plain = node.fresh_vhost_url();
    let vhost = plain.rsplit('/').next().unwrap();
    let base = format!("amqps://guest:guest@localhost:{tls_port}/{vhost}");
    let trusted = format!(
        "{base}?tls_ca={}&tls_cert={}&tls_key={}",
        files.ca.display(),
        files.client_cert.display(),
        files.client_key.display()
    );

    let broker = AmqpBroker::connect(AmqpConfig::new(&trusted))
        .await
        .unwrap();
    let envelope = Envelope::new("tls.task", &1, "tls", chrono::Utc::now()).unwrap();
    let message = OutboundMessage::from_envelope(&envelope, 1 << 20).unwrap();
    broker.enqueue(vec![message]).await.unwrap();
    assert_eq!(broker.stats("tls").await.unwrap().pending, 1);
    let worker = WorkerId::generate();
    let fetched = broker
        .fetch(&worker, &["tls".to_owned()], 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].id(), Some(envelope.id));
    broker.ack(&worker, &fetched).await.unwrap();

    let untrusted = AmqpConfig::new(&base).with_connect_timeout(Duration::from_secs(5));
    let err = taskq_core::error_chain(&AmqpBroker::connect(untrusted).await.unwrap_err());
    assert!(err.contains(&format!("localhost:{tls_port}")), "{err}");

    let no_client_cert = AmqpConfig::new(format!("{base}?tls_ca={}", files.ca.display()))
        .with_connect_timeout(Duration::from_secs(5));
    let refused = match AmqpBroker::connect(no_client_cert).await {
        Err(err) => Some(err),
        // The handshake may finish before the server's refusal arrives: then the first
        // command fails.
        Ok(broker) => broker.stats("tls").await.err(),
    };
    assert!(refused.is_some(), "the node requires a client certificate");
    let _ = std::fs::remove_dir_all(dir);
}
