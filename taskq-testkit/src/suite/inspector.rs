//! The [`Inspector`](taskq_core) suite: counts, dead-letter paging and lookup, requeue and purge.

use taskq_core::{DeadReason, Page, TaskId, WorkerId};

use super::*;

/// Run on a broker that keeps two dead letters per queue: the newest two are kept.
pub async fn dead_letters_are_capped_newest_first(broker: CappedDeadLetters) {
    let q = queue();
    broker
        .enqueue((0..3).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.extend(kill(&broker, &q, 1).await);
    }
    let dead = dead_ids(&broker, &q).await;
    assert_eq!(dead, vec![ids[2], ids[1]]);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.dead, stats.dead_dropped),
        (2, 1),
        "drops are counted"
    );
}

/// The byte cap of the capped broker the inspector suite asks for.
pub const CAPPED_DEAD_BYTES: usize = 16 * 1024;

/// A message whose arguments carry `bytes` of filler.
fn bulky_message(queue: &str, bytes: usize) -> taskq_core::OutboundMessage {
    let envelope = taskq_core::Envelope::new(
        "suite.task",
        &serde_json::json!({ "filler": "x".repeat(bytes) }),
        queue,
        chrono::Utc::now(),
    )
    .unwrap();
    taskq_core::OutboundMessage::from_envelope(&envelope, 1 << 20).unwrap()
}

/// Run on a broker that keeps [`CAPPED_DEAD_BYTES`] of dead letters per queue: past it the
/// oldest go (counted) though the record cap holds, and the newest always stays.
pub async fn dead_letters_are_capped_by_bytes(broker: CappedDeadLetters) {
    let q = queue();
    let sizes = [
        CAPPED_DEAD_BYTES * 6 / 10,
        CAPPED_DEAD_BYTES * 6 / 10,
        CAPPED_DEAD_BYTES * 2,
        100,
    ];
    broker
        .enqueue(sizes.iter().map(|&n| bulky_message(&q, n)).collect())
        .await
        .unwrap();
    let first = kill(&broker, &q, 1).await;
    assert_eq!(dead_ids(&broker, &q).await, first, "one fits");
    let second = kill(&broker, &q, 1).await;
    assert_eq!(
        dead_ids(&broker, &q).await,
        second,
        "two are over the bytes: the oldest goes"
    );
    let huge = kill(&broker, &q, 1).await;
    assert_eq!(
        dead_ids(&broker, &q).await,
        huge,
        "the newest stays, even larger than the cap"
    );
    let small = kill(&broker, &q, 1).await;
    assert_eq!(dead_ids(&broker, &q).await, small);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.dead, stats.dead_dropped),
        (1, 3),
        "drops are counted"
    );
    // Removing dead letters uncounts their bytes: two small ones fit again.
    broker.purge_dead(&q, None).await.unwrap();
    broker
        .enqueue(vec![bulky_message(&q, 100), bulky_message(&q, 100)])
        .await
        .unwrap();
    kill(&broker, &q, 2).await;
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.dead, stats.dead_dropped), (2, 3));
}

/// Run on the byte-capped broker: dead letters deleted or requeued stop counting toward the
/// byte cap (stale bytes would push the older of two small dead letters out).
pub async fn removed_dead_letters_free_their_bytes(broker: CappedDeadLetters) {
    let q = queue();
    let big = CAPPED_DEAD_BYTES * 6 / 10;
    let small = CAPPED_DEAD_BYTES * 45 / 100;
    broker
        .enqueue(vec![
            bulky_message(&q, big),
            bulky_message(&q, big),
            bulky_message(&q, small),
            bulky_message(&q, small),
        ])
        .await
        .unwrap();
    let deleted = kill(&broker, &q, 1).await;
    assert_eq!(broker.delete_dead(&q, &deleted).await.unwrap(), 1);
    let requeued = kill(&broker, &q, 1).await;
    assert_eq!(broker.requeue_dead(&q, Some(&requeued)).await.unwrap(), 1);
    let mut smalls = kill(&broker, &q, 2).await;
    smalls.reverse();
    let dead = dead_ids(&broker, &q).await;
    assert_eq!(
        dead, smalls,
        "both small ones fit once the big ones are gone"
    );
    assert_eq!(broker.stats(&q).await.unwrap().dead_dropped, 0);
}

