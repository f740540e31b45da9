//! `taskq`: the operator command line. Thin: parse, run, print, exit non-zero with one line on
//! errors.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = taskq_cli::Cli::parse();
    match taskq_cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("taskq: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
