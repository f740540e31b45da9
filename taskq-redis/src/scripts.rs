//! The Lua scripts, one per state transition, loaded once and invoked through EVALSHA.

use std::sync::LazyLock;

use redis::Script;

/// `lua/lib/dead_letters.lua`: the dead-letter list and its byte count, kept together.
const DEAD_LETTERS_LIB: &str = include_str!("../lua/lib/dead_letters.lua");

/// A script with a library inserted after its first line (the `#!lua` flags line must stay
/// first; a script without one gets the library in front).
fn with_library(source: &str, library: &str) -> String {
    match source.split_once('\n') {
        Some((flags, body)) if flags.starts_with("#!") => format!("{flags}\n{library}{body}"),
        _ => format!("{library}{source}"),
    }
}

macro_rules! script {
    ($name:ident, $file:literal) => {
        #[doc = concat!("`lua/", $file, "`")]
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(include_str!(concat!("../lua/", $file))));
    };
    ($name:ident, $file:literal, with $library:expr) => {
        #[doc = concat!("`lua/", $file, "`, with a library")]
        pub(crate) static $name: LazyLock<Script> = LazyLock::new(|| {
            Script::new(&with_library(
                include_str!(concat!("../lua/", $file)),
                $library,
            ))
        });
    };
}

script!(ENQUEUE, "enqueue.lua");
script!(FETCH, "fetch.lua");
script!(ACK, "ack.lua");
script!(RETRY, "retry.lua");
script!(REQUEUE, "requeue.lua");
script!(DEAD_LETTER, "dead_letter.lua", with DEAD_LETTERS_LIB);
script!(PROMOTE_SCHEDULED, "promote_scheduled.lua");
script!(RECOVER, "recover.lua", with DEAD_LETTERS_LIB);
script!(ENQUEUE_UNIQUE, "enqueue_unique.lua");
script!(REQUEUE_DEAD, "requeue_dead.lua", with DEAD_LETTERS_LIB);
script!(RELEASE_UNIQUE, "release_unique.lua");
script!(RATE_LIMIT, "rate_limit.lua");
script!(EXTEND_LOCK, "extend_lock.lua");
script!(RELEASE_LOCK, "release_lock.lua");
script!(SET_LAST_FIRE, "set_last_fire.lua");
script!(FIND_DEAD, "find_dead.lua");
script!(STATS, "stats.lua");
script!(PURGE_DEAD, "purge_dead.lua", with DEAD_LETTERS_LIB);
script!(PURGE_QUEUE, "purge_queue.lua");
script!(STORE_RESULT, "store_result.lua");
script!(REPORT_MEMBERS, "report_members.lua");
script!(PENDING_PAGE, "pending_page.lua");
script!(DELETE_DEAD, "delete_dead.lua", with DEAD_LETTERS_LIB);
script!(SETTLE_SCHEDULED, "settle_scheduled.lua");
script!(QUEUE_IDLE, "queue_idle.lua");
script!(REGISTER_QUEUES, "register_queues.lua");
script!(FORGET_QUEUE, "forget_queue.lua");

/// `lua/heartbeat.lua`, sent whole with `EVAL` inside a pipeline (one round trip for all of a
/// worker's queues, whatever the server's script cache holds).
pub(crate) const HEARTBEAT_SOURCE: &str = include_str!("../lua/heartbeat.lua");

/// Runs a script flagged `no-writes` with `EVALSHA_RO` (loading it first when the server does
/// not know it): its keys then count as read-only, so a user whose ACL rules only allow reading
/// (`%R~`) may run it, and a cluster may route it to a replica.
pub(crate) async fn invoke_read_only<T: redis::FromRedisValue>(
    conn: &mut crate::conn::Conn,
    script: &Script,
    keys: &[String],
    args: &[String],
) -> redis::RedisResult<T> {
    let mut command = redis::cmd("EVALSHA_RO");
    command
        .arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    match command.query_async(conn).await {
        Err(err) if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            // One pipeline, so that on a cluster the load goes to the node the keys live on.
            let (value,): (T,) = redis::pipe()
                .load_script(script)
                .ignore()
                .add_command(command)
                .query_async(conn)
                .await?;
            Ok(value)
        }
        outcome => outcome,
    }
}
