//! Workflows under a kill storm: demo worker processes (`taskq-demo-worker`) SIGKILLed every
//! 1.5 s, and replaced, while a 1,000-member chord and a 50-step chain run on a real
//! redis-server. The ledger the tasks write (one line per run start, in time order) is the
//! evidence: the chord's callback ran once with every output, the chain finished, and no
//! step started after its successor had.

use std::time::{Duration, Instant};

use support::{ledger_path, WorkerProcess};
use taskq_core::workflow::{chain, group};
use taskq_examples::demo::{Collect, Sleep, Step};
use taskq_testkit::RedisServer;

mod support;

const MEMBERS: u64 = 1000;
const STEPS: u64 = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_storm_neither_loses_nor_repeats_workflow_steps() {
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.expect("connect");
    let ledger = ledger_path("kill-storm");
    let ledger_arg = Some(ledger.display().to_string());
    // A message held by four killed workers in a row would be dead-lettered as poison (three
    // recoveries by default); on a slow machine the storm does that to an innocent member.
    // This test is about exactly-once steps, not the poison cap: give it room.
    let start = || {
        WorkerProcess::start(
            &server,
            &["--concurrency", "16", "--max-redeliveries", "100"],
        )
    };
    let mut workers: Vec<WorkerProcess> = (0..3).map(|_| start()).collect();

    let members = (0..MEMBERS).map(|i| Sleep {
        ms: 150 + (i * 37) % 200,
        ledger: ledger_arg.clone(),
    });
    let expected_sum: u64 = (0..MEMBERS).map(|i| 150 + (i * 37) % 200).sum();
    let chord = client
        .send_chain(group(members).then(Collect {
            values: Vec::new(),
            ledger: ledger_arg.clone(),
        }))
        .await
        .expect("send the chord");
    let step = |n| Step {
        n,
        ms: 120,
        ledger: ledger_arg.clone(),
    };
    let mut steps = chain(step(0));
    for _ in 1..STEPS {
        steps = steps.then(step(0));
    }
    let chain = client.send_chain(steps).await.expect("send the chain");

    // The storm: one worker SIGKILLed and replaced every 1.5 s until both workflows ended.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut kills = 0;
    loop {
        let chord_done = chord.last().state().await.unwrap().is_ready();
        let chain_done = chain.last().state().await.unwrap().is_ready();
        if chord_done && chain_done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the workflows did not finish within 3 minutes"
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let victim = kills % workers.len();
        workers[victim].signal("KILL");
        workers[victim].wait_exit(Duration::from_secs(10));
        workers[victim] = start();
        kills += 1;
    }
    assert!(kills >= 3, "the storm killed only {kills} workers");

    assert_eq!(
        chord.wait(Duration::from_secs(10)).await.unwrap(),
        expected_sum
    );
    assert_eq!(chain.wait(Duration::from_secs(10)).await.unwrap(), STEPS);
    // Let a late duplicate (there must be none) reach the ledger.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(workers);

    let text = std::fs::read_to_string(&ledger).expect("the ledger");
    let what = |line: &str| {
        line.split_whitespace()
            .skip(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let collects: Vec<String> = text
        .lines()
        .map(what)
        .filter(|w| w.starts_with("collect"))
        .collect();
    assert_eq!(
        collects,
        [format!("collect {MEMBERS} {expected_sum}")],
        "the callback runs exactly once, with every output"
    );
    let sleeps = text.lines().filter(|l| what(l) == "sleep").count() as u64;
    assert!(
        sleeps >= MEMBERS,
        "every member ran ({sleeps} runs of {MEMBERS})"
    );

    // Steps in the order they started: a step may start again (its worker was killed while it
    // ran) but never after its successor started.
    let started: Vec<u64> = text
        .lines()
        .filter_map(|l| what(l).strip_prefix("step ").map(|n| n.parse().unwrap()))
        .collect();
    assert!(
        started.windows(2).all(|pair| pair[0] <= pair[1]),
        "a step started after its successor: {started:?}"
    );
    let mut distinct = started.clone();
    distinct.dedup();
    assert_eq!(distinct, (0..STEPS).collect::<Vec<_>>(), "every step ran");
    eprintln!(
        "kill storm: {kills} workers killed; {} member runs for {MEMBERS} members; {} step starts for {STEPS} steps",
        sleeps,
        started.len()
    );
}
