//! redis-rs's errors as taskq's: transient when a later try may succeed.

use taskq_core::Error;

/// Wraps a redis-rs error, transient unless redis-rs says retrying cannot help (a script
/// error, a wrong type, a refused password).
pub(crate) fn redis_error(err: redis::RedisError) -> Error {
    // Out of memory (maxmemory with noeviction) passes once settling frees memory; the server's
    // conditions in `passes_by_itself` pass too.
    let transient = is_out_of_memory(&err)
        || passes_by_itself(&err)
        || waited_on_a_replica(&err)
        || (!matches!(err.retry_method(), redis::RetryMethod::NoRetry) && !is_refused_login(&err));
    Error::Broker {
        transport: "redis",
        transient,
        source: Box::new(err),
    }
}

/// True when the server refused the credentials. The cluster client reports a refused login on
/// its first connections as an I/O error whose text names the cause, so the text is checked
/// too.
fn is_refused_login(err: &redis::RedisError) -> bool {
    if err.kind() == redis::ErrorKind::AuthenticationFailed {
        return true;
    }
    let text = err.to_string();
    text.contains("AuthenticationFailed") || text.contains("WRONGPASS")
}

/// Server refusals of a state that passes without anyone changing the request, which redis-rs
/// counts as final: `NOREPLICAS` (fewer replicas than `min-replicas-to-write` are attached,
/// until one reconnects), `MISCONF` (writes stopped after a failed snapshot, until one
/// succeeds) and `BUSY` (a script runs past `busy-reply-threshold`, until it ends or is
/// killed). Treated as final, a settle gave up and stranded its message while the worker
/// lived; retried, it lands once the condition passes.
const PASSING_CONDITIONS: [&str; 3] = ["NOREPLICAS", "MISCONF", "BUSY"];

/// True for a refusal in [`PASSING_CONDITIONS`], alone or inside a pipeline.
fn passes_by_itself(err: &redis::RedisError) -> bool {
    err.code()
        .is_some_and(|code| PASSING_CONDITIONS.contains(&code))
        || err.clone().into_server_errors().is_some_and(|errors| {
            errors
                .iter()
                .any(|(_, error)| PASSING_CONDITIONS.contains(&error.code()))
        })
}

/// True when `WAIT` reached a replica: the connection still leads to a master that a failover
/// demoted, and the next try goes to the new one (as for `READONLY`). Its code is a plain
/// `ERR`, so the text tells it; treated as final, a settle dead-lettered its message in a
/// Sentinel failback.
fn waited_on_a_replica(err: &redis::RedisError) -> bool {
    err.to_string()
        .contains("WAIT cannot be used with replica instances")
}

/// True when the server refused a write for lack of memory, alone or inside a pipeline.
fn is_out_of_memory(err: &redis::RedisError) -> bool {
    err.clone()
        .into_server_errors()
        .is_some_and(|errors| errors.iter().any(|(_, error)| error.code() == "OOM"))
}

/// A failure to reach the server at `url` as one line: the URL (password masked), the likely
/// fix, then the cause, each said once. Other errors pass unchanged.
pub(crate) fn unreachable(url: &str, err: Error) -> Error {
    let Error::Broker {
        transport,
        transient,
        source,
    } = err
    else {
        return err;
    };
    let cause = taskq_core::error_chain(source.as_ref());
    let hint = if [
        "WRONGPASS",
        "NOAUTH",
        "AuthenticationFailed",
        "invalid username-password",
    ]
    .iter()
    .any(|sign| cause.contains(sign))
    {
        "the server refused the user or password in the URL"
    } else if cause.contains("Connection refused") || cause.contains("No such file") {
        "is Redis running there?"
    } else if [
        "Parse error",
        "Incompatible type",
        "broken pipe",
        "Broken pipe",
        "unexpected",
    ]
    .iter()
    .any(|sign| cause.contains(sign))
    {
        "the server there does not answer as Redis does: is another service on that port?"
    } else {
        "check the URL, and that Redis runs there"
    };
    Error::Broker {
        transport,
        transient,
        source: format!(
            "cannot reach Redis at {} ({hint}): {cause}",
            taskq_core::redacted_url(url)
        )
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_refused_by_a_replica_is_tried_again() {
        let err = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "An error was signalled by the server",
            "WAIT cannot be used with replica instances. Please also note that since Redis 4.0 \
             if a replica is configured to be writable (which is not the default) writes to \
             replicas are just local and are not propagated."
                .to_owned(),
        ));
        assert!(matches!(
            redis_error(err),
            Error::Broker {
                transient: true,
                ..
            }
        ));
    }
}