pub async fn stats_count_every_place(broker: Shared) {
    let q = queue();
    let mut later = message(&q, 0);
    later.eta = Some(broker.clock().now() + chrono::Duration::hours(1));
    broker
        .enqueue(vec![message(&q, 0), message(&q, 0), message(&q, 0), later])
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 2, NO_WAIT)
        .await
        .unwrap();
    broker
        .dead_letter(&worker, &got[0], DeadReason::Failed, None)
        .await
        .unwrap();
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled, stats.processing, stats.dead),
        (1, 1, 1, 1)
    );
}

pub async fn dead_letters_requeue_atomically_with_attempts_reset(broker: Shared) {
    let q = queue();
    let mut tired = message(&q, 0);
    let mut envelope = Envelope::decode(&tired.payload, 1 << 20).unwrap();
    envelope.attempt = 3;
    tired.payload = envelope.encode(1 << 20).unwrap();
    broker
        .enqueue(vec![tired, message(&q, 0), message(&q, 0)])
        .await
        .unwrap();
    let dead = kill(&broker, &q, 3).await;
    assert!(broker.queues().await.unwrap().contains(&q));

    assert_eq!(broker.requeue_dead(&q, Some(&dead[..1])).await.unwrap(), 1);
    assert_eq!(
        broker.requeue_dead(&q, Some(&dead[..1])).await.unwrap(),
        0,
        "never doubled"
    );
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.dead), (1, 2));
    let back = broker
        .fetch(&WorkerId::generate(), std::slice::from_ref(&q), 10, NO_WAIT)
        .await
        .unwrap();
    let envelope = Envelope::decode(back[0].payload(), 1 << 20).unwrap();
    assert_eq!((envelope.id, envelope.attempt), (dead[0], 0));

    // Racing requeues of everything move each letter exactly once.
    let racers: Vec<_> = (0..3)
        .map(|_| {
            let (broker, q) = (broker.clone(), q.clone());
            tokio::spawn(async move { broker.requeue_dead(&q, None).await.unwrap() })
        })
        .collect();
    let mut moved = 0;
    for racer in racers {
        moved += racer.await.unwrap();
    }
    assert_eq!(moved, 2);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.dead), (2, 0));
}

pub async fn dead_letters_purge_by_age(broker: Shared) {
    let q = queue();
    broker
        .enqueue(vec![message(&q, 0), message(&q, 0)])
        .await
        .unwrap();
    kill(&broker, &q, 2).await;
    let cutoff = broker.clock().now() - chrono::Duration::hours(1);
    assert_eq!(
        broker.purge_dead(&q, Some(cutoff)).await.unwrap(),
        0,
        "none are that old"
    );
    let cutoff = broker.clock().now() + chrono::Duration::seconds(1);
    assert_eq!(broker.purge_dead(&q, Some(cutoff)).await.unwrap(), 2);
    broker.enqueue(vec![message(&q, 0)]).await.unwrap();
    kill(&broker, &q, 1).await;
    assert_eq!(broker.purge_dead(&q, None).await.unwrap(), 1);
    assert_eq!(broker.stats(&q).await.unwrap().dead, 0);
}

