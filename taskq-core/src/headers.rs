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
