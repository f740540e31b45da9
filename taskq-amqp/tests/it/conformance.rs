//! The broker conformance suites on RabbitMQ. Every suite test runs here except those named in
//! a `skip` list below, each with the reason AMQP cannot show that behaviour the same way; what
//! RabbitMQ does instead is tested in `delays`, `behaviour`, `inspector` and `huge`
//! (`docs/amqp.md`, "Differences"). A new suite test runs here by default.

use std::sync::Arc;

use taskq_core::Broker;

use super::support::{amqp_broker, config};

/// A broker on a fresh vhost keeping two dead letters per queue, and few bytes of them.
async fn capped_amqp_broker() -> (Arc<dyn Broker>, ()) {
    let config = config()
        .with_max_dead_letters(2)
        .with_max_dead_letter_bytes(taskq_testkit::suite::inspector::CAPPED_DEAD_BYTES);
    let broker = taskq_amqp::AmqpBroker::connect(config)
        .await
        .expect("connect");
    (Arc::new(broker), ())
}

taskq_testkit::transport_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] transport => amqp_broker(), skip {
    eta_is_not_fetched_early: "RabbitMQ moves delayed messages itself, in whole seconds (delays::*)",
    fetch_is_woken_by_promotion: "promote_scheduled does nothing: RabbitMQ delivers delayed messages itself",
    retry_reschedules_the_next_attempt: "a retry's delay is RabbitMQ's, in whole seconds (delays::*)",
    racing_promoters_promote_once: "there is no promotion step on AMQP",
    retry_by_another_worker_changes_nothing: "counts held messages, which AMQP does not show without the management plugin",
    dead_letter_by_another_worker_changes_nothing: "counts held messages, which AMQP does not show without the management plugin",
    unique_enqueue_happens_once_per_key: "uniqueness needs a shared store (Redis)",
    rate_limit_spaces_starts: "shared rate limits need a shared store (Redis)",
    requeue_returns_to_the_head: "a requeued message is published again, to the tail of its level: a nack-requeue counts toward x-delivery-limit (behaviour::messages_handed_back_unstarted_do_not_count_toward_the_delivery_limit)",
    a_huge_fetch_loses_nothing: "counts held and scheduled messages (huge::* checks the same without them)",
    a_huge_enqueue_lands_whole_and_in_order: "counts held and scheduled messages (huge::* checks the same without them)",
    a_full_queue_refuses_the_whole_call_naming_the_queue: "a bounded queue bounds each priority level, not the queue",
    concurrent_producers_never_exceed_the_bound: "a bounded queue bounds each priority level, not the queue",
    a_unique_enqueue_into_a_full_queue_is_refused_and_claims_nothing: "uniqueness needs a shared store (Redis)",
});

taskq_testkit::control_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] control => amqp_broker());

taskq_testkit::inspector_conformance!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] inspector => amqp_broker(), capped => capped_amqp_broker(), skip {
    stats_count_every_place: "counts held and scheduled messages and the oldest ready one, which AMQP does not show (inspector::*)",
    held_messages_show_with_their_worker_until_settled: "RabbitMQ does not show unacknowledged deliveries without its management plugin (held refuses, sees_held is false)",
    queue_purge_removes_waiting_messages_only: "counts held and scheduled messages, which AMQP does not show (inspector::*)",
    pending_is_paged_in_fetch_order: "reading a quorum queue counts as a delivery",
    scheduled_are_listed_soonest_first_and_run_now_or_deleted: "delayed messages wait in the shared delay chain, not per queue",
    history_counts_what_ended_per_minute: "per-minute history is not kept on AMQP",
    recent_outcomes_are_kept_newest_first_and_counted_per_task: "RabbitMQ has nowhere to keep a record of outcomes or counters (keeps_outcomes is false; the dashboard says so)",
    the_record_of_outcomes_keeps_about_its_cap: "no record of outcomes on AMQP (as above)",
    lost_workers_are_remembered_newest_first_with_their_last_report: "lost workers are not kept on AMQP",
    dead_letters_are_capped_newest_first: "RabbitMQ drops the oldest itself (x-overflow drop-head) and does not count the drops (behaviour::dead_letters_are_capped_newest_first checks the cap)",
    dead_letters_are_capped_by_bytes: "RabbitMQ's x-max-length-bytes drops even the newest letter when it alone is larger than the cap",
    a_paused_queue_is_skipped_by_every_fetch_until_resumed: "RabbitMQ pushes to consumers with no fetch to hold back: pausing is refused (behaviour::pausing_a_queue_is_refused_naming_the_feature)",
});
