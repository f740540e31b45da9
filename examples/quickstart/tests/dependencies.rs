//! The README's first command (`cargo run -p taskq-quickstart --example quickstart`) builds
//! nothing of Redis, RabbitMQ, PostgreSQL or TLS: the quickstart's own dependency tree, as
//! cargo resolves it for this package alone, holds none of their crates.

use std::process::Command;

#[test]
fn the_quickstart_compiles_no_broker_client_and_no_tls() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "taskq-quickstart",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--offline",
            "--locked",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: std::collections::BTreeSet<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let unwanted = [
        "redis",
        "taskq-redis",
        "lapin",
        "taskq-amqp",
        "sqlx",
        "taskq-postgres",
        "rustls",
        "tokio-rustls",
        "aws-lc-sys",
        "aws-lc-rs",
        "ring",
        "openssl",
    ];
    let found: Vec<&&str> = unwanted
        .iter()
        .filter(|name| crates.contains(**name))
        .collect();
    assert!(found.is_empty(), "the quickstart compiles {found:?}");
    assert!(crates.contains("taskq"), "{tree}");
    eprintln!("the quickstart compiles {} crates", crates.len());
}
