//! lapin's errors as taskq's: transient when a later try may succeed.

use taskq_core::Error;

/// A failed AMQP call. Connection and channel losses are transient (the link reconnects);
/// protocol errors the broker sent (a refused declaration, a missing permission) are not.
pub(crate) fn amqp_error(err: lapin::Error) -> Error {
    let transient = !err.is_amqp_error() || err.is_amqp_hard_error() || is_resource_error(&err);
    Error::Broker {
        transport: "amqp",
        transient,
        source: Box::new(err),
    }
}

/// A broker-side refusal that clears by itself (a node out of disk or memory blocks publishers).
fn is_resource_error(err: &lapin::Error) -> bool {
    err.to_string().contains("RESOURCE")
}

/// An error of taskq's own making about the AMQP link, e.g. a broker that refused a publish.
pub(crate) fn refused(what: &str) -> Error {
    Error::Broker {
        transport: "amqp",
        transient: true,
        source: what.to_owned().into(),
    }
}

/// The broker's answer about a queue or exchange that does not exist (`NOT_FOUND`, 404).
pub(crate) fn is_not_found(err: &lapin::Error) -> bool {
    err.to_string().contains("NOT_FOUND")
}
