//! The headers taskq itself sets on an envelope (a task's own headers are the caller's).

/// Header carrying the uniqueness key, so the worker can release it when the task finishes.
pub const UNIQUE_KEY_HEADER: &str = "taskq-unique-key";

/// The header naming where a task's result is delivered, for result backends that deliver
/// results to the process that sent the task instead of storing them (RabbitMQ's reply
/// queues, `?results=rpc`): set by the client from [`ResultBackend::reply_to`], read by the
/// worker into [`TaskResult::reply_to`](crate::TaskResult::reply_to). Signed like every header.
///
/// [`ResultBackend::reply_to`]: crate::ResultBackend::reply_to
pub const REPLY_TO_HEADER: &str = "taskq-reply-to";

/// Header marking a task written to an outbox for a broker without uniqueness keys
/// ([`Enqueue::relayed`](crate::Enqueue::relayed)): a relay killed between the broker's
/// confirmation and its delete sends it again, so the worker does not run a copy whose
/// success is already stored.
pub const RELAYED_HEADER: &str = "taskq-relayed";
