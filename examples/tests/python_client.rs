//! The Python producer in `clients/python` against a real redis-server and a real demo worker
//! process: its own unittest suite, run with `python3`. Needs python3 with redis-py (`.ci/run`
//! installs it); fails loudly without.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use taskq_testkit::RedisServer;

/// The secret of signing key "py", hex.
const PYTHON_KEY: &str = "5f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100";

#[test]
fn the_python_client_enqueues_and_waits_against_a_real_worker() {
    let server = RedisServer::start();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_taskq-demo-worker"))
        .args([
            "--broker",
            &server.url(),
            "--heartbeat",
            "200ms",
            "--liveness-ttl",
            "1s",
        ])
        // Signatures by key "py" are verified (unsigned tasks still run): the Python client's
        // signing test needs its canonical bytes to match the worker's.
        .env("TASKQ_SIGNING_KEYS", format!("py:{PYTHON_KEY}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start taskq-demo-worker");
    // The worker publishes its task declarations as it starts; the tests read them.
    let mut declared = false;
    for _ in 0..200 {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &server.port().to_string(),
                "HEXISTS",
                "taskq:tasks",
                "demo.fail",
            ])
            .output();
        if out.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "1") {
            declared = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../clients/python/test_taskq_client.py"
    );
    let run = Command::new("python3")
        .arg(script)
        .env("TASKQ_BROKER", server.url())
        .env("TASKQ_TEST_KEY", PYTHON_KEY)
        .output()
        .expect("python3 is needed for the Python client's tests (.ci/run installs it)");
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(declared, "the demo worker never published its declarations");
    assert!(
        run.status.success(),
        "python client tests failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
