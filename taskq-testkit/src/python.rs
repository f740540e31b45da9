//! Python for the tests that drive taskq from Python programs (Celery's producer): a fresh
//! virtual environment with pinned packages from PyPI. Needs python3 with venv and pip
//! (`.ci/run` checks); panics loudly without.

use std::{collections::BTreeMap, path::PathBuf, process::Command, sync::Mutex};

/// Celery as the tests install it: a pinned release with the Kombu release it was made with
/// (a newer Kombu needs `packaging`, which it does not declare).
pub const CELERY: [&str; 2] = ["celery[redis]==5.4.0", "kombu==5.4.2"];

/// A fresh virtual environment (named after `label` and this process) with `packages`
/// installed by pip: its interpreter. Made once per process and label (the tests of one
/// binary share it; a second call waits for the first).
///
/// # Panics
///
/// When python3, venv or pip fail, with their output.
pub fn venv(label: &str, packages: &[&str]) -> PathBuf {
    static MADE: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(python) = made.get(label) {
        return python.clone();
    }
    let python = make(label, packages);
    made.insert(label.to_owned(), python.clone());
    python
}

fn make(label: &str, packages: &[&str]) -> PathBuf {
    let venv = std::env::temp_dir().join(format!("taskq-{label}-venv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&venv);
    run_ok(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv (python3 with venv is needed for the tests that run Python)",
    );
    let python = venv.join("bin/python");
    run_ok(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet"])
            .args(packages),
        "pip install",
    );
    python
}

/// Runs `command` to its end; panics naming `what`, with its output, unless it succeeded.
///
/// # Panics
///
/// When the command cannot start or exits with an error.
pub fn run_ok(command: &mut Command, what: &str) {
    let out = command
        .output()
        .unwrap_or_else(|err| panic!("{what}: {err}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
