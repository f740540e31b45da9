//! The shutdown signal of taskq's binaries (worker, beat): libraries take a future instead.

/// Completes on the first SIGINT or SIGTERM; a second signal exits the process at once (status
/// 130), leaving unfinished work to the reaper of another worker.
///
/// ```no_run
/// # async fn run(shutdown: impl std::future::Future<Output = ()>) {}
/// # #[tokio::main] async fn main() {
/// run(taskq_core::shutdown_signal()).await;
/// # }
/// ```
pub async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutdown requested (signal again to exit at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
