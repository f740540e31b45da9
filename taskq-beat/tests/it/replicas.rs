//! Three real `taskq-beat` processes against one redis-server while the leader is killed, and
//! the next leader is paused past the lock's time to live and resumed: every one-second slot
//! must be enqueued exactly once (ids counted), with no slot missing (catch_up = "all").

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    time::Duration,
};

use chrono::{DateTime, Utc};
use taskq_core::Envelope;
use taskq_testkit::RedisServer;

pub(crate) struct BeatProcess(pub(crate) Child);

impl BeatProcess {
    pub(crate) fn start(url: &str, schedule: &std::path::Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_taskq-beat"))
            .args([
                "--broker",
                url,
                "--lock-ttl",
                "2s",
                "--tick",
                "100ms",
                "--grace",
                "1s",
                "--schedule",
            ])
            .arg(schedule)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start taskq-beat");
        Self(child)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for BeatProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops every beat with SIGTERM and checks that each exited cleanly.
pub(crate) fn terminate_all(beats: &mut [BeatProcess]) {
    for beat in beats.iter() {
        signal(beat.pid(), "TERM");
    }
    for beat in beats.iter_mut() {
        let status = beat.0.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

pub(crate) fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// A fresh redis-server, a schedule file with `text`, and an admin connection.
async fn setup(
    text: &str,
) -> (
    RedisServer,
    std::path::PathBuf,
    redis::aio::MultiplexedConnection,
) {
    let server = RedisServer::start();
    let schedule =
        std::env::temp_dir().join(format!("taskq-beat-{}.toml", taskq_core::TaskId::new()));
    std::fs::write(&schedule, text).unwrap();
    let conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (server, schedule, conn)
}

async fn leader_pid(conn: &mut redis::aio::MultiplexedConnection) -> u32 {
    for _ in 0..100 {
        let owner: Option<String> = redis::cmd("GET")
            .arg("taskq:beat:leader")
            .query_async(conn)
            .await
            .unwrap();
        if let Some(pid) = owner
            .as_deref()
            .and_then(|o| o.split(':').nth(1))
            .and_then(|p| p.parse().ok())
        {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_slot_is_enqueued_exactly_once_across_replicas_and_failures() {
    let (server, schedule, mut conn) = setup("[[entry]]\nname = \"tick\"\ntask = \"demo.add\"\nargs = { a = 1, b = 1 }\nevery = \"1s\"\nqueue = \"beat\"\ncatch_up = \"all\"\nbackfill = 30\n").await;

    let mut beats: Vec<BeatProcess> = (0..3)
        .map(|_| BeatProcess::start(&server.url(), &schedule))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let first = leader_pid(&mut conn).await;
    signal(first, "KILL");
    beats.retain(|b| b.pid() != first);
    // The lock expires within its 2 s TTL and another replica takes over.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let second = leader_pid(&mut conn).await;
    assert_ne!(second, first, "a replica took over from the killed leader");
    signal(second, "STOP");
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    signal(second, "CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;
    terminate_all(&mut beats);

    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg("taskq:{beat}:pending:0")
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut per_slot: BTreeMap<DateTime<Utc>, Vec<taskq_core::TaskId>> = BTreeMap::new();
    for payload in &raw {
        let envelope = Envelope::decode(payload, 1 << 20).unwrap();
        let slot: DateTime<Utc> = envelope.headers["taskq-beat-slot"].parse().unwrap();
        assert_eq!(envelope.id, taskq_beat::fire_id("tick", slot));
        per_slot.entry(slot).or_default().push(envelope.id);
    }
    let doubled: Vec<_> = per_slot.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(doubled.is_empty(), "slots enqueued twice: {doubled:?}");
    let slots: Vec<_> = per_slot.keys().copied().collect();
    assert!(
        slots.len() >= 10,
        "only {} slots fired in ~13 s",
        slots.len()
    );
    let gaps: Vec<_> = slots
        .windows(2)
        .filter(|pair| pair[1] - pair[0] != chrono::Duration::seconds(1))
        .collect();
    assert!(gaps.is_empty(), "missed slots between {gaps:?}");
    eprintln!(
        "{} slots, each enqueued exactly once, none missed",
        slots.len()
    );
    let _ = std::fs::remove_file(schedule);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_beats_on_redis_fire_each_slot_once() {
    use std::sync::Arc;
    use taskq_beat::{Beat, Entry, Every, MemoryBeatStore};
    let server = RedisServer::start();
    let client = taskq::connect(&server.url()).await.unwrap();
    let entry = || {
        vec![Entry::new(
            "tick",
            "demo.add",
            Every::new(Duration::from_millis(200)).unwrap(),
        )
        .with_queue("split")]
    };
    let beats: Vec<_> = (0..3)
        .map(|_| Beat::new(client.clone(), Arc::new(MemoryBeatStore::new()), entry()).unwrap())
        .collect();
    let runs: Vec<_> = beats
        .into_iter()
        .map(|beat| tokio::spawn(beat.run(tokio::time::sleep(Duration::from_secs(3)))))
        .collect();
    let mut fired = 0;
    let mut already = 0;
    for run in runs {
        let report = run.await.unwrap().unwrap();
        fired += report.fired;
        already += report.already_fired;
    }
    let stats = client.broker().stats("split").await.unwrap();
    assert_eq!(stats.pending as u64, fired, "one message per fire");
    assert!(fired >= 10, "{fired}");
    // Every beat saw every slot; two of the three found it taken (a slot at the very edge of
    // the run may be seen by fewer).
    assert!(
        already + 3 >= 2 * fired,
        "the other beats found the slots taken: {already} vs {fired}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_lock_for_a_fast_takeover() {
    let (server, schedule, mut conn) =
        setup("[[entry]]\nname = \"t\"\ntask = \"demo.add\"\nevery = \"1s\"\n").await;
    let mut beat = BeatProcess::start(&server.url(), &schedule);
    assert_eq!(leader_pid(&mut conn).await, beat.pid());
    signal(beat.pid(), "TERM");
    assert!(beat.0.wait().unwrap().success());
    let owner: Option<String> = redis::cmd("GET")
        .arg("taskq:beat:leader")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(owner, None, "released on shutdown, not left to expire");
    let _ = std::fs::remove_file(schedule);
}