pub async fn queue_purge_removes_waiting_messages_only(broker: Shared) {
    let q = queue();
    let mut later = message(&q, 0);
    later.eta = Some(broker.clock().now() + chrono::Duration::hours(1));
    let first = message(&q, 3);
    let created = Envelope::decode(&first.payload, 1 << 20)
        .unwrap()
        .created_at;
    broker
        .enqueue(vec![first, message(&q, 0), later, message(&q, 0)])
        .await
        .unwrap();
    assert!(broker
        .stats(&q)
        .await
        .unwrap()
        .oldest_pending
        .is_some_and(|t| t <= created + chrono::Duration::seconds(1)));
    let held = broker
        .fetch(&WorkerId::generate(), std::slice::from_ref(&q), 1, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(broker.purge_queue(&q).await.unwrap(), 3);
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!(
        (stats.pending, stats.scheduled, stats.processing),
        (0, 0, 1)
    );
    assert_eq!(stats.oldest_pending, None);
}

pub async fn dead_letters_are_paged_and_found_by_id(broker: Shared) {
    let q = queue();
    let sent: Vec<_> = (0..5).map(|_| message(&q, 0)).collect();
    broker.enqueue(sent).await.unwrap();
    // Dead-lettered one at a time, so "newest first" is the reverse of `ids`.
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.extend(kill(&broker, &q, 1).await);
    }
    ids.reverse();
    let mut paged = Vec::new();
    let mut page = Page::first(2);
    loop {
        let letters = broker.dead_letters(&q, page).await.unwrap();
        assert!(letters.len() <= 2);
        if letters.is_empty() {
            break;
        }
        paged.extend(letters.into_iter().map(|letter| letter.id.unwrap()));
        page = page.next();
    }
    assert_eq!(
        paged, ids,
        "pages cover every dead letter once, newest first"
    );
    let wanted = ids[3];
    let found = broker.find_dead_letter(&q, wanted).await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.reason),
        (Some(wanted), DeadReason::RetriesExhausted)
    );
    assert!(broker
        .find_dead_letter(&q, TaskId::new())
        .await
        .unwrap()
        .is_none());
    assert!(broker
        .find_dead_letter(&queue(), wanted)
        .await
        .unwrap()
        .is_none());
}

/// Pending messages come in the order a fetch takes them: highest priority first, oldest first
/// within a level; pages cut across levels.
pub async fn pending_is_paged_in_fetch_order(broker: Shared) {
    let q = queue();
    let sent: Vec<OutboundMessage> = [0, 5, 0, 9, 5]
        .into_iter()
        .map(|priority| message(&q, priority))
        .collect();
    broker.enqueue(sent.clone()).await.unwrap();
    let expected = [&sent[3], &sent[1], &sent[4], &sent[0], &sent[2]]
        .map(|m| m.payload.clone())
        .to_vec();
    assert_eq!(broker.pending(&q, Page::first(10)).await.unwrap(), expected);
    assert_eq!(
        broker.pending(&q, Page::new(2, 2)).await.unwrap(),
        expected[2..4]
    );
    assert_eq!(
        broker.pending(&q, Page::new(4, 10)).await.unwrap(),
        expected[4..]
    );
    assert!(broker
        .pending(&q, Page::new(5, 10))
        .await
        .unwrap()
        .is_empty());
    let worker = WorkerId::generate();
    let fetched = broker
        .fetch(
            &worker,
            std::slice::from_ref(&q),
            5,
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
    let fetched: Vec<String> = fetched.iter().map(|d| d.payload().to_owned()).collect();
    assert_eq!(fetched, expected, "the same order a fetch takes");
}

pub async fn dead_letters_are_deleted_by_id(broker: Shared) {
    let q = queue();
    broker
        .enqueue((0..3).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    let ids = kill(&broker, &q, 3).await;
    assert_eq!(
        broker
            .delete_dead(&q, &[ids[1], TaskId::new()])
            .await
            .unwrap(),
        1
    );
    let left = dead_ids(&broker, &q).await;
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&ids[1]));
    assert_eq!(
        broker.delete_dead(&q, &[ids[1]]).await.unwrap(),
        0,
        "already gone"
    );
}

