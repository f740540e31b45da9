//! The schedule file and the binary's validation and dry run.

use std::process::Command;

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "taskq-beat-{name}-{}.toml",
        taskq_core::TaskId::new()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn example_schedule_file_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/beat.toml");
    let entries = taskq_beat::load_schedule(std::path::Path::new(path)).unwrap();
    assert!(entries.len() >= 2);
}

#[test]
fn errors_name_the_entry_and_line() {
    let cases = [
        // A schedule error names the line of `cron` (or `every`) and the field that is wrong.
        ("[[entry]]\nname = \"a\"\ntask = \"t\"\ncron = \"61 * * * *\"\n", "line 4, entry `a`: invalid cron expression `61 * * * *`: the minute field `61` is not valid"),
        ("[[entry]]\nname = \"a\"\ntask = \"t\"\n\ncron = \"0 0 1 13 *\"\n", "line 5, entry `a`: invalid cron expression `0 0 1 13 *`: the month field `13` is not valid"),
        ("[[entry]]\nname = \"a\"\ntask = \"t\"\ncron = \"1 2 3\"\n", "line 4, entry `a`: invalid cron expression `1 2 3`: it has 3 fields"),
        ("[[entry]]\nname = \"a\"\ntask = \"t\"\ncron = \"* * * * *\"\ntimezone = \"Mars/Base\"\n", "line 4, entry `a`: unknown time zone `Mars/Base`"),
        (
            "[[entry]]\nname = \"a\"\ntask = \"t\"\nevery = \"1s\"\n\n[[entry]]\nname = \"a\"\ntask = \"t\"\nevery = \"2s\"\n",
            "line 6, entry `a`: duplicate entry name (first defined on line 1)",
        ),
        ("[[entry]]\nname = \"a\"\ntask = \"t\"\n", "line 1, entry `a`: missing schedule: give `cron` or `every`"),
        ("[[entry]]\nname = \"a\"\ntask = \"t\"\nevery = \"0s\"\n", "line 4, entry `a`: invalid interval `0s`"),
        ("[[entry]]\nname = \"a\"\ntask = \"t\"\nevery = \"1s\"\ncatch_up = \"sometimes\"\n", "line 1, entry `a`: unknown catch_up `sometimes`"),
    ];
    for (text, expected) in cases {
        let err = taskq_beat::parse_schedule(text).unwrap_err();
        assert!(
            err.starts_with(expected),
            "expected `{expected}`, got `{err}`"
        );
    }
    let err = taskq_beat::parse_schedule("[[entry]]\nname = \"a\"\ntask = \"t\"\nevry = \"1s\"\n")
        .unwrap_err();
    assert!(err.starts_with("line 4: unknown field `evry`"), "{err}");
}

#[test]
fn invalid_schedule_exits_non_zero_before_touching_redis() {
    let path = write(
        "bad",
        "[[entry]]\nname = \"nightly\"\ntask = \"t\"\ncron = \"0 25 * * *\"\n",
    );
    // Port 1 has no Redis: had the binary connected first, the error would be a connection one.
    let out = Command::new(env!("CARGO_BIN_EXE_taskq-beat"))
        .args(["--broker", "redis://127.0.0.1:1", "--schedule"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 4, entry `nightly`: invalid cron expression `0 25 * * *`: the hour field `25` is not valid"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn dry_run_prints_the_next_fires_without_a_broker() {
    let path = write(
        "dry",
        "[[entry]]\nname = \"quarter\"\ntask = \"t\"\ncron = \"*/15 * * * *\"\n\n[[entry]]\nname = \"ten\"\ntask = \"t\"\nevery = \"10s\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_taskq-beat"))
        .args([
            "--broker",
            "redis://127.0.0.1:1",
            "--dry-run",
            "--from",
            "2026-01-01T00:07:00Z",
            "--count",
            "2",
            "--schedule",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "quarter\n  2026-01-01T00:15:00+00:00\n  2026-01-01T00:30:00+00:00\nten\n  2026-01-01T00:07:10+00:00\n  2026-01-01T00:07:20+00:00\n"
    );
    let _ = std::fs::remove_file(path);
}

#[test]
fn an_unreachable_broker_is_one_line_naming_it_and_the_cause() {
    let path = write(
        "good",
        "[[entry]]\nname = \"tick\"\ntask = \"t\"\nevery = \"5s\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_taskq-beat"))
        .args(["--broker", "redis://taskq:s3cret@127.0.0.1:1", "--schedule"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("taskq-beat: cannot use the broker at redis://taskq:***@127.0.0.1:1: redis command failed: "),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn an_empty_schedule_file_is_refused() {
    let path = write("empty", "# entries come later\n");
    let out = Command::new(env!("CARGO_BIN_EXE_taskq-beat"))
        .args(["--schedule"])
        .arg(&path)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no entries"));
    let _ = std::fs::remove_file(path);
}
