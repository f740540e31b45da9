//! sqlx's errors as taskq's: transient when a later try may succeed, and the one line that
//! names what failed.

use taskq_core::Error;

/// The SQLSTATE taskq's functions raise when a worker's lease is gone.
const LEASE_LOST: &str = "TQ001";

/// A failed statement. Lost connections, timeouts and a server shutting down or restarting
/// are transient; refusals (permissions, a missing table, bad SQL) are not.
pub(crate) fn pg_error(err: sqlx::Error) -> Error {
    let transient = match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // Class 08: connection exceptions; 57P0x: shutdown and restart; 40001/40P01:
            // serialization failure and deadlock, which a retry resolves.
            code.starts_with("08") || code.starts_with("57P0") || code == "40001" || code == "40P01"
        }),
        _ => false,
    };
    // The database's own message, once: sqlx's error repeats it as its own source.
    let source: Box<dyn std::error::Error + Send + Sync> = match &err {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()).into(),
            None => db.message().to_owned().into(),
        },
        _ => Box::new(err),
    };
    Error::Broker {
        transport: "postgres",
        transient,
        source,
    }
}

/// `err` as [`Error::LeaseLost`] when taskq's functions raised it for `worker`.
pub(crate) fn lease_error(err: sqlx::Error, worker: &str) -> Error {
    if let sqlx::Error::Database(db) = &err {
        if db.code().as_deref() == Some(LEASE_LOST) {
            return Error::LeaseLost {
                worker: worker.to_owned(),
            };
        }
    }
    pg_error(err)
}
