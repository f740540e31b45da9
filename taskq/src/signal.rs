//! SIGINT and SIGTERM for taskq's binaries (worker, beat): the first signal asks for a warm
//! shutdown, a second one for an immediate stop. Libraries take a shutdown future instead and
//! never exit the process themselves.

use tokio_util::sync::CancellationToken;

/// The two shutdown requests a binary honours.
///
/// ```no_run
/// # async fn run(shutdown: impl std::future::Future<Output = ()>) {}
/// # #[tokio::main] async fn main() {
/// let signals = taskq::signal::Shutdown::listen();
/// tokio::select! {
///     _ = run(signals.requested()) => {}             // warm: finish, requeue, deregister
///     _ = signals.forced() => eprintln!("stopped at once"),
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Shutdown {
    requested: CancellationToken,
    forced: CancellationToken,
}

impl Shutdown {
    /// Starts listening for SIGINT and SIGTERM (needs a tokio runtime).
    pub fn listen() -> Self {
        let shutdown = Self {
            requested: CancellationToken::new(),
            forced: CancellationToken::new(),
        };
        let tokens = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested (signal again to stop at once)");
            tokens.requested.cancel();
            wait_for_signal().await;
            tracing::warn!(
                "second signal: stopping at once; unfinished work returns through the reaper"
            );
            tokens.forced.cancel();
        });
        shutdown
    }

    /// Completes on the first signal.
    pub fn requested(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.requested.clone().cancelled_owned()
    }

    /// Completes on the second signal.
    pub fn forced(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.forced.clone().cancelled_owned()
    }
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
