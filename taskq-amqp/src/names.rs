//! Every exchange and queue name taskq uses on RabbitMQ, built in one place (`docs/amqp.md`).

use taskq_core::Priority;

/// Levels of the delay chain: delays up to 2^28 - 1 seconds (8.5 years) in whole seconds.
pub(crate) const DELAY_LEVELS: u32 = 28;

/// Control messages (ping, revoke) to every subscriber (fanout).
pub(crate) const CONTROL_EXCHANGE: &str = "taskq.control";

/// Dead letters, routed by queue name to each queue's dead-letter queue (direct).
pub(crate) const DEAD_EXCHANGE: &str = "taskq.dead";

/// The last hop of the delay chain, routing by the target's digest (topic).
pub(crate) const DELIVER_EXCHANGE: &str = "taskq.delay.deliver";

/// One message per queue name a process started using (the registry `taskq status` reads).
pub(crate) const REGISTRY_QUEUE: &str = "taskq.registry";

/// What workers report about themselves (`taskq workers`): a stream, read by every inspector
/// in full.
pub(crate) const WORKERS_STREAM: &str = "taskq.workers";

/// The beat leader's token: a quorum queue with a single active consumer.
pub(crate) const BEAT_LEADER_QUEUE: &str = "taskq.beat.leader";

/// What the leading beat publishes about its schedule (the dashboard reads the latest).
pub(crate) const BEAT_STATUS_STREAM: &str = "taskq.beat.status";

/// Revocations, appended with the time they end: a stream every worker follows.
pub(crate) const REVOCATIONS_STREAM: &str = "taskq.revocations";

/// The reply queue of one client process (`?results=rpc`): its results, delivered to it
/// alone; exclusive to its connection.
pub(crate) fn reply_queue(process: uuid::Uuid) -> String {
    format!("taskq.reply.{}", process.simple())
}

/// The quorum queue holding `queue`'s ready messages of one priority level.
pub(crate) fn level_queue(queue: &str, level: u8) -> String {
    format!("taskq.{queue}.p{}", level.min(Priority::LEVELS - 1))
}

/// Every level queue of `queue`, highest priority first (the order workers take them).
pub(crate) fn level_queues_highest_first(queue: &str) -> impl Iterator<Item = (u8, String)> + '_ {
    (0..Priority::LEVELS)
        .rev()
        .map(move |level| (level, level_queue(queue, level)))
}

/// `queue`'s dead letters.
pub(crate) fn dead_queue(queue: &str) -> String {
    format!("taskq.{queue}.dead")
}

/// The exchange and the queue of delay level `k` (messages wait there 2^k seconds).
pub(crate) fn delay_level(k: u32) -> String {
    format!("taskq.delay.{k}")
}

/// The word that names a level queue at the end of a delay routing key: a digest, so that any
/// queue name (dots included) routes exactly and the key stays short.
pub(crate) fn delivery_word(level_queue: &str) -> String {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, level_queue.as_bytes())
        .simple()
        .to_string()
}

/// The binding of a level queue on the deliver exchange: any 28 delay bits, then its word.
pub(crate) fn delivery_binding(level_queue: &str) -> String {
    format!(
        "{}{}",
        "*.".repeat(DELAY_LEVELS as usize),
        delivery_word(level_queue)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_collide() {
        let names = [
            level_queue("a", 0),
            level_queue("a.p0", 0),
            dead_queue("a"),
            dead_queue("a.p0"),
            level_queue("a.dead", 0),
        ];
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(level_queue("q", 42), "taskq.q.p9", "levels are clamped");
    }

    #[test]
    fn delivery_bindings_are_short_and_exact() {
        let long = "x".repeat(200);
        let binding = delivery_binding(&level_queue(&long, 9));
        assert!(binding.len() <= 255, "an AMQP short string");
        assert_ne!(delivery_word("taskq.a.p0"), delivery_word("taskq.b.p0"));
    }
}
