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

/// The header a Celery-protocol message keeps in its taskq envelope: the worker then writes
/// its result where Celery's client reads it.
pub const CELERY_HEADER: &str = "celery";

/// The header that carries the rest of a Celery chain (its `chain` field, JSON: signatures,
/// the next one last): after a success, the worker sends the next step with the output first
/// among its arguments, as a Celery worker does.
pub const CHAIN_HEADER: &str = "celery-chain";

/// The header that carries a Celery message's `callbacks` (its `link` signatures, JSON): after
/// a success, the worker sends each with the output first among its arguments, as a Celery
/// worker does.
pub const CALLBACKS_HEADER: &str = "celery-callbacks";
