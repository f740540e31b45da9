//! The broker conformance suites on RabbitMQ. Every suite test runs here except those whose
//! behaviour AMQP cannot show the same way; each exception is listed with its reason and
//! replaced by a test of what RabbitMQ does instead (`docs/amqp.md`, "Differences").
//!
//! Transport exceptions:
//! - scheduling (`eta_is_not_fetched_early`, `fetch_is_woken_by_promotion`,
//!   `retry_reschedules_the_next_attempt`, `racing_promoters_promote_once`): RabbitMQ moves
//!   delayed messages itself, in whole seconds; `promote_scheduled` does nothing. See
//!   `delays::*`.
//! - counts of held and scheduled messages (`retry_by_another_worker_changes_nothing`,
//!   `dead_letter_by_another_worker_changes_nothing` check `processing`): unacknowledged
//!   deliveries are not visible over AMQP without the management plugin.
//! - uniqueness and rate limits need a shared store (Redis).
//! - bounded queues bound each priority level, not the queue.
//! - `requeue_returns_to_the_head`: a requeued message is published again, to the tail of its
//!   level, because a return with nack-requeue counts toward `x-delivery-limit` (RabbitMQ
//!   3.10-3.13) and would dead-letter a message that never ran. See
//!   `behaviour::messages_handed_back_unstarted_do_not_count_toward_the_delivery_limit`.
//!
//! Inspector exceptions: `stats_count_every_place` and `queue_purge_removes_waiting_messages_only`
//! count held and scheduled messages and the oldest ready one, which AMQP does not show;
//! `pending_is_paged_in_fetch_order` and the scheduled listing (reading a quorum queue counts
//! as a delivery; delayed messages wait in the shared delay chain); history and lost workers
//! are not kept. `inspector::*` checks purge and stats as far as AMQP shows them.
//! - `a_huge_fetch_loses_nothing` and `a_huge_enqueue_lands_whole_and_in_order` count held and
//!   scheduled messages; `huge::*` checks the same without those counts.

use super::support::amqp_broker;

taskq_testkit::__suite_tests!(transport [tokio::test(flavor = "multi_thread", worker_threads = 2)] amqp_broker();
    fifo_within_a_level,
    higher_priority_first,
    queues_in_order_of_preference,
    fetch_returns_empty_after_waiting,
    fetch_is_woken_by_enqueue,
    fetch_is_woken_for_any_queue_and_level,
    a_burst_wakes_enough_waiting_fetches,
    ack_is_fenced,
    retry_stays_in_the_delivery_queue,
    dead_letter_keeps_payload_and_reason,
);

taskq_testkit::__suite_tests!(control [tokio::test(flavor = "multi_thread", worker_threads = 2)] amqp_broker();
    control_messages_reach_subscribers,
    revocations_expire,
    worker_info_expires,
    concurrent_readers_each_see_every_revocation_and_worker,
);

taskq_testkit::__suite_tests!(inspector [tokio::test(flavor = "multi_thread", worker_threads = 2)] amqp_broker();
    dead_letters_requeue_atomically_with_attempts_reset,
    dead_letters_purge_by_age,
    dead_letters_are_paged_and_found_by_id,
    dead_letters_are_deleted_by_id,
);
