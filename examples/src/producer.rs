//! The demo producer: enqueue N invocations of a task by name with JSON arguments.

use std::{io::Write, path::PathBuf};

use clap::Parser;

/// Flags of the producer.
#[derive(Debug, Parser)]
#[command(about = "Enqueue N invocations of a task by name")]
pub struct ProducerCli {
    /// Where the broker is (`--broker`, TLS files).
    #[command(flatten)]
    pub connection: taskq::cli::ConnectArgs,
    /// Registered task name, e.g. demo.add.
    #[arg(long)]
    pub task: String,
    /// Arguments as JSON, e.g. '{"a":1,"b":2}'.
    #[arg(long, default_value = "{}")]
    pub args: String,
    /// How many invocations.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Enqueue in batches of this size (one broker call each).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// File to write the task ids to, one per line.
    #[arg(long)]
    pub ids_out: Option<PathBuf>,
}

/// `main` of the producer.
pub async fn producer_main() -> std::process::ExitCode {
    taskq::cli::init_logging(taskq::cli::LogFormat::Text);
    let cli = ProducerCli::parse();
    match produce(&cli).await {
        Ok(count) => {
            eprintln!("enqueued {count} `{}` tasks", cli.task);
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("taskq producer: {}", taskq::error_chain(err.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// Enqueues what `cli` says; returns how many.
///
/// # Errors
///
/// Bad `--args`, an unreachable broker, or the ids file.
pub async fn produce(cli: &ProducerCli) -> Result<usize, Box<dyn std::error::Error>> {
    let args: serde_json::Value = serde_json::from_str(&cli.args)
        .map_err(|err| format!("--args is not valid JSON: {err}"))?;
    let client = cli.connection.connect().await?;
    let mut out = match &cli.ids_out {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };
    let mut sent = 0;
    while sent < cli.count {
        let n = cli.batch.max(1).min(cli.count - sent);
        let ids = client
            .enqueue_many_by_name(&cli.task, std::iter::repeat_n(args.clone(), n))
            .await?;
        if let Some(out) = out.as_mut() {
            for id in &ids {
                writeln!(out, "{id}")?;
            }
        }
        sent += n;
    }
    if let Some(mut out) = out {
        out.flush()?;
    }
    Ok(sent)
}
