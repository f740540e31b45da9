//! The Lua scripts, one per state transition, loaded once and invoked through EVALSHA.

use std::sync::LazyLock;

use redis::Script;

macro_rules! script {
    ($name:ident, $file:literal) => {
        #[doc = concat!("`lua/", $file, "`")]
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(include_str!(concat!("../lua/", $file))));
    };
}

script!(ENQUEUE, "enqueue.lua");
script!(FETCH, "fetch.lua");
script!(ACK, "ack.lua");
script!(RETRY, "retry.lua");
script!(REQUEUE, "requeue.lua");
script!(DEAD_LETTER, "dead_letter.lua");
script!(PROMOTE_SCHEDULED, "promote_scheduled.lua");
script!(RECOVER, "recover.lua");
script!(ENQUEUE_UNIQUE, "enqueue_unique.lua");
script!(REQUEUE_DEAD, "requeue_dead.lua");
script!(RELEASE_UNIQUE, "release_unique.lua");
script!(RATE_LIMIT, "rate_limit.lua");
script!(EXTEND_LOCK, "extend_lock.lua");
script!(RELEASE_LOCK, "release_lock.lua");
script!(SET_LAST_FIRE, "set_last_fire.lua");
script!(FIND_DEAD, "find_dead.lua");
script!(STATS, "stats.lua");
script!(PURGE_DEAD, "purge_dead.lua");
script!(PURGE_QUEUE, "purge_queue.lua");
script!(STORE_RESULT, "store_result.lua");
script!(REPORT_MEMBERS, "report_members.lua");
script!(PENDING_PAGE, "pending_page.lua");
script!(DELETE_DEAD, "delete_dead.lua");
script!(SETTLE_SCHEDULED, "settle_scheduled.lua");

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
