//! The `taskq` operator command line as a library: [`Cli`] (clap) and [`run`].

mod args;
mod commands;
mod held;
mod history;
mod table;
mod workflow;

pub use args::Cli;

/// A one-line, user-facing failure.
pub type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Runs one command, printing to stdout.
///
/// # Errors
///
/// A message for the user: unreachable broker, unknown id, bad arguments.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    commands::run(cli).await
}
