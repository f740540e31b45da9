//! The node every test of this binary shares, and brokers on fresh vhosts of it.

use std::sync::{Arc, OnceLock};

use taskq_amqp::{AmqpBroker, AmqpConfig};
use taskq_core::Broker;
use taskq_testkit::RabbitNode;

/// The node, started on first use; its `consumer_timeout` is short so that the tests of the
/// timeout see it.
pub(crate) fn node() -> &'static RabbitNode {
    static NODE: OnceLock<RabbitNode> = OnceLock::new();
    NODE.get_or_init(|| RabbitNode::start(&["consumer_timeout = 5000"]))
}

/// A config for a vhost nobody else uses.
pub(crate) fn config() -> AmqpConfig {
    AmqpConfig::new(node().fresh_vhost_url())
}

/// A broker on a fresh vhost, as the suites want it (`(broker, guard)`).
pub(crate) async fn amqp_broker() -> (Arc<dyn Broker>, ()) {
    let broker = AmqpBroker::connect(config()).await.expect("connect");
    (Arc::new(broker), ())
}