pub async fn history_counts_what_ended_per_minute(broker: Shared) {
    let q = queue();
    broker
        .enqueue((0..5).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let held = broker
        .fetch(
            &worker,
            std::slice::from_ref(&q),
            3,
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(broker.ack(&worker, &held).await.unwrap(), 3);
    kill(&broker, &q, 1).await;
    let history = broker.history(&q, 60).await.unwrap();
    assert_eq!(history.len(), 60);
    let now =
        taskq_core::history::minute_start(taskq_core::history::minute_of(broker.clock().now()));
    // The counts land in the current minute, or the one before if it just turned.
    let recent: (u64, u64) = history[58..]
        .iter()
        .fold((0, 0), |(p, f), m| (p + m.processed, f + m.failed));
    assert_eq!(recent, (3, 1));
    assert!(history[59].minute <= now && history[0].minute < history[59].minute);
    assert!(history[..58]
        .iter()
        .all(|m| m.processed == 0 && m.failed == 0));
}

pub async fn scheduled_are_listed_soonest_first_and_run_now_or_deleted(broker: Shared) {
    let q = queue();
    let now = broker.clock().now();
    let mut sent = Vec::new();
    for minutes in [30, 10, 20] {
        let mut later = message(&q, 3);
        later.eta = Some(now + chrono::Duration::minutes(minutes));
        sent.push(later);
    }
    broker.enqueue(sent.clone()).await.unwrap();
    let listed = broker.scheduled(&q, Page::first(10)).await.unwrap();
    let payloads: Vec<&str> = listed.iter().map(|s| s.payload.as_str()).collect();
    assert_eq!(
        payloads,
        [&sent[1].payload, &sent[2].payload, &sent[0].payload]
    );
    assert!(listed[0].due <= listed[1].due && listed[1].due <= listed[2].due);
    assert_eq!(
        broker.scheduled(&q, Page::new(1, 1)).await.unwrap(),
        listed[1..2]
    );

    // Run the soonest now: it is ready at once; delete the next.
    assert!(broker
        .settle_scheduled(&q, sent[1].id, listed[0].due, true)
        .await
        .unwrap());
    assert!(
        !broker
            .settle_scheduled(&q, sent[1].id, listed[0].due, true)
            .await
            .unwrap(),
        "only once"
    );
    assert!(
        !broker
            .settle_scheduled(&q, sent[2].id, listed[0].due, false)
            .await
            .unwrap(),
        "not at that time"
    );
    assert!(broker
        .settle_scheduled(&q, sent[2].id, listed[1].due, false)
        .await
        .unwrap());
    let stats = broker.stats(&q).await.unwrap();
    assert_eq!((stats.pending, stats.scheduled), (1, 1));
    assert_eq!(
        broker.pending(&q, Page::first(10)).await.unwrap(),
        [sent[1].payload.clone()]
    );
}

pub async fn lost_workers_are_remembered_newest_first_with_their_last_report(broker: Shared) {
    let members = members(&broker);
    let reported = WorkerId::generate();
    let info = taskq_core::WorkerInfo::new(
        reported.as_str(),
        "host",
        vec![queue()],
        4,
        broker.clock().now(),
    );
    broker
        .publish_worker_info(&info, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let silent = WorkerId::generate();
    let now = broker.clock().now();
    members
        .record_lost(std::slice::from_ref(&reported), now)
        .await
        .unwrap();
    members
        .record_lost(std::slice::from_ref(&silent), now)
        .await
        .unwrap();
    let lost = broker.lost_workers().await.unwrap();
    let mine: Vec<_> = lost
        .iter()
        .filter(|l| l.id == reported.as_str() || l.id == silent.as_str())
        .collect();
    assert_eq!(mine.len(), 2);
    assert_eq!(mine[0].id, silent.as_str(), "newest first");
    assert!(mine[0].last_info.is_none());
    assert_eq!(mine[1].last_info.as_ref().map(|i| i.concurrency), Some(4));
    for _ in 0..taskq_core::LOST_WORKERS_KEPT {
        members
            .record_lost(&[WorkerId::generate()], now)
            .await
            .unwrap();
    }
    assert_eq!(
        broker.lost_workers().await.unwrap().len(),
        taskq_core::LOST_WORKERS_KEPT,
        "capped"
    );
}

/// The ids of `q`'s dead letters, newest first (the first page of ten).
async fn dead_ids(broker: &Shared, q: &str) -> Vec<TaskId> {
    broker
        .dead_letters(q, Page::first(10))
        .await
        .unwrap()
        .iter()
        .map(|d| d.id.unwrap())
        .collect()
}

/// Fetched messages show as held by their worker, oldest first, until settled.
pub async fn held_messages_show_with_their_worker_until_settled(broker: Shared) {
    let q = queue();
    let first = message(&q, 0);
    let second = message(&q, 0);
    let ids = [first.id, second.id];
    broker
        .enqueue(vec![first, second, message(&q, 0)])
        .await
        .unwrap();
    assert!(broker.held(&q, 10).await.unwrap().is_empty());
    let worker = WorkerId::generate();
    let got = broker
        .fetch(&worker, std::slice::from_ref(&q), 2, NO_WAIT)
        .await
        .unwrap();
    let held = broker.held(&q, 10).await.unwrap();
    let held_ids: Vec<TaskId> = held
        .iter()
        .map(|m| {
            taskq_core::Envelope::decode(&m.payload, 1 << 20)
                .unwrap()
                .id
        })
        .collect();
    assert_eq!(
        held_ids, ids,
        "oldest first, the unfetched one not among them"
    );
    assert!(held.iter().all(|m| m.worker == worker.as_str()), "{held:?}");
    assert_eq!(
        broker.held(&q, 1).await.unwrap().len(),
        1,
        "bounded by the limit"
    );
    broker.ack(&worker, &got[..1]).await.unwrap();
    let left = broker.held(&q, 10).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
}

pub async fn a_paused_queue_is_skipped_by_every_fetch_until_resumed(broker: Shared) {
    let (q, other) = (queue(), queue());
    broker
        .enqueue(vec![message(&q, 0), message(&other, 0)])
        .await
        .unwrap();
    broker.set_paused(&q, true).await.unwrap();
    assert!(broker.stats(&q).await.unwrap().paused);
    assert!(!broker.stats(&other).await.unwrap().paused);
    let worker = WorkerId::generate();
    let both = [q.clone(), other.clone()];
    let got = broker.fetch(&worker, &both, 10, NO_WAIT).await.unwrap();
    let from: Vec<&str> = got.iter().map(|d| d.queue()).collect();
    assert_eq!(from, [other.as_str()], "the paused queue is skipped");
    // Enqueues still land while it is paused.
    broker.enqueue(vec![message(&q, 5)]).await.unwrap();
    assert_eq!(broker.stats(&q).await.unwrap().pending, 2);
    assert!(broker
        .fetch(&worker, std::slice::from_ref(&q), 10, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    // A fetch waiting on the paused queue takes its messages once it is resumed.
    let waiting = {
        let (broker, q, worker) = (broker.clone(), q.clone(), worker.clone());
        tokio::spawn(async move {
            broker
                .fetch(&worker, &[q], 10, Duration::from_secs(10))
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.set_paused(&q, false).await.unwrap();
    assert!(!broker.stats(&q).await.unwrap().paused);
    let resumed = waiting.await.unwrap();
    assert_eq!(resumed.len(), 2, "both waiting messages, once resumed");
}

pub async fn recent_outcomes_are_kept_newest_first_and_counted_per_task(broker: Shared) {
    use std::time::Duration;
    use taskq_core::{Outcome, OutcomeFilter, TaskState};
    let q = queue();
    broker
        .enqueue((0..4).map(|_| message(&q, 0)).collect())
        .await
        .unwrap();
    let worker = WorkerId::generate();
    let held = broker
        .fetch(&worker, std::slice::from_ref(&q), 4, NO_WAIT)
        .await
        .unwrap();
    assert_eq!(held.len(), 4);
    let now = broker.clock().now();
    let ended = |delivery: &taskq_core::Delivery, task: &str, state, ran_ms| {
        let id = ids(std::slice::from_ref(delivery))[0];
        let outcome = Outcome::new(id, task, state, now)
            .with_runtime(Duration::from_millis(ran_ms))
            .with_wait(Duration::from_millis(1))
            .with_worker(worker.as_str());
        let outcome = match state {
            TaskState::Success => outcome,
            _ => outcome.with_error(format!("{state} of {task}")),
        };
        delivery.clone().with_outcome(outcome)
    };
    let succeeded = [
        ended(&held[0], "suite.a", TaskState::Success, 50),
        ended(&held[1], "suite.a", TaskState::Success, 100),
    ];
    assert_eq!(broker.ack(&worker, &succeeded).await.unwrap(), 2);
    let mut next = message(&q, 0);
    next.eta = Some(now + chrono::Duration::minutes(10));
    let retrying = ended(&held[2], "suite.b", TaskState::Retry, 5);
    assert!(broker.retry(&worker, &retrying, next).await.unwrap());
    let failed = ended(&held[3], "suite.b", TaskState::Failure, 5);
    assert!(broker
        .dead_letter(&worker, &failed, DeadReason::Failed, Some("bad".into()))
        .await
        .unwrap());

    let all = broker
        .recent_outcomes(&q, &OutcomeFilter::default(), 10)
        .await
        .unwrap();
    let states: Vec<TaskState> = all.iter().map(|o| o.state).collect();
    assert_eq!(
        states[..2],
        [TaskState::Failure, TaskState::Retry],
        "newest first"
    );
    assert_eq!(states.len(), 4);
    assert_eq!(all[0].error.as_deref(), Some("FAILURE of suite.b"));
    assert_eq!(all[0].runtime(), Some(Duration::from_millis(5)));
    assert_eq!(all[0].worker.as_deref(), Some(worker.as_str()));

    let by = |filter: OutcomeFilter, limit| {
        let broker = broker.clone();
        let q = q.clone();
        async move { broker.recent_outcomes(&q, &filter, limit).await.unwrap() }
    };
    let failures = by(
        OutcomeFilter::default()
            .task("suite.b")
            .state(TaskState::Failure),
        10,
    )
    .await;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].id, ids(&held[3..])[0]);
    assert_eq!(
        by(OutcomeFilter::default().state(TaskState::Success), 1)
            .await
            .len(),
        1,
        "the limit holds"
    );
    assert_eq!(by(OutcomeFilter::default().task("suite.c"), 10).await, []);
    let later = now + chrono::Duration::minutes(5);
    assert_eq!(by(OutcomeFilter::default().since(later), 10).await, []);
    assert_eq!(by(OutcomeFilter::default().until(later), 10).await.len(), 4);

    let numbers = broker.task_numbers(&q, 60).await.unwrap();
    let names: Vec<&str> = numbers.iter().map(|n| n.task.as_str()).collect();
    assert_eq!(names, ["suite.a", "suite.b"]);
    let (a, b) = (&numbers[0], &numbers[1]);
    assert_eq!((a.count(TaskState::Success), a.runtime.count()), (2, 2));
    let median = a.runtime.quantile(0.5).unwrap().as_secs_f64();
    assert!((0.045..=0.055).contains(&median), "median {median} s");
    assert_eq!(a.wait.count(), 2);
    assert_eq!(
        (b.count(TaskState::Retry), b.count(TaskState::Failure)),
        (1, 1)
    );
    assert_eq!(b.failure_rate(), Some(1.0));
}

/// Settles a little over the cap of outcomes in batches of 256: the record keeps about its
/// cap (whole batches fall off its tail), newest first.
pub async fn the_record_of_outcomes_keeps_about_its_cap(broker: Shared) {
    use taskq_core::{Outcome, OutcomeFilter, TaskState, RECENT_OUTCOMES_KEPT};
    const BATCH: usize = 256;
    let q = queue();
    let total = RECENT_OUTCOMES_KEPT + 3 * BATCH;
    for chunk in 0..total.div_ceil(1_000) {
        let n = (total - chunk * 1_000).min(1_000);
        broker
            .enqueue((0..n).map(|_| message(&q, 0)).collect())
            .await
            .unwrap();
    }
    let worker = WorkerId::generate();
    let now = broker.clock().now();
    let mut last = None;
    loop {
        let held = broker
            .fetch(&worker, std::slice::from_ref(&q), BATCH, NO_WAIT)
            .await
            .unwrap();
        if held.is_empty() {
            break;
        }
        let settled: Vec<_> = held
            .iter()
            .zip(ids(&held))
            .map(|(delivery, id)| {
                last = Some(id);
                delivery
                    .clone()
                    .with_outcome(Outcome::new(id, "suite.a", TaskState::Success, now))
            })
            .collect();
        assert_eq!(broker.ack(&worker, &settled).await.unwrap(), held.len());
    }
    let kept = broker
        .recent_outcomes(&q, &OutcomeFilter::default(), usize::MAX)
        .await
        .unwrap();
    assert!(
        (RECENT_OUTCOMES_KEPT - BATCH..=RECENT_OUTCOMES_KEPT).contains(&kept.len()),
        "{} kept of {total}",
        kept.len()
    );
    assert_eq!(kept[0].id, last.unwrap(), "newest first");
}
