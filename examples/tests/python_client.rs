//! The Python producer in `clients/python` against a real redis-server and a real demo worker
//! process: the package installed as a user installs it (`pip install ./clients/python` into a
//! fresh virtual environment), then its own unittest suite run against that installed copy.
//! Needs python3 with venv and pip (`.ci/run` checks); fails loudly without.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use taskq_testkit::{python::run_ok, RedisServer};

/// The OpenTelemetry SDK the trace test configures, as an application would.
const OTEL_SDK: &str = "opentelemetry-sdk==1.39.1";

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
    let (python, site) = installed_client();
    // The suite runs from a directory without the source, so only the installed copy imports.
    let run_dir = std::env::temp_dir().join(format!("taskq-py-run-{}", std::process::id()));
    std::fs::create_dir_all(&run_dir).unwrap();
    let script = run_dir.join("test_taskq_client.py");
    std::fs::copy(client_dir().join("test_taskq_client.py"), &script).unwrap();
    let run = Command::new(&python)
        .arg(&script)
        .current_dir(&run_dir)
        .env("TASKQ_BROKER", server.url())
        .env("TASKQ_TEST_KEY", PYTHON_KEY)
        .env("TASKQ_CLIENT_FROM", &site)
        .output()
        .expect("run the Python client's tests");
    let _ = std::fs::remove_dir_all(&run_dir);
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

/// `clients/python`.
fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/python")
}

/// A fresh virtual environment with `clients/python` installed by pip from its
/// `pyproject.toml` with its `otel` extra, its dependencies (redis-py, OpenTelemetry's API)
/// with it, and the OpenTelemetry SDK an application would configure (pinned, for the trace
/// test): its interpreter, and its site-packages directory.
fn installed_client() -> (PathBuf, String) {
    let venv = std::env::temp_dir().join(format!("taskq-py-venv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&venv);
    run_ok(
        Command::new("python3")
            .args(["-m", "venv", "--system-site-packages"])
            .arg(&venv),
        "python3 -m venv (python3 with venv is needed for the Python client's tests)",
    );
    let python = venv.join("bin/python");
    let work = std::env::temp_dir().join(format!("taskq-py-src-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // pip builds in the source directory: build from a copy, not the checkout.
    for file in ["pyproject.toml", "README.md", "taskq_client.py"] {
        std::fs::copy(client_dir().join(file), work.join(file)).unwrap();
    }
    run_ok(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .arg(format!("{}[otel]", work.display()))
            .arg(OTEL_SDK),
        "pip install ./clients/python[otel] opentelemetry-sdk",
    );
    let site = Command::new(&python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .expect("ask the venv for its site-packages");
    let site = String::from_utf8_lossy(&site.stdout).trim().to_owned();
    assert!(site.starts_with(&*venv.to_string_lossy()), "{site}");
    let _ = std::fs::remove_dir_all(&work);
    (python, site)
}
