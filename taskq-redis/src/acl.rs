//! Least-privilege Redis ACL rules for each role, as `ACL SETUSER` arguments (Redis 7).
//!
//! ```text
//! ACL SETUSER producer on >secret <taskq_redis::acl::PRODUCER, space-separated>
//! ```
//!
//! The rules name taskq's keys (`docs/redis.md`), channels and the commands each role sends,
//! scripts included: Redis checks every command a script runs against the caller's rules, so
//! a producer cannot run the fetch or ack scripts on lists it may not touch. Tested against a
//! real server in `taskq-worker/tests/it/acl.rs`.

/// Enqueue (plain, unique, by name with declared options), send workflows and wait for results.
pub const PRODUCER: &[&str] = &[
    "resetkeys",
    "~taskq:{*}:pending:*",
    "~taskq:{*}:scheduled",
    "~taskq:{*}:wake",
    "~taskq:{*}:unique:*",
    "~taskq:queues",
    "~taskq:queues-seen{taskq:queues}",
    "%R~taskq:tasks",
    "%R~taskq:result:*",
    "~taskq:workflow:*",
    "resetchannels",
    "&taskq:result-ready:*",
    "-@all",
    "+@connection",
    "+time",
    "+lpush",
    "+ltrim",
    "+zadd",
    "+sadd",
    "+hset",
    "+hget",
    "+get",
    "+multi",
    "+exec",
    "+evalsha",
    "+eval",
    "+script|load",
    "+llen",
    "+zcard",
    "+set",
    "+subscribe",
    "+unsubscribe",
];

/// Run tasks: every taskq key and channel, no administrative or dangerous command except
/// reading the durability settings it warns about.
pub const WORKER: &[&str] = &[
    "resetkeys",
    "~taskq:*",
    "resetchannels",
    "&taskq:*",
    "+@all",
    "-@dangerous",
    "+config|get",
];

/// Look without touching: `taskq status`, `workers`, `dead list`/`show`, `result`. Every key
/// read-only, no publishing (a control message can revoke tasks), so `ping` is not available.
pub const OPERATOR_READ_ONLY: &[&str] = &[
    "resetkeys",
    "%R~taskq:*",
    "resetchannels",
    "-@all",
    "+@connection",
    "+@read",
    "+time",
    "+evalsha_ro",
    "+script|load",
];
