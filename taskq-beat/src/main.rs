//! `taskq-beat`: fires the periodic tasks of a schedule file. Thin: parse flags, validate the
//! schedule before touching Redis, install signal handling, run the library's [`Beat`].

use std::{path::PathBuf, process::ExitCode, time::Duration};

use chrono::{DateTime, Utc};
use clap::Parser;
use taskq_beat::{Beat, BeatConfig};

/// Fire periodic taskq tasks from a schedule file.
#[derive(Debug, Parser)]
#[command(name = "taskq-beat", version)]
struct Cli {
    /// Where the broker is (`--broker`, TLS files).
    #[command(flatten)]
    connection: taskq::cli::ConnectArgs,
    /// Keys task arguments are sealed (and results opened) with, KEY-ID:64-HEX, comma-separated.
    #[arg(long, env = "TASKQ_ENCRYPTION_KEYS")]
    encryption_keys: Option<taskq_core::Encryption>,
    /// The key fired tasks are signed with, KEY-ID:HEX-SECRET (for workers that verify).
    #[arg(long, env = "TASKQ_SIGNING_KEY")]
    signing_key: Option<taskq_core::SigningKey>,
    /// The schedule file (TOML, see examples/beat.toml).
    #[arg(long)]
    schedule: PathBuf,
    /// Print the next fire times of every entry and exit; needs no broker.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: list fires after this instant (RFC 3339; default now).
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// With --dry-run: fires per entry.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// Leader lock time to live: a dead leader is replaced within about this.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    lock_ttl: Duration,
    /// Longest sleep between two looks at the schedule.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    tick: Duration,
    /// How late a fire may be and still count as on time.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    grace: Duration,
}

#[tokio::main]
async fn main() -> ExitCode {
    taskq::cli::init_logging(taskq::cli::LogFormat::Text);
    let cli = Cli::parse();
    let entries = match taskq_beat::load_schedule(&cli.schedule) {
        Ok(entries) => entries,
        Err(err) => {
            eprintln!("taskq-beat: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.dry_run {
        let from = cli.from.unwrap_or_else(Utc::now);
        for (name, slots) in taskq_beat::preview(&entries, from, cli.count) {
            println!("{name}");
            for slot in slots {
                println!("  {}", slot.to_rfc3339());
            }
        }
        return ExitCode::SUCCESS;
    }
    match run(&cli, entries).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("taskq-beat: {}", taskq::error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli, entries: Vec<taskq_beat::Entry>) -> Result<(), Box<dyn std::error::Error>> {
    let broker = cli.connection.redacted();
    let unreachable = |err: taskq::Error| {
        format!(
            "cannot use the broker at {broker}: {}",
            taskq::error_chain(&err)
        )
    };
    let url = cli.connection.url();
    let client = taskq::connect(&url).await.map_err(unreachable)?;
    let client = match cli.signing_key.clone() {
        Some(key) => client.with_signing_key(key),
        None => client,
    };
    let client = match cli.encryption_keys.clone() {
        Some(keys) => client.with_encryption(keys),
        None => client,
    };
    let store = taskq::connect_beat_store(&url).await.map_err(unreachable)?;
    let mut config = BeatConfig::default();
    config.lock_ttl = cli.lock_ttl;
    config.tick = cli.tick;
    config.grace = cli.grace;
    let beat = Beat::new(client, store, entries)?.with_config(config);
    tracing::info!(owner = %beat.owner(), "taskq-beat starting");
    let signals = taskq::signal::Shutdown::listen();
    let report = tokio::select! {
        report = beat.run(signals.requested()) => report?,
        _ = signals.forced() => return Err("stopped at once by a second signal".into()),
    };
    tracing::info!(?report, "taskq-beat stopped");
    Ok(())
}
