//! The Lua scripts, one per state transition, loaded once and invoked through EVALSHA.

use std::sync::LazyLock;

use redis::Script;

/// The libraries a script may include, by the path its `--- @include` line names (relative to
/// `lua/`).
const LIBRARIES: &[(&str, &str)] = &[
    (
        "lib/dead_letters.lua",
        include_str!("../lua/lib/dead_letters.lua"),
    ),
    ("lib/due.lua", include_str!("../lua/lib/due.lua")),
    ("lib/outcomes.lua", include_str!("../lua/lib/outcomes.lua")),
    (
        "lib/partitions.lua",
        include_str!("../lua/lib/partitions.lua"),
    ),
];

/// A script with every library it declares (`--- @include lib/NAME.lua`, one per line, as
/// BullMQ's scripts do) put in place of its declaration, so a script says itself where the
/// functions it calls come from and gets nothing it did not ask for.
///
/// # Panics
///
/// On a declared library that does not exist: a script that could never run (tested for
/// every script).
fn with_includes(source: &str) -> String {
    source
        .split_inclusive('\n')
        .map(|line| match line.trim().strip_prefix("--- @include ") {
            Some(path) => LIBRARIES
                .iter()
                .find(|(name, _)| *name == path.trim())
                .map(|(_, library)| (*library).to_owned())
                .unwrap_or_else(|| panic!("`--- @include {path}`: no such library in lua/")),
            None => line.to_owned(),
        })
        .collect()
}

macro_rules! script {
    ($name:ident, $file:literal) => {
        #[doc = concat!("`lua/", $file, "`")]
        pub(crate) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::new(&with_includes(include_str!(concat!("../lua/", $file)))));
    };
}

script!(ENQUEUE, "enqueue.lua");
script!(FETCH, "fetch.lua");
script!(ACK, "ack.lua");
script!(CELERY_INTAKE, "celery_intake.lua");
script!(RETRY, "retry.lua");
script!(REQUEUE, "requeue.lua");
script!(DEAD_LETTER, "dead_letter.lua");
script!(PROMOTE_SCHEDULED, "promote_scheduled.lua");
script!(RECOVER, "recover.lua");
script!(PARK_LEASE, "park_lease.lua");
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
script!(QUEUE_IDLE, "queue_idle.lua");
script!(REGISTER_QUEUES, "register_queues.lua");
script!(FORGET_QUEUE, "forget_queue.lua");
script!(PARTITIONS, "partitions.lua");
script!(ENQUEUE_KEYED, "enqueue_keyed.lua");
script!(SETTLE_DUE, "settle_due.lua");

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script, with what it declares put in place: none names a missing library, and
    /// every library function a script calls comes from a library it includes.
    #[test]
    fn every_script_includes_what_it_calls_and_nothing_else() {
        let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/lua");
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|ext| ext != "lua") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            let expanded = with_includes(&source);
            for (name, library) in LIBRARIES {
                let functions: Vec<&str> = library
                    .lines()
                    .filter_map(|line| line.strip_prefix("local function "))
                    .filter_map(|rest| rest.split('(').next())
                    .collect();
                let calls = functions
                    .iter()
                    .any(|function| source.contains(&format!("{function}(")));
                let includes = source.contains(&format!("--- @include {name}"));
                assert_eq!(
                    calls,
                    includes,
                    "{}: calls a function of {name} without including it, or includes it unused",
                    path.display()
                );
                if includes {
                    assert!(expanded.contains(library), "{}", path.display());
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "no such library")]
    fn a_missing_library_is_named() {
        with_includes("--- @include lib/nowhere.lua\nreturn 1\n");
    }
}
